"""Which references are correct for each query: from poses (3-D or 2-D), file names, index lists or files.

A `GroundTruth` is a sparse [Q, R] boolean matrix, so that 30k x 30k traversals (NCLT) fit in memory.
Queries without any true reference are *not valid*: metrics leave them out and count them, as the
original evaluation did (SPEC.md section 4).
"""

from __future__ import annotations

import csv
import os
import re
from pathlib import Path, PurePosixPath
from typing import Iterable, Sequence

import numpy as np
import scipy.sparse
from scipy.spatial import cKDTree

from ..utils.safe_npy import load_npy

# Rows of queries handled at once when pairs are tested densely (bounds memory to ~100 MB).
_PAIR_BLOCK = 2_000_000


class GroundTruth:
    """Sparse [Q, R] boolean matrix of correct (query, reference) pairs."""

    def __init__(self, matrix: scipy.sparse.spmatrix | np.ndarray, description: str = "") -> None:
        matrix = scipy.sparse.csr_matrix(matrix, dtype=bool)
        matrix.eliminate_zeros()
        matrix.sort_indices()
        self.matrix = matrix
        self.description = description

    @classmethod
    def from_pairs(cls, query_rows: Iterable[int], reference_rows: Iterable[int], num_queries: int,
                   num_references: int, description: str = "") -> "GroundTruth":
        """From parallel lists of (query row, reference row) pairs."""
        q = np.asarray(list(query_rows) if not isinstance(query_rows, np.ndarray) else query_rows, np.int64)
        r = np.asarray(list(reference_rows) if not isinstance(reference_rows, np.ndarray) else reference_rows, np.int64)
        if q.shape != r.shape:
            raise ValueError("query and reference rows of the ground-truth pairs differ in length")
        for label, rows, size in (("query", q, num_queries), ("reference", r, num_references)):
            bad = np.flatnonzero((rows < 0) | (rows >= size))
            if bad.size:
                raise ValueError(f"ground truth names {label} row {rows[bad[0]]}, "
                                 f"but there are only {size} {label} images")
        data = np.ones(len(q), bool)
        return cls(scipy.sparse.coo_matrix((data, (q, r)), shape=(num_queries, num_references)), description)

    @classmethod
    def from_lists(cls, positives: Sequence[Iterable[int]], num_references: int,
                   description: str = "") -> "GroundTruth":
        """From one list of correct reference rows per query."""
        rows = [np.asarray(list(p), np.int64).reshape(-1) for p in positives]
        q = (np.concatenate([np.full(len(p), i, np.int64) for i, p in enumerate(rows)]) if rows
             else np.zeros(0, np.int64))
        r = np.concatenate(rows) if rows else np.zeros(0, np.int64)
        return cls.from_pairs(q, r, len(rows), num_references, description)

    @property
    def shape(self) -> tuple[int, int]:
        """(number of queries, number of references)."""
        return self.matrix.shape

    @property
    def num_queries(self) -> int:
        """Number of queries (valid or not)."""
        return self.matrix.shape[0]

    @property
    def num_references(self) -> int:
        """Number of references."""
        return self.matrix.shape[1]

    @property
    def valid(self) -> np.ndarray:
        """[Q] bool: queries with at least one true reference (the others are left out of metrics)."""
        return np.diff(self.matrix.indptr) > 0

    def positives(self, query: int) -> np.ndarray:
        """Reference rows that are correct for one query."""
        return self.matrix.indices[self.matrix.indptr[query]:self.matrix.indptr[query + 1]]

    def correct(self, ranked: np.ndarray) -> np.ndarray:
        """[Q, K] bool: whether each retrieved reference row (-1 = none) is a true match of its query."""
        ranked = np.asarray(ranked, np.int64)
        if ranked.ndim != 2 or ranked.shape[0] != self.num_queries:
            raise ValueError(f"ranked references must have shape ({self.num_queries}, K), got {ranked.shape}")
        if ranked.size and ranked.max() >= self.num_references:
            raise ValueError(f"ranked reference row {ranked.max()} is beyond the {self.num_references} references")
        rows = np.repeat(np.arange(self.num_queries), ranked.shape[1])
        cols = np.maximum(ranked.reshape(-1), 0)
        hits = (np.asarray(self.matrix[rows, cols]).reshape(ranked.shape) if ranked.size
                else np.zeros(ranked.shape, bool))
        return hits.astype(bool) & (ranked >= 0)

    def dense(self) -> np.ndarray:
        """[Q, R] numpy bool array (small problems only)."""
        return self.matrix.toarray()

    def subset(self, query_rows: np.ndarray | None = None, reference_rows: np.ndarray | None = None) -> "GroundTruth":
        """The ground truth restricted to some queries and/or references (rows renumbered)."""
        matrix = self.matrix
        if query_rows is not None:
            matrix = matrix[np.asarray(query_rows)]
        if reference_rows is not None:
            matrix = matrix[:, np.asarray(reference_rows)]
        return GroundTruth(matrix, self.description)

    def summary(self) -> dict:
        """Counts for reports: queries, valid queries, references, mean positives per valid query."""
        valid = self.valid
        counts = np.diff(self.matrix.indptr)
        return {"queries": int(self.num_queries), "valid_queries": int(valid.sum()),
                "queries_without_ground_truth": int((~valid).sum()), "references": int(self.num_references),
                "mean_positives_per_valid_query": float(counts[valid].mean()) if valid.any() else 0.0,
                "rule": self.description}


