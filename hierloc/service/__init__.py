"""The HTTP localization service (`hierloc serve MAP`): a 3-D map served as a visual positioning service.

    from hierloc.service import ServiceConfig, serve
    serve(ServiceConfig(map=Path("outputs/demo/map")))          # http://127.0.0.1:8000 until SIGTERM

`hierloc.service.app` holds the routes (and why FastAPI + uvicorn), `hierloc.service.pool` the bounded
worker pool, `hierloc.service.params` the request parameters, `hierloc.service.metrics` the Prometheus
metrics; `hierloc.client.HierlocClient` talks to it. Needs the `serve` extra (fastapi, uvicorn,
prometheus_client, python-multipart); the web modules are imported only when a server or app is made.
"""

from .config import ServiceConfig, ServiceLimits, read_token_file
from .server import ServiceStart, app_for, serve, warm_up

__all__ = ["ServiceConfig", "ServiceLimits", "ServiceStart", "app_for", "read_token_file", "serve", "warm_up"]
