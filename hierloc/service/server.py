"""`serve(config)`: load the map once, warm the networks, and serve it with uvicorn until SIGTERM/SIGINT."""

from __future__ import annotations

import ipaddress
import logging
import socket
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

if TYPE_CHECKING:
    from ..localization import Localizer
    from .config import ServiceConfig

logger = logging.getLogger(__name__)


@dataclass
class ServiceStart:
    """What `serve` tells its `on_ready` callback once the map is loaded and the socket listens."""

    url: str  # http://HOST:PORT, the port actually bound
    map_summary: str
    load_seconds: float
    workers: int
    queue_size: int
    threads: int  # torch/OpenCV/faiss threads per worker
    token: bool  # whether a bearer token is required


def warm_up(localizer: Localizer, rounds: int = 2) -> None:
    """Run every stage on a blank frame of the map's camera size (network tracing, lazy loading) `rounds` times."""
    camera = localizer.scene.images[0].camera
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, size=(camera.height, camera.width, 3), dtype=np.uint8)
    for _ in range(rounds):
        localizer.localize(image, camera, "warm-up")


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket on host:port (port 0: a free one)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on sockets that say they are TCP, and without it
    # a response's headers and body meet Nagle's algorithm and the client's delayed ACK (40 ms per request).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise OSError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def serve(config: ServiceConfig, on_ready: Callable[[ServiceStart], None] | None = None,
          localizer: Localizer | None = None) -> None:
    """Serve `config.map` (or an already loaded `localizer`) on config.host:config.port until stopped.

    On SIGTERM or SIGINT uvicorn stops accepting connections, waits up to `limits.graceful_timeout_s` for
    the requests in flight, then the pool finishes its jobs and `serve` returns.
    """
    import uvicorn

    from ..localization import Localizer
    from ..utils.threads import configure_threads
    from .app import create_app
    from .config import read_token_file

    token = read_token_file(config.token_file) if config.token_file is not None else None
    if not _is_loopback(config.host) and token is None:
        logger.warning("serving on %s, reachable from other machines, without a bearer token (--token-file)",
                       config.host)
    threads = configure_threads(config.resolved_threads())
    t0 = time.perf_counter()
    if localizer is None:
        localizer = Localizer.load(config.map, config.localizer, device=config.device, matcher=config.matcher)
    if config.warm_up:
        warm_up(localizer)
    load_seconds = time.perf_counter() - t0
    app = create_app(localizer, config, token=token)
    limits = config.limits
    sock = bind_socket(config.host, config.port)
    port = sock.getsockname()[1]
    host = f"[{config.host}]" if ":" in config.host else config.host
    uv_config = uvicorn.Config(app, log_level="warning", access_log=config.access_log, lifespan="on",
                               limit_concurrency=limits.resolved_max_connections(), timeout_keep_alive=5,
                               timeout_graceful_shutdown=int(max(1, round(limits.graceful_timeout_s))),
                               server_header=False, proxy_headers=False)
    server = uvicorn.Server(uv_config)
    if on_ready is not None:
        on_ready(ServiceStart(f"http://{host}:{port}", localizer.scene.summary(), load_seconds,
                              limits.resolved_workers(), limits.resolved_queue_size(), threads, token is not None))
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()


def app_for(config: ServiceConfig, localizer: Localizer | None = None, token: str | None = None) -> Any:
    """The ASGI app of `config` without a server (tests, other ASGI servers); loads the map unless given."""
    from ..localization import Localizer
    from .app import create_app

    if localizer is None:
        localizer = Localizer.load(config.map, config.localizer, device=config.device, matcher=config.matcher)
    return create_app(localizer, config, token=token)
