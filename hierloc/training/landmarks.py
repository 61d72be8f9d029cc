"""Google Landmarks downloader: a CSV index (id, url, landmark_id) -> OUT_DIR/<id>.jpg.

Downloads run in parallel threads (the work is network-bound). Every image is checked (it must
decode, and the body must be complete), resized so that its longer side is at most `max_size`, and
saved as JPEG through a temporary file renamed at the end, so an interrupted run never leaves a
partial image and a rerun skips what is done. Transient failures (timeouts, connection errors,
HTTP 429/5xx, truncated bodies) are retried with exponential backoff; permanent ones (HTTP 4xx,
not an image, over a limit) are skipped. Failures go to `failures.csv` and the counts to `summary.json`.

The index and the servers are untrusted, so everything is bounded (`DownloadLimits`):
- each line of the index is checked on its own (length, UTF-8, CSV syntax, the id is a plain file name
  of safe characters, the URL is http(s) of bounded length); a bad line becomes one row of
  failures.csv with its reason and line number, and the run goes on;
- a body is read in chunks and abandoned as soon as it exceeds `max_bytes` (or when its Content-Length
  declares more), so a 300 MB answer costs at most `max_bytes` of memory;
- the pixel count a PNG or JPEG declares in its header is compared with `max_pixels` as soon as the
  header has arrived and again before decoding, so a decompression bomb (a small file declaring
  30000x30000 pixels) is refused before anything is allocated; other formats are refused as
  unsupported because their size cannot be checked first;
- `timeout` bounds one attempt as a whole (connection, headers, body): every read has a socket
  timeout equal to the time left, the deadline is checked between reads, and a watchdog shuts the
  socket down at the deadline, so a server trickling a byte at a time cannot hold a worker longer.
"""

from __future__ import annotations

import csv
import http.client
import itertools
import logging
import os
import random
import re
import socket
import tempfile
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Iterator
from urllib.parse import quote, urljoin, urlsplit

import cv2
import numpy as np
from tqdm import tqdm

from ..utils.encoded_images import ImageTooLargeError, check_image_header, sniff_format
from ..utils.images import ImageReadError
from ..utils.io import (
    atomic_path,
    atomic_write_text,
    default_file_mode,
    remove_stale_temporaries,
    temporary_prefix,
    to_json_text,
)

logger = logging.getLogger(__name__)

USER_AGENT = "hierloc-landmarks-downloader/1.0"
RETRYABLE_HTTP = {408, 425, 429, 500, 502, 503, 504}
REDIRECT_HTTP = {301, 302, 303, 307, 308}
MAX_REDIRECTS = 5
# Formats an image server may send whose size hierloc cannot read from the header before decoding.
UNSUPPORTED_IMAGE_SIGNATURES = (b"GIF8", b"BM", b"RIFF", b"II*\x00", b"MM\x00*")

DEFAULT_MAX_BYTES = 50_000_000  # Google Landmarks originals are a few MB; 50 MB leaves room for large panoramas
DEFAULT_MAX_PIXELS = 50_000_000  # 50 MP: 150 MB once decoded to BGR, per worker
DEFAULT_TIMEOUT = 10.0
CHUNK_BYTES = 1 << 16
# How much of a body may arrive before its image header must have been found (JPEG EXIF blocks are <= 64 KiB).
HEADER_SEARCH_BYTES = 1 << 20

MAX_ID_LENGTH = 128
MAX_URL_LENGTH = 2048
MAX_HOST_LENGTH = 253
MAX_LINE_BYTES = 8192  # an id, a URL and a landmark id of the longest accepted lengths fit easily
# A file name on every system: no separators, no dotfiles, no leading '-' that tools would read as an option.
_SAFE_ID = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
_SAFE_HOST = re.compile(r"[A-Za-z0-9.:_-]+")  # ASCII host names, IPv4 and IPv6 (brackets already removed)
_FAILURE_TEXT_LENGTH = 200  # what failures.csv keeps of a rejected id or URL


