"""Pairwise matching of local features: mutual nearest neighbours (+ ratio test) and LightGlue/LighterGlue.

A matcher returns hloc's `matches0` (for each keypoint of image 0, the index of its match in
image 1 or -1) and `matching_scores0`. Descriptors are unit vectors, so squared distances are
2 - 2 * similarity and the whole search is one matrix product (torch) or a flat inner-product
index (faiss); pycolmap's CPU matcher is far slower at these sizes (see the issue's measurements).
"""

from __future__ import annotations

import abc
import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch

from ..utils.device import resolve_device
from .torch_utils import load_state_dict, read_weights
from .types import LocalFeatures

MNN_BACKENDS = ("torch", "faiss")


class Matcher(abc.ABC):
    """Matches the keypoints of two images."""

    name: ClassVar[str] = ""

    @abc.abstractmethod
    def match(self, features0: LocalFeatures, features1: LocalFeatures) -> tuple[np.ndarray, np.ndarray]:
        """(matches0 (N0,) int32 with -1 for unmatched, matching_scores0 (N0,) float32)."""

    def describe_config(self) -> dict[str, Any]:
        """The matcher's name and configuration, stored with match files and maps."""
        return {"name": self.name, **dataclasses.asdict(self.config)}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config})"


@dataclass
class MutualNNConfig:
    """Mutual nearest neighbours, optionally with Lowe's ratio test and a minimum cosine similarity."""

    ratio_threshold: float | None = None  # distance ratio nearest / second nearest must be below this
    min_similarity: float | None = None  # cosine similarity of a match must exceed this
    backend: str = "torch"


def _unmatched(n: int) -> tuple[np.ndarray, np.ndarray]:
    return np.full(n, -1, np.int32), np.zeros(n, np.float32)


def _on_cpu(values: np.ndarray | torch.Tensor) -> bool:
    return not isinstance(values, torch.Tensor) or values.device.type == "cpu"


def _as_array(values: np.ndarray | torch.Tensor) -> np.ndarray:
    """float32 C-contiguous numpy array (a view of a CPU float32 tensor, without copying)."""
    if isinstance(values, torch.Tensor):
        values = values.detach().numpy() if values.dtype == torch.float32 else values.detach().float().numpy()
    return np.ascontiguousarray(values, dtype=np.float32)


def _as_tensor(values: np.ndarray | torch.Tensor) -> torch.Tensor:
    return values if isinstance(values, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(values,
                                                                                                 dtype=np.float32))


