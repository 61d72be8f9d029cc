"""Index a map: one global descriptor per keyframe, with the original's subsampling and mission options.

Descriptors come from a `describe` function over a list of keyframes; the default runs the local
batched pipeline (decode and resize in DataLoader workers overlapping the network), and
`hierloc.distributed` supplies one that runs on a Ray cluster. Both give the same index.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from ..extraction.pipeline import BatchConfig, describe_items
from ..maps.types import Keyframe, Map
from .descriptor_index import DescriptorIndex

logger = logging.getLogger(__name__)

# What a describer returns per mission: descriptors of the described keyframes (n, D), their positions
# in the mission's list, and [(position, reason)] for the keyframes that could not be read.
Described = tuple[np.ndarray, list[int], list[tuple[int, str]]]
# [(mission name, its keyframes)] -> one Described per mission, in order. All missions go in one call
# so that a distributed describer starts its model replicas once.
DescribeFn = Callable[[Sequence[tuple[str, Sequence[Keyframe]]]], list[Described]]


@dataclass
class BuildReport:
    """What happened while indexing: counts per mission and the keyframes that were skipped."""

    indexed: dict[str, int] = field(default_factory=dict)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (keyframe name, reason)


def load_keyframe_image(keyframe: Keyframe) -> np.ndarray:
    """The keyframe's pixels (a module-level function, so that worker processes can run it)."""
    return keyframe.load_image()


def local_describer(extractor, config: BatchConfig = BatchConfig()) -> DescribeFn:
    """Describe keyframes in this process with the batched DataLoader pipeline (`extractor`: a Describer)."""

    def describe_mission(name: str, keyframes: Sequence[Keyframe]) -> Described:
        chunks, positions, failures = [], [], []
        for batch_positions, descriptors, batch_failures in describe_items(
            extractor, keyframes, load_keyframe_image, config, desc=f"mission {name}"
        ):
            chunks.append(descriptors)
            positions.extend(batch_positions)
            failures.extend(batch_failures)
        dim = extractor.descriptor_dim
        return (np.concatenate(chunks) if chunks else np.zeros((0, dim), np.float32)), positions, failures

    def describe(groups: Sequence[tuple[str, Sequence[Keyframe]]]) -> list[Described]:
        return [describe_mission(name, keyframes) for name, keyframes in groups]

    return describe


def build_index(
    map_: Map,
    describer,
    subsampling: int = 1,
    missions: list[str] | None = None,
    store_poses: bool = False,
    batch_size: int = 8,
    io_workers: int = 2,
    describe: DescribeFn | None = None,
    model_name: str | None = None,
) -> tuple[DescriptorIndex, BuildReport]:
    """Describe every `subsampling`-th keyframe of the selected missions; failed images are skipped.

    `describer` is a `hierloc.describers.Describer` (its preprocessing runs in the decode workers);
    `io_workers` decode and prepare images in parallel with the network (0: in this process);
    `describe` replaces the local pipeline (e.g. `hierloc.distributed.ray_describer`). The index
    is named after the describer's model (`model_name` overrides it). The caller records the
    describer in `index.metadata` (`hierloc.describers.describer_record`) when it saves the index.
    """
    if describe is None:
        if describer is None:
            raise ValueError("build_index needs a describer or a describe function")
        describe = local_describer(describer, BatchConfig(batch_size=batch_size, num_workers=io_workers))
    model_name = model_name or describer.name
    selected = map_.select(missions, subsampling)
    report = BuildReport()
    keyframes: list[Keyframe] = []
    chunks: list[np.ndarray] = []
    groups = [(mission.name, list(mission.keyframes)) for mission in selected.missions.values()]
    for (name, mission_keyframes), (descriptors, positions, failures) in zip(groups, describe(groups)):
        for position, reason in sorted(failures):
            skipped = mission_keyframes[position].name
            logger.warning("skipping keyframe %s of mission %s: %s", skipped, name, reason)
            report.skipped.append((skipped, reason))
        keyframes.extend(mission_keyframes[p] for p in positions)
        chunks.append(descriptors)
        report.indexed[name] = len(positions)
    if not keyframes:
        raise ValueError(f"map {map_.name!r}: no keyframe could be indexed ({len(report.skipped)} skipped)")
    with_poses = store_poses and all(kf.pose is not None for kf in keyframes)
    if store_poses and not with_poses:
        logger.warning("some keyframes have no pose: the index is written without poses")
    metadata = {"subsampling": subsampling, "missions": list(selected.missions),
                "descriptor_dim": int(chunks[0].shape[1])}
    index = DescriptorIndex(
        model_name=model_name,
        data_name=map_.name,
        descriptors=np.concatenate(chunks).astype(np.float32, copy=False),
        keyframe_ids=[kf.id for kf in keyframes],
        missions=[kf.mission for kf in keyframes],
        names=[kf.name for kf in keyframes],
        positions=np.stack([kf.pose[:3, 3] for kf in keyframes]) if with_poses else None,
        rotations=np.stack([kf.pose[:3, :3] for kf in keyframes]) if with_poses else None,
        metadata=metadata,
    )
    return index, report
