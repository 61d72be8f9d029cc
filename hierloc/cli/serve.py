"""`hierloc serve`: a 3-D map as an HTTP localization service (`hierloc.service`)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from .validators import non_negative_int, port_number, positive_float, positive_int

if TYPE_CHECKING:
    from ..service import ServiceStart


def register(subparsers) -> None:
    """Add the `serve` subcommand."""
    from ..features import MATCHER_NAMES

    p = subparsers.add_parser(
        "serve", help="serve a 3-D map over HTTP: POST an image, get its 6-DoF pose",
        description="A visual positioning service: POST /v1/localize (a JPEG/PNG body or multipart form; camera, "
                    "prior, timestamp, session_id as parameters) answers the pose (T_cam_world and hloc's qw qx qy "
                    "qz tx ty tz), inliers, the place and retrieved keyframes, per-stage timings; POST /v1/retrieve, "
                    "GET /health, /v1/map, /metrics (Prometheus), /openapi.json, /docs. Every request is bounded "
                    "(bytes, pixels, time) and a bounded queue answers 503 with Retry-After when full. SIGTERM or "
                    "Ctrl-C stops it after the requests in flight.")
    p.add_argument("map", help="map folder written by `hierloc map build` (or the demo's outputs/demo/map)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1, this machine only; 0.0.0.0: every interface)")
    p.add_argument("--port", type=port_number, default=8000, help="TCP port (default 8000; 0: a free one)")
    p.add_argument("--token-file", type=Path, default=None,
                   help="file holding a bearer token that every /v1/ and /metrics request must send "
                        "(Authorization: Bearer TOKEN)")
    p.add_argument("--workers", type=positive_int, default=None,
                   help="localizations run at once (default: the usable cores)")
    p.add_argument("--queue", type=non_negative_int, default=None,
                   help="requests that may wait for a worker; beyond, 503 + Retry-After (default 4 per worker)")
    p.add_argument("--threads", type=positive_int, default=None,
                   help="torch/OpenCV/faiss threads per worker (default: usable cores / workers, at least 1)")
    p.add_argument("--max-body-mb", type=positive_float, default=20.0,
                   help="largest request body in MiB (default 20; beyond: 413)")
    p.add_argument("--max-pixels", type=positive_int, default=4096 * 4096,
                   help="most pixels an image may declare in its header, checked before decoding (default "
                        "16777216 = 4096x4096; beyond: 413)")
    p.add_argument("--timeout", type=positive_float, default=30.0,
                   help="seconds from a request's arrival to its answer (default 30; beyond: 504)")
    p.add_argument("--max-connections", type=positive_int, default=None,
                   help="open connections at most (default: workers + queue + 64)")
    p.add_argument("--graceful-timeout", type=positive_float, default=60.0,
                   help="on SIGTERM/SIGINT, seconds that requests in flight may take to finish (default 60)")
    p.add_argument("--max-rerank", type=non_negative_int, default=100,
                   help="most keyframes a /v1/retrieve request may re-rank geometrically (its rerank=K; default "
                        "100; 0: re-ranking off)")
    p.add_argument("--num-retrieved", type=non_negative_int, default=5,
                   help="keyframes retrieved per query (0: all map images)")
    p.add_argument("--max-places", type=positive_int, default=3, help="places tried per query (default 3)")
    p.add_argument("--min-inliers", type=positive_int, default=20, help="fewer PnP inliers is a failure (default 20)")
    p.add_argument("--matcher", default=None, choices=MATCHER_NAMES, help="override the map's matcher")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--no-warm-up", action="store_true", help="listen at once, without a first run of the networks")
    p.add_argument("--access-log", action="store_true", help="a log line per request")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Serve the map until SIGTERM/SIGINT (`hierloc.service.serve`)."""
    from ..localization import LocalizerConfig
    from ..service import ServiceConfig, ServiceLimits, serve

    limits = ServiceLimits(max_body_bytes=int(args.max_body_mb * 1024 * 1024), max_pixels=args.max_pixels,
                           timeout_s=args.timeout, workers=args.workers, queue_size=args.queue,
                           max_connections=args.max_connections, graceful_timeout_s=args.graceful_timeout,
                           max_rerank=args.max_rerank)
    localizer = LocalizerConfig(num_retrieved=args.num_retrieved, max_places=args.max_places,
                                min_inliers=args.min_inliers)
    config = ServiceConfig(Path(args.map), host=args.host, port=args.port, token_file=args.token_file, limits=limits,
                           localizer=localizer, matcher=args.matcher, device=args.device, threads=args.threads,
                           warm_up=not args.no_warm_up, access_log=args.access_log)
    serve(config, on_ready=_print_ready)
    print("stopped", flush=True)
    return 0


def _print_ready(start: ServiceStart) -> None:
    print(f"{start.map_summary}\nloaded in {start.load_seconds:.1f} s; {start.workers} workers x {start.threads} "
          f"threads, queue {start.queue_size}{', bearer token required' if start.token else ''}", flush=True)
    print(f"serving on {start.url} (POST /v1/localize, /v1/retrieve; GET /health, /v1/map, /metrics, /docs)",
          flush=True)