# --------------------------------------------------------------------------- from poses


def relative_rotation_deg(rotations_a: np.ndarray, rotations_b: np.ndarray) -> np.ndarray:
    """Angle (degrees) of R_a^T R_b for every pair: [A, 3, 3] x [B, 3, 3] -> [A, B]."""
    traces = np.einsum("aji,bji->ab", rotations_a, rotations_b)  # trace(R_a^T R_b)
    return np.degrees(np.arccos(np.clip((traces - 1.0) / 2.0, -1.0, 1.0)))


def pose_ground_truth(query_poses: np.ndarray, reference_poses: np.ndarray, max_distance: float,
                      max_angle_deg: float = 180.0) -> np.ndarray:
    """[Q, R] bool: reference within `max_distance` metres and `max_angle_deg` of the query (3-D form).

    Poses are 4x4 camera-to-world matrices, as everywhere in hierloc. Dense: for small problems;
    `ground_truth_from_poses` is the sparse form for large ones.
    """
    query_poses = np.asarray(query_poses, dtype=np.float64)
    reference_poses = np.asarray(reference_poses, dtype=np.float64)
    distances = np.linalg.norm(query_poses[:, None, :3, 3] - reference_poses[None, :, :3, 3], axis=-1)
    angles = relative_rotation_deg(query_poses[:, :3, :3], reference_poses[:, :3, :3])
    return (distances <= max_distance) & (angles <= max_angle_deg)


def _pairs_within(query_points: np.ndarray, reference_points: np.ndarray,
                  radius: float) -> tuple[np.ndarray, np.ndarray]:
    """All (query, reference) row pairs closer than `radius` (inclusive), via a k-d tree."""
    if len(query_points) == 0 or len(reference_points) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    tree = cKDTree(reference_points)
    neighbours = tree.query_ball_point(query_points, r=radius)
    q = np.concatenate([np.full(len(n), i, np.int64) for i, n in enumerate(neighbours)])
    r = np.concatenate([np.asarray(n, np.int64) for n in neighbours])
    return q, r


def _check_finite(label: str, array: np.ndarray) -> None:
    bad = np.flatnonzero(~np.isfinite(array.reshape(len(array), -1)).all(axis=1))
    if bad.size:
        raise ValueError(f"{label} pose row {bad[0]} is not finite ({len(bad)} such rows)")


def ground_truth_from_poses(query_poses: np.ndarray, reference_poses: np.ndarray, max_distance: float,
                            max_angle_deg: float = 180.0) -> GroundTruth:
    """3-D form: distance between camera centres <= d and relative rotation angle <= a (sparse)."""
    query_poses = np.asarray(query_poses, np.float64)
    reference_poses = np.asarray(reference_poses, np.float64)
    for label, poses in (("query", query_poses), ("reference", reference_poses)):
        if poses.ndim != 3 or poses.shape[1:] != (4, 4):
            raise ValueError(f"{label} poses must be [N, 4, 4] camera-to-world matrices, got {poses.shape}")
        _check_finite(label, poses)
    q, r = _pairs_within(query_poses[:, :3, 3], reference_poses[:, :3, 3], max_distance)
    if max_angle_deg < 180.0 and len(q):
        keep = np.zeros(len(q), bool)
        for start in range(0, len(q), _PAIR_BLOCK):
            qs, rs = q[start:start + _PAIR_BLOCK], r[start:start + _PAIR_BLOCK]
            traces = np.einsum("nji,nji->n", query_poses[qs, :3, :3], reference_poses[rs, :3, :3])
            angles = np.degrees(np.arccos(np.clip((traces - 1.0) / 2.0, -1.0, 1.0)))
            keep[start:start + _PAIR_BLOCK] = angles <= max_angle_deg
        q, r = q[keep], r[keep]
    return GroundTruth.from_pairs(q, r, len(query_poses), len(reference_poses),
                                  f"camera centres within {max_distance:g} m and rotation within {max_angle_deg:g} deg")


