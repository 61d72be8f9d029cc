"""Index a map: one global descriptor per keyframe, with the original's subsampling and mission options."""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
from tqdm import tqdm

from ..extraction import GlobalExtractor
from ..maps.types import Keyframe, Map
from .descriptor_index import DescriptorIndex

logger = logging.getLogger(__name__)


@dataclass
class BuildReport:
    """What happened while indexing: counts per mission and the keyframes that were skipped."""

    indexed: dict[str, int] = field(default_factory=dict)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (keyframe name, reason)


def _load(keyframe: Keyframe) -> np.ndarray | Exception:
    try:
        return keyframe.load_image()
    except Exception as exc:  # any unreadable frame is reported, never fatal for the whole index
        return exc


def build_index(
    map_: Map,
    extractor: GlobalExtractor,
    model_name: str,
    subsampling: int = 1,
    missions: list[str] | None = None,
    store_poses: bool = False,
    batch_size: int = 1,
    io_workers: int = 2,
) -> tuple[DescriptorIndex, BuildReport]:
    """Describe every `subsampling`-th keyframe of the selected missions; failed images are skipped."""
    selected = map_.select(missions, subsampling)
    report = BuildReport()
    rows: list[tuple[Keyframe, np.ndarray]] = []
    with ThreadPoolExecutor(max_workers=io_workers) as pool:
        for mission in selected.missions.values():
            keyframes = list(mission.keyframes)
            before = len(rows)
            images = pool.map(_load, keyframes)  # decoded ahead of the network, in order
            pending: list[tuple[Keyframe, np.ndarray]] = []

            def flush() -> None:
                if pending:
                    descriptors = extractor.describe_batch([image for _, image in pending])
                    rows.extend(zip([kf for kf, _ in pending], descriptors))
                    pending.clear()

            for keyframe, image in tqdm(zip(keyframes, images), total=len(keyframes),
                                        desc=f"mission {mission.name}", unit="kf"):
                if isinstance(image, Exception):
                    logger.warning("skipping keyframe %s of mission %s: %s", keyframe.name, mission.name, image)
                    report.skipped.append((keyframe.name, str(image)))
                    continue
                pending.append((keyframe, image))
                if len(pending) >= batch_size:
                    flush()
            flush()
            report.indexed[mission.name] = len(rows) - before
    if not rows:
        raise ValueError(f"map {map_.name!r}: no keyframe could be indexed ({len(report.skipped)} skipped)")
    keyframes = [kf for kf, _ in rows]
    with_poses = store_poses and all(kf.pose is not None for kf in keyframes)
    if store_poses and not with_poses:
        logger.warning("some keyframes have no pose: the index is written without poses")
    index = DescriptorIndex(
        model_name=model_name,
        data_name=map_.name,
        descriptors=np.stack([d for _, d in rows]).astype(np.float32),
        keyframe_ids=[kf.id for kf in keyframes],
        missions=[kf.mission for kf in keyframes],
        names=[kf.name for kf in keyframes],
        positions=np.stack([kf.pose[:3, 3] for kf in keyframes]) if with_poses else None,
        rotations=np.stack([kf.pose[:3, :3] for kf in keyframes]) if with_poses else None,
        metadata={"subsampling": subsampling, "missions": list(selected.missions),
                  "descriptor_dim": extractor.descriptor_dim},
    )
    return index, report
