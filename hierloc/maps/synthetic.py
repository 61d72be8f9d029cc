"""A deterministic synthetic world for tests and demos: a textured ring corridor rendered with exact poses and depth.

The scene (world frame z-up, metres) is a 16 x 12 x 3 m room with a 8 x 4 m block in the middle,
forming a ring corridor 4 m wide, with crates and a pillar along the walls. Every wall, floor and
ceiling segment and crate face is a planar quad with its own seeded procedural texture
(`hierloc.maps.textures`). Rendering warps each visible quad into the image with its
plane-to-image homography (`cv2.warpPerspective`, mip-mapped) and keeps the nearest surface per
pixel with a z-buffer on inverse depth (linear in pixel coordinates for a plane).

Missions drive around the corridor loop (counter-clockwise, camera 1.4 m high, looking along the
path) with different lighting (gain, gamma, colour cast, light direction, headlight), blur, noise
and small pose offsets. Poses are T_world_cam (OpenCV camera axes), cameras PINHOLE with COLMAP
pixel centres (+0.5), depth is z in the camera frame in metres.
"""

from __future__ import annotations

import functools
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from scipy.spatial.transform import Rotation
from tqdm import tqdm

from hierloc.maps import textures
from hierloc.maps.poses import invert_pose, make_pose, write_cameras_txt, write_pose_csv, write_tum
from hierloc.maps.types import Camera, Keyframe, Map, Mission
from hierloc.utils.io import atomic_path, atomic_write_bytes
from hierloc.utils.threads import default_num_threads

logger = logging.getLogger(__name__)

ROOM = (16.0, 12.0, 3.0)  # x, y extent and height
BLOCK = (4.0, 4.0, 12.0, 8.0)  # x0, y0, x1, y1 of the central block
CRATES = (  # x0, y0, size x, size y, height: along the walls, at least 0.9 m from the path
    (5.0, 0.2, 1.2, 0.8, 0.9),
    (9.5, 3.1, 0.7, 0.8, 1.1),
    (15.0, 5.0, 0.8, 1.5, 0.7),
    (12.2, 6.5, 0.6, 0.6, 1.6),
    (7.0, 11.1, 1.5, 0.7, 0.6),
    (0.3, 7.0, 0.8, 0.8, 0.8),
    (0.2, 0.2, 1.0, 1.0, 1.2),
    (3.3, 5.0, 0.6, 1.2, 0.5),
    (10.0, 8.1, 0.4, 0.4, 3.0),
)
PATH_CORNERS = (2.0, 2.0, 14.0, 10.0)  # the corridor centre line, a rounded rectangle
PATH_RADIUS = 1.5
CAMERA_HEIGHT = 1.4
NEAR = 0.05
MAX_TILE = 2.0  # metres; quads are split so that culling and mip levels stay local
# R_body_cam for a body frame x forward, y left, z up and the OpenCV camera frame.
_R_BODY_CAM = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])


@dataclass(frozen=True)
class Appearance:
    """Lighting and sensor effects of one rendering."""

    gain: float = 1.0
    gamma: float = 1.0
    color: tuple[float, float, float] = (1.0, 1.0, 1.0)
    ambient: float = 0.6  # share of light that ignores surface orientation
    light_dir: tuple[float, float, float] = (0.4, 0.3, 1.0)  # towards the light, world frame
    headlight: float = 0.0  # share of light from a lamp on the camera (falls off with depth)
    vignetting: float = 0.0
    blur_sigma: float = 0.0  # pixels
    noise_sigma: float = 0.0  # grey levels (0..255)


APPEARANCES: dict[str, Appearance] = {
    "day": Appearance(noise_sigma=1.5),
    "dusk": Appearance(gain=0.8, gamma=1.15, color=(1.12, 0.92, 0.75), light_dir=(-0.6, 0.2, 0.5), ambient=0.45,
                       vignetting=0.25, blur_sigma=0.7, noise_sigma=3.0),
    "night": Appearance(gain=1.1, gamma=1.35, color=(0.8, 0.9, 1.15), ambient=0.25, light_dir=(0.0, 0.0, 1.0),
                        headlight=0.8, vignetting=0.4, blur_sigma=1.0, noise_sigma=6.0),
    "overcast": Appearance(gain=1.05, gamma=0.85, color=(0.95, 1.0, 1.05), ambient=0.85, blur_sigma=0.5,
                           noise_sigma=2.5),
}


