"""The HTTP localization service as an ASGI app: `create_app(localizer, config)`; `hierloc.service.serve` runs it.

Stack: FastAPI on Starlette, served by uvicorn. Starlette and uvicorn are the most used, actively
maintained ASGI pair in Python (encode/Kludex, frequent releases, security fixes); ASGI lets one event
loop hold many slow uploads while a fixed pool of threads does the CPU/GPU work; FastAPI adds the OpenAPI
description (`/openapi.json`, `/docs`) from the routes without hand-written schemas; uvicorn bounds open
connections and, on SIGTERM/SIGINT, stops accepting, lets requests in flight finish (up to a timeout)
and then runs the app's shutdown, where the pool finishes its jobs. Flask/WSGI would need a thread per
waiting upload, aiohttp has no OpenAPI, and gRPC serves no curl or browser clients.

Endpoints: `POST /v1/localize` and `POST /v1/retrieve` (an encoded JPEG/PNG: the raw body with
Content-Type image/jpeg, image/png or application/octet-stream, or the `image` file of a multipart form;
parameters as query parameters or form fields, see `hierloc.service.params`), `GET /health`, `GET /v1/map`,
`GET /metrics` (Prometheus text). Errors are JSON `{"error": "one line", "status": N}` with a 4xx/5xx code.

`/v1/localize?prior=...` localizes against the keyframes nearest to the prior pose and falls back to global
retrieval (`hierloc.localization.tracking.localize_with_prior`); `/v1/retrieve?rerank=K` re-sorts the top K
keyframes by verified local matches with the map's own features (`hierloc.reranking`, the reranker of
`hierloc query --rerank`, built once per service; see `LocalizationService.reranker`).

A request's path through the limits (`ServiceLimits`): it is admitted to the pool (`BoundedPool`;
503 + Retry-After at once when full), its body is read up to `max_body_bytes` (413; Content-Length is
checked before reading), the image header's declared size is checked against `max_pixels` (413) before
anything is decoded, then decoding and localization run on a worker thread; the whole answer must come
within `timeout_s` (504). With a token, every /v1/ route and /metrics need `Authorization: Bearer TOKEN`
(compared in constant time); /health, /openapi.json and /docs stay open.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import threading
import time
from contextlib import asynccontextmanager
from dataclasses import asdict, replace
from typing import TYPE_CHECKING, Any, AsyncIterator, Mapping

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.datastructures import Headers, UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import ClientDisconnect

from .. import __version__
from ..maps.poses import rotmat_to_qvec
from ..utils.encoded_images import ImageTooLargeError, check_image_header, decode_image_bytes
from ..utils.images import ImageReadError
from ..utils.io import to_json_text
from .metrics import ServiceMetrics
from .params import LOCALIZE_PARAMS, RETRIEVE_PARAMS, QueryParams, parse_params
from .pool import BoundedPool, JobTimeout, Overloaded
from .sessions import SessionTable

if TYPE_CHECKING:
    from ..localization import LocalizationResult, Localizer
    from ..reranking import GeometricReranker
    from .config import ServiceConfig

logger = logging.getLogger(__name__)

IMAGE_TYPES = ("image/jpeg", "image/png", "application/octet-stream")
ACCEPTED_TYPES = (*IMAGE_TYPES, "multipart/form-data")
PROTECTED_PREFIXES = ("/v1/", "/metrics")
ENDPOINTS = ("/v1/localize", "/v1/retrieve", "/v1/map", "/health", "/metrics", "/openapi.json", "/docs")
_STATUS_REASON = {400: "bad_request", 401: "unauthorized", 404: "not_found", 405: "method_not_allowed",
                  408: "timeout", 413: "payload_too_large", 415: "unsupported_media_type", 503: "overloaded",
                  504: "timeout"}


def _set_worker_threads(threads: int) -> None:
    """In a new worker thread: faiss's OpenMP thread count, which is per thread (a new thread gets the process
    default, all cores, not what `configure_threads` set in the main thread). torch sets its own per thread,
    and OpenCV's count is process-wide."""
    try:
        import faiss
    except ImportError:
        return
    faiss.omp_set_num_threads(threads)


