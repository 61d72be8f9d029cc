"""A small Python client of the localization service (`hierloc serve`), on the standard library only.

    from hierloc.client import HierlocClient

    client = HierlocClient("http://127.0.0.1:8000", token=None)
    answer = client.localize("frame.jpg", camera="PINHOLE 640 480 500 500 320 240")
    if answer["success"]:
        T_cam_world = answer["T_cam_world"]          # 4x4 list, world-to-camera; answer["qvec_tvec"]: hloc's 7 numbers
    client.retrieve("frame.jpg", k=5)["retrieved"]   # names of the top-5 keyframes
    client.retrieve("frame.jpg", k=5, rerank=20)     # the top 20 re-sorted by verified local matches ("results")
    client.localize("frame.jpg", prior=[1, 0, 0, 0, 0, 0, 0])  # near a prior pose first ("retrieval_path": "prior")
    client.health()

An image is a file path, the encoded bytes of a JPEG/PNG, or an array (HxW or HxWx3 RGB, sent as a lossless
PNG). Errors of the service raise `ServiceError` with its status and one-line reason (and Retry-After for
503). One connection is kept per thread; an instance may be shared by threads.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import threading
import time
from pathlib import Path
from typing import Any, Mapping
from urllib.parse import urlencode, urlsplit

_STALE_CONNECTION = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError)


class ServiceError(RuntimeError):
    """The service answered an error: `status`, its one-line `reason`, `retry_after` seconds (503) or None."""

    def __init__(self, status: int, reason: str, retry_after: float | None = None) -> None:
        super().__init__(f"HTTP {status}: {reason}")
        self.status = status
        self.reason = reason
        self.retry_after = retry_after


def encode_image(image: Any) -> tuple[bytes, str]:
    """(encoded bytes, content type) of a file path, JPEG/PNG bytes, or an RGB/grayscale array (PNG, lossless)."""
    if isinstance(image, (bytes, bytearray, memoryview)):
        data = bytes(image)
    elif isinstance(image, (str, os.PathLike)):
        data = Path(image).read_bytes()
    else:
        import cv2
        import numpy as np

        array = np.asarray(image)
        if array.ndim == 3:
            array = cv2.cvtColor(array, cv2.COLOR_RGB2BGR)
        ok, encoded = cv2.imencode(".png", array)
        if not ok:
            raise ValueError(f"cannot encode an array of shape {array.shape} and dtype {array.dtype} as PNG")
        data = encoded.tobytes()
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return data, "image/png"
    if data.startswith(b"\xff\xd8"):
        return data, "image/jpeg"
    return data, "application/octet-stream"


def camera_text(camera: Any) -> str:
    """'MODEL W H params...' of a hierloc Camera (or the text itself)."""
    if isinstance(camera, str):
        return camera
    params = " ".join(repr(float(p)) for p in camera.params)
    return f"{camera.model} {camera.width} {camera.height} {params}"


class HierlocClient:
    """Client of one service at `url` (http://HOST:PORT), with an optional bearer `token`."""

    def __init__(self, url: str, token: str | None = None, timeout: float = 60.0, retries_on_503: int = 0) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"expected http://HOST:PORT, got {url!r}")
        self.url = url.rstrip("/")
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._port = parts.port or (443 if self._https else 80)
        self._prefix = parts.path.rstrip("/")
        self.token = token
        self.timeout = timeout
        self.retries_on_503 = retries_on_503
        self._local = threading.local()

    # ------------------------------------------------------------------ transport

    def _connection(self, fresh: bool = False) -> http.client.HTTPConnection:
        connection = getattr(self._local, "connection", None)
        if connection is None or fresh:
            if connection is not None:
                connection.close()
            kind = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
            connection = kind(self._host, self._port, timeout=self.timeout)
            connection.connect()
            # http.client sends the headers and the body in two writes: without TCP_NODELAY, Nagle's algorithm
            # holds the body until the server's delayed ACK of the headers (40 ms on Linux).
            connection.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._local.connection = connection
        return connection

    def _send(self, method: str, path: str, body: bytes | None, headers: dict[str, str]) -> tuple[int, dict, bytes]:
        for attempt in range(2):
            reused = getattr(self._local, "connection", None) is not None
            connection = self._connection()
            try:
                connection.request(method, self._prefix + path, body=body, headers=headers)
                response = connection.getresponse()
                data = response.read()
            except _STALE_CONNECTION:
                connection.close()
                self._local.connection = None
                if attempt == 0 and reused:  # the server closed an idle kept-alive connection: reconnect once
                    continue
                raise
            except Exception:
                connection.close()
                self._local.connection = None
                raise
            if response.getheader("connection", "").lower() == "close":
                connection.close()
                self._local.connection = None
            return response.status, {k.lower(): v for k, v in response.getheaders()}, data
        raise AssertionError("unreachable")

    def request(self, method: str, path: str, body: bytes | None = None, content_type: str | None = None,
                params: Mapping[str, Any] | None = None) -> tuple[int, dict, bytes]:
        """One request (with the token, retrying 503 `retries_on_503` times); (status, headers, body)."""
        query = {k: v for k, v in (params or {}).items() if v is not None}
        if query:
            path = f"{path}?{urlencode(query)}"
        headers = {"Accept": "application/json"}
        if content_type:
            headers["Content-Type"] = content_type
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        for attempt in range(self.retries_on_503 + 1):
            status, response_headers, data = self._send(method, path, body, headers)
            if status != 503 or attempt == self.retries_on_503:
                return status, response_headers, data
            time.sleep(float(response_headers.get("retry-after", "1") or 1))
        raise AssertionError("unreachable")

    def _json(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        status, headers, data = self.request(method, path, **kwargs)
        try:
            answer = json.loads(data) if data else {}
        except ValueError:
            answer = {"error": data[:200].decode("utf-8", "replace")}
        if status >= 400:
            retry_after = headers.get("retry-after")
            raise ServiceError(status, str(answer.get("error") or answer.get("detail") or data[:200]),
                               float(retry_after) if retry_after else None)
        return answer

    # ------------------------------------------------------------------ the endpoints

    def localize(self, image: Any, camera: Any = None, *, prior: Any = None, timestamp: float | None = None,
                 session_id: str | None = None, name: str | None = None) -> dict[str, Any]:
        """POST /v1/localize: the answer (success, T_cam_world, qvec_tvec, num_inliers, place, retrieved, ...).

        `camera`: a hierloc Camera or 'MODEL W H params...'; `prior`: 7 numbers qw qx qy qz tx ty tz
        (world-to-camera): the image is localized near it first ("retrieval_path": "prior"), else globally.
        """
        data, content_type = encode_image(image)
        params = {"camera": None if camera is None else camera_text(camera), "timestamp": timestamp,
                  "session_id": session_id, "name": name,
                  "prior": None if prior is None else " ".join(repr(float(v)) for v in prior)}
        return self._json("POST", "/v1/localize", body=data, content_type=content_type, params=params)

    def retrieve(self, image: Any, k: int | None = None, *, rerank: int | None = None,
                 session_id: str | None = None, name: str | None = None) -> dict[str, Any]:
        """POST /v1/retrieve: {"retrieved": [keyframe names, best first], ...}.

        `rerank` K > 0: the top K are re-sorted by RANSAC inliers of local matches; the answer then also has
        "results" (per keyframe: rank, name, distance, inliers, global_rank) and "rerank" ({"k", "conclusive",
        "timings_ms"}; not conclusive: no candidate was verified and the global order was kept).
        """
        data, content_type = encode_image(image)
        return self._json("POST", "/v1/retrieve", body=data, content_type=content_type,
                          params={"k": k, "rerank": rerank, "session_id": session_id, "name": name})

    def health(self) -> dict[str, Any]:
        """GET /health."""
        return self._json("GET", "/health")

    def map_info(self) -> dict[str, Any]:
        """GET /v1/map: the map, the localizer settings and the limits."""
        return self._json("GET", "/v1/map")

    def metrics(self) -> str:
        """GET /metrics: Prometheus text."""
        status, _, data = self.request("GET", "/metrics")
        if status >= 400:
            raise ServiceError(status, data[:200].decode("utf-8", "replace"))
        return data.decode("utf-8")

    def close(self) -> None:
        """Close this thread's connection."""
        connection = getattr(self._local, "connection", None)
        if connection is not None:
            connection.close()
            self._local.connection = None
