"""Pictures of retrieval: recall@N and precision-recall curves, and grids of queries with their retrieved
images framed green (correct) or red (wrong)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from ..utils.io import atomic_path

GREEN = (40, 170, 40)
RED = (215, 40, 40)
GREY = (128, 128, 128)
BLUE = (40, 90, 210)
WHITE = (255, 255, 255)
TEXT = (20, 20, 20)


def _to_rgb_uint8(image: np.ndarray) -> np.ndarray:
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.dtype != np.uint8:
        image = cv2.normalize(image, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)
    if image.ndim == 2:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    return image


def _fit_text(text: str, width: int, scale: float) -> str:
    """Shorten text (keeping its end, where names differ) to fit `width` pixels."""
    while text and cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)[0][0] > width:
        text = text[:1] + "~" + text[3:] if len(text) > 3 else text[:-1]
    return text


def _tile(image: np.ndarray, height: int, color: tuple[int, int, int] | None, label: str, border: int = 6,
          caption: Sequence[str] = ()) -> np.ndarray:
    """The image scaled to `height`, framed in `color`, with `label` over it and caption lines under it."""
    image = _to_rgb_uint8(image)
    width = max(1, round(image.shape[1] * height / image.shape[0]))
    upscale = width > image.shape[1]
    tile = cv2.resize(image, (width, height), interpolation=cv2.INTER_NEAREST if upscale and image.shape[0] < 100
                      else cv2.INTER_AREA)
    tile = cv2.copyMakeBorder(tile, border, border, border, border, cv2.BORDER_CONSTANT, value=color or WHITE)
    if label:
        cv2.putText(tile, label, (border + 4, border + 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 0), 1,
                    cv2.LINE_AA)
    if caption:
        strip = np.full((16 * len(caption) + 4, tile.shape[1], 3), 255, np.uint8)
        for i, line in enumerate(caption):
            cv2.putText(strip, _fit_text(line, tile.shape[1] - 4, 0.4), (3, 14 + 16 * i), cv2.FONT_HERSHEY_SIMPLEX,
                        0.4, TEXT, 1, cv2.LINE_AA)
        tile = np.concatenate([tile, strip], axis=0)
    return tile


def retrieval_grid(rows: list[tuple[np.ndarray, str, list[tuple[np.ndarray, str, bool | None]]]],
                   height: int = 120) -> np.ndarray:
    """RGB image: one row per query (query tile, then retrieved tiles framed by correctness)."""
    lines = []
    for query, query_label, retrieved in rows:
        tiles = [_tile(query, height, GREY, query_label)]
        tiles += [_tile(im, height, None if ok is None else GREEN if ok else RED, label) for im, label, ok in retrieved]
        lines.append(np.concatenate(tiles, axis=1))
    return _stack(lines)


def _stack(lines: list[np.ndarray], gap: int = 0) -> np.ndarray:
    width = max(line.shape[1] for line in lines)
    padded = []
    for line in lines:
        padded.append(np.pad(line, ((0, gap), (0, width - line.shape[1]), (0, 0)), constant_values=255))
    return np.concatenate(padded, axis=0)


def _banner(text_lines: Sequence[str], width: int, scale: float = 0.55) -> np.ndarray:
    strip = np.full((24 * len(text_lines) + 8, width, 3), 255, np.uint8)
    for i, line in enumerate(text_lines):
        cv2.putText(strip, line, (8, 22 + 24 * i), cv2.FONT_HERSHEY_SIMPLEX, scale, TEXT, 1, cv2.LINE_AA)
    return strip


def annotated_retrieval_grid(rows: list[dict], title: Sequence[str], height: int = 120) -> np.ndarray:
    """A captioned grid. Each row dict: `query` image, `query_caption` lines, `retrieved` list of
    (image, caption lines, correct), optional `expected` (image, caption lines) shown after a gap."""
    lines = []
    for row in rows:
        tiles = [_tile(row["query"], height, GREY, "", caption=row["query_caption"])]
        for image, caption, ok in row["retrieved"]:
            tiles.append(_tile(image, height, GREEN if ok else RED, "", caption=caption))
        if row.get("expected") is not None:
            image, caption = row["expected"]
            tiles.append(np.full((tiles[0].shape[0], 24, 3), 255, np.uint8))
            tiles.append(_tile(image, height, BLUE, "", caption=caption))
        tallest = max(t.shape[0] for t in tiles)
        tiles = [np.pad(t, ((0, tallest - t.shape[0]), (0, 0), (0, 0)), constant_values=255) for t in tiles]
        lines.append(np.concatenate(tiles, axis=1))
    body = _stack(lines, gap=8)
    return np.concatenate([_banner(title, body.shape[1]), body], axis=0)


def write_png(path: str | os.PathLike, rgb: np.ndarray) -> Path:
    """Write an RGB image as PNG atomically."""
    path = Path(path)
    with atomic_path(path, suffix=".png") as tmp:
        if not cv2.imwrite(str(tmp), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)):
            raise OSError(f"{path}: could not write the PNG")
    return path


def choose_examples(top1_correct: np.ndarray, valid: np.ndarray, successes: int = 4,
                    failures: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Query rows to show: successes and failures spread evenly over the sequence (deterministic)."""
    def spread(rows: np.ndarray, count: int) -> np.ndarray:
        if len(rows) <= count:
            return rows
        return rows[np.linspace(0, len(rows) - 1, count).round().astype(int)]

    good = np.flatnonzero(valid & top1_correct)
    bad = np.flatnonzero(valid & ~top1_correct)
    return spread(good, successes), spread(bad, failures)


