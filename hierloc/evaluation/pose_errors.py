"""6-DoF pose errors as the long-term localization benchmarks report them, SfM-to-metric alignment, a plot.

All poses here are camera-to-world T_world_cam (hierloc's keyframe convention); convert hloc/COLMAP
world-to-camera poses with `invert_pose` first. A failed query counts as an infinite error: it
is in no threshold bin and pushes the median up, as in the benchmarks.
"""

from __future__ import annotations

import math
import os
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

# (metres, degrees) bins of the long-term visual localization benchmark (Sattler et al. CVPR 2018).
DEFAULT_THRESHOLDS = ((0.25, 2.0), (0.5, 5.0), (5.0, 10.0))


@dataclass(frozen=True)
class Similarity:
    """x_target = scale * R @ x_source + t."""

    scale: float
    rotation: np.ndarray
    translation: np.ndarray

    def transform_points(self, points: np.ndarray) -> np.ndarray:
        """Map (N, 3) points."""
        return self.scale * np.asarray(points, dtype=np.float64) @ self.rotation.T + self.translation

    def transform_pose(self, T_world_cam: np.ndarray) -> np.ndarray:
        """A camera-to-world pose in the target frame (rotation turned, centre moved; scale leaves no trace)."""
        T = np.eye(4)
        T[:3, :3] = self.rotation @ np.asarray(T_world_cam)[:3, :3]
        T[:3, 3] = self.transform_points(np.asarray(T_world_cam)[:3, 3][None])[0]
        return T


def nearest_rotation(matrix: np.ndarray) -> np.ndarray:
    """The rotation closest to a 3x3 matrix (SVD); ground-truth files round their rotations."""
    u, _, vt = np.linalg.svd(np.asarray(matrix, dtype=np.float64))
    d = np.sign(np.linalg.det(u @ vt))
    return u @ np.diag([1.0, 1.0, d]) @ vt


def rotation_error_deg(R_a: np.ndarray, R_b: np.ndarray) -> float:
    """Angle (degrees) of the rotation between two orientations, accurate for small angles.

    arccos((trace - 1) / 2) loses all precision below ~0.05 deg when a rotation is rounded to 6
    decimals (as in the Strecha files): its trace error is as large as 1 - cos of the angle.
    """
    R = nearest_rotation(R_a).T @ nearest_rotation(R_b)
    sine = np.linalg.norm([R[2, 1] - R[1, 2], R[0, 2] - R[2, 0], R[1, 0] - R[0, 1]]) / 2.0
    cosine = (np.trace(R) - 1.0) / 2.0
    return float(np.degrees(np.arctan2(sine, cosine)))


def pose_error(T_world_cam: np.ndarray, T_world_cam_true: np.ndarray) -> tuple[float, float]:
    """(camera centre distance, rotation angle in degrees) between an estimate and the truth."""
    T, G = np.asarray(T_world_cam, dtype=np.float64), np.asarray(T_world_cam_true, dtype=np.float64)
    return float(np.linalg.norm(T[:3, 3] - G[:3, 3])), rotation_error_deg(T[:3, :3], G[:3, :3])


def align_similarity(source: Mapping[str, np.ndarray], target: Mapping[str, np.ndarray],
                     use_rotations: bool = True) -> Similarity:
    """The similarity taking the `source` camera poses onto the `target` ones (the names they share).

    With `use_rotations` (default) the rotation is the mean of the relative camera orientations and
    scale and translation follow from the camera centres, which also works for cameras along a
    line (a vehicle's path), where centres alone leave the rotation about that line open; cameras
    whose centres disagree by more than 3x the median residual are dropped and the fit redone.
    Otherwise pycolmap's LO-RANSAC fits the centres alone (Umeyama), which needs non-collinear ones.
    """
    names = sorted(set(source) & set(target))
    if len(names) < (2 if use_rotations else 3):
        raise ValueError(f"a similarity needs at least {2 if use_rotations else 3} common cameras, got {len(names)}")
    src = np.stack([np.asarray(source[n], dtype=np.float64)[:3, 3] for n in names])
    dst = np.stack([np.asarray(target[n], dtype=np.float64)[:3, 3] for n in names])
    if not use_rotations:
        import pycolmap

        options = pycolmap.RANSACOptions()
        options.max_error = 0.05 * float(np.ptp(dst, axis=0).max() or 1.0)
        options.random_seed = 0
        result = pycolmap.estimate_sim3d_robust(src, dst, options)
        if result is None:
            raise ValueError("could not align the camera centres with a similarity (collinear cameras?)")
        matrix = np.asarray(result["tgt_from_src"].matrix(), dtype=np.float64)  # [s R | t]
        scale = float(np.cbrt(np.linalg.det(matrix[:, :3])))
        return Similarity(scale, matrix[:, :3] / scale, matrix[:, 3].copy())
    # R_target = R_sim @ R_source for every camera: the chordal mean of R_target R_source^T.
    rotation = nearest_rotation(sum(np.asarray(target[n])[:3, :3] @ np.asarray(source[n])[:3, :3].T for n in names))
    keep = np.ones(len(names), dtype=bool)
    for _ in range(2):
        rotated = src[keep] @ rotation.T
        a, b = rotated - rotated.mean(axis=0), dst[keep] - dst[keep].mean(axis=0)
        denominator = float(np.sum(a * a))
        if denominator < 1e-18:
            raise ValueError("the source cameras share one centre: no scale can be found")
        scale = float(np.sum(a * b)) / denominator
        translation = dst[keep].mean(axis=0) - scale * rotated.mean(axis=0)
        residuals = np.linalg.norm(scale * src @ rotation.T + translation - dst, axis=1)
        keep = residuals <= 3.0 * np.median(residuals) + 1e-9
        if keep.sum() < 2:
            break
    return Similarity(scale, rotation, translation)