@dataclass(eq=False)
class Quad:
    """A textured planar quad: points origin + s * u + t * v for s, t in [0, 1]; visible from the `normal` side."""

    name: str
    origin: np.ndarray
    u: np.ndarray
    v: np.ndarray
    mips: list[np.ndarray] = field(repr=False)  # level 0 first, each half the size of the previous
    normal: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        n = np.cross(self.v, self.u)  # texture rows go along v, columns along u: v x u faces the viewer
        self.normal = n / np.linalg.norm(n)

    def tiles(self) -> list[tuple[float, float, float, float]]:
        """(s0, s1, t0, t1) of sub-quads at most MAX_TILE metres wide."""
        ns = max(1, int(np.ceil(np.linalg.norm(self.u) / MAX_TILE - 1e-9)))
        nt = max(1, int(np.ceil(np.linalg.norm(self.v) / MAX_TILE - 1e-9)))
        return [(i / ns, (i + 1) / ns, j / nt, (j + 1) / nt) for i in range(ns) for j in range(nt)]


def _mipmaps(texture: np.ndarray, levels: int = 5) -> list[np.ndarray]:
    mips = [texture]
    while len(mips) < levels and min(mips[-1].shape[:2]) >= 16:
        mips.append(cv2.pyrDown(mips[-1]))
    for level in mips:
        level.flags.writeable = False  # shared through the scene cache
    return mips


def _texture_size(length: float, ppm: float) -> int:
    # Multiples of 32 texels keep every pyrDown level an exact halving (texel centres stay aligned).
    return max(32, int(np.ceil(length * ppm / 32.0)) * 32)


def _make_quad(name: str, origin, u, v, texture_fn, ppm: float) -> Quad:
    u, v = np.asarray(u, float), np.asarray(v, float)
    width, height = _texture_size(np.linalg.norm(u), ppm), _texture_size(np.linalg.norm(v), ppm)
    return Quad(name, np.asarray(origin, float), u, v, _mipmaps(texture_fn(width, height)))


