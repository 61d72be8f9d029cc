"""Pictures of retrieval: each query next to its top retrieved keyframes, framed green (right) or red (wrong)."""

from __future__ import annotations

import cv2
import numpy as np

GREEN = (40, 180, 40)
RED = (220, 40, 40)
GREY = (128, 128, 128)


def _tile(image: np.ndarray, height: int, color: tuple[int, int, int] | None, label: str, border: int = 6) -> np.ndarray:
    if image.ndim == 2:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    if image.dtype != np.uint8:
        image = cv2.normalize(image, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)
    width = max(1, round(image.shape[1] * height / image.shape[0]))
    tile = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
    tile = cv2.copyMakeBorder(tile, border, border, border, border, cv2.BORDER_CONSTANT, value=color or (255, 255, 255))
    cv2.putText(tile, label, (border + 4, border + 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 0), 1, cv2.LINE_AA)
    return tile


def retrieval_grid(rows: list[tuple[np.ndarray, str, list[tuple[np.ndarray, str, bool | None]]]],
                   height: int = 120) -> np.ndarray:
    """RGB image: one row per query (query tile, then retrieved tiles framed by correctness)."""
    lines = []
    for query, query_label, retrieved in rows:
        tiles = [_tile(query, height, GREY, query_label)]
        tiles += [_tile(im, height, None if ok is None else GREEN if ok else RED, label) for im, label, ok in retrieved]
        lines.append(np.concatenate(tiles, axis=1))
    width = max(line.shape[1] for line in lines)
    lines = [np.pad(line, ((0, 0), (0, width - line.shape[1]), (0, 0)), constant_values=255) for line in lines]
    return np.concatenate(lines, axis=0)
