"""A retrieval dataset: one reference image set, one or more query image sets, and a ground-truth rule."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from ..utils.images import IMAGE_EXTENSIONS, read_image
from .ground_truth import GroundTruth, ground_truth_from_names, ground_truth_from_planar_poses, ground_truth_from_poses


def natural_key(name: str) -> list:
    """Sort key that orders embedded numbers by value ('2.jpg' before '10.jpg')."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def list_image_names(folder: Path, recursive: bool = True) -> list[str]:
    """Image files under `folder` as POSIX paths relative to it, in natural order."""
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such image folder")
    pattern = "**/*" if recursive else "*"
    names = [p.relative_to(folder).as_posix() for p in folder.glob(pattern)
             if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS]
    if not names:
        raise FileNotFoundError(f"{folder}: no images ({', '.join(IMAGE_EXTENSIONS)}) found")
    return sorted(names, key=natural_key)


class ImageTransform:
    """Preprocessing applied to every image of a set after reading; `description` identifies it in caches."""

    description = "identity"

    def __call__(self, image: np.ndarray) -> np.ndarray:
        """Return the image unchanged."""
        return image


@dataclass
class ImageSet:
    """Images of one traversal or session: names relative to `root`, optional poses and preprocessing.

    Indexing it (`image_set[i]`) reads and preprocesses image i, so an ImageSet can be handed to
    anything that takes a sequence of images (DenseVLAD.fit, k-means initialisation).
    """

    name: str
    root: Path
    names: list[str]
    key_prefix: str = ""  # root relative to the dataset root: feature-file keys are `<prefix>/<name>`
    poses: np.ndarray | None = None  # [N, 4, 4] camera-to-world (3-D ground truth)
    planar_poses: np.ndarray | None = None  # [N, 3] x, y, heading in radians (2-D ground truth)
    timestamps: np.ndarray | None = None  # [N] seconds
    transform: ImageTransform | None = None
    grayscale: bool = False

    def __post_init__(self) -> None:
        self.root = Path(self.root)
        n = len(self.names)
        for label, array, shape in (("poses", self.poses, (4, 4)), ("planar_poses", self.planar_poses, (3,)),
                                    ("timestamps", self.timestamps, ())):
            if array is not None and np.shape(array) != (n, *shape):
                raise ValueError(f"image set {self.name!r}: {label} has shape {np.shape(array)}, "
                                 f"expected {(n, *shape)}")

    def __len__(self) -> int:
        return len(self.names)

    def path(self, i: int) -> Path:
        """File of image i."""
        return self.root / self.names[i]

    def load(self, i: int) -> np.ndarray:
        """Image i, read (with a clear error naming the file) and preprocessed."""
        image = read_image(self.path(i), grayscale=self.grayscale)
        return self.transform(image) if self.transform is not None else image

    def __getitem__(self, i: int) -> np.ndarray:
        return self.load(int(i))

    @property
    def keys(self) -> list[str]:
        """Names relative to the dataset root: the keys of precomputed feature files."""
        return [f"{self.key_prefix}/{n}" if self.key_prefix else n for n in self.names]

    def subset(self, indices: Sequence[int] | np.ndarray) -> "ImageSet":
        """The images at `indices`, with their poses."""
        indices = np.asarray(indices, np.int64)

        def take(array):
            return None if array is None else np.asarray(array)[indices]

        return replace(self, names=[self.names[i] for i in indices], poses=take(self.poses),
                       planar_poses=take(self.planar_poses), timestamps=take(self.timestamps))

    def identity(self) -> str:
        """A short hash of what defines the pixels of this set (root, names, preprocessing): a cache key."""
        digest = hashlib.sha256()
        digest.update(str(self.root.resolve()).encode())
        digest.update(("gray" if self.grayscale else "asis").encode())
        digest.update((self.transform.description if self.transform else "identity").encode())
        for name in self.names:
            digest.update(b"\0" + name.encode())
        return digest.hexdigest()[:16]


@dataclass
class GroundTruthRule:
    """How the true references of a query are decided."""

    kind: str  # "names", "poses" (3-D), "planar_poses" (2-D) or "given"
    max_distance: float | None = None
    max_angle_deg: float = 180.0
    tolerance: int = 0  # for "names": accepted reference-row offset
    given: dict[str, GroundTruth] = field(default_factory=dict)  # for "given": per query-set name

    def build(self, reference: ImageSet, queries: ImageSet) -> GroundTruth:
        """The [Q, R] ground truth of a query set against the reference set."""
        if self.kind == "names":
            return ground_truth_from_names(queries.names, reference.names, tolerance=self.tolerance)
        if self.kind in ("poses", "planar_poses"):
            if self.max_distance is None:
                raise ValueError("pose ground truth needs a distance threshold (--max-distance)")
            ref, query = getattr(reference, self.kind), getattr(queries, self.kind)
            if ref is None or query is None:
                missing = reference.name if ref is None else queries.name
                raise ValueError(f"image set {missing!r} has no {self.kind.replace('_', ' ')} for the ground truth")
            build = ground_truth_from_poses if self.kind == "poses" else ground_truth_from_planar_poses
            return build(query, ref, self.max_distance, self.max_angle_deg)
        if self.kind == "given":
            if queries.name not in self.given:
                raise ValueError(f"no ground truth was given for query set {queries.name!r}")
            return self.given[queries.name]
        raise ValueError(f"unknown ground-truth kind {self.kind!r}")


@dataclass
class RetrievalDataset:
    """Reference images, query image sets and the rule that says which references are correct."""

    name: str
    root: Path
    reference: ImageSet
    queries: list[ImageSet]
    rule: GroundTruthRule
    notes: list[str] = field(default_factory=list)  # preprocessing and choices, printed and reported

    def ground_truth(self, queries: ImageSet) -> GroundTruth:
        """Ground truth of one query set."""
        return self.rule.build(self.reference, queries)

    def subsampled(self, reference_step: int = 1, query_step: int = 1) -> "RetrievalDataset":
        """Every `reference_step`-th reference and `query_step`-th query (quick runs)."""
        if reference_step == 1 and query_step == 1:
            return self
        ref_rows = np.arange(0, len(self.reference), reference_step)
        rule = self.rule
        if rule.kind == "given":
            given = {}
            for query_set in self.queries:
                rows = np.arange(0, len(query_set), query_step)
                given[query_set.name] = rule.given[query_set.name].subset(rows, ref_rows)
            rule = replace(rule, given=given)
        queries = [q.subset(np.arange(0, len(q), query_step)) for q in self.queries]
        note = f"subsampled: every {reference_step}th reference and every {query_step}th query"
        return replace(self, reference=self.reference.subset(ref_rows), queries=queries, rule=rule,
                       notes=self.notes + [note])


DatasetReader = Callable[..., RetrievalDataset]