def _wall(name: str, a, b, height: float, facing, texture_fn, ppm: float) -> Quad:
    """Vertical quad from floor points a to b, texture upright, visible from the `facing` side."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    u, v = np.r_[b - a, 0.0], np.array([0.0, 0.0, -height])
    if np.dot(np.cross(v, u), facing) < 0:  # swap ends so that the viewer sees the texture unmirrored
        a, b = b, a
        u = -u
    return _make_quad(name, np.r_[a, height], u, v, texture_fn, ppm)


def _horizontal(name: str, x0, y0, x1, y1, z: float, up: bool, texture_fn, ppm: float) -> Quad:
    if up:
        return _make_quad(name, (x0, y1, z), (x1 - x0, 0, 0), (0, y0 - y1, 0), texture_fn, ppm)
    return _make_quad(name, (x0, y0, z), (x1 - x0, 0, 0), (0, y1 - y0, 0), texture_fn, ppm)


@functools.lru_cache(maxsize=4)
def _build_scene(seed: int, ppm: float) -> tuple[Quad, ...]:
    """All quads of the world; cached because textures take a fraction of a second to generate."""
    counter = iter(range(10_000))

    def rng() -> np.random.Generator:
        return np.random.default_rng([seed, next(counter)])

    # Walls differ in hue, brightness and style so that places stay distinguishable in grey levels too.
    styles = np.random.default_rng([seed, 9999]).permutation(np.resize(textures.WALL_STYLES, 8))
    values = np.random.default_rng([seed, 9998]).permutation(np.linspace(0.35, 0.9, 8))

    def wall_fn(k: int):
        return lambda w, h, r=rng(): textures.wall_texture(r, w, h, ppm, k * 0.618034, str(styles[k]), float(values[k]))

    X, Y, H = ROOM
    bx0, by0, bx1, by1 = BLOCK
    quads: list[Quad] = []
    outer = [((0, 0), (X, 0), (0, 1)), ((X, 0), (X, Y), (-1, 0)), ((X, Y), (0, Y), (0, -1)), ((0, Y), (0, 0), (1, 0))]
    for k, (a, b, facing) in enumerate(outer):
        quads.append(_wall(f"outer_wall_{k}", a, b, H, np.r_[facing, 0], wall_fn(k), ppm))
    inner = [((bx0, by0), (bx1, by0), (0, -1)), ((bx1, by0), (bx1, by1), (1, 0)),
             ((bx1, by1), (bx0, by1), (0, 1)), ((bx0, by1), (bx0, by0), (-1, 0))]
    for k, (a, b, facing) in enumerate(inner):
        quads.append(_wall(f"block_wall_{k}", a, b, H, np.r_[facing, 0], wall_fn(k + 4), ppm))
    # Floor and ceiling only over the corridor, one segment per side (each with its own texture).
    segments = [(0, 0, X, by0), (bx1, by0, X, by1), (0, by1, X, Y), (0, by0, bx0, by1)]
    for k, (x0, y0, x1, y1) in enumerate(segments):
        quads.append(_horizontal(f"floor_{k}", x0, y0, x1, y1, 0.0, True,
                                 lambda w, h, r=rng(): textures.floor_texture(r, w, h, ppm * 0.75), ppm * 0.75))
        quads.append(_horizontal(f"ceiling_{k}", x0, y0, x1, y1, H, False,
                                 lambda w, h, r=rng(): textures.ceiling_texture(r, w, h, ppm * 0.5), ppm * 0.5))
    for k, (x0, y0, sx, sy, sz) in enumerate(CRATES):
        x1, y1 = x0 + sx, y0 + sy
        sides = [((x0, y0), (x1, y0), (0, -1)), ((x1, y0), (x1, y1), (1, 0)),
                 ((x1, y1), (x0, y1), (0, 1)), ((x0, y1), (x0, y0), (-1, 0))]
        for f, (a, b, facing) in enumerate(sides):
            quads.append(_wall(f"crate_{k}_{f}", a, b, sz, np.r_[facing, 0],
                               lambda w, h, r=rng(): textures.crate_texture(r, w, h, ppm), ppm))
        if sz < H:
            quads.append(_horizontal(f"crate_{k}_top", x0, y0, x1, y1, sz, True,
                                     lambda w, h, r=rng(): textures.crate_texture(r, w, h, ppm), ppm))
    return tuple(quads)


def _clip_near(points: np.ndarray, near: float) -> np.ndarray:
    """Sutherland-Hodgman clipping of a convex polygon (camera frame) to z >= near."""
    out = []
    n = len(points)
    for i in range(n):
        p, q = points[i], points[(i + 1) % n]
        p_in, q_in = p[2] >= near, q[2] >= near
        if p_in:
            out.append(p)
        if p_in != q_in:
            out.append(p + (q - p) * ((near - p[2]) / (q[2] - p[2])))
    return np.array(out).reshape(-1, 3)


def _polygon_mask(polygon: np.ndarray, x0: int, y0: int, x1: int, y1: int, eps: float = 1e-3) -> np.ndarray:
    """Pixels (integer centres) of the ROI inside a convex polygon, up to `eps` pixels outside.

    Exact half-plane tests rather than cv2.fillConvexPoly, whose rasteriser also covers pixels
    whose centres lie outside the polygon and would then get the depth of the wrong surface.
    """
    xs = np.arange(x0, x1, dtype=np.float64)
    ys = np.arange(y0, y1, dtype=np.float64)
    x, y = polygon[:, 0], polygon[:, 1]
    orientation = 1.0 if np.sum(x * np.roll(y, -1) - np.roll(x, -1) * y) >= 0 else -1.0
    inside = np.ones((y1 - y0, x1 - x0), bool)
    for i in range(len(polygon)):
        p, q = polygon[i], polygon[(i + 1) % len(polygon)]
        nx, ny = orientation * (p[1] - q[1]), orientation * (q[0] - p[0])  # inward normal
        norm = np.hypot(nx, ny)
        if norm < 1e-12:
            continue
        row = ((xs - p[0]) * (nx / norm)).astype(np.float32)
        column = ((ys - p[1]) * (ny / norm) + eps).astype(np.float32)
        inside &= (row[None, :] + column[:, None]) >= 0
    return inside


@functools.lru_cache(maxsize=1)
def _loop_polyline(samples: int = 4000) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Dense (arc length, xy, heading) of the rounded-rectangle corridor centre line."""
    x0, y0, x1, y1 = PATH_CORNERS
    r = PATH_RADIUS
    centres = [(x1 - r, y0 + r), (x1 - r, y1 - r), (x0 + r, y1 - r), (x0 + r, y0 + r)]
    points = []
    for k, (cx, cy) in enumerate(centres):
        angles = np.linspace(-np.pi / 2 + k * np.pi / 2, k * np.pi / 2, 100)
        points.append(np.c_[cx + r * np.cos(angles), cy + r * np.sin(angles)])
    polygon = np.concatenate(points + [points[0][:1]])  # straight segments join consecutive arcs
    seg = np.linalg.norm(np.diff(polygon, axis=0), axis=1)
    length = np.r_[0.0, np.cumsum(seg)]
    s = np.linspace(0.0, length[-1], samples)
    xy = np.c_[np.interp(s, length, polygon[:, 0]), np.interp(s, length, polygon[:, 1])]
    d = np.gradient(xy, axis=0)
    d[0] = d[-1] = xy[1] - xy[-2]  # closed loop: same tangent at both ends
    return s, xy, np.unwrap(np.arctan2(d[:, 1], d[:, 0]))