class MutualNearestNeighbor(Matcher):
    """Keeps i <-> j when each is the other's nearest neighbour and the optional tests pass."""

    name = "mnn"

    def __init__(self, config: MutualNNConfig | None = None) -> None:
        self.config = config = config or MutualNNConfig()
        if config.backend not in MNN_BACKENDS:
            raise ValueError(f"unknown matching backend {config.backend!r}; choose one of {', '.join(MNN_BACKENDS)}")
        if config.ratio_threshold is not None and not 0 < config.ratio_threshold <= 1:
            raise ValueError(f"ratio_threshold must be in (0, 1], got {config.ratio_threshold}")

    def match(self, features0: LocalFeatures, features1: LocalFeatures) -> tuple[np.ndarray, np.ndarray]:
        """Mutual nearest neighbours of the two descriptor sets."""
        return self.match_descriptors(features0.descriptors, features1.descriptors)

    def match_descriptors(self, descriptors0: np.ndarray | torch.Tensor,
                          descriptors1: np.ndarray | torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """matches0 and similarity scores of two (N, D) unit-descriptor sets (numpy or torch)."""
        n0, n1 = len(descriptors0), len(descriptors1)
        need_two = self.config.ratio_threshold is not None
        if n0 == 0 or n1 < (2 if need_two else 1):
            return _unmatched(n0)
        if self.config.backend == "faiss":
            sim01, nn01, mutual = self._search_faiss(np.asarray(descriptors0), np.asarray(descriptors1), need_two)
        elif _on_cpu(descriptors0) and _on_cpu(descriptors1):
            sim01, nn01, mutual = self._search_numpy(_as_array(descriptors0), _as_array(descriptors1), need_two)
        else:
            sim01, nn01, mutual = self._search_torch(descriptors0, descriptors1, need_two)
        return self._select(sim01, nn01, mutual)

    def match_many(self, descriptors0: np.ndarray | torch.Tensor, others: list[np.ndarray | torch.Tensor],
                   max_elements: int = 1 << 22) -> list[tuple[np.ndarray, np.ndarray]]:
        """`match_descriptors(descriptors0, d)` for every d of `others`, as batched matrix products (torch).

        Candidates are zero-padded to the largest and processed in chunks of at most `max_elements`
        similarities; the matches are those of each pair on its own (up to floating-point rounding).
        """
        n0, need_two = len(descriptors0), self.config.ratio_threshold is not None
        results: list[tuple[np.ndarray, np.ndarray] | None] = [None] * len(others)
        todo = [i for i, d in enumerate(others) if n0 and len(d) >= (2 if need_two else 1)]
        for i in set(range(len(others))) - set(todo):
            results[i] = _unmatched(n0)
        if self.config.backend != "torch" or not todo:
            for i in todo:
                results[i] = self.match_descriptors(descriptors0, others[i])
            return results
        t0 = _as_tensor(descriptors0).float()
        largest = max(len(others[i]) for i in todo)
        chunk = max(1, max_elements // max(1, n0 * largest))
        for start in range(0, len(todo), chunk):
            rows = todo[start:start + chunk]
            sizes = [len(others[i]) for i in rows]
            width = max(sizes)
            padded = t0.new_zeros((len(rows), width, t0.shape[1]))
            for b, i in enumerate(rows):
                padded[b, :sizes[b]] = _as_tensor(others[i]).float()
            with torch.inference_mode():
                similarity = torch.matmul(t0[None], padded.transpose(1, 2))  # (B, N0, width)
                if min(sizes) < width:  # padded columns never win
                    counts = torch.tensor(sizes, device=t0.device)[:, None]
                    valid = torch.arange(width, device=t0.device)[None, :] < counts
                    similarity.masked_fill_(~valid[:, None, :], -float("inf"))
                top = similarity.topk(2, dim=2) if need_two else similarity.max(dim=2, keepdim=True)
                column_best = similarity.amax(dim=1)  # (B, width)
                mutual = top.values[..., 0] >= torch.gather(column_best, 1, top.indices[..., 0])
            values, indices, mutual = top.values.cpu().numpy(), top.indices.cpu().numpy(), mutual.cpu().numpy()
            for b, i in enumerate(rows):
                results[i] = self._select(values[b], indices[b], mutual[b].copy())
        return results

    def _select(self, sim01: np.ndarray, nn01: np.ndarray, mutual: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """matches0 and scores from the top similarities (N0, 1|2), their columns and the mutual test."""
        n0 = len(sim01)
        need_two = self.config.ratio_threshold is not None
        best = sim01[:, 0]
        keep = mutual
        if self.config.min_similarity is not None:
            keep &= best > self.config.min_similarity
        if need_two:
            # Distances of unit vectors: d^2 = 2 - 2 s.
            d1 = np.sqrt(np.maximum(2.0 - 2.0 * best, 0.0))
            d2 = np.sqrt(np.maximum(2.0 - 2.0 * sim01[:, 1], 0.0))
            keep &= d1 < self.config.ratio_threshold * d2
        rows = np.flatnonzero(keep)
        _, first = np.unique(nn01[rows, 0], return_index=True)  # exact ties could claim a column twice
        rows = rows[first]
        matches0 = np.full(n0, -1, np.int32)
        scores0 = np.zeros(n0, np.float32)
        matches0[rows] = nn01[rows, 0]
        scores0[rows] = best[rows]
        return matches0, scores0

    @staticmethod
    def _search_numpy(d0: np.ndarray, d1: np.ndarray, need_two: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The torch backend on a CPU: the same search, about twice as fast (a query's matching stage).

        numpy's OpenBLAS product ran at twice the speed of torch's MKL one on the AMD EPYC of the
        benchmarks, and torch's row maximum with indices is five times slower than numpy's argmax.
        """
        similarity = d0 @ d1.T
        rows = np.arange(len(d0))
        nearest = similarity.argmax(axis=1)
        best = similarity[rows, nearest]
        mutual = best >= similarity.max(axis=0)[nearest]
        if not need_two:
            return best[:, None], nearest[:, None], mutual
        similarity[rows, nearest] = -np.inf  # the second nearest is then the row maximum
        second = similarity.argmax(axis=1)
        return np.stack([best, similarity[rows, second]], axis=1), np.stack([nearest, second], axis=1), mutual

    @staticmethod
    def _search_torch(d0, d1, need_two: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(top similarities (N0, k), their columns (N0, k), mutual (N0,) bool)."""
        t0 = d0 if isinstance(d0, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(d0, dtype=np.float32))
        t1 = d1 if isinstance(d1, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(d1, dtype=np.float32))
        with torch.inference_mode():
            similarity = t0.float() @ t1.float().T
            # A row maximum is about twice as fast as topk(1) on CPU.
            top = similarity.topk(2, dim=1) if need_two else similarity.max(dim=1, keepdim=True)
            # Mutual: this row is the best of its nearest column. Comparing with the column maximum avoids an
            # argmax across rows, several times slower than a row-wise reduction on CPU.
            mutual = top.values[:, 0] >= similarity.amax(dim=0)[top.indices[:, 0]]
        return top.values.cpu().numpy(), top.indices.cpu().numpy(), mutual.cpu().numpy()

    @staticmethod
    def _search_faiss(d0: np.ndarray, d1: np.ndarray, need_two: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        import faiss

        d0 = np.ascontiguousarray(d0, dtype=np.float32)
        d1 = np.ascontiguousarray(d1, dtype=np.float32)
        index1 = faiss.IndexFlatIP(d1.shape[1])
        index1.add(d1)
        sim01, nn01 = index1.search(d0, 2 if need_two else 1)
        index0 = faiss.IndexFlatIP(d0.shape[1])
        index0.add(d0)
        _, nn10 = index0.search(d1, 1)  # two searches round differently: compare indices, not similarities
        return sim01, nn01, nn10[nn01[:, 0], 0] == np.arange(len(d0))


@dataclass
class LightGlueConfig:
    """LightGlue (or LighterGlue for XFeat) from kornia; `features` picks the trained weights."""

    features: str = "aliked"  # aliked, disk or xfeat (LighterGlue)
    filter_threshold: float = 0.1
    depth_confidence: float | None = None  # None: kornia's default for these features (early stopping)
    width_confidence: float | None = None  # None: kornia's default (point pruning)
    weights: str | None = None  # default: the registry entry for `features`


LIGHTGLUE_WEIGHTS = {"aliked": "aliked_lightglue", "disk": "disk_lightglue", "xfeat": "xfeat_lighterglue"}


class LightGlue(Matcher):
    """Attention-based matcher; keypoint positions and image sizes are inputs, not only descriptors."""

    name = "lightglue"

    def __init__(self, config: LightGlueConfig | None = None, device: str | torch.device = "cpu") -> None:
        import kornia.feature as KF

        self.config = config = config or LightGlueConfig()
        if config.features not in LIGHTGLUE_WEIGHTS:
            raise ValueError(f"no LightGlue weights for {config.features!r} features; "
                             f"available: {', '.join(LIGHTGLUE_WEIGHTS)}")
        self.device = resolve_device(device)
        overrides = {"filter_threshold": config.filter_threshold}
        # Building with features=None downloads nothing; the per-feature configuration is applied by hand.
        conf = {**KF.LightGlue.features[config.features], **overrides}
        for key in ("depth_confidence", "width_confidence"):
            if getattr(config, key) is not None:
                conf[key] = getattr(config, key)
        conf.pop("weights", None)
        self.model = KF.LightGlue(features=None, **conf)
        state_dict, source = read_weights(config.weights or LIGHTGLUE_WEIGHTS[config.features])
        # `log_assignment.*.r` is a leftover of early DISK checkpoints that the network no longer has.
        load_state_dict(self.model, _lightglue_state_dict(state_dict, self.model.conf.n_layers), source,
                        derived=("confidence_thresholds",), unused=r"log_assignment\.\d+\.r")
        self.model = self.model.eval().to(self.device)

    @torch.inference_mode()
    def match(self, features0: LocalFeatures, features1: LocalFeatures) -> tuple[np.ndarray, np.ndarray]:
        """LightGlue's matches and confidences (scores above `filter_threshold`)."""
        n0 = len(features0)
        if n0 == 0 or len(features1) == 0:
            return _unmatched(n0)
        out = self.model({"image0": self._inputs(features0), "image1": self._inputs(features1)})
        matches0 = out["matches0"][0].cpu().numpy().astype(np.int32)
        scores0 = out["matching_scores0"][0].float().cpu().numpy()
        return matches0, np.where(matches0 >= 0, scores0, 0.0).astype(np.float32)

    def _inputs(self, features: LocalFeatures) -> dict[str, torch.Tensor]:
        # LightGlue was trained on OpenCV pixel coordinates (top-left pixel centre at 0).
        keypoints = torch.from_numpy(features.keypoints - 0.5)[None].to(self.device)
        return {"keypoints": keypoints, "descriptors": torch.from_numpy(features.descriptors)[None].to(self.device),
                "image_size": torch.tensor([features.image_size], dtype=torch.float32, device=self.device)}


def _lightglue_state_dict(state_dict: dict, n_layers: int) -> dict:
    """Rename checkpoint keys as kornia's loader does: drop 'matcher.', old per-layer attention names."""
    renamed = {}
    for key, value in state_dict.items():
        if key.startswith("extractor."):
            continue  # LighterGlue's file also holds the XFeat backbone
        key = key[len("matcher."):] if key.startswith("matcher.") else key
        for i in range(n_layers):
            key = key.replace(f"self_attn.{i}.", f"transformers.{i}.self_attn.")
            key = key.replace(f"cross_attn.{i}.", f"transformers.{i}.cross_attn.")
        renamed[key] = value
    return renamed
