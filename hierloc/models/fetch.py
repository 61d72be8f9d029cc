"""Weights on first use: download the registry's files, verify them, convert originals, cache the result.

Imports: this module depends on `weights` (the registry) and `convert` (the converters); `weights`
depends on neither, and the converters import `weights` but never this module, so there is no import cycle.

Downloads are atomic (a temporary file renamed into place), time out, refuse absurd sizes and are
checked against the registry's SHA-256 where one was published. `HIERLOC_OFFLINE=1` forbids them.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import urllib.error
import urllib.request
from pathlib import Path

from tqdm import tqdm

from ..utils.hashing import file_sha256
from ..utils.io import atomic_path
from .convert import convert
from .weights import (
    OFFLINE_ENV,
    WEIGHTS,
    WeightsNotFoundError,
    WeightSpec,
    cache_dir,
    find_local_copy,
    get_weight_spec,
    missing_weights_message,
    offline_mode,
    one_line,
    resolve_weights,
)

logger = logging.getLogger(__name__)

# Seconds without any data from the server before a download is abandoned.
DOWNLOAD_TIMEOUT_S = 60.0
# The registry's largest file (NetVLAD VGG16 with its 32768 x 4096 whitening) is at most about a gigabyte; a
# server announcing more than this is misconfigured or not serving what the registry expects.
MAX_DOWNLOAD_BYTES = 4 << 30
CHUNK_BYTES = 1 << 20


class DownloadError(OSError):
    """A file could not be downloaded: no network, timeout, HTTP error, refused or truncated transfer."""


class ChecksumMismatchError(RuntimeError):
    """A downloaded file's SHA-256 differs from the registry's; the file was discarded."""


def _content_length(response) -> int | None:
    value = response.headers.get("Content-Length") if getattr(response, "headers", None) is not None else None
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def download_file(url: str, destination: str | os.PathLike, sha256: str | None, *,
                  timeout: float | None = None, max_bytes: int | None = None, progress: bool = True) -> Path:
    """Download `url` to `destination` atomically, verifying the SHA-256 when one is known.

    `timeout` (seconds without data) and `max_bytes` default to DOWNLOAD_TIMEOUT_S and MAX_DOWNLOAD_BYTES.
    Raises DownloadError (network failure, timeout, size over `max_bytes`, truncated transfer) or
    ChecksumMismatchError; in every failure nothing is left at `destination` or beside it.
    """
    # Read at call time, not bound as defaults, so that the module settings can be changed (tests do).
    timeout = DOWNLOAD_TIMEOUT_S if timeout is None else timeout
    max_bytes = MAX_DOWNLOAD_BYTES if max_bytes is None else max_bytes
    destination = Path(destination)
    digest = hashlib.sha256()
    try:
        with atomic_path(destination) as tmp:
            with urllib.request.urlopen(url, timeout=timeout) as response, open(tmp, "wb") as out:
                declared = _content_length(response)
                if declared is not None and not 0 <= declared <= max_bytes:
                    raise DownloadError(f"{url}: the server announces {declared} bytes, outside the sane range "
                                        f"(at most {max_bytes}); download refused")
                received = 0
                with tqdm(total=declared, unit="B", unit_scale=True, desc=f"download {destination.name}",
                          disable=not progress) as bar:
                    while block := response.read(CHUNK_BYTES):
                        received += len(block)
                        # Servers without Content-Length (or lying about it) are held to the same limit.
                        if received > max_bytes:
                            raise DownloadError(f"{url}: more than {max_bytes} bytes received; download abandoned")
                        out.write(block)
                        digest.update(block)
                        bar.update(len(block))
                if declared is not None and received != declared:
                    raise DownloadError(f"{url}: truncated download ({received} of {declared} bytes)")
            actual = digest.hexdigest()
            if sha256 is not None and actual != sha256.lower():
                raise ChecksumMismatchError(f"{url}: checksum mismatch (expected sha256 {sha256}, got {actual}); "
                                            "the downloaded file was discarded")
    except (urllib.error.URLError, http.client.HTTPException, TimeoutError, ConnectionError) as exc:
        # URLError covers HTTP errors and refused connections; the others are failures during the transfer.
        raise DownloadError(f"{url}: {type(exc).__name__}: {one_line(exc)}") from exc
    if sha256 is None:
        logger.info("no published checksum for %s; the downloaded file's sha256 is %s", url, actual)
    return destination


def download_and_convert(spec: WeightSpec, progress: bool = True) -> Path:
    """Download the original files of `spec` (kept under the cache's `original/`) and convert them into the cache."""
    folder = cache_dir() / "original"
    for url, relative, digest in spec.sources:
        target = folder / relative
        # Originals kept from an earlier run are reused when they still match their published checksum.
        if target.is_file() and (digest is None or file_sha256(target) == digest.lower()):
            continue
        download_file(url, target, digest, progress=progress)
    first = Path(spec.sources[0][1])
    source = folder / (first.parts[0] if len(first.parts) > 1 else first)
    destination = cache_dir() / spec.filename
    convert(spec.convert_from, source, destination)
    logger.info("converted %s into %s", source, destination)
    return destination


def fetch_weights(name: str, force: bool = False, progress: bool = True) -> Path:
    """Path of the named weights, downloaded (and converted) into the cache unless a local copy exists.

    `force` downloads again even when a local copy exists. Raises WeightsNotFoundError (one line naming
    the weights, the command that fetches them and the cache path) when offline ($HIERLOC_OFFLINE=1,
    no network, timeout, HTTP error); ChecksumMismatchError when the file is not the published one.
    """
    spec = get_weight_spec(name)
    if not force:
        local = find_local_copy(spec)
        if local is not None:
            return local
    if offline_mode():
        raise WeightsNotFoundError(missing_weights_message(spec, f"{OFFLINE_ENV}=1 forbids downloading"))
    try:
        if spec.convert_from and spec.sources:
            return download_and_convert(spec, progress=progress)
        if spec.url:
            return download_file(spec.url, cache_dir() / spec.filename, spec.sha256, progress=progress)
    except DownloadError as exc:
        raise WeightsNotFoundError(missing_weights_message(spec, f"download failed: {exc}")) from exc
    raise WeightsNotFoundError(missing_weights_message(spec, "no download address is registered"))


def ensure_weights(name_or_path: str | os.PathLike, download: bool = True, progress: bool = True) -> Path:
    """Path of a weight file: an existing path, a local copy of named weights, or (with `download`) a fresh one."""
    try:
        return resolve_weights(name_or_path)
    except WeightsNotFoundError:
        if not download or str(name_or_path) not in WEIGHTS:
            raise
    return fetch_weights(str(name_or_path), progress=progress)