class PermanentFailure(Exception):
    """Retrying will not help (missing image, not an image, over a limit)."""


class TransientFailure(Exception):
    """Worth another try (timeout, server error, truncated body)."""


@dataclass(frozen=True)
class DownloadLimits:
    """Bounds of one download attempt: body bytes, declared pixels, and seconds in total."""

    max_bytes: int = DEFAULT_MAX_BYTES
    max_pixels: int = DEFAULT_MAX_PIXELS
    timeout: float = DEFAULT_TIMEOUT

    def __post_init__(self) -> None:
        if self.max_bytes < 1 or self.max_pixels < 1 or not self.timeout > 0:
            raise ValueError(f"download limits must be positive, got {self}")


@dataclass
class DownloadSummary:
    """Counts of a download run, written to summary.json (`failed` includes rejected index lines)."""

    total: int = 0
    downloaded: int = 0
    skipped_existing: int = 0
    failed: int = 0
    would_download: int = 0  # dry run only: valid rows not yet in the output folder
    failures_by_reason: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    def as_dict(self) -> dict:
        """The summary as a plain dict (for JSON)."""
        return dict(self.__dict__)


@dataclass
class IndexRows:
    """The usable (id, url) rows of an index and the (id, url, reason) of each rejected line."""

    rows: list[tuple[str, str]] = field(default_factory=list)
    rejected: list[tuple[str, str, str]] = field(default_factory=list)


def _printable(text: str) -> str:
    """`text` shortened and with control characters escaped, fit for failures.csv and a terminal."""
    shown = "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in text[:_FAILURE_TEXT_LENGTH])
    return shown + "..." if len(text) > _FAILURE_TEXT_LENGTH else shown


def check_image_id(image_id: str) -> str | None:
    """Why `image_id` cannot name OUT_DIR/<id>.jpg, or None when it can."""
    if not image_id:
        return "empty id"
    if len(image_id) > MAX_ID_LENGTH:
        return f"longer than {MAX_ID_LENGTH} characters"
    if not _SAFE_ID.fullmatch(image_id):
        return "only letters, digits, '_', and (not first) '-' and '.' are allowed"
    return None


def check_url(url: str) -> str | None:
    """Why `url` will not be fetched, or None for an http(s) URL of bounded length with a plausible host."""
    if not url:
        return "empty url"
    if len(url) > MAX_URL_LENGTH:
        return f"longer than {MAX_URL_LENGTH} characters"
    if any(not c.isprintable() or c.isspace() for c in url):
        return "contains spaces or control characters"
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (raises ValueError for a port out of range)
    except ValueError as exc:
        return f"malformed ({exc})"
    if parts.scheme.lower() not in ("http", "https"):
        return "only http and https are fetched"
    host = parts.hostname or ""
    if not host or len(host) > MAX_HOST_LENGTH or not _SAFE_HOST.fullmatch(host):
        return "missing or invalid host name (ASCII only)"
    if any(len(label) > 63 for label in host.split(".")):
        return "host name label longer than 63 characters"
    return None


def _lines(f: BinaryIO, max_bytes: int) -> Iterator[tuple[int, bytes | None]]:
    """(line number, bytes) of each physical line, None for a line over `max_bytes` (skipped without keeping it)."""
    line_number = 0
    while True:
        line = f.readline(max_bytes + 1)
        if not line:
            return
        line_number += 1
        if len(line) > max_bytes and not line.endswith(b"\n"):
            while True:  # skip the rest of the line in bounded pieces
                rest = f.readline(CHUNK_BYTES)
                if not rest or rest.endswith(b"\n"):
                    break
            yield line_number, None
        else:
            yield line_number, line


def _parse_line(raw: bytes | None) -> list[str] | str:
    """The CSV fields of one line, or why the line cannot be read."""
    if raw is None:
        return f"line longer than {MAX_LINE_BYTES} bytes"
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return "not UTF-8"
    try:
        return next(csv.reader([text.rstrip("\r\n")], strict=True), [])
    except csv.Error as exc:
        return f"malformed CSV ({exc})"