class ApiError(Exception):
    """A request answered with an error: HTTP status, one-line reason, the metrics' failure reason, headers."""

    def __init__(self, status: int, reason: str, failure: str | None = None,
                 headers: Mapping[str, str] | None = None) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = " ".join(str(reason).split())  # one line, whatever the message held
        self.failure = failure or _STATUS_REASON.get(status, "internal")
        self.headers = dict(headers or {})


class StrictJSONResponse(Response):
    """JSON without NaN/Infinity (`hierloc.utils.io.to_json_text`), numpy values accepted."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        """Strict JSON bytes of `content`."""
        return to_json_text(content).encode("utf-8")


def error_response(status: int, reason: str, headers: Mapping[str, str] | None = None) -> StrictJSONResponse:
    """The JSON body of every error: {"error": reason, "status": status}."""
    return StrictJSONResponse({"error": reason, "status": status}, status_code=status, headers=dict(headers or {}))


def _image_body_doc(params: Mapping[str, tuple[str, str]]) -> dict[str, Any]:
    """OpenAPI of an image endpoint: its parameters and the accepted bodies."""
    binary = {"schema": {"type": "string", "format": "binary"}}
    fields = {"image": {"type": "string", "format": "binary", "description": "the encoded JPEG or PNG"}}
    fields.update({key: {"type": kind, "description": text} for key, (kind, text) in params.items()})
    return {
        "parameters": [{"name": key, "in": "query", "required": False, "description": text,
                        "schema": {"type": kind}} for key, (kind, text) in params.items()],
        "requestBody": {"required": True, "description": "a JPEG or PNG image, raw or as the multipart field 'image'",
                        "content": {**{t: binary for t in IMAGE_TYPES},
                                    "multipart/form-data": {"schema": {"type": "object", "properties": fields,
                                                                       "required": ["image"]}}}},
    }


_ERROR_DOC = {"description": "an error: {\"error\": \"one-line reason\", \"status\": N}"}
_ERRORS_DOC = {code: _ERROR_DOC for code in (400, 401, 408, 413, 415, 503, 504)}


class _Guard:
    """ASGI middleware: the bearer token of protected routes, and the request count and latency of every route."""

    def __init__(self, app: Any, token: str | None, service: LocalizationService) -> None:
        self.app = app
        self.token = None if token is None else token.encode("utf-8")
        self.service = service  # the state behind the routes (tests and embedding code reach it here)
        self.metrics = service.metrics

    def _auth_error(self, headers: Headers) -> str | None:
        value = headers.get("authorization")
        if not value:
            return "missing bearer token: send 'Authorization: Bearer TOKEN'"
        scheme, _, given = value.partition(" ")
        if scheme.lower() != "bearer" or not given.strip():
            return "malformed Authorization header: expected 'Bearer TOKEN'"
        if not hmac.compare_digest(given.strip().encode("utf-8", "replace"), self.token):
            return "wrong bearer token"
        return None

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        endpoint = path if path in ENDPOINTS else "other"
        start = time.perf_counter()
        status = [500]

        async def send_and_record(message: dict) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            reason = None
            if self.token is not None and path.startswith(PROTECTED_PREFIXES):
                reason = self._auth_error(Headers(scope=scope))
            if reason is not None:
                self.metrics.fail("unauthorized")
                response = error_response(401, reason, {"WWW-Authenticate": 'Bearer realm="hierloc"'})
                await response(scope, receive, send_and_record)
            else:
                await self.app(scope, receive, send_and_record)
        finally:
            self.metrics.requests.labels(endpoint, str(status[0])).inc()
            self.metrics.latency.labels(endpoint).observe(time.perf_counter() - start)


class LocalizationService:
    """The state behind the routes: the localizer, the pool, the limits and the metrics."""

    def __init__(self, localizer: Localizer, config: ServiceConfig) -> None:
        self.localizer = localizer
        self.config = config
        self.limits = config.limits
        threads = config.resolved_threads()
        self.pool = BoundedPool(self.limits.resolved_workers(), self.limits.resolved_queue_size(),
                                initializer=lambda: _set_worker_threads(threads))
        self.metrics = ServiceMetrics(self.pool)
        scene = localizer.scene
        self.retrieval_on = scene.global_index is not None and localizer.config.num_retrieved > 0
        self.sessions = SessionTable(localizer, self.limits.max_sessions, self.limits.session_idle_s)
        self._reranker: GeometricReranker | None = None
        self._reranker_error: str | None = None
        self._reranker_lock = threading.Lock()
        if config.warm_up and self.retrieval_on and self.limits.max_rerank > 0:
            self.reranker(required=False)  # built before the first request that asks for it

    # ------------------------------------------------------------------ re-ranking

    def reranker(self, required: bool = True) -> GeometricReranker | None:
        """The geometric reranker of /v1/retrieve, built once (thread-safe) on first use.

        It is `hierloc query --rerank`'s, through `reranker_for_index` on the map's global index: the map's
        own features.h5 are the reference features, so its features are the map's family; the options
        come from `config.rerank`. When it cannot be built (e.g. missing matcher weights), the reason is
        kept and every request that asks for re-ranking gets it (409); with `required`, as an ApiError.
        """
        with self._reranker_lock:
            if self._reranker is None and self._reranker_error is None:
                try:
                    self._reranker = self._build_reranker()
                except (ValueError, OSError, RuntimeError) as exc:
                    self._reranker_error = " ".join(str(exc).split())[:300]
                    logger.warning("geometric re-ranking is unavailable: %s", self._reranker_error)
        if self._reranker is None and required:
            raise ApiError(409, f"geometric re-ranking is unavailable on this map: {self._reranker_error}",
                           failure="no_rerank")
        return self._reranker

    def _build_reranker(self) -> GeometricReranker:
        from ..features import feature_family
        from ..localization.scene_map import GLOBAL_INDEX_FILE
        from ..reranking import RerankConfig, reranker_for_index

        scene = self.localizer.scene
        folder = scene.root if scene.root is not None else self.config.map
        base = self.config.rerank or RerankConfig()
        config = replace(base, k=max(1, self.limits.max_rerank), features=feature_family(scene.feature_config),
                         device=self.config.device)
        return reranker_for_index(folder / GLOBAL_INDEX_FILE, config)

    def close(self) -> None:
        """Stop the reranker's threads (after the pool has finished its jobs)."""
        with self._reranker_lock:
            if self._reranker is not None:
                self._reranker.close()

    # ------------------------------------------------------------------ reading a request

    async def _read_body(self, request: Request) -> bytes:
        """The body, at most `max_body_bytes` (413 from Content-Length before reading, or while reading)."""
        limit = self.limits.max_body_bytes
        declared = request.headers.get("content-length")
        if declared is not None:
            if not declared.strip().isdigit():
                raise ApiError(400, f"malformed Content-Length {declared[:20]!r}")
            if int(declared) > limit:
                raise ApiError(413, f"body of {int(declared)} bytes exceeds the limit of {limit} bytes")
        chunks, size = [], 0
        try:
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise ApiError(413, f"body exceeds the limit of {limit} bytes")
                chunks.append(chunk)
        except ClientDisconnect:
            raise ApiError(400, "the client disconnected before its body was complete") from None
        return b"".join(chunks)

    async def _read_form(self, request: Request, body: bytes,
                         allowed: Mapping[str, tuple[str, str]]) -> tuple[bytes, dict[str, str]]:
        """The image and the fields of a multipart body (one file, a few short fields)."""
        async def stream() -> AsyncIterator[bytes]:
            yield body

        parser = MultiPartParser(request.headers, stream(), max_files=1, max_fields=len(allowed) + 1,
                                 max_part_size=4096)
        try:
            form = await parser.parse()
        except MultiPartException as exc:
            raise ApiError(400, f"malformed multipart body: {exc}") from None
        try:
            fields: dict[str, str] = {}
            image = None
            for key, value in form.multi_items():
                if isinstance(value, UploadFile):
                    if key != "image":
                        raise ApiError(400, f"multipart file field {key[:40]!r}: the image goes in field 'image'")
                    image = await value.read()
                elif key in fields:
                    raise ApiError(400, f"multipart field {key[:40]!r} given twice")
                else:
                    fields[key] = value
        finally:
            await form.close()
        if image is None:
            raise ApiError(400, "multipart body without the file field 'image'")
        return image, fields

    async def _read_request(self, request: Request, allowed: Mapping[str, tuple[str, str]]
                            ) -> tuple[bytes, QueryParams]:
        """The encoded image and the parsed parameters of an image request (query and form merged)."""
        content_type = request.headers.get("content-type", "")
        media_type = content_type.split(";", 1)[0].strip().lower()
        if not media_type:
            raise ApiError(415, f"Content-Type missing: send one of {', '.join(ACCEPTED_TYPES)}")
        if media_type not in ACCEPTED_TYPES:
            raise ApiError(415, f"Content-Type {media_type[:60]!r} not accepted: send one of "
                                f"{', '.join(ACCEPTED_TYPES)}")
        body = await self._read_body(request)
        values = dict(request.query_params)
        if len(request.query_params.multi_items()) != len(values):
            raise ApiError(400, "a query parameter is given more than once")
        if media_type == "multipart/form-data":
            if "boundary=" not in content_type:
                raise ApiError(400, "multipart Content-Type without a boundary")
            data, fields = await self._read_form(request, body, allowed)
            both = sorted(set(fields) & set(values))
            if both:
                raise ApiError(400, f"parameter {both[0][:40]!r} given both in the query and in the form")
            values.update(fields)
        else:
            data = body
        if not data:
            raise ApiError(400, "empty image: the body holds no bytes")
        try:
            params = parse_params(values, allowed, self.limits.max_k, self.limits.max_rerank)
        except ValueError as exc:
            raise ApiError(400, str(exc)) from None
        return data, params

    async def _admitted(self, request: Request, allowed: Mapping[str, tuple[str, str]], job: Any) -> tuple:
        """Admit the request, read and check it, run `job(image_bytes, params, header, admitted_at)` on a worker;
        (the parameters, what the job returned)."""
        try:
            slot = self.pool.admit()
        except Overloaded as exc:
            raise ApiError(503, f"overloaded: {exc}; retry later",
                           headers={"Retry-After": str(self.limits.retry_after_s)}) from None
        timeout = self.limits.timeout_s
        try:
            try:
                data, params = await asyncio.wait_for(self._read_request(request, allowed), timeout)
            except asyncio.TimeoutError:
                raise ApiError(408, f"the request body did not arrive within {timeout:g} s") from None
            try:
                header = check_image_header(data, self.limits.max_pixels)
            except ImageTooLargeError as exc:
                raise ApiError(413, f"{exc} (--max-pixels)", failure="too_many_pixels") from None
            except ImageReadError as exc:
                raise ApiError(400, f"{exc}") from None
            try:
                return params, await self.pool.run(slot, job, data, params, header, slot.admitted_at,
                                                   timeout=timeout)
            except JobTimeout as exc:
                raise ApiError(504, str(exc)) from None
        finally:
            slot.release_unless_submitted()

    # ------------------------------------------------------------------ the jobs (worker threads)

    def _decode(self, data: bytes) -> tuple[Any, float]:
        t0 = time.perf_counter()
        try:
            image = decode_image_bytes(data, self.limits.max_pixels)
        except ImageTooLargeError as exc:
            raise ApiError(413, str(exc), failure="too_many_pixels") from None
        except ImageReadError as exc:
            raise ApiError(400, str(exc)) from None
        return image, time.perf_counter() - t0

    def _localize_job(self, data: bytes, params: QueryParams, header: Any, admitted_at: float
                      ) -> tuple[LocalizationResult, dict[str, float]]:
        queue_s = time.perf_counter() - admitted_at
        try:
            camera = params.camera_for(header.width, header.height)
        except ValueError as exc:
            raise ApiError(400, f"parameter 'camera': {exc}") from None
        image, decode_s = self._decode(data)
        prior = params.prior_pose()
        if params.session_id is not None:  # a stream: track around the session's previous pose (or the prior)
            result = self.sessions.tracker(params.session_id).track(image, camera, params.name, prior=prior)
        elif prior is not None:  # the keyframes near the prior, global retrieval when that fails
            from ..localization.tracking import localize_with_prior

            result = localize_with_prior(self.localizer, image, camera, params.name, prior)
        else:
            result = self.localizer.localize(image, camera, params.name)
        return result, {"queue": queue_s, "decode": decode_s}

    def _retrieve_job(self, data: bytes, params: QueryParams, header: Any, admitted_at: float
                      ) -> tuple[dict[str, Any], dict[str, float]]:
        queue_s = time.perf_counter() - admitted_at
        reranker = self.reranker() if params.rerank else None  # 409 before any work when it cannot be built
        image, decode_s = self._decode(data)
        t0 = time.perf_counter()
        if reranker is None:
            names = self.localizer.retrieve(image, k=params.k)
            return {"retrieved": names}, {"queue": queue_s, "decode": decode_s,
                                          "retrieval": time.perf_counter() - t0}
        from ..pipelines.indexing import rerank_hits

        k = min(params.k or self.localizer.config.num_retrieved, len(self.localizer.scene))
        hits = self._retrieve_hits(image, max(k, params.rerank))
        retrieval_s = time.perf_counter() - t0
        hits, outcome = rerank_hits(reranker, image, hits, params.rerank)
        hits = hits[:k]
        answer = {"retrieved": [hit.name for hit in hits], "results": [hit.to_json() for hit in hits],
                  "rerank": {"k": params.rerank, "conclusive": outcome.conclusive,
                             "timings_ms": {key: 1e3 * value for key, value in outcome.timings.items()}}}
        return answer, {"queue": queue_s, "decode": decode_s, "retrieval": retrieval_s,
                        "rerank": outcome.timings.get("total", 0.0)}

    def _retrieve_hits(self, image: Any, k: int) -> list:
        """The top-k keyframes with their distances (`QueryHit`s, as `hierloc query` reports them)."""
        from ..pipelines.indexing import QueryHit

        return [QueryHit.from_retrieval(hit) for hit in self.localizer.retrieve_hits(image, k)]

    # ------------------------------------------------------------------ the routes

    async def localize(self, request: Request) -> dict[str, Any]:
        """POST /v1/localize."""
        start = time.perf_counter()
        params, (result, extra) = await self._admitted(request, LOCALIZE_PARAMS, self._localize_job)
        if not result.success:
            self.metrics.fail("not_localized")
        answer = result.to_json()
        T = result.T_cam_world
        answer["T_cam_world"] = None if T is None else T.tolist()
        answer["qvec_tvec"] = None if T is None else [*rotmat_to_qvec(T[:3, :3]).tolist(), *T[:3, 3].tolist()]
        answer["timings_s"] = {**answer["timings_s"], **extra, "service": time.perf_counter() - start}
        answer.update(params.echo())
        return answer

    async def retrieve(self, request: Request) -> dict[str, Any]:
        """POST /v1/retrieve."""
        if not self.retrieval_on:
            raise ApiError(409, "this map has no global index (or retrieval is off): nothing to retrieve",
                           failure="no_retrieval")
        start = time.perf_counter()
        params, (answer, timings) = await self._admitted(request, RETRIEVE_PARAMS, self._retrieve_job)
        return {"name": params.name, **answer, "k": len(answer["retrieved"]),
                "timings_s": {**timings, "service": time.perf_counter() - start}, **params.echo()}

    def map_info(self) -> dict[str, Any]:
        """GET /v1/map."""
        scene = self.localizer.scene
        return {"map": str(self.config.map), "summary": scene.summary(), "images": len(scene),
                "points": scene.num_points, "missions": sorted({im.mission for im in scene.images}),
                "features": scene.feature_config, "matcher": scene.matcher_config,
                "global_model": scene.global_model, "retrieval": self.retrieval_on,
                "localizer": asdict(self.localizer.config), "device": str(self.localizer.device),
                "rerank": self._rerank_info(),
                "limits": self.limits.to_json(), "hierloc_version": __version__}

    def _rerank_info(self) -> dict[str, Any] | None:
        """The reranker's options and reference features, why it is unavailable, or None before its first use."""
        if self._reranker is not None:
            references = self._reranker.references.path
            return {"config": self._reranker.config.to_json(),
                    "reference_features": None if references is None else str(references)}
        return None if self._reranker_error is None else {"error": self._reranker_error}

    def health(self) -> dict[str, Any]:
        """GET /health."""
        pool = self.pool
        return {"status": "ok", "workers": pool.workers, "running": pool.running, "waiting": pool.waiting,
                "queue_size": pool.queue_size, "images": len(self.localizer.scene)}