class SyntheticWorld:
    """The seeded textured corridor world: geometry, trajectories and rendering."""

    def __init__(self, seed: int = 0, texels_per_metre: float = 128.0) -> None:
        self.seed = int(seed)
        self.texels_per_metre = float(texels_per_metre)
        self.quads = _build_scene(self.seed, self.texels_per_metre)
        self._tiles = [(q, tile) for q in self.quads for tile in q.tiles()]
        corners = []
        for quad, (s0, s1, t0, t1) in self._tiles:
            st = [(s0, t0), (s1, t0), (s1, t1), (s0, t1)]
            corners.append([quad.origin + s * quad.u + t * quad.v for s, t in st])
        self._tile_corners = np.asarray(corners)  # (T, 4, 3) world
        self._tile_quad = np.array([self.quads.index(q) for q, _ in self._tiles])

    @property
    def loop_length(self) -> float:
        """Length of the corridor loop in metres."""
        return float(_loop_polyline()[0][-1])

    @staticmethod
    def default_camera(image_size: tuple[int, int] = (640, 480)) -> Camera:
        """PINHOLE camera of about 64 degrees horizontal field of view, principal point at the centre."""
        width, height = image_size
        f = 0.8 * width
        return Camera.pinhole(f, f, width / 2.0, height / 2.0, width, height)

    def loop_pose(self, s: float, lateral: float = 0.0, height: float = CAMERA_HEIGHT,
                  yaw: float = 0.0, pitch: float = 0.0, roll: float = 0.0) -> np.ndarray:
        """T_world_cam at arc length `s` of the loop, `lateral` metres to the left, looking along the path.

        `yaw` (to the left), `pitch` (up) and `roll` are radians added to the path direction.
        """
        arc, xy, heading = _loop_polyline()
        s = float(s) % arc[-1]
        x, y = np.interp(s, arc, xy[:, 0]), np.interp(s, arc, xy[:, 1])
        psi = float(np.interp(s, arc, heading))
        position = [x - lateral * np.sin(psi), y + lateral * np.cos(psi), height]
        R_world_body = Rotation.from_euler("ZYX", [psi + yaw, -pitch, roll]).as_matrix()
        return make_pose(R_world_body @ _R_BODY_CAM, position)

    def mission_poses(self, mission_index: int, num_frames: int) -> np.ndarray:
        """(N, 4, 4) poses of a mission: mission 0 on the centre line, others offset and jittered (seeded)."""
        spacing = self.loop_length / num_frames
        if mission_index == 0:
            return np.stack([self.loop_pose(i * spacing) for i in range(num_frames)])
        rng = np.random.default_rng([self.seed, mission_index, 7])
        phase = rng.uniform(0.2, 0.8) * spacing
        offset, wobble, wobble_phase = rng.uniform(-0.3, 0.3), rng.uniform(0.05, 0.15), rng.uniform(0, 2 * np.pi)
        height = CAMERA_HEIGHT + rng.uniform(-0.1, 0.1)
        poses = []
        for i in range(num_frames):
            s = phase + i * spacing
            lateral = offset + wobble * np.sin(2 * np.pi * 3 * s / self.loop_length + wobble_phase)
            yaw, pitch, roll = np.radians(rng.normal(0.0, [3.0, 1.5, 1.0]))
            poses.append(self.loop_pose(s, lateral, height, yaw, pitch, roll))
        return np.stack(poses)

    def render(self, pose: np.ndarray, camera: Camera, appearance: Appearance | None = None,
               noise_seed: int | tuple[int, ...] | None = 0) -> tuple[np.ndarray, np.ndarray]:
        """Render (uint8 HxWx3 RGB image, float32 HxW z-depth in metres, 0 = nothing) seen from T_world_cam `pose`."""
        if not camera.is_pinhole:
            raise ValueError(f"the synthetic renderer needs a pinhole camera, got {camera.model}")
        appearance = appearance or Appearance()
        width, height = camera.width, camera.height
        K = camera.K.copy()
        K[:2, 2] -= 0.5  # COLMAP pixel centres (+0.5) to OpenCV's integer centres used by cv2 and the z-buffer
        K_inv = np.linalg.inv(K)
        T_cam_world = invert_pose(np.asarray(pose, dtype=np.float64))
        R, t = T_cam_world[:3, :3], T_cam_world[:3, 3]
        centre = np.asarray(pose)[:3, 3]

        color = np.zeros((height, width, 3), np.uint8)
        shade = np.zeros((height, width), np.float32)
        inv_depth = np.zeros((height, width), np.float32)
        light = np.asarray(appearance.light_dir, float)
        light /= np.linalg.norm(light)

        cam_corners = self._tile_corners @ R.T + t  # (T, 4, 3)
        facing = np.array([np.dot(q.normal, centre - q.origin) > 1e-9 for q in self.quads])
        candidates = np.nonzero(facing[self._tile_quad] & np.any(cam_corners[:, :, 2] > NEAR, axis=1))[0]
        homographies: dict[int, np.ndarray] = {}
        for index in candidates:
            quad = self._tiles[index][0]
            polygon = cam_corners[index]
            if np.any(polygon[:, 2] < NEAR):
                polygon = _clip_near(polygon, NEAR)
                if len(polygon) < 3:
                    continue
            projected = (polygon @ K.T)[:, :2] / polygon[:, 2:3]
            x0, y0 = np.floor(projected.min(axis=0)).astype(int)
            x1, y1 = np.ceil(projected.max(axis=0)).astype(int) + 1
            x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, width), min(y1, height)
            if x0 >= x1 or y0 >= y1:
                continue
            mask = _polygon_mask(projected, x0, y0, x1, y1)
            # Inverse depth is affine in pixel coordinates for a plane: 1/z = (n_c . K^-1 p) / d_c.
            n_c = R @ quad.normal
            d_c = float(n_c @ (R @ quad.origin + t))
            a, b, c = (K_inv.T @ n_c) / d_c
            xs = (a * np.arange(x0, x1, dtype=np.float32))[None, :]
            ys = (b * np.arange(y0, y1, dtype=np.float32) + c)[:, None]
            roi_inv = (xs + ys).astype(np.float32)
            closer = mask & (roi_inv > inv_depth[y0:y1, x0:x1])
            if not closer.any():
                continue
            key = int(self._tile_quad[index])
            if key not in homographies:
                texture = quad.mips[0]
                th, tw = texture.shape[:2]
                # Texel centres at integer coordinates: texel (a, b) is at s = (a + 0.5) / W, t = (b + 0.5) / H.
                ru, rv = R @ quad.u / tw, R @ quad.v / th
                homographies[key] = K @ np.c_[ru, rv, R @ quad.origin + t + 0.5 * (ru + rv)]
            H0 = homographies[key]
            level = self._mip_level(H0, projected.mean(axis=0), len(quad.mips))
            scale = 2.0**level
            # cv2.pyrDown centres texel j of a level on texel 2j of the level below (not 2j + 0.5), so
            # level texel j is level-0 texel j * scale; the block-average offset shifted images by ~0.3 px.
            to_level0 = np.array([[scale, 0, 0], [0, scale, 0], [0, 0, 1]])
            shift = np.array([[1, 0, -x0], [0, 1, -y0], [0, 0, 1]], float)
            warped = cv2.warpPerspective(quad.mips[level], shift @ H0 @ to_level0, (x1 - x0, y1 - y0),
                                         flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
            np.copyto(color[y0:y1, x0:x1], warped, where=closer[:, :, None])
            lit = appearance.ambient + (1.0 - appearance.ambient) * max(0.0, float(quad.normal @ light))
            shade[y0:y1, x0:x1][closer] = lit
            inv_depth[y0:y1, x0:x1][closer] = roi_inv[closer]

        depth = np.zeros_like(inv_depth)
        np.divide(1.0, inv_depth, out=depth, where=inv_depth > 0)
        image = self._apply_appearance(color, shade, depth, appearance, noise_seed)
        return image, depth

    @staticmethod
    def _mip_level(H0: np.ndarray, point: np.ndarray, levels: int) -> int:
        # Texels per pixel at `point` from the Jacobian of the image-to-texture homography.
        G = np.linalg.inv(H0)
        p = G @ np.r_[point, 1.0]
        J = (G[:2, :2] - np.outer(p[:2] / p[2], G[2, :2])) / p[2]
        texels_per_pixel = np.sqrt(abs(np.linalg.det(J)))
        return int(np.clip(np.floor(np.log2(max(texels_per_pixel, 1e-6)) + 0.5), 0, levels - 1))

    @staticmethod
    def _apply_appearance(color: np.ndarray, shade: np.ndarray, depth: np.ndarray, appearance: Appearance,
                          noise_seed: int | tuple[int, ...] | None) -> np.ndarray:
        light = shade
        if appearance.headlight > 0:
            lamp = 1.0 / (1.0 + (depth / 4.0) ** 2)
            light = shade * (1.0 - appearance.headlight) + appearance.headlight * lamp
        gain = np.asarray(appearance.color, np.float32) * np.float32(appearance.gain / 255.0)
        image = color.astype(np.float32) * light[:, :, None] * gain
        if appearance.vignetting > 0:
            h, w = shade.shape
            yy, xx = np.ogrid[:h, :w]
            r2 = ((xx - w / 2) / (w / 2)) ** 2 + ((yy - h / 2) / (h / 2)) ** 2
            image *= (1.0 - appearance.vignetting * np.minimum(r2 / 2.0, 1.0)).astype(np.float32)[:, :, None]
        np.clip(image, 0.0, 1.0, out=image)
        if appearance.gamma != 1.0:
            image **= np.float32(appearance.gamma)
        if appearance.blur_sigma > 0:
            image = cv2.GaussianBlur(image, (0, 0), appearance.blur_sigma)
        if appearance.noise_sigma > 0 and noise_seed is not None:
            rng = np.random.default_rng(list(noise_seed) if isinstance(noise_seed, tuple) else noise_seed)
            image += rng.standard_normal(image.shape, dtype=np.float32) * np.float32(appearance.noise_sigma / 255.0)
        return (np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)

    def surface_distance(self, points: np.ndarray, margin: float = 0.01) -> np.ndarray:
        """Distance from world points (N, 3) to the nearest quad whose extent (plus `margin` m)
        contains their projection."""
        points = np.asarray(points, float).reshape(-1, 3)
        best = np.full(len(points), np.inf)
        for quad in self.quads:
            rel = points - quad.origin
            lu, lv = np.linalg.norm(quad.u), np.linalg.norm(quad.v)
            s = rel @ quad.u / lu**2
            t = rel @ quad.v / lv**2
            inside = (s >= -margin / lu) & (s <= 1 + margin / lu) & (t >= -margin / lv) & (t <= 1 + margin / lv)
            distance = np.abs(rel @ quad.normal)
            best = np.where(inside, np.minimum(best, distance), best)
        return best


def mission_name(index: int) -> str:
    """Name of the index-th synthetic mission: day, dusk, night, overcast, then day_2, ..."""
    names = list(APPEARANCES)
    base = names[index % len(names)]
    return base if index < len(names) else f"{base}_{index // len(names) + 1}"


def make_synthetic_map(num_missions: int = 2, frames_per_mission: int = 40, image_size: tuple[int, int] = (640, 480),
                       seed: int = 0, *, num_threads: int | None = None, progress: bool = False) -> Map:
    """A Map of `num_missions` loops around the synthetic corridor, images and depth in memory (`Keyframe.depth`)."""
    if num_missions < 1 or frames_per_mission < 1:
        raise ValueError("num_missions and frames_per_mission must be positive")
    world = SyntheticWorld(seed)
    camera = world.default_camera(image_size)
    jobs = []
    for m in range(num_missions):
        appearance = APPEARANCES[mission_name(m).split("_")[0]]
        for i, pose in enumerate(world.mission_poses(m, frames_per_mission)):
            jobs.append((m, i, pose, appearance))

    def render(job):
        m, i, pose, appearance = job
        return world.render(pose, camera, appearance, noise_seed=(seed, m, i))

    workers = num_threads or default_num_threads()
    # cv2 and numpy release the GIL, so threads render frames in parallel;
    # each frame's noise is seeded by (mission, frame).
    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = list(tqdm(pool.map(render, jobs), total=len(jobs), desc="rendering", unit="frame",
                            disable=not progress))
    missions: dict[str, Mission] = {}
    period = world.loop_length / frames_per_mission  # 1 m/s along the loop
    for (m, i, pose, _), (image, depth) in zip(jobs, results):
        name = mission_name(m)
        mission = missions.setdefault(name, Mission(name))
        mission.keyframes.append(
            Keyframe.create(f"{name}/{i:06d}.png", name, i, timestamp=round(i * period, 6), pose=pose,
                            camera=camera, image=image, depth=depth)
        )
    return Map("synthetic", missions)


def write_synthetic_dataset(map_: Map, out_dir: str | os.PathLike, *, depth: bool = False) -> Path:
    """Write a map as an image folder the folder reader reads back: `<mission>/<file>.png`, poses and cameras.

    Per mission: PNG images, `poses.txt` (TUM, when every keyframe has a pose; else `poses.csv`
    with names) and, with `depth`, `depth.npz` (float32 z-depth per image file stem). A single
    shared camera goes to `<out_dir>/cameras.txt`, else one per mission folder.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    cameras = {_camera_key(kf.camera) for kf in map_.keyframes() if kf.camera is not None}
    shared = next(kf.camera for kf in map_.keyframes() if kf.camera is not None) if len(cameras) == 1 else None
    if shared is not None:
        write_cameras_txt(out_dir / "cameras.txt", {1: shared})
    for mission in map_.missions.values():
        folder = out_dir / mission.name
        depths: dict[str, np.ndarray] = {}
        files = []
        for kf in tqdm(mission.keyframes, desc=f"writing {mission.name}", unit="image", disable=None):
            relative = kf.name[len(mission.name) + 1:] if kf.name.startswith(mission.name + "/") else kf.name
            relative = str(Path(relative).with_suffix(".png"))
            ok, encoded = cv2.imencode(".png", _to_bgr(kf.load_image()))
            if not ok:
                raise ValueError(f"cannot encode keyframe {kf.name!r} as PNG")
            atomic_write_bytes(folder / relative, encoded.tobytes())
            files.append(relative)
            if depth and kf.depth is not None:
                depths[Path(relative).with_suffix("").as_posix().replace("/", "__")] = kf.depth
        mission_cameras = {_camera_key(kf.camera) for kf in mission.keyframes if kf.camera is not None}
        if shared is None and len(mission_cameras) == 1:
            write_cameras_txt(folder / "cameras.txt",
                              {1: next(kf.camera for kf in mission.keyframes if kf.camera is not None)})
        elif shared is None and mission_cameras:
            logger.warning("mission %s has several cameras; no cameras.txt written", mission.name)
        posed = [kf for kf in mission.keyframes if kf.pose is not None]
        if posed and len(posed) == len(mission.keyframes):
            times = [kf.timestamp if kf.timestamp is not None else float(kf.index) for kf in posed]
            write_tum(folder / "poses.txt", times, np.stack([kf.pose for kf in posed]))
        elif posed:
            names = [f for f, kf in zip(files, mission.keyframes) if kf.pose is not None]
            write_pose_csv(folder / "poses.csv", names, np.stack([kf.pose for kf in posed]))
        if depths:
            with atomic_path(folder / "depth.npz", suffix=".npz") as tmp:
                np.savez_compressed(tmp, **depths)
    return out_dir


def _camera_key(camera: Camera) -> tuple:
    return camera.model, camera.width, camera.height, tuple(np.round(camera.params, 9))


def _to_bgr(image: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(image, cv2.COLOR_RGB2BGR) if image.ndim == 3 else image


__all__ = ["APPEARANCES", "Appearance", "Quad", "SyntheticWorld", "make_synthetic_map", "mission_name",
           "write_synthetic_dataset"]