def heading_difference_deg(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """|a - b| of headings in radians, wrapped to [0, 180] degrees."""
    return np.degrees(np.abs(np.mod(np.asarray(a) - np.asarray(b) + np.pi, 2 * np.pi) - np.pi))


def ground_truth_from_planar_poses(query_xyh: np.ndarray, reference_xyh: np.ndarray, max_distance: float,
                                   max_angle_deg: float = 180.0) -> GroundTruth:
    """2-D form: (x, y, heading in radians) rows; distance in the plane <= d and heading change <= a."""
    query_xyh = np.asarray(query_xyh, np.float64)
    reference_xyh = np.asarray(reference_xyh, np.float64)
    for label, poses in (("query", query_xyh), ("reference", reference_xyh)):
        if poses.ndim != 2 or poses.shape[1] != 3:
            raise ValueError(f"{label} planar poses must be [N, 3] (x, y, heading), got {poses.shape}")
        _check_finite(label, poses)
    q, r = _pairs_within(query_xyh[:, :2], reference_xyh[:, :2], max_distance)
    if max_angle_deg < 180.0 and len(q):
        keep = heading_difference_deg(query_xyh[q, 2], reference_xyh[r, 2]) <= max_angle_deg
        q, r = q[keep], r[keep]
    return GroundTruth.from_pairs(q, r, len(query_xyh), len(reference_xyh),
                                  f"within {max_distance:g} m in the plane and heading within {max_angle_deg:g} deg")


# --------------------------------------------------------------------------- explicit correspondences


def ground_truth_from_names(query_names: Sequence[str], reference_names: Sequence[str], tolerance: int = 0,
                            by: str = "basename") -> GroundTruth:
    """The reference with the same file name is correct (Nordland); `tolerance` also accepts its
    neighbours up to that many rows away in reference order (for sequences sampled densely)."""
    def key(name: str) -> str:
        return PurePosixPath(name).name if by == "basename" else PurePosixPath(name).stem if by == "stem" else name

    if by not in ("basename", "stem", "path"):
        raise ValueError(f"name matching must be by 'basename', 'stem' or 'path', got {by!r}")
    rows: dict[str, int] = {}
    for i, name in enumerate(reference_names):
        k = key(name)
        if k in rows:
            raise ValueError(f"two references share the name {k!r}: the name cannot identify a place")
        rows[k] = i
    q, r = [], []
    for i, name in enumerate(query_names):
        match = rows.get(key(name))
        if match is None:
            continue
        for j in range(max(0, match - tolerance), min(len(reference_names), match + tolerance + 1)):
            q.append(i)
            r.append(j)
    rule = "same file name" + (f" (+-{tolerance} reference frames)" if tolerance else "")
    return GroundTruth.from_pairs(q, r, len(query_names), len(reference_names), rule)


def _as_row(token: str, names: dict[str, int], kind: str, path: Path, line: int) -> int:
    token = token.strip()
    if token in names:
        return names[token]
    stem_match = names.get(PurePosixPath(token).name)
    if stem_match is not None:
        return stem_match
    if re.fullmatch(r"-?\d+", token):
        return int(token)
    raise ValueError(f"{path}:{line}: {kind} {token!r} is neither an image name nor a row number")


def _integers(value: object) -> list[int]:
    """Row numbers from one integer, a flat list/tuple of them, or an integer (or integral float) array.

    Raises ValueError for anything else (strings, nested lists, fractions, NaN, booleans, complex).
    """
    if isinstance(value, np.ndarray) and value.dtype == object:
        if value.ndim > 1:
            raise ValueError("nested lists")
        return [number for item in value.reshape(-1).tolist() for number in _integers(item)]
    if isinstance(value, np.ndarray):
        if value.dtype.kind in "iu":
            return value.reshape(-1).tolist()
        if value.dtype.kind == "f" and np.isfinite(value).all() and (value == np.round(value)).all():
            return value.reshape(-1).astype(np.int64).tolist()
        raise ValueError(f"values of type {value.dtype}")
    if isinstance(value, (list, tuple)):
        if any(isinstance(item, (list, tuple, np.ndarray)) for item in value):
            raise ValueError("nested lists")
        return [number for item in value for number in _integers(item)]
    if isinstance(value, (bool, np.bool_)):
        raise ValueError("a boolean")
    if isinstance(value, (int, np.integer)):
        return [int(value)]
    if isinstance(value, (float, np.floating)) and np.isfinite(value) and float(value).is_integer():
        return [int(value)]
    raise ValueError(f"a {type(value).__name__}")


def _is_pair(row: object) -> bool:
    """Whether a row has the `[query_index, [reference indices]]` form (the second item a sequence)."""
    if isinstance(row, np.ndarray):
        if row.ndim != 1 or len(row) != 2 or row.dtype != object:
            return False
    elif not isinstance(row, (list, tuple)) or len(row) != 2:
        return False
    second = row[1]
    return isinstance(second, (list, tuple)) or (isinstance(second, np.ndarray) and second.ndim >= 1)


def _npy_pairs(data: np.ndarray, path: Path) -> tuple[list[int], list[int]]:
    """(query rows, reference rows) of a ground-truth array in either `.npy` layout."""
    if data.ndim == 0:
        raise ValueError(f"{path}: holds a single value, not one row per query")
    if data.dtype.kind not in "iufO":
        raise ValueError(f"{path}: holds {data.dtype} values, not row numbers")
    rows = list(data)
    pairs_layout = (data.ndim == 2 and data.shape[1] == 2 and data.dtype == object) or (
        data.ndim == 1 and len(rows) > 0 and _is_pair(rows[0]))
    q: list[int] = []
    r: list[int] = []
    for position, row in enumerate(rows):
        try:
            if pairs_layout:
                query = _integers(row[0])
                if len(query) != 1:
                    raise ValueError("a query index that is not one number")
                refs = _integers(row[1])
                query = query[0]
            else:
                query, refs = position, _integers(row)
        except (TypeError, ValueError, IndexError) as exc:
            raise ValueError(f"{path}: row {position} is not [query_index, [reference indices]] ({exc})") from None
        q.extend([query] * len(refs))
        r.extend(refs)
    return q, r


def read_ground_truth_file(path: str | os.PathLike, query_names: Sequence[str],
                           reference_names: Sequence[str]) -> GroundTruth:
    """Correct references of each query from a file.

    `.npy`: VPR-Bench's `ground_truth_new.npy`, rows `[query_index, [reference indices]]`, or an
    array with one list of reference indices per query (its position being the query index).
    Text (`.txt`, `.csv`): one line per query, `query ref [ref ...]` separated by commas or spaces,
    each an image name (relative, or just the file name) or a 0-based row number; `#` comments.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such ground-truth file")
    nq, nr = len(query_names), len(reference_names)
    if path.suffix.lower() == ".npy":
        # Object arrays (VPR-Bench's layout) are unpickled with numpy types only: a file cannot run code.
        q, r = _npy_pairs(load_npy(path), path)
        try:
            return GroundTruth.from_pairs(q, r, nq, nr, f"correspondences from {path.name}")
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from None
    query_rows = {n: i for i, n in enumerate(query_names)}
    query_rows.update({PurePosixPath(n).name: i for i, n in enumerate(query_names)})
    reference_rows = {n: i for i, n in enumerate(reference_names)}
    reference_rows.update({PurePosixPath(n).name: i for i, n in enumerate(reference_names)})
    q, r = [], []
    first = True
    with open(path, newline="", encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            tokens = next(csv.reader([line])) if "," in line else line.split()
            tokens = [t.strip() for t in tokens if t.strip()]
            if first and tokens and tokens[0].lower() in ("query", "query_name", "query_index"):
                first = False
                continue  # header
            first = False
            if len(tokens) < 2:
                raise ValueError(f"{path}:{number}: expected 'query reference [reference ...]', got {line[:80]!r}")
            query = _as_row(tokens[0], query_rows, "query", path, number)
            for token in tokens[1:]:
                q.append(query)
                r.append(_as_row(token, reference_rows, "reference", path, number))
    try:
        return GroundTruth.from_pairs(q, r, nq, nr, f"correspondences from {path.name}")
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None
