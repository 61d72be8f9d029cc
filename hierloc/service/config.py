"""What `hierloc serve` runs: the map, where it listens, and every limit of the service."""

from __future__ import annotations

import logging
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..localization import LocalizerConfig

logger = logging.getLogger(__name__)

MIB = 1024 * 1024


def _default_localizer_config() -> LocalizerConfig:
    from ..localization import LocalizerConfig

    return LocalizerConfig()


@dataclass
class ServiceLimits:
    """Bounds on what one request, and all of them together, may cost."""

    max_body_bytes: int = 20 * MIB  # a request body (the encoded image, or the whole multipart form)
    max_pixels: int = 4096 * 4096  # pixels an image may declare in its header; checked before decoding
    timeout_s: float = 30.0  # from admission to answer (reading the body, waiting, decoding, localizing)
    workers: int | None = None  # worker threads; None: the usable cores
    queue_size: int | None = None  # requests waiting for a worker beyond those running; None: 4 per worker
    max_connections: int | None = None  # open connections (uvicorn); None: workers + queue + 64
    retry_after_s: int = 1  # the Retry-After of a 503 when the queue is full
    graceful_timeout_s: float = 60.0  # on SIGTERM/SIGINT: how long requests in flight may take to finish
    max_k: int = 100  # keyframes /v1/retrieve returns at most
    max_rerank: int = 100  # keyframes /v1/retrieve may re-rank geometrically (its `rerank` parameter) at most
    max_sessions: int = 256  # tracked client streams (session_id) kept at once; the least recently used goes
    session_idle_s: float = 300.0  # a session without a frame for this long is forgotten

    def resolved_workers(self) -> int:
        """`workers`, or the usable cores."""
        from ..utils.threads import default_num_threads

        return self.workers or default_num_threads()

    def resolved_queue_size(self) -> int:
        """`queue_size`, or 4 per worker."""
        return 4 * self.resolved_workers() if self.queue_size is None else self.queue_size

    def resolved_max_connections(self) -> int:
        """`max_connections`, or room for every admitted request plus 64 (health checks, refusals)."""
        return self.max_connections or self.resolved_workers() + self.resolved_queue_size() + 64

    def to_json(self) -> dict[str, Any]:
        """The limits in effect (defaults resolved)."""
        return {"max_body_bytes": self.max_body_bytes, "max_pixels": self.max_pixels, "timeout_s": self.timeout_s,
                "workers": self.resolved_workers(), "queue_size": self.resolved_queue_size(),
                "max_connections": self.resolved_max_connections(), "retry_after_s": self.retry_after_s,
                "graceful_timeout_s": self.graceful_timeout_s, "max_k": self.max_k, "max_rerank": self.max_rerank}


@dataclass
class ServiceConfig:
    """`serve`: the map folder (`hierloc map build`) served over HTTP on host:port."""

    map: Path
    host: str = "127.0.0.1"  # loopback only unless told otherwise
    port: int = 8000  # 0: a free port (the one bound is reported to `on_ready`)
    token_file: Path | None = None  # a file holding the bearer token clients must send; None: no token
    limits: ServiceLimits = field(default_factory=ServiceLimits)
    localizer: LocalizerConfig = field(default_factory=_default_localizer_config)
    matcher: str | None = None  # overrides the map's matcher
    device: str = "cpu"
    threads: int | None = None  # torch/OpenCV/faiss threads per worker; None: usable cores / workers (at least 1)
    warm_up: bool = True  # run the networks on a blank frame before listening, so the first request is not slow
    access_log: bool = False  # uvicorn's line per request
    # /v1/retrieve's geometric re-ranking: a hierloc.reranking.RerankConfig of the options (matcher, geometry,
    # thresholds, keypoints); its k and features are set by the service (each request's K; the map's own
    # features.h5 as the reference features, so the map's feature family). None: RerankConfig's defaults.
    rerank: Any = None

    def resolved_threads(self) -> int:
        """Threads per worker: `threads`, or the usable cores shared among the workers (at least 1)."""
        from ..utils.threads import default_num_threads

        return self.threads or max(1, default_num_threads() // self.limits.resolved_workers())


def read_token_file(path: str | os.PathLike) -> str:
    """The bearer token in `path` (surrounding whitespace stripped); ValueError when empty or not one line."""
    path = Path(path)
    token = path.read_text(encoding="utf-8").strip()
    if not token:
        raise ValueError(f"--token-file {path}: the file is empty")
    if any(c.isspace() for c in token) or not token.isprintable():
        raise ValueError(f"--token-file {path}: the token must be one word of printable characters")
    if len(token) < 16:
        logger.warning("the bearer token in %s has %d characters; 32 or more random ones are advisable", path,
                       len(token))
    mode = path.stat().st_mode
    if mode & (stat.S_IRGRP | stat.S_IROTH):
        logger.warning("%s is readable by other users (chmod 600 it)", path)
    return token