def read_index(path: str | os.PathLike, limit: int | None = None) -> IndexRows:
    """Usable rows and rejected lines of the index CSV (header `id,url,landmark_id`); see the module.

    Only the header can make the whole file unusable (ValueError naming the file); any other bad line,
    including a duplicate id, is rejected with its reason and line number. `limit` counts data lines,
    rejected ones included.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such index file")
    result = IndexRows()
    seen_ids: set[str] = set()
    with open(path, "rb") as f:
        lines = _lines(f, MAX_LINE_BYTES)
        header: list[str] | None = None
        for _, raw in lines:
            parsed = _parse_line(raw.removeprefix(b"\xef\xbb\xbf") if raw is not None else None)  # BOM: not "id"
            if isinstance(parsed, str):
                raise ValueError(f"{path}: unreadable header line: {parsed}")
            if "".join(parsed).strip():
                header = parsed
                break
        if header is None:
            raise ValueError(f"{path}: empty index file")
        columns = [h.strip().lower() for h in header]
        if "id" not in columns or "url" not in columns:
            raise ValueError(f"{path}: the header must name the columns id and url (found "
                             f"{_printable(','.join(header))})")
        id_col, url_col = columns.index("id"), columns.index("url")
        data_lines = 0
        for line_number, raw in lines:
            if limit is not None and data_lines >= limit:
                break
            fields = _parse_line(raw)
            if fields == [] or (isinstance(fields, list) and not "".join(fields).strip()):
                continue
            data_lines += 1
            if isinstance(fields, str):
                result.rejected.append(("", "", f"bad line: {fields} (line {line_number})"))
                continue
            image_id = fields[id_col].strip() if len(fields) > id_col else ""
            url = fields[url_col].strip() if len(fields) > url_col else ""
            if len(fields) <= max(id_col, url_col):
                reason = f"bad line: {len(fields)} columns, expected at least {max(id_col, url_col) + 1}"
            elif (problem := check_image_id(image_id)) is not None:
                reason = f"bad id: {problem}"
            elif (problem := check_url(url)) is not None:
                reason = f"bad url: {problem}"
            elif image_id.lower() in seen_ids:  # lower: one file on case-insensitive file systems
                reason = "duplicate id: an earlier line has the same id"
            else:
                seen_ids.add(image_id.lower())
                result.rows.append((image_id, url))
                continue
            result.rejected.append((_printable(image_id), _printable(url), f"{reason} (line {line_number})"))
    return result


def _complete(data: bytes) -> bool:
    """JPEG must end with its EOI marker and PNG with IEND (decoders accept truncated files)."""
    if data[:3] == b"\xff\xd8\xff":
        return b"\xff\xd9" in data[-64:]
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return b"IEND" in data[-16:]
    return True


def _header_settled(data: bytes, max_pixels: int) -> bool:
    """Whether the declared size of a partly received body is known to fit (or cannot be known yet, never).

    PermanentFailure as soon as the header declares more than `max_pixels`; True once the header fits,
    the body is not a PNG/JPEG, or enough bytes arrived without a readable header (decode_image decides).
    """
    if sniff_format(data[:8]) is None and len(data) >= 8:
        return True
    try:
        check_image_header(data, max_pixels)
    except ImageTooLargeError as exc:
        raise PermanentFailure(f"too many pixels: {exc}") from None
    except ImageReadError:
        return len(data) >= HEADER_SEARCH_BYTES
    return True


def _request_target(url: str) -> str:
    """Path and query of `url` for the request line, with non-ASCII characters percent-encoded."""
    parts = urlsplit(url)
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    return quote(target, safe="!#$%&'()*+,/:;=?@[]~")


def _shutdown(sock: socket.socket, expired: threading.Event) -> None:
    """Watchdog action: wake a read blocked on `sock` (it then sees end of data or an error)."""
    expired.set()
    try:
        socket.socket.shutdown(sock, socket.SHUT_RDWR)  # the plain socket's method, also for TLS sockets
    except OSError:
        pass  # already closed: the download finished meanwhile


def _time_left(deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise TransientFailure("timeout")
    return left


def _fetch_once(url: str, deadline: float, limits: DownloadLimits) -> tuple[bytes, str | None]:
    """(body, None), or (b'', Location) for a redirect; one connection, bounded by `deadline` and `limits`."""
    parts = urlsplit(url)
    connection_class = http.client.HTTPSConnection if parts.scheme.lower() == "https" else http.client.HTTPConnection
    # The port always given: without it http.client would read an IPv6 address's last group as the port.
    port = parts.port or (443 if connection_class is http.client.HTTPSConnection else 80)
    connection = connection_class(parts.hostname, port, timeout=_time_left(deadline))
    expired = threading.Event()
    watchdog: threading.Timer | None = None
    try:
        connection.connect()
        sock = connection.sock  # kept: getresponse() hands the socket to the response and forgets it
        watchdog = threading.Timer(_time_left(deadline), _shutdown, (sock, expired))
        watchdog.daemon = True
        watchdog.start()
        connection.request("GET", _request_target(url), headers={"User-Agent": USER_AGENT, "Accept": "image/*",
                                                                 "Connection": "close"})
        response = connection.getresponse()
        if response.status in REDIRECT_HTTP and response.getheader("Location"):
            return b"", response.getheader("Location")
        if response.status in RETRYABLE_HTTP:
            raise TransientFailure(f"http {response.status}")
        if not 200 <= response.status < 300:
            raise PermanentFailure(f"http {response.status}")
        if response.length is not None and response.length > limits.max_bytes:
            raise PermanentFailure(f"too large: Content-Length {response.length} over {limits.max_bytes} bytes")
        chunks: list[bytes] = []
        received = 0
        header_settled = False
        while True:
            sock.settimeout(_time_left(deadline))
            chunk = response.read1(CHUNK_BYTES)
            if not chunk:
                break
            chunks.append(chunk)
            received += len(chunk)
            if received > limits.max_bytes:
                raise PermanentFailure(f"too large: body over {limits.max_bytes} bytes")
            if not header_settled:
                header_settled = _header_settled(b"".join(chunks), limits.max_pixels)
        if expired.is_set():
            raise TransientFailure("timeout")  # the watchdog ended the body, it did not
        if response.length:  # bytes that Content-Length announced and never came
            raise TransientFailure("truncated")
        return b"".join(chunks), None
    except (TimeoutError, socket.timeout):
        raise TransientFailure("timeout") from None
    except http.client.IncompleteRead:
        raise TransientFailure("timeout" if expired.is_set() else "truncated") from None
    except (http.client.HTTPException, OSError) as exc:
        if expired.is_set():
            raise TransientFailure("timeout") from None
        raise TransientFailure(f"connection: {type(exc).__name__}") from None
    except UnicodeError:  # a host name the IDNA codec refuses
        raise PermanentFailure("bad url: host name not encodable") from None
    finally:
        if watchdog is not None:
            watchdog.cancel()
        connection.close()


def fetch(url: str, timeout: float = DEFAULT_TIMEOUT, max_bytes: int = DEFAULT_MAX_BYTES,
          max_pixels: int = DEFAULT_MAX_PIXELS) -> bytes:
    """The body of `url` (redirects followed) within `timeout` seconds in all; PermanentFailure or TransientFailure.

    The body is read in chunks and refused beyond `max_bytes`; a PNG or JPEG whose header declares
    more than `max_pixels` is refused as soon as the header has arrived.
    """
    limits = DownloadLimits(max_bytes, max_pixels, timeout)
    deadline = time.monotonic() + limits.timeout
    if (problem := check_url(url)) is not None:
        raise PermanentFailure(f"bad url: {problem}")
    for _ in range(MAX_REDIRECTS + 1):
        body, location = _fetch_once(url, deadline, limits)
        if location is None:
            return body
        url = urljoin(url, location)
        if (problem := check_url(url)) is not None:
            raise PermanentFailure(f"bad redirect: {problem}")
    raise PermanentFailure(f"too many redirects (over {MAX_REDIRECTS})")


def decode_image(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """BGR pixels of a downloaded JPEG or PNG whose header declares at most `max_pixels` pixels.

    PermanentFailure (not an image, unsupported format, too many pixels, corrupt) or TransientFailure
    (empty or truncated body); nothing is decoded before the declared size has been checked.
    """
    if not data:
        raise TransientFailure("empty body")
    kind = sniff_format(data)
    if kind is None:
        if data.startswith(UNSUPPORTED_IMAGE_SIGNATURES):
            raise PermanentFailure("unsupported format: only JPEG and PNG (size checked before decoding)")
        raise PermanentFailure("not an image")
    if not _complete(data):
        raise TransientFailure("truncated")
    try:
        header = check_image_header(data, max_pixels)
    except ImageTooLargeError as exc:
        raise PermanentFailure(f"too many pixels: {exc}") from None
    except ImageReadError as exc:
        raise PermanentFailure(f"bad image: {exc}") from None
    try:
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    except cv2.error:
        image = None
    if image is None or image.size == 0:
        raise PermanentFailure(f"bad image: {kind.upper()} does not decode")
    if image.shape[:2] != (header.height, header.width):
        raise PermanentFailure(f"bad image: decodes to {image.shape[1]}x{image.shape[0]}, header says "
                               f"{header.width}x{header.height}")
    return image


def resize_max_side(image: np.ndarray, max_size: int | None) -> np.ndarray:
    """Shrink (area interpolation) so that the longer side is at most `max_size`."""
    if not max_size or max(image.shape[:2]) <= max_size:
        return image
    scale = max_size / max(image.shape[:2])
    size = (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


def _save(target: Path, data: bytes, mode: int) -> None:
    """Write `data` to `target` through a temporary file renamed at the end.

    Not utils.io.atomic_path: that one scans the whole folder for leftovers after every write, which is
    quadratic over a folder of millions of images; download_landmarks cleans leftovers once per run instead.
    """
    fd, tmp_name = tempfile.mkstemp(prefix=temporary_prefix(target), suffix=".jpg", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())  # the rename must not become visible before the data (a power cut leaves no 0 bytes)
        os.chmod(tmp_name, mode)  # mkstemp makes 0600; give what open() would
        os.replace(tmp_name, target)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise



def download_one(image_id: str, url: str, out_dir: Path, max_size: int | None = 640,
                 timeout: float = DEFAULT_TIMEOUT, retries: int = 3, backoff: float = 1.0, quality: int = 90,
                 max_bytes: int = DEFAULT_MAX_BYTES, max_pixels: int = DEFAULT_MAX_PIXELS,
                 file_mode: int | None = None) -> str:
    """Download, check, resize and save one image; 'downloaded' or raise with the reason.

    `timeout` bounds each attempt as a whole; transient failures are retried `retries` times. `file_mode`:
    permission bits of the saved file (default: what open() would give).
    """
    if (problem := check_image_id(image_id)) is not None:
        raise PermanentFailure(f"bad id: {problem}")
    target = out_dir / f"{image_id}.jpg"
    attempt = 0
    while True:
        try:
            image = decode_image(fetch(url, timeout, max_bytes, max_pixels), max_pixels)
            break
        except TransientFailure:
            if attempt >= retries:
                raise
            # Exponential backoff with jitter, so parallel workers do not retry in lockstep.
            time.sleep(backoff * (2 ** attempt) * (0.5 + random.random()))
            attempt += 1
    try:
        image = resize_max_side(image, max_size)
        ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    except cv2.error as exc:
        raise PermanentFailure(f"could not encode: {str(exc).strip().splitlines()[-1][:200]}") from None
    if not ok:
        raise PermanentFailure("could not encode")
    _save(target, encoded.tobytes(), file_mode if file_mode is not None else default_file_mode())
    return "downloaded"


def _remove_leftovers(out_dir: Path) -> set[str]:
    """Names in `out_dir`, after removing the temporaries of killed runs (one scan of the folder)."""
    names = set()
    leftover_targets = set()
    with os.scandir(out_dir) as entries:
        for entry in entries:
            names.add(entry.name)
            if entry.name.startswith(".") and ".hierloc-" in entry.name:
                leftover_targets.add(entry.name[1:entry.name.index(".hierloc-")])
    for target_name in leftover_targets:
        for removed in remove_stale_temporaries(out_dir / target_name):
            names.discard(removed.name)
    return names


def download_landmarks(
    index_csv: str | os.PathLike,
    out_dir: str | os.PathLike,
    workers: int = 8,
    max_size: int | None = 640,
    timeout: float = DEFAULT_TIMEOUT,
    retries: int = 3,
    backoff: float = 1.0,
    limit: int | None = None,
    progress: bool = True,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    dry_run: bool = False,
) -> DownloadSummary:
    """Download every image of the index not yet in `out_dir`; writes failures.csv and summary.json.

    Bad index lines are rejected one by one into failures.csv (see read_index); `timeout`, `max_bytes`
    and `max_pixels` bound each download (see the module). `dry_run` checks the index and counts what
    would be downloaded without any network access.
    """
    t0 = time.perf_counter()
    DownloadLimits(max_bytes, max_pixels, timeout)  # refuse nonsense limits before any work
    out_dir = Path(out_dir)
    index = read_index(index_csv, limit)
    out_dir.mkdir(parents=True, exist_ok=True)
    present = _remove_leftovers(out_dir)
    summary = DownloadSummary(total=len(index.rows) + len(index.rejected))
    failures: list[tuple[str, str, str]] = list(index.rejected)
    todo = []
    for image_id, url in index.rows:
        if f"{image_id}.jpg" in present and (out_dir / f"{image_id}.jpg").is_file():
            summary.skipped_existing += 1
        else:
            todo.append((image_id, url))
    if dry_run:
        summary.would_download = len(todo)
        todo = []
    file_mode = default_file_mode()  # once: reading the umask may not be free
    # At most a few downloads queued per worker: millions of futures would cost gigabytes, and Ctrl+C would
    # wait for the whole queue (the pool drains it on exit).
    window = 4 * max(1, workers)
    rows_left = iter(todo)
    in_flight: dict[Future, tuple[str, str]] = {}
    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(todo)))) as pool, \
            tqdm(total=len(todo), desc="landmark images", unit="img", disable=not progress or not todo) as bar:
        while True:
            for image_id, url in itertools.islice(rows_left, window - len(in_flight)):
                future = pool.submit(download_one, image_id, url, out_dir, max_size, timeout, retries, backoff,
                                     max_bytes=max_bytes, max_pixels=max_pixels, file_mode=file_mode)
                in_flight[future] = (image_id, url)
            if not in_flight:
                break
            done, _ = wait(in_flight, return_when=FIRST_COMPLETED)
            for future in done:
                image_id, url = in_flight.pop(future)
                bar.update()
                try:
                    future.result()
                    summary.downloaded += 1
                except (PermanentFailure, TransientFailure) as exc:
                    failures.append((image_id, url, str(exc)))
                    logger.debug("skipped %s (%s): %s", image_id, url, exc)
    for _, _, reason in failures:
        key = reason.split(":")[0]
        summary.failures_by_reason[key] = summary.failures_by_reason.get(key, 0) + 1
    summary.failed = len(failures)
    summary.seconds = time.perf_counter() - t0
    with atomic_path(out_dir / "failures.csv", suffix=".csv") as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["id", "url", "reason"])
            writer.writerows(sorted(failures))
    atomic_write_text(out_dir / "summary.json", to_json_text(summary.as_dict(), indent=2))
    return summary
