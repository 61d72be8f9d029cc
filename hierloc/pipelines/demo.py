"""The demo as a library function: a synthetic world written as a dataset, indexed, queried and localized.

`run_demo(DemoConfig(out=...))` renders two missions of the embedded synthetic world (day and dusk
light), writes them as an image dataset (`out/world/day`, `out/world/dusk`, with poses and the camera)
so that every other command can be tried on them, indexes the day mission with the default describer
(`hierloc.describers.default_describer`, recorded in the index), retrieves a keyframe for every dusk
frame (recall@1/5/10, exact and after PCA), builds a 3-D map of the day mission that reuses the index
(its describer and descriptors), and localizes every dusk frame in 6-DoF.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from tqdm import tqdm

from ..utils.io import atomic_path, atomic_write_text, to_json_text
from .indexing import DescriberChoice, IndexBuildConfig, MapSource, build_index_file

REFERENCE, QUERIES = "day", "dusk"


@dataclass
class DemoConfig:
    """What the demo renders and where it writes."""

    out: Path = Path("outputs/demo")
    frames: int = 60
    width: int = 320
    height: int = 240
    seed: int = 0
    model: str = "auto"  # any describer spelling (`hierloc.describers.make_describer`)
    max_distance: float = 1.5  # a retrieved keyframe is right within this many metres
    max_angle: float = 45.0  # ... and this many degrees of viewing direction
    pca_dims: int | None = 32
    localize: bool = True
    threads: int | None = None


@dataclass
class DemoResult:
    """Everything the demo measured (also written to `out/results.json`) and the files it wrote."""

    results: dict[str, Any]
    outputs: dict[str, Path] = field(default_factory=dict)


def _ground_truth(query_poses: np.ndarray, reference_poses: np.ndarray, config: DemoConfig) -> np.ndarray:
    from ..datasets.ground_truth import pose_ground_truth

    return pose_ground_truth(query_poses, reference_poses, config.max_distance, config.max_angle)


def run_demo(config: DemoConfig) -> DemoResult:
    """Run the demo end to end; see the module docstring."""
    from ..evaluation.recall import recall_at_n
    from ..index.io import load_index, save_index
    from ..index.retriever import Retriever
    from ..maps import load_map
    from ..maps.synthetic import make_synthetic_map, write_synthetic_dataset
    from ..utils.threads import configure_threads

    configure_threads(config.threads)
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    world = make_synthetic_map(num_missions=2, frames_per_mission=config.frames,
                               image_size=(config.width, config.height), seed=config.seed)
    world.missions = {name: mission for name, mission in zip((REFERENCE, QUERIES), world.missions.values())}
    for name, mission in world.missions.items():
        mission.name = name
        for keyframe in mission.keyframes:
            keyframe.mission = name
    dataset = write_synthetic_dataset(world, out / "world")
    results: dict[str, Any] = {"world": str(dataset), "render_seconds": time.perf_counter() - t_start}

    index_path = out / "index.h5"
    built = build_index_file(IndexBuildConfig(MapSource(str(dataset), missions=[REFERENCE]), index_path,
                                              DescriberChoice(config.model, threads=config.threads),
                                              store_poses=True))
    index = load_index(index_path)
    save_index(index, out / "index.pb")
    results.update(describer=built.describer, keyframes=len(index))

    from ..describers import load_artifact_describer

    describer = load_artifact_describer(index_path, device="cpu")
    queries = list(load_map(dataset).missions[QUERIES].keyframes)
    describe_times, query_descriptors = [], []
    for keyframe in tqdm(queries, desc="query descriptors", unit="img"):
        image = keyframe.load_image()
        t0 = time.perf_counter()
        query_descriptors.append(describer.describe(image))
        describe_times.append(time.perf_counter() - t0)
    query_descriptors = np.stack(query_descriptors)
    reference_poses = np.stack([np.eye(4) for _ in range(len(index))])
    reference_poses[:, :3, :3], reference_poses[:, :3, 3] = index.rotations, index.positions
    truth = _ground_truth(np.stack([kf.pose for kf in queries]), reference_poses, config)
    results.update(queries=len(queries), queries_with_a_true_reference=int(truth.any(1).sum()),
                   descriptor_ms_median=float(np.median(describe_times) * 1e3), variants={})
    ranked = None
    for label, pca_dims in [("exact", None)] + ([(f"pca{config.pca_dims}", config.pca_dims)]
                                                 if config.pca_dims else []):
        retriever = Retriever(index, pca_dims=pca_dims)
        t0 = time.perf_counter()
        for descriptor in query_descriptors:  # one at a time, as a robot would query
            retriever.search(descriptor, k=10)
        search_ms = (time.perf_counter() - t0) / len(query_descriptors) * 1e3
        _, rows = retriever.search(query_descriptors, k=10)
        recall = recall_at_n(rows, truth, (1, 5, 10))
        results["variants"][label] = {"recall": {f"@{n}": r for n, r in recall.items()}, "search_ms_mean": search_ms,
                                      "search_dim": retriever.search_dim}
        ranked = rows if ranked is None else ranked
    outputs = {"world": dataset, "index": index_path, "index_pb": out / "index.pb",
               "retrievals": _retrieval_picture(out, index, queries, ranked, truth, dataset)}
    if config.localize:
        results["localization"] = _localize(dataset, index_path, queries, out, config, outputs)
    results["total_seconds"] = time.perf_counter() - t_start
    atomic_write_text(out / "results.json", to_json_text(results, indent=2))
    outputs["results"] = out / "results.json"
    return DemoResult(results, outputs)


def _retrieval_picture(out: Path, index, queries, ranked: np.ndarray, truth: np.ndarray, dataset: Path) -> Path:
    """retrievals.png: a few queries with their top 4 (green = right place)."""
    from ..evaluation.visualize import retrieval_grid
    from ..utils.images import read_image

    step = max(1, len(queries) // 8)
    rows = []
    for q in range(0, len(queries), step)[:8]:
        retrieved = [(read_image(dataset / index.names[r]), f"#{i + 1}", bool(truth[q, r]))
                     for i, r in enumerate(ranked[q][:4]) if r >= 0]
        rows.append((queries[q].load_image(), f"query {q}", retrieved))
    path = out / "retrievals.png"
    with atomic_path(path, suffix=".png") as tmp:
        cv2.imwrite(str(tmp), cv2.cvtColor(retrieval_grid(rows), cv2.COLOR_RGB2BGR))
    return path


def _localize(dataset: Path, index_path: Path, queries, out: Path, config: DemoConfig,
              outputs: dict[str, Path]) -> dict[str, Any]:
    """6-DoF: triangulate the day mission from its poses (SIFT), reusing the index; localize every dusk frame."""
    from ..evaluation.pose_errors import format_summary, plot_localization, pose_errors, summarize_errors
    from ..localization import GlobalConfig, Localizer, LocalizerConfig, MapBuildConfig, build_scene_map
    from ..localization.localizer import summarize_timings
    from ..localization.results import write_hloc_poses, write_results_json
    from ..maps import load_map

    t0 = time.perf_counter()
    reference = load_map(dataset).select([REFERENCE])
    build = MapBuildConfig(features="sift", pairs="sequential", num_neighbors=3,
                           global_model=GlobalConfig(index=str(index_path)))
    scene, _ = build_scene_map(reference, build)
    scene.save(out / "map")
    build_seconds = time.perf_counter() - t0
    localizer = Localizer.load(out / "map", LocalizerConfig(num_retrieved=5))
    results = [localizer.localize(kf.load_image(), kf.camera, kf.name)
               for kf in tqdm(queries, desc="localizing", unit="query")]
    truth = {kf.name: kf.pose for kf in queries}
    estimated = {r.name: r.T_world_cam for r in results}
    summary = summarize_errors(pose_errors(estimated, truth))
    write_hloc_poses(out / "poses.txt", results)
    write_results_json(out / "localization.json", results, {"evaluation": summary})
    plot_localization(out / "localization.png", {im.name: im.pose for im in scene.images}, truth, estimated,
                      f"synthetic world, {len(queries)} queries: {format_summary(summary)}")
    outputs.update(map=out / "map", poses=out / "poses.txt", localization_json=out / "localization.json",
                   localization_png=out / "localization.png")
    return {"map": {"images": len(scene), "points": scene.num_points, "build_seconds": build_seconds,
                    "summary": scene.summary()},
            "pose_errors": summary, "timings": summarize_timings(results)}
