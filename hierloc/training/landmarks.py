"""Google Landmarks downloader: a CSV index (id, url, landmark_id) -> OUT_DIR/<id>.jpg.

Downloads run in parallel threads (the work is network-bound). Every image is checked (it must
decode, and the body must be complete), resized so that its longer side is at most `max_size`, and
saved as JPEG through a temporary file renamed at the end, so an interrupted run never leaves a
partial image and a rerun skips what is done. Transient failures (timeouts, connection errors,
HTTP 429/5xx, truncated bodies) are retried with exponential backoff; permanent ones (HTTP 4xx,
not an image) are skipped. Failures go to `failures.csv` and the counts to `summary.json`.
"""

from __future__ import annotations

import csv
import http.client
import logging
import os
import random
import socket
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from ..utils.io import atomic_path, atomic_write_text, to_json_text

logger = logging.getLogger(__name__)

USER_AGENT = "hierloc-landmarks-downloader/1.0"
RETRYABLE_HTTP = {408, 425, 429, 500, 502, 503, 504}
IMAGE_SIGNATURES = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF8", b"BM", b"RIFF")


class PermanentFailure(Exception):
    """Retrying will not help (missing image, not an image)."""


class TransientFailure(Exception):
    """Worth another try (timeout, server error, truncated body)."""


@dataclass
class DownloadSummary:
    """Counts of a download run, written to summary.json."""

    total: int = 0
    downloaded: int = 0
    skipped_existing: int = 0
    failed: int = 0
    failures_by_reason: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    def as_dict(self) -> dict:
        """The summary as a plain dict (for JSON)."""
        return dict(self.__dict__)


def read_index(path: str | os.PathLike, limit: int | None = None) -> list[tuple[str, str]]:
    """(id, url) rows of the index CSV (header `id,url,landmark_id`), with clear errors."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such index file")
    rows: list[tuple[str, str]] = []
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None:
            raise ValueError(f"{path}: empty index file")
        columns = [h.strip().lower() for h in header]
        if "id" not in columns or "url" not in columns:
            raise ValueError(f"{path}: the header must name the columns id and url (found {header})")
        id_col, url_col = columns.index("id"), columns.index("url")
        for line_number, row in enumerate(reader, start=2):
            if not row:
                continue
            if len(row) <= max(id_col, url_col):
                raise ValueError(f"{path}:{line_number}: expected at least {max(id_col, url_col) + 1} columns")
            image_id, url = row[id_col].strip(), row[url_col].strip()
            if not image_id or "/" in image_id or image_id.startswith("."):
                raise ValueError(f"{path}:{line_number}: invalid image id {image_id!r}")
            rows.append((image_id, url))
            if limit is not None and len(rows) >= limit:
                break
    return rows


def _complete(data: bytes) -> bool:
    """JPEG must end with its EOI marker and PNG with IEND (decoders accept truncated files)."""
    if data[:3] == b"\xff\xd8\xff":
        return b"\xff\xd9" in data[-64:]
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return b"IEND" in data[-16:]
    return True


def fetch(url: str, timeout: float) -> bytes:
    """The body of `url`, raising PermanentFailure or TransientFailure."""
    if not url.lower().startswith(("http://", "https://")):
        raise PermanentFailure("bad url")
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            data = response.read()  # raises IncompleteRead when the body is shorter than Content-Length
    except urllib.error.HTTPError as exc:
        if exc.code in RETRYABLE_HTTP:
            raise TransientFailure(f"http {exc.code}") from None
        raise PermanentFailure(f"http {exc.code}") from None
    except http.client.IncompleteRead:
        raise TransientFailure("truncated") from None
    except (socket.timeout, TimeoutError):
        raise TransientFailure("timeout") from None
    except urllib.error.URLError as exc:
        if isinstance(exc.reason, (socket.timeout, TimeoutError)):
            raise TransientFailure("timeout") from None
        raise TransientFailure(f"connection: {exc.reason}") from None
    except (ConnectionError, http.client.HTTPException, OSError) as exc:
        raise TransientFailure(f"connection: {type(exc).__name__}") from None
    return data


def decode_image(data: bytes) -> np.ndarray:
    """BGR pixels of downloaded bytes, or PermanentFailure / TransientFailure (truncated)."""
    if not data:
        raise TransientFailure("empty body")
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None or image.size == 0:
        if data.startswith(IMAGE_SIGNATURES):
            raise TransientFailure("truncated")  # an image's header, but the rest is missing
        raise PermanentFailure("not an image")
    if not _complete(data):
        raise TransientFailure("truncated")
    return image


def resize_max_side(image: np.ndarray, max_size: int | None) -> np.ndarray:
    """Shrink (area interpolation) so that the longer side is at most `max_size`."""
    if not max_size or max(image.shape[:2]) <= max_size:
        return image
    scale = max_size / max(image.shape[:2])
    size = (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


def download_one(image_id: str, url: str, out_dir: Path, max_size: int | None = 640, timeout: float = 10.0,
                 retries: int = 3, backoff: float = 1.0, quality: int = 90) -> str:
    """Download, check, resize and save one image; 'downloaded' or raise with the reason."""
    target = out_dir / f"{image_id}.jpg"
    attempt = 0
    while True:
        try:
            image = decode_image(fetch(url, timeout))
            break
        except TransientFailure:
            if attempt >= retries:
                raise
            # Exponential backoff with jitter, so parallel workers do not retry in lockstep.
            time.sleep(backoff * (2 ** attempt) * (0.5 + random.random()))
            attempt += 1
    image = resize_max_side(image, max_size)
    ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise PermanentFailure("could not encode")
    with atomic_path(target, suffix=".jpg") as tmp:
        tmp.write_bytes(encoded.tobytes())
    return "downloaded"


def download_landmarks(
    index_csv: str | os.PathLike,
    out_dir: str | os.PathLike,
    workers: int = 8,
    max_size: int | None = 640,
    timeout: float = 10.0,
    retries: int = 3,
    backoff: float = 1.0,
    limit: int | None = None,
    progress: bool = True,
) -> DownloadSummary:
    """Download every image of the index not yet in `out_dir`; writes failures.csv and summary.json."""
    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = read_index(index_csv, limit)
    summary = DownloadSummary(total=len(rows))
    todo = []
    for image_id, url in rows:
        if (out_dir / f"{image_id}.jpg").is_file():
            summary.skipped_existing += 1
        else:
            todo.append((image_id, url))
    failures: list[tuple[str, str, str]] = []
    lock = threading.Lock()
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        futures = {pool.submit(download_one, image_id, url, out_dir, max_size, timeout, retries, backoff):
                   (image_id, url) for image_id, url in todo}
        for future in tqdm(as_completed(futures), total=len(futures), desc="landmark images", unit="img",
                           disable=not progress):
            image_id, url = futures[future]
            try:
                future.result()
                summary.downloaded += 1
            except (PermanentFailure, TransientFailure) as exc:
                reason = str(exc)
                with lock:
                    failures.append((image_id, url, reason))
                    key = reason.split(":")[0]
                    summary.failures_by_reason[key] = summary.failures_by_reason.get(key, 0) + 1
                logger.debug("skipped %s (%s): %s", image_id, url, reason)
    summary.failed = len(failures)
    summary.seconds = time.perf_counter() - t0
    with atomic_path(out_dir / "failures.csv", suffix=".csv") as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["id", "url", "reason"])
            writer.writerows(sorted(failures))
    atomic_write_text(out_dir / "summary.json", to_json_text(summary.as_dict(), indent=2))
    return summary