# --------------------------------------------------------------------------- curves


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


_LINESTYLES = ["-", "--", ":", "-."]


def _styles(methods: Sequence[str], pca_labels: Sequence[str]) -> dict:
    plt = _pyplot()
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    return {(m, p): (colors[i % len(colors)], _LINESTYLES[j % len(_LINESTYLES)])
            for i, m in enumerate(methods) for j, p in enumerate(pca_labels)}


def _save(fig, path: str | os.PathLike) -> Path:
    path = Path(path)
    with atomic_path(path, suffix=".png") as tmp:
        # "tight" crops the space reserved for a legend narrower than the room left for it.
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight", pad_inches=0.15)
    _pyplot().close(fig)
    return path


def _upper_limit(values: Sequence[float]) -> float:
    """Axis top in percent: the data's maximum with a margin, rounded up to 10, at least 10, at most 100."""
    top = max([float(np.max(v)) for v in values if len(v)] + [0.0]) * 100
    return float(min(100.0, max(10.0, np.ceil(top * 1.15 / 10.0) * 10.0)))


def _figure(panels: int):
    plt = _pyplot()
    fig, axes = plt.subplots(1, panels, figsize=(5.2 * panels + 4.4, 4.6), squeeze=False)
    return fig, axes[0]


def _finish(fig, axes, title: str) -> None:
    handles, labels = axes[0].get_legend_handles_labels()
    plots_right = 1 - 4.2 / fig.get_figwidth()
    if title:
        fig.suptitle(title)
    fig.tight_layout(rect=(0, 0, plots_right, 1))
    # Right next to the last panel rather than at the figure's edge.
    fig.legend(handles, labels, loc="center left", bbox_to_anchor=(plots_right, 0.5), fontsize=8, frameon=False)


def plot_recall_curves(curves: Sequence[dict], path: str | os.PathLike, title: str = "") -> Path:
    """recall@N against N for every (method, PCA) on one figure, one panel per query set.

    `curves`: dicts with `method`, `pca` (label), `query_set`, `recall` (array over N = 1..K)."""
    query_sets = list(dict.fromkeys(c["query_set"] for c in curves))
    methods = list(dict.fromkeys(c["method"] for c in curves))
    pcas = list(dict.fromkeys(c["pca"] for c in curves))
    styles = _styles(methods, pcas)
    fig, axes = _figure(len(query_sets))
    top = _upper_limit([c["recall"] for c in curves])
    for ax, query_set in zip(axes, query_sets):
        for c in curves:
            if c["query_set"] != query_set:
                continue
            color, style = styles[(c["method"], c["pca"])]
            n = np.arange(1, len(c["recall"]) + 1)
            ax.plot(n, 100 * np.asarray(c["recall"]), style, color=color, marker="o", markersize=2.5,
                    label=f"{c['method']}, PCA {c['pca']}")
        ax.set_xlabel("N (number of retrieved references)")
        ax.set_ylabel("recall@N (%)")
        ax.set_title(f"queries: {query_set}")
        ax.set_xlim(0, max(len(c["recall"]) for c in curves) + 1)
        ax.set_ylim(0, top)
        ax.grid(alpha=0.3)
    _finish(fig, axes, title)
    return _save(fig, path)


def plot_pr_curves(curves: Sequence[dict], path: str | os.PathLike, title: str = "") -> Path:
    """Precision against recall when accepting top-1 matches below a distance threshold; AP in the legend.

    `curves`: dicts with `method`, `pca`, `query_set`, `precision`, `recall`, `ap`."""
    query_sets = list(dict.fromkeys(c["query_set"] for c in curves))
    methods = list(dict.fromkeys(c["method"] for c in curves))
    pcas = list(dict.fromkeys(c["pca"] for c in curves))
    styles = _styles(methods, pcas)
    fig, axes = _figure(len(query_sets))
    right = _upper_limit([c["recall"] for c in curves])
    for ax, query_set in zip(axes, query_sets):
        for c in curves:
            if c["query_set"] != query_set:
                continue
            color, style = styles[(c["method"], c["pca"])]
            ax.plot(100 * np.r_[0.0, c["recall"]], 100 * np.r_[c["precision"][:1], c["precision"]], style,
                    color=color, drawstyle="steps-post",
                    label=f"{c['method']}, PCA {c['pca']} (AP {100 * c['ap']:.1f})")
        ax.set_xlabel("recall (%): valid queries whose accepted top-1 is correct")
        ax.set_ylabel("precision (%) of accepted top-1 matches")
        ax.set_title(f"queries: {query_set}")
        ax.set_xlim(0, right)
        ax.set_ylim(0, 102)
        ax.grid(alpha=0.3)
    _finish(fig, axes, title + (" - accepting top-1 matches by distance" if title else ""))
    return _save(fig, path)