def pose_errors(estimated: Mapping[str, np.ndarray | None], ground_truth: Mapping[str, np.ndarray],
                ) -> dict[str, tuple[float, float]]:
    """{name: (translation error m, rotation error deg)} for every ground-truth query; inf for missing ones."""
    errors = {}
    for name, truth in ground_truth.items():
        pose = estimated.get(name)
        errors[name] = (math.inf, math.inf) if pose is None else pose_error(pose, truth)
    return errors


def summarize_errors(errors: Mapping[str, tuple[float, float]],
                     thresholds: Sequence[tuple[float, float]] = DEFAULT_THRESHOLDS) -> dict:
    """Median errors and the percentage of queries within each (metres, degrees) threshold."""
    values = np.array(list(errors.values()), dtype=np.float64).reshape(-1, 2)
    n = len(values)
    summary = {"num_queries": n, "num_localized": int(np.isfinite(values[:, 0]).sum()) if n else 0,
               "median_translation_m": float(np.median(values[:, 0])) if n else math.nan,
               "median_rotation_deg": float(np.median(values[:, 1])) if n else math.nan, "recall": {}}
    for metres, degrees in thresholds:
        within = (values[:, 0] <= metres) & (values[:, 1] <= degrees) if n else np.zeros(0, bool)
        summary["recall"][f"{metres:g}m_{degrees:g}deg"] = float(100.0 * within.mean()) if n else math.nan
    return summary


def format_summary(summary: dict) -> str:
    """One line: localized count, medians and the threshold percentages."""
    bins = ", ".join(f"{k.replace('m_', ' m, ').replace('deg', ' deg')}: {v:.1f} %"
                     for k, v in summary["recall"].items())
    med_t, med_r = summary["median_translation_m"], summary["median_rotation_deg"]
    median = (f"median {100 * med_t:.2f} cm, {med_r:.3f} deg" if math.isfinite(med_t) else "median: not localized")
    return f"{summary['num_localized']}/{summary['num_queries']} localized; {median}; {bins}"


def plot_localization(path: str | os.PathLike, map_poses: Mapping[str, np.ndarray],
                      ground_truth: Mapping[str, np.ndarray], estimated: Mapping[str, np.ndarray | None],
                      title: str = "") -> Path:
    """PNG, seen from above: map cameras, true query positions, estimates coloured by their error."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..utils.io import atomic_path

    centres = np.stack([np.asarray(T)[:3, 3] for T in [*map_poses.values(), *ground_truth.values()]])
    mean = centres.mean(axis=0)
    # The plane of largest spread of the cameras: the ground plane for vehicles, the arc around a facade.
    _, _, vt = np.linalg.svd(centres - mean, full_matrices=False)
    basis = vt[:2].T if len(centres) > 2 else np.eye(3)[:, :2]

    def project(T: np.ndarray) -> np.ndarray:
        return (np.asarray(T)[:3, 3] - mean) @ basis

    fig, ax = plt.subplots(figsize=(8, 7), dpi=110)
    if map_poses:
        m = np.stack([project(T) for T in map_poses.values()])
        ax.scatter(m[:, 0], m[:, 1], s=14, c="0.6", marker="s", label="map images")
    errors, points = [], []
    for name, truth in ground_truth.items():
        g = project(truth)
        pose = estimated.get(name)
        if pose is None:
            ax.scatter(*g, s=70, marker="x", c="red", zorder=4)
            continue
        e = project(pose)
        ax.plot([g[0], e[0]], [g[1], e[1]], c="0.3", lw=0.8, zorder=2)
        ax.scatter(*g, s=40, facecolors="none", edgecolors="black", zorder=3)
        errors.append(pose_error(pose, truth)[0])
        points.append(e)
    if points:
        points = np.stack(points)
        norm = matplotlib.colors.LogNorm(vmin=max(1e-4, min(errors)), vmax=max(max(errors), 2e-4))
        sc = ax.scatter(points[:, 0], points[:, 1], c=errors, cmap="viridis", norm=norm, s=22, zorder=5,
                        label="localized queries (colour: error)")
        fig.colorbar(sc, ax=ax, label="translation error (m)")
    ax.scatter([], [], s=40, facecolors="none", edgecolors="black", label="true query positions")
    failures = sum(estimated.get(name) is None for name in ground_truth)
    if failures:
        ax.scatter([], [], s=70, marker="x", c="red", label=f"failed queries ({failures})")
    ax.set_aspect("equal", adjustable="datalim")
    ax.set_xlabel("first principal axis of the camera positions (m)")
    ax.set_ylabel("second principal axis (m)")
    ax.legend(loc="best", fontsize=8)
    ax.set_title(textwrap.fill(title, 90), fontsize=9)
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return path