def create_app(localizer: Localizer, config: ServiceConfig, token: str | None = None) -> Any:
    """The ASGI app serving `localizer` under `config.limits`; with `token`, bearer authentication (see module)."""
    service = LocalizationService(localizer, config)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        # uvicorn has let the requests in flight finish; the workers finish what they still run.
        service.pool.shutdown(wait=True)
        service.close()

    app = FastAPI(title="hierloc visual positioning service", version=__version__, lifespan=lifespan,
                  default_response_class=StrictJSONResponse,
                  description="6-DoF localization of a camera image against a hierloc 3-D map "
                              "(`hierloc serve MAP`). Errors: {\"error\": \"one-line reason\", \"status\": N}.")
    app.state.service = service

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> Response:
        service.metrics.fail(exc.failure)
        return error_response(exc.status, exc.reason, exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> Response:
        service.metrics.fail(_STATUS_REASON.get(exc.status_code, "internal"))
        return error_response(exc.status_code, str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> Response:
        service.metrics.fail("bad_request")
        first = (exc.errors() or [{}])[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        return error_response(400, f"{where}: {first.get('msg', 'invalid request')}")

    @app.exception_handler(Exception)
    async def _internal_error(_: Request, exc: Exception) -> Response:
        logger.exception("internal error")
        service.metrics.fail("internal")
        return error_response(500, f"internal error: {type(exc).__name__}: {' '.join(str(exc).split())[:200]}")

    @app.post("/v1/localize", summary="6-DoF pose of one image", responses=_ERRORS_DOC,
              openapi_extra=_image_body_doc(LOCALIZE_PARAMS))
    async def localize(request: Request) -> Any:
        """Localize an encoded image: success, T_cam_world (4x4, world-to-camera), hloc's qw qx qy qz tx ty tz
        (`qvec_tvec`), inliers, the place that won, the retrieved keyframes, per-stage timings (seconds)."""
        return StrictJSONResponse(await service.localize(request))

    @app.post("/v1/retrieve", summary="top-k keyframes of one image", responses={**_ERRORS_DOC, 409: _ERROR_DOC},
              openapi_extra=_image_body_doc(RETRIEVE_PARAMS))
    async def retrieve(request: Request) -> Any:
        """The map's keyframes most similar to an encoded image, best first: by global descriptor, or with
        `rerank=K` the top K re-sorted by RANSAC inliers of local matches (`results`: each keyframe's rank,
        distance, inliers, global_rank; `rerank.conclusive`: false when no candidate was verified and the
        global order was kept)."""
        return StrictJSONResponse(await service.retrieve(request))

    @app.get("/v1/map", summary="what is loaded")
    async def map_info() -> Any:
        """The map (images, points, features, describer, search), the localizer settings and the limits."""
        return StrictJSONResponse(service.map_info())

    @app.get("/health", summary="liveness and load")
    async def health() -> Any:
        """'ok' with the workers, the jobs running and waiting; open without a token."""
        return StrictJSONResponse(service.health())

    @app.get("/metrics", summary="Prometheus metrics")
    async def metrics() -> Response:
        """Requests, latency histogram, queue depth, failures by reason (Prometheus text format)."""
        from prometheus_client import CONTENT_TYPE_LATEST

        return Response(service.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    return _Guard(app, token, service)
