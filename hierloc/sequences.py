"""Sequence-based place recognition (SeqSLAM-style): match sequences of frames instead of single frames.

A single query frame is often ambiguous across seasons (Nordland summer -> winter: at most 4.4 % of
winter frames retrieve their own summer frame with hierloc's global describers), but the last N frames
of a route, matched as a whole against a stretch of the map driven at a similar speed, rarely are.
Everything here works on a query-by-reference distance matrix of any describer
(`descriptor_distances` of global descriptors; `sad_distances` of SeqSLAM's patch-normalised frames,
`patch_normalize`; `hog_descriptors`; `network_grid_descriptors`, mid-level CNN activations):

1. contrast enhancement (`enhance_contrast`): each distance is normalised by the mean and standard
   deviation of the query's distances to the `window` references around it (SeqSLAM), and then by
   those of the reference's distances to the `query_window` previous queries (online: no later query
   is used), which removes places that look close to everything ("hubs") and queries close to nothing;
2. frames that repeat their predecessor (the vehicle stands still: `moving_frames`) are left out of
   both traversals, so that a stop in one traversal and not the other does not break the sequence. On the
   map side (recorded in advance) only runs of at least `DEFAULT_MIN_STOP` repeated frames count as stops
   (`moving_frames(..., min_stop=...)`): one or two frames that barely change are slow motion, and leaving
   them out of one traversal only shifts it against the other; queries keep the per-frame rule, which
   needs no later frame;
3. straight-line search (`sequence_scores`): for every query q and reference r, the mean enhanced
   distance along lines ending at (q, r), queries q-k against references r - round(v k) for k < N and
   each velocity v (the traversals may run at different speeds); the best velocity wins. The first N-1
   queries use the shorter sequences they have; references before the start of the map count as the
   query's mean distance;
4. `sequence_rank` ranks every reference per query (lower score is better). A query standing still
   gets the reference at the same time since its own stop began. Several describers are combined by
   summing their enhanced matrices: `sequence_rank([d1, d2], ...)`.

Both traversals must be in the order they were recorded. The matrices are dense (3576 x 3576 for
Nordland: seconds with numpy); `MAX_MATRIX_ELEMENTS` bounds them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

DEFAULT_VELOCITIES = (0.8, 0.9, 1.0, 1.1, 1.25)  # reference frames per query frame
DEFAULT_WINDOW = 10  # references around each one for the contrast enhancement (SeqSLAM's R_window)
DEFAULT_QUERY_WINDOW = 20  # previous queries for the contrast enhancement along the queries (0: none)
DEFAULT_STATIC_FRACTION = 0.3  # a frame repeats its predecessor below this fraction of the median change
DEFAULT_MIN_STOP = 5  # reference frames: a stop is a run of at least this many repeated frames
MAX_MATRIX_ELEMENTS = 400_000_000  # 1.6 GB of float32 distances: larger query x reference matrices are refused


@dataclass
class SequenceRanking:
    """Top-k references of every query by sequence score, best first."""

    rows: np.ndarray  # [Q, K] int64 reference rows
    scores: np.ndarray  # [Q, K] float32: mean enhanced distance along the best line (lower is better)
    length: int  # the sequence length asked for (the first length-1 queries use shorter sequences)
    query_moving: np.ndarray  # [Q] bool: query frames used in sequences (False: repeats its predecessor)
    reference_moving: np.ndarray  # [R] bool


# --------------------------------------------------------------------------------------- frame describers

def _grey(image: np.ndarray) -> np.ndarray:
    import cv2

    image = np.asarray(image)
    if image.ndim == 3:
        return cv2.cvtColor(image[..., :3], cv2.COLOR_RGB2GRAY) if image.shape[2] >= 3 else image[..., 0]
    return image


def _resized_grey(images: Sequence[np.ndarray] | np.ndarray, size: tuple[int, int]) -> np.ndarray:
    import cv2

    width, height = size
    out = np.empty((len(images), height, width), np.float32)
    for i, image in enumerate(images):
        image = _grey(image)
        if image.shape != (height, width):
            image = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
        out[i] = image
    return out


def patch_normalize(images: Sequence[np.ndarray] | np.ndarray, size: tuple[int, int] = (64, 32),
                    patch: int = 8) -> np.ndarray:
    """[N, H * W] float32 SeqSLAM frames: greyscale, resized to `size` (W, H), each `patch`-square patch z-scored."""
    width, height = size
    if width % patch or height % patch:
        raise ValueError(f"the frame size {width}x{height} is not a multiple of the patch size {patch}")
    frames = _resized_grey(images, size).reshape(-1, height // patch, patch, width // patch, patch)
    mean = frames.mean(axis=(2, 4), keepdims=True)
    std = frames.std(axis=(2, 4), keepdims=True)
    return ((frames - mean) / np.maximum(std, 1e-3)).reshape(len(frames), -1)  # flat patches become zeros


def hog_descriptors(images: Sequence[np.ndarray] | np.ndarray, size: tuple[int, int] = (64, 32), cell: int = 4,
                    block: int = 2, bins: int = 9) -> np.ndarray:
    """[N, D] float32 histograms of oriented gradients (unsigned, `bins` per `cell`-pixel cell, L2 per block of
    `block` x `block` cells, blocks one cell apart) of greyscale frames resized to `size` (W, H)."""
    width, height = size
    if width % cell or height % cell:
        raise ValueError(f"the frame size {width}x{height} is not a multiple of the cell size {cell}")
    frames = _resized_grey(images, size)
    gy, gx = np.gradient(frames, axis=(1, 2))
    magnitude = np.hypot(gx, gy)
    position = np.mod(np.arctan2(gy, gx), np.pi) / np.pi * bins  # orientation, in bins
    lower = np.floor(position)
    upper_weight = position - lower
    lower = lower.astype(np.int64) % bins
    upper = (lower + 1) % bins
    rows, cols = height // cell, width // cell
    hist = np.zeros((len(frames), rows, cols, bins), np.float32)
    for b in range(bins):  # linear interpolation between the two nearest orientation bins
        weight = magnitude * ((lower == b) * (1 - upper_weight) + (upper == b) * upper_weight)
        hist[..., b] = weight.reshape(len(frames), rows, cell, cols, cell).sum(axis=(2, 4))
    blocks = []
    for i in range(rows - block + 1):
        for j in range(cols - block + 1):
            v = hist[:, i:i + block, j:j + block].reshape(len(frames), -1)
            blocks.append(v / np.sqrt((v * v).sum(axis=1, keepdims=True) + 1e-6))
    return np.concatenate(blocks, axis=1)


def network_grid_descriptors(images: Sequence[np.ndarray] | np.ndarray, model: str = "mobilenetvlad_imagenet",
                             layer: int = 11, scale: float = 4.0, grid: tuple[int, int] | None = (8, 16),
                             batch_size: int = 64, device: str = "cpu") -> np.ndarray:
    """[N, D] float32 mid-level CNN activations: greyscale frames enlarged `scale` times through the trunk of
    hierloc network `model` up to its `layer`-th block (MobileNetV2: layer_11, 64 channels at stride 16),
    average-pooled to a `grid` of (rows, columns) cells (None: as computed), flattened. No aggregation: the
    spatial layout is kept, which tolerates season changes far better than a global descriptor."""
    import torch
    import torch.nn.functional as F

    from .describers import make_describer

    network = make_describer(model, "auto", device=device).model.eval()
    trunk = network.backbone.features[:layer]
    out = []
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            frames = np.stack([_grey(image) for image in images[start:start + batch_size]]).astype(np.float32)
            x = torch.from_numpy(frames)[:, None].repeat(1, 3, 1, 1).to(device)
            x = F.interpolate(x, scale_factor=scale, mode="bilinear", align_corners=False)
            x = trunk(network.normalize_input(x))
            if grid is not None:
                x = F.adaptive_avg_pool2d(x, grid)
            out.append(x.flatten(1).float().cpu().numpy())
    return np.concatenate(out)


def sad_distances(queries: np.ndarray, reference: np.ndarray, block: int = 256) -> np.ndarray:
    """[Q, R] float32 mean absolute difference between rows of `queries` [Q, D] and `reference` [R, D]."""
    import torch

    queries = torch.from_numpy(np.ascontiguousarray(queries, np.float32))
    reference = torch.from_numpy(np.ascontiguousarray(reference, np.float32))
    if queries.ndim != 2 or reference.ndim != 2 or queries.shape[1] != reference.shape[1]:
        raise ValueError(f"frames must be [Q, D] and [R, D] with the same D, got {tuple(queries.shape)} and "
                         f"{tuple(reference.shape)}")
    _check_size(queries.shape[0], reference.shape[0])
    out = np.empty((queries.shape[0], reference.shape[0]), np.float32)
    with torch.no_grad():
        for start in range(0, queries.shape[0], block):
            out[start:start + block] = torch.cdist(queries[start:start + block], reference, p=1).numpy()
    return out / queries.shape[1]


def descriptor_distances(queries: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """[Q, R] float32 Euclidean distances between L2-normalised descriptors (as hierloc's exact search)."""
    from .index import l2_normalize

    queries = l2_normalize(np.asarray(queries, np.float32))
    reference = l2_normalize(np.asarray(reference, np.float32))
    if queries.ndim != 2 or reference.ndim != 2 or queries.shape[1] != reference.shape[1]:
        raise ValueError(f"descriptors must be [Q, D] and [R, D] with the same D, got {queries.shape} and "
                         f"{reference.shape}")
    _check_size(len(queries), len(reference))
    return np.sqrt(np.clip(2.0 - 2.0 * (queries @ reference.T), 0.0, None)).astype(np.float32)


def _check_size(num_queries: int, num_references: int) -> None:
    if num_queries * num_references > MAX_MATRIX_ELEMENTS:
        raise ValueError(f"sequence matching needs the full {num_queries} x {num_references} distance matrix; "
                         f"more than {MAX_MATRIX_ELEMENTS} elements is refused (evaluate a part of the route)")


def consecutive_distances(features: np.ndarray, metric: str = "euclidean") -> np.ndarray:
    """[N - 1] distances between consecutive rows: 'euclidean' between L2-normalised rows, 'sad' mean absolute."""
    features = np.asarray(features, np.float32)
    if features.ndim != 2:
        raise ValueError(f"features must be [N, D], got shape {features.shape}")
    if metric == "sad":
        return np.abs(np.diff(features, axis=0)).mean(axis=1)
    if metric != "euclidean":
        raise ValueError(f"metric {metric!r}: use 'euclidean' or 'sad'")
    from .index import l2_normalize

    return np.linalg.norm(np.diff(l2_normalize(features), axis=0), axis=1)


def moving_frames(features: np.ndarray, fraction: float = DEFAULT_STATIC_FRACTION,
                  metric: str = "euclidean", min_stop: int = 1) -> np.ndarray:
    """[N] bool: False for a frame that repeats its predecessor (it changed less than `fraction` times the median
    change between consecutive frames: the vehicle stands still); the first frame is always True.

    With `min_stop` > 1 only runs of at least `min_stop` such frames count as repeats (a stop); shorter runs stay
    True (slow motion). That looks up to `min_stop` - 1 frames ahead: use it for the map (reference) traversal,
    recorded in advance, and 1 for queries that arrive one by one.
    """
    if isinstance(min_stop, bool) or int(min_stop) != min_stop or min_stop < 1:
        raise ValueError(f"min_stop must be a positive integer, got {min_stop!r}")
    if len(features) < 2 or fraction <= 0:
        return np.ones(len(features), bool)
    change = consecutive_distances(features, metric)
    moving = np.r_[True, change > fraction * float(np.median(change))]
    if min_stop > 1:
        # Runs of repeated frames: starts and ends (exclusive) from the edges of the padded mask.
        edges = np.diff(np.r_[0, (~moving).astype(np.int8), 0])
        starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
        for start, end in zip(starts, ends):
            if end - start < min_stop:
                moving[start:end] = True
    return moving


# --------------------------------------------------------------------------------------- matching sequences

def _as_matrix(distances: np.ndarray) -> np.ndarray:
    distances = np.asarray(distances, np.float32)
    if distances.ndim != 2 or 0 in distances.shape:
        raise ValueError(f"distances must be a non-empty [queries, references] matrix, got shape {distances.shape}")
    if not np.isfinite(distances).all():
        raise ValueError("distances contain NaN or infinity")
    return distances


def _local_zscore(d: np.ndarray, window: int, causal: bool) -> np.ndarray:
    """Each element of float64 `d` minus the mean, over the std, of its row's elements in a window along axis 1:
    the `window` around it (cut at the ends), or with `causal` the `window` ending at it. Stds below the median
    std are raised to it (windows of near-identical distances would otherwise blow up)."""
    n = d.shape[1]
    index = np.arange(n)
    lo = np.clip(index - (window - 1 if causal else window // 2), 0, n)
    hi = np.clip(index + (1 if causal else window // 2 + 1), 0, n)
    zero = np.zeros((d.shape[0], 1))
    first = np.concatenate([zero, np.cumsum(d, axis=1)], axis=1)
    second = np.concatenate([zero, np.cumsum(d * d, axis=1)], axis=1)
    count = (hi - lo).astype(np.float64)
    mean = (first[:, hi] - first[:, lo]) / count
    std = np.sqrt(np.maximum((second[:, hi] - second[:, lo]) / count - mean * mean, 0.0))
    floor = max(float(np.median(std)), 1e-9)
    return (d - mean) / np.maximum(std, floor)


def enhance_contrast(distances: np.ndarray, window: int = DEFAULT_WINDOW,
                     query_window: int = DEFAULT_QUERY_WINDOW) -> np.ndarray:
    """[Q, R] float32 contrast-enhanced distances: z-scored over the `window` references around each reference
    (SeqSLAM), plus z-scored over the `query_window` previous queries of each reference (0: left out)."""
    d = _as_matrix(distances).astype(np.float64)
    if window < 1 or query_window < 0:
        raise ValueError(f"contrast windows must be positive, got {window} references and {query_window} queries")
    out = _local_zscore(d, window, causal=False)
    if query_window:
        out += _local_zscore(d.T, query_window, causal=True).T
    return out.astype(np.float32)


def _trajectories(length: int, velocities: Sequence[float]) -> list[tuple[int, ...]]:
    """Reference offsets (round(v k) for k = 0..length-1) of each velocity, without duplicates, in order."""
    if not len(velocities):
        raise ValueError("give at least one velocity")
    if any(not np.isfinite(v) or v < 0 for v in velocities):
        raise ValueError(f"velocities must be finite and non-negative, got {list(velocities)}")
    lines = [tuple(int(np.floor(v * k + 0.5)) for k in range(length)) for v in velocities]
    return list(dict.fromkeys(lines))


def _check_length(length: int) -> int:
    if isinstance(length, bool) or int(length) != length or length < 1:
        raise ValueError(f"the sequence length must be a positive integer, got {length!r}")
    return int(length)


def sequence_scores(distances: np.ndarray, length: int,
                    velocities: Sequence[float] = DEFAULT_VELOCITIES) -> np.ndarray:
    """[Q, R] float32: for every query q and reference r, the lowest mean of `distances` along a straight line
    ending at (q, r): queries q-k against references r - round(v k), k = 0..length-1, over `velocities`.

    The first length-1 queries use the k <= q they have; a reference before the start of the map counts as the
    mean distance of its query row. Length 1 returns the distances unchanged.
    """
    d = _as_matrix(distances)
    length = _check_length(length)
    num_queries, num_refs = d.shape
    neutral = d.mean(axis=1, dtype=np.float64).astype(np.float32)  # [Q] what a missing reference counts as
    counts = np.minimum(np.arange(num_queries) + 1, length).astype(np.float32)[:, None]
    best = None
    for offsets in _trajectories(length, velocities):
        total = d.copy()
        for k in range(1, min(length, num_queries)):
            off = offsets[k]
            if off < num_refs:
                total[k:, off:] += d[:num_queries - k, :num_refs - off]
            total[k:, :min(off, num_refs)] += neutral[:num_queries - k, None]
        total /= counts
        best = total if best is None else np.minimum(best, total, out=best)
    return best


def _stable_top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Columns of the k lowest values of every row, ascending, ties broken by the lower column."""
    if k >= scores.shape[1] // 4:
        return np.argsort(scores, axis=1, kind="stable")[:, :k]
    candidates = np.argpartition(scores, k - 1, axis=1)[:, :k]
    kth = np.take_along_axis(scores, candidates, axis=1).max(axis=1)
    rows = np.empty((scores.shape[0], k), np.int64)
    for i, row in enumerate(scores):  # every column up to the k-th value, so that ties resolve by column
        chosen = np.flatnonzero(row <= kth[i])
        rows[i] = chosen[np.argsort(row[chosen], kind="stable")[:k]]
    return rows


def rank_scores(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k lowest scores of every row and their columns, ascending; ties broken by the lower column."""
    scores = np.asarray(scores)
    k = min(int(k), scores.shape[1])
    if k < 1:
        raise ValueError(f"k must be positive, got {k}")
    rows = np.concatenate([_stable_top_k(scores[s:s + 512], k) for s in range(0, len(scores), 512)])
    return rows, np.take_along_axis(scores, rows, axis=1).astype(np.float32)


def _moving_mask(mask: np.ndarray | None, n: int, side: str) -> np.ndarray:
    if mask is None:
        return np.ones(n, bool)
    mask = np.asarray(mask, bool)
    if mask.shape != (n,):
        raise ValueError(f"{side}_moving must be a [{n}] bool mask, got shape {mask.shape}")
    mask = mask.copy()
    mask[0] = True  # the first frame starts the traversal
    return mask


def sequence_rank(distances: np.ndarray | Sequence[np.ndarray], length: int, k: int = 25, *,
                  window: int | None = DEFAULT_WINDOW, query_window: int = DEFAULT_QUERY_WINDOW,
                  velocities: Sequence[float] = DEFAULT_VELOCITIES, weights: Sequence[float] | None = None,
                  query_moving: np.ndarray | None = None,
                  reference_moving: np.ndarray | None = None) -> SequenceRanking:
    """References of every query ranked by the score of the sequence of the `length` frames ending at it.

    `distances`: one [Q, R] query-by-reference distance matrix, or several (one per describer, same shape),
    each contrast-enhanced (`enhance_contrast` with `window` and `query_window`; window None: used as they
    are) and summed with `weights`. Rows of both sides must be in traversal order. `query_moving` and
    `reference_moving` (`moving_frames`, for the reference with `min_stop=DEFAULT_MIN_STOP`; None: all frames)
    leave repeated frames out of the sequences; a
    left-out query takes its last moving frame's sequence and prefers the reference as long after the start
    of that reference's own repeat as the query is after its. Length 1 with `window=None` and no masks is
    the single-frame ranking.
    """
    length = _check_length(length)
    matrices = [distances] if isinstance(distances, np.ndarray) and np.ndim(distances) == 2 else list(distances)
    if not matrices:
        raise ValueError("give at least one distance matrix")
    matrices = [_as_matrix(m) for m in matrices]
    if len({m.shape for m in matrices}) != 1:
        raise ValueError(f"distance matrices of different shapes: {[m.shape for m in matrices]}")
    weights = [1.0] * len(matrices) if weights is None else [float(w) for w in weights]
    if len(weights) != len(matrices):
        raise ValueError(f"{len(weights)} weights for {len(matrices)} distance matrices")
    num_queries, num_refs = matrices[0].shape
    query_moving = _moving_mask(query_moving, num_queries, "query")
    reference_moving = _moving_mask(reference_moving, num_refs, "reference")
    kept_queries, kept_refs = np.flatnonzero(query_moving), np.flatnonzero(reference_moving)
    combined = None
    for matrix, weight in zip(matrices, weights):
        term = matrix[np.ix_(kept_queries, kept_refs)] if len(kept_queries) < num_queries or \
            len(kept_refs) < num_refs else matrix
        term = enhance_contrast(term, window, query_window) if window is not None else term
        term = term * np.float32(weight)
        combined = term if combined is None else np.add(combined, term, out=combined)
    compact = sequence_scores(combined, length, velocities)  # [kept queries, kept references]
    # Back to every frame: query q is its last moving frame's group, `q_dwell` frames into a repeat; reference
    # column c takes the score of the group of frame c - q_dwell, preferring that frame to start its group.
    query_group = np.cumsum(query_moving) - 1
    query_dwell = np.arange(num_queries) - kept_queries[query_group]
    ref_group = np.cumsum(reference_moving) - 1
    ref_dwell = (np.arange(num_refs) - kept_refs[ref_group]).astype(np.float64)
    worst = float(compact.max()) + 1.0
    tie_break = 1e-9 if len(kept_refs) < num_refs else 0.0
    k = min(int(k), num_refs)
    if k < 1:
        raise ValueError(f"k must be positive, got {k}")
    rows, scores = [], []
    for start in range(0, num_queries, 512):
        block = slice(start, min(start + 512, num_queries))
        columns = np.arange(num_refs)[None, :] - query_dwell[block, None]
        valid = columns >= 0
        columns = np.where(valid, columns, 0)
        values = compact[query_group[block, None], ref_group[columns]].astype(np.float64)
        values = np.where(valid, values + tie_break * ref_dwell[columns], worst)
        top = _stable_top_k(values, k)
        rows.append(top)
        picked = np.take_along_axis(values, top, axis=1)
        scores.append(picked - tie_break * ref_dwell[np.take_along_axis(columns, top, axis=1)])
    return SequenceRanking(np.concatenate(rows), np.concatenate(scores).astype(np.float32), length,
                           query_moving, reference_moving)


__all__ = [
    "DEFAULT_MIN_STOP", "DEFAULT_QUERY_WINDOW", "DEFAULT_STATIC_FRACTION", "DEFAULT_VELOCITIES", "DEFAULT_WINDOW",
    "SequenceRanking",
    "consecutive_distances", "descriptor_distances", "enhance_contrast", "hog_descriptors", "moving_frames",
    "network_grid_descriptors", "patch_normalize", "rank_scores", "sad_distances", "sequence_rank",
    "sequence_scores",
]
