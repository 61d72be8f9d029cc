"""Pictures of a localization: the query beside its map images, with the PnP inlier matches drawn."""

from __future__ import annotations

import colorsys

import cv2
import numpy as np


def _rgb(image: np.ndarray) -> np.ndarray:
    if image.ndim == 2:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    if image.dtype != np.uint8:
        image = cv2.normalize(image, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)
    return image


def draw_matches(query: np.ndarray, reference: np.ndarray, query_keypoints: np.ndarray, reference_keypoints: np.ndarray,
                 matches: np.ndarray, label: str = "", height: int = 480, max_lines: int = 150) -> np.ndarray:
    """RGB: query (left) and reference (right) at `height` pixels, a line per match (keypoints in COLMAP pixels)."""
    tiles, scales = [], []
    for image in (query, reference):
        image = _rgb(image)
        scale = height / image.shape[0]
        tiles.append(cv2.resize(image, (max(1, round(image.shape[1] * scale)), height), interpolation=cv2.INTER_AREA))
        scales.append(scale)
    canvas = np.concatenate([tiles[0], np.full((height, 8, 3), 255, np.uint8), tiles[1]], axis=1)
    offset = tiles[0].shape[1] + 8
    matches = np.asarray(matches, dtype=np.int64).reshape(-1, 2)
    if len(matches) > max_lines:  # an even subset keeps the picture readable
        matches = matches[np.linspace(0, len(matches) - 1, max_lines).round().astype(int)]
    for k, (i, j) in enumerate(matches):
        # COLMAP pixel p of the original is at p * scale - 0.5 in OpenCV pixels of the resized tile.
        p = np.asarray(query_keypoints[i], dtype=np.float64) * scales[0] - 0.5
        q = np.asarray(reference_keypoints[j], dtype=np.float64) * scales[1] - 0.5 + np.array([offset, 0.0])
        hue = (k * 0.618034) % 1.0
        color = tuple(int(255 * c) for c in colorsys.hsv_to_rgb(hue, 0.85, 1.0))
        a, b = tuple(int(round(v)) for v in p), tuple(int(round(v)) for v in q)
        cv2.line(canvas, a, b, color, 1, cv2.LINE_AA)
        cv2.circle(canvas, a, 2, color, -1, cv2.LINE_AA)
        cv2.circle(canvas, b, 2, color, -1, cv2.LINE_AA)
    if label:
        cv2.rectangle(canvas, (0, 0), (min(canvas.shape[1], 10 + 9 * len(label)), 26), (0, 0, 0), -1)
        cv2.putText(canvas, label, (6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (255, 255, 255), 1, cv2.LINE_AA)
    return canvas


def localization_figure(query: np.ndarray, result, load_map_image, scene, max_references: int = 2,
                        height: int = 480) -> np.ndarray:
    """Rows of `draw_matches` for the map images with most inliers of a LocalizationResult."""
    ranked = sorted(result.inlier_matches.items(), key=lambda item: -len(item[1]))[:max_references]
    if not ranked:
        return draw_matches(query, query, np.zeros((0, 2)), np.zeros((0, 2)), np.zeros((0, 2)),
                            f"{result.name}: not localized ({result.message})", height)
    rows = []
    for name, matches in ranked:
        label = (f"{result.name} <-> {name}: {len(matches)} PnP inliers here, {result.num_inliers} in total"
                 if result.success else f"{result.name} <-> {name}: failed ({result.message})")
        rows.append(draw_matches(query, load_map_image(name), result.query_keypoints, scene.features[name].keypoints,
                                 matches, label, height))
    width = max(r.shape[1] for r in rows)
    rows = [np.pad(r, ((0, 6), (0, width - r.shape[1]), (0, 0)), constant_values=255) for r in rows]
    return np.concatenate(rows, axis=0)
