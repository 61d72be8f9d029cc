"""The parameters of /v1/localize and /v1/retrieve (query parameters or multipart fields), checked strictly.

Every parameter is a string on the wire; each is parsed here into a typed value, and anything wrong is a
ValueError with one line that names the parameter, which the service answers as 400.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np

if TYPE_CHECKING:
    from ..maps.types import Camera

MAX_PARAM_CHARS = 512
_SESSION_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
_NAME = re.compile(r"[\w.:/@+-]{1,256}")
_CAMERA_MODEL = re.compile(r"[A-Za-z_]+")
_DIGITS = re.compile(r"[0-9]{1,9}")

# name -> (OpenAPI type, description); shared by the OpenAPI description and the check for unknown parameters.
LOCALIZE_PARAMS: dict[str, tuple[str, str]] = {
    "camera": ("string", "intrinsics as COLMAP's 'MODEL WIDTH HEIGHT PARAMS...' (e.g. 'PINHOLE 640 480 500 500 "
                         "320 240'); the size must be the image's. Default: a guess refined by PnP"),
    "fx": ("number", "focal length in x (pixels): a PINHOLE camera of the image's size with fy, cx, cy"),
    "fy": ("number", "focal length in y (pixels; default fx)"),
    "cx": ("number", "principal point x (pixels; default width / 2)"),
    "cy": ("number", "principal point y (pixels; default height / 2)"),
    "prior": ("string", "prior pose 'qw qx qy qz tx ty tz' (world-to-camera, hloc): the image is localized against "
                        "the keyframes nearest to it (retrieval_path 'prior'), through global retrieval when that "
                        "fails (retrieval_path 'global'); a session that is tracking uses its previous pose instead"),
    "timestamp": ("number", "capture time (seconds); echoed"),
    "session_id": ("string", "a client's stream ([A-Za-z0-9._:-], at most 128 characters): its frames are "
                             "tracked around the previous pose; echoed"),
    "name": ("string", "the query's name in the answer (default 'query')"),
}
RETRIEVE_PARAMS: dict[str, tuple[str, str]] = {
    "k": ("integer", "keyframes to return (default: the localizer's num_retrieved)"),
    "rerank": ("integer", "geometric re-ranking: the top K keyframes by global descriptor are re-sorted by RANSAC "
                          "inliers of their local matches with the image (0, the default: off); each result then "
                          "has its inliers and global_rank, and 'rerank' says whether verification was conclusive"),
    "timestamp": LOCALIZE_PARAMS["timestamp"],
    "session_id": LOCALIZE_PARAMS["session_id"],
    "name": LOCALIZE_PARAMS["name"],
}


@dataclass
class QueryParams:
    """The parsed parameters of one request."""

    name: str = "query"
    camera: Camera | None = None
    pinhole: dict[str, float] | None = None  # fx [fy cx cy]: a PINHOLE camera once the image size is known
    prior: list[float] | None = None  # qw qx qy qz tx ty tz
    timestamp: float | None = None
    session_id: str | None = None
    k: int | None = None
    rerank: int = 0  # re-rank the top `rerank` keyframes (0: off)

    def camera_for(self, width: int, height: int) -> Camera | None:
        """The query camera for an image of width x height; ValueError when the given camera has another size."""
        from ..maps.types import Camera

        if self.pinhole is not None:
            fx = self.pinhole["fx"]
            return Camera.pinhole(fx, self.pinhole.get("fy", fx), self.pinhole.get("cx", width / 2),
                                  self.pinhole.get("cy", height / 2), width, height)
        if self.camera is not None and (self.camera.width, self.camera.height) != (width, height):
            raise ValueError(f"camera is {self.camera.width}x{self.camera.height} but the image {width}x{height}")
        return self.camera

    def prior_pose(self) -> np.ndarray | None:
        """The prior as a 4x4 T_cam_world (None without one)."""
        if self.prior is None:
            return None
        from ..maps.poses import make_pose, qvec_to_rotmat

        return make_pose(qvec_to_rotmat(np.asarray(self.prior[:4])), np.asarray(self.prior[4:]))

    def echo(self) -> dict[str, Any]:
        """What the answer repeats of the request."""
        return {"session_id": self.session_id, "timestamp": self.timestamp, "prior": self.prior}


def _number(key: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"parameter {key!r}: not a number: {text[:40]!r}") from None
    if not math.isfinite(value):
        raise ValueError(f"parameter {key!r}: must be finite, got {text[:40]!r}")
    return value


def _camera(text: str) -> Camera:
    """`hierloc.pipelines.localizing.parse_camera` on 'MODEL W H params...' text only (never a file path)."""
    from ..pipelines.localizing import parse_camera

    parts = text.replace(",", " ").split()
    if len(parts) < 4 or not _CAMERA_MODEL.fullmatch(parts[0]) or "/" in text or "\\" in text:
        raise ValueError(f"parameter 'camera': expected 'MODEL WIDTH HEIGHT PARAMS...', got {text[:60]!r}")
    try:
        camera = parse_camera(" ".join(parts))
    except ValueError as exc:
        reason = str(exc).split(": ", 1)[-1]  # without parse_camera's "--camera 'TEXT': " prefix
        raise ValueError(f"parameter 'camera': {reason}") from None
    if not np.all(np.isfinite(camera.params)):
        raise ValueError("parameter 'camera': parameters must be finite")
    return camera


def _prior(text: str) -> list[float]:
    values = [_number("prior", v) for v in text.replace(",", " ").split()]
    if len(values) != 7:
        raise ValueError(f"parameter 'prior': expected 7 numbers 'qw qx qy qz tx ty tz', got {len(values)}")
    if np.linalg.norm(values[:4]) < 1e-6:
        raise ValueError("parameter 'prior': the quaternion is zero")
    from ..maps.poses import qvec_to_rotmat

    try:
        qvec_to_rotmat(np.asarray(values[:4]))
    except ValueError as exc:
        raise ValueError(f"parameter 'prior': {exc}") from None
    return values


def _count(key: str, text: str, low: int, high: int) -> int:
    """An integer from `low` to `high` written in ASCII digits (not '1.0', '+1', '1e3', or other scripts' digits)."""
    if not _DIGITS.fullmatch(text) or not low <= int(text) <= high:
        raise ValueError(f"parameter {key!r}: an integer from {low} to {high}, got {text[:40]!r}")
    return int(text)


def parse_params(values: Mapping[str, str], allowed: Mapping[str, tuple[str, str]], max_k: int = 100,
                 max_rerank: int = 100) -> QueryParams:
    """Typed parameters from strings; ValueError (one line) for unknown, malformed or out-of-range ones."""
    unknown = sorted(set(values) - set(allowed))
    if unknown:
        raise ValueError(f"unknown parameter {unknown[0][:40]!r}; known: {', '.join(allowed)}")
    for key, text in values.items():
        if len(text) > MAX_PARAM_CHARS:
            raise ValueError(f"parameter {key!r}: longer than {MAX_PARAM_CHARS} characters")
    params = QueryParams()
    if "name" in values:
        if not _NAME.fullmatch(values["name"]):
            raise ValueError("parameter 'name': 1 to 256 letters, digits or ._:/@+-")
        params.name = values["name"]
    if "session_id" in values:
        if not _SESSION_ID.fullmatch(values["session_id"]):
            raise ValueError("parameter 'session_id': 1 to 128 letters, digits or ._:-")
        params.session_id = values["session_id"]
    if "timestamp" in values:
        params.timestamp = _number("timestamp", values["timestamp"])
    if "prior" in values:
        params.prior = _prior(values["prior"])
    intrinsics = {key: _number(key, values[key]) for key in ("fx", "fy", "cx", "cy") if key in values}
    if intrinsics:
        if "camera" in values:
            raise ValueError("give either 'camera' or 'fx'/'fy'/'cx'/'cy', not both")
        if "fx" not in intrinsics:
            raise ValueError("parameter 'fx' is needed with 'fy', 'cx' or 'cy'")
        if intrinsics["fx"] <= 0 or intrinsics.get("fy", 1.0) <= 0:
            raise ValueError("focal lengths 'fx' and 'fy' must be positive")
        params.pinhole = intrinsics
    if "camera" in values:
        params.camera = _camera(values["camera"])
    if "k" in values:
        params.k = _count("k", values["k"].strip(), 1, max_k)
    if "rerank" in values:
        params.rerank = _count("rerank", values["rerank"].strip(), 0, max_rerank)
    return params
