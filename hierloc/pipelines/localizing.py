"""Localization as a library function: 6-DoF poses of query images (files, folders or a ROS bag) in a 3-D map.

`localize_queries` takes a typed configuration and returns a typed result; `hierloc localize`, the
benchmarks and the service call it. It loads the map folder (`hierloc map build`) and the queries,
gives each query its camera, localizes them all with one `Localizer`, and, with a ground truth (a map
source holding the queries' true poses), measures pose errors after bringing an SfM map onto the
ground truth's frame. Outputs: poses.txt (hloc format), results.json, localization.png, matches_NNN.png.

Heavy modules (torch, OpenCV, pycolmap) are imported by the functions that need them, so that importing
this module (as `hierloc --help` does through the CLI) stays cheap.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from ..evaluation.pose_errors import Similarity
    from ..localization import LocalizationResult, Localizer, LocalizerConfig, QueryImage, SceneMap
    from ..localization.tracking import TrackingConfig
    from ..maps.types import Camera, Keyframe

logger = logging.getLogger(__name__)

def parse_camera(text: str) -> Camera:
    """A Camera from a cameras.txt path (one camera) or 'MODEL W H params...'; ValueError naming --camera."""
    from ..maps.poses import read_cameras_txt
    from ..maps.types import Camera

    path = Path(text)
    if path.is_file():
        cameras = read_cameras_txt(path)
        if len(cameras) != 1:
            raise ValueError(f"{path}: holds {len(cameras)} cameras; give a file with one")
        return next(iter(cameras.values()))
    parts = text.replace(",", " ").split()
    if len(parts) < 4:
        raise ValueError(f"--camera {text!r}: expected auto, map, a cameras.txt path, or 'MODEL W H params...'")
    try:
        return Camera(parts[0], int(parts[1]), int(parts[2]), [float(v) for v in parts[3:]])
    except ValueError as exc:
        raise ValueError(f"--camera {text!r}: {exc}") from None


def _name_keys(name: str) -> list[str]:
    """The name and its trailing sub-paths, longest first: `a/b/c.png`, `b/c.png`, `c.png`."""
    parts = PurePosixPath(name).parts
    return ["/".join(parts[i:]) for i in range(len(parts))]


def _resolved(path: str | os.PathLike) -> Path:
    try:
        return Path(path).resolve()
    except OSError:
        return Path(os.path.abspath(path))


class GroundTruthPoses:
    """The posed keyframes of a map source (`--ground-truth`), found for a query by its file, else by its path.

    Missions of one source often reuse frame names (`day/000000.png`, `dusk/000000.png`), so a bare name
    is not enough: a query is the ground-truth image that is the same file, else the one whose name is the
    longest trailing sub-path of the query's path (`.../dusk/000000.png` -> `dusk/000000.png`). When that
    sub-path names several posed images the pairing is refused rather than guessed.
    """

    def __init__(self, source: str) -> None:
        """Load the map source `source`; ValueError when none of its images has a pose."""
        from ..maps import load_map

        self.source = source
        self._by_file: dict[Path, Keyframe] = {}
        self._by_key: dict[str, list[Keyframe]] = {}
        for kf in load_map(source).keyframes():
            if kf.pose is None:
                continue
            if kf.image_path is not None:
                self._by_file[_resolved(kf.image_path)] = kf
            for key in _name_keys(kf.name):
                self._by_key.setdefault(key, []).append(kf)
        if not self._by_key:
            raise ValueError(f"{source}: no image has a pose; it cannot serve as ground truth")

    def find(self, name: str, path: str | os.PathLike | None = None) -> Keyframe | None:
        """The posed keyframe of the image `name` (file `path` when known); None when the source has none.

        Raises ValueError (one line, naming the sub-path) when the best name match is ambiguous.
        """
        if path is not None:
            same_file = self._by_file.get(_resolved(path))
            if same_file is not None:
                return same_file
            # The absolute path's trailing parts also carry the mission folder that the query name may lack.
            keys = _name_keys(_resolved(path).as_posix().lstrip("/"))
        else:
            keys = _name_keys(name)
        for key in keys:
            found = self._by_key.get(key)
            if not found:
                continue
            if len(found) > 1:
                shown = ", ".join(kf.name for kf in found[:3]) + (", ..." if len(found) > 3 else "")
                raise ValueError(f"--ground-truth {self.source}: query {name!r} is ambiguous: {key!r} names "
                                 f"{len(found)} posed images ({shown}); give the queries from inside "
                                 f"{self.source} (matched by file) or a ground truth holding only their mission")
            return found[0]
        return None


def _default_localizer_config() -> LocalizerConfig:
    from ..localization import LocalizerConfig

    return LocalizerConfig()


@dataclass
class LocalizeConfig:
    """`localize_queries`: the queries posed against the map folder `map` (written by `hierloc map build`)."""

    map: Path
    queries: list[str]  # image files or folders; with `image_topic`, exactly one ROS bag
    out: Path | None = None  # folder for poses.txt, results.json and the pictures; None: nothing is written
    image_topic: str | None = None
    # auto: the ground truth's camera, else EXIF, else a guess; map: the map's one camera; or `parse_camera` text.
    camera: str = "auto"
    ground_truth: str | None = None  # map source with the queries' true poses (see `GroundTruthPoses`)
    localizer: LocalizerConfig = field(default_factory=_default_localizer_config)
    matcher: str | None = None  # overrides the map's matcher
    matches_png: int = 4  # inlier-match pictures of the first N queries (needs `out`)
    device: str = "cpu"
    threads: int | None = None  # CPU threads of torch/OpenCV/faiss; None: all usable cores
    overlap: bool | None = None  # decode/describe the next queries while posing one; None: on GPUs only
    sequence: bool = False  # the queries are a stream in order: track around the previous pose (Tracker)
    tracking: TrackingConfig | None = None  # the Tracker's options with `sequence` (None: TrackingConfig())
    progress: bool = True  # a progress bar over the queries (stderr)


def track_sequence(localizer: Localizer, queries: Sequence[QueryImage], progress: bool = True,
                   tracking: TrackingConfig | None = None) -> list[LocalizationResult]:
    """Localize queries as one ordered stream with a Tracker; each result says which path served it."""
    from tqdm import tqdm

    from ..localization.tracking import Tracker

    tracker = Tracker(localizer, tracking)
    results = []
    for query in tqdm(queries, desc="tracking", unit="frame", disable=not progress):
        t0 = time.perf_counter()
        image = query.load()
        decode_seconds = time.perf_counter() - t0
        result = tracker.track(image, query.camera, query.name, query.image_path)
        result.timings["decode"] = decode_seconds
        results.append(result)
    return results


@dataclass
class LocalizeStart:
    """What `localize_queries` tells its `on_start` callback once everything is loaded, before localizing."""

    map_summary: str
    load_seconds: float  # map and networks
    num_queries: int


@dataclass
class Alignment:
    """The similarity that brought an SfM map (its own frame and scale) onto the ground truth's frame."""

    similarity: Similarity
    from_map_images: int  # map images with a ground-truth pose, which the similarity was fitted on

    @property
    def scale(self) -> float:
        """Ground-truth units per map unit."""
        return float(self.similarity.scale)


@dataclass
class PoseEvaluation:
    """Pose errors of the queries against a ground truth; poses are camera-to-world, in the ground truth's frame."""

    source: str
    errors: dict[str, tuple[float, float]]  # query -> (metres, degrees); infinite when not localized
    summary: dict[str, Any]  # `hierloc.evaluation.pose_errors.summarize_errors`
    without_truth: list[str] = field(default_factory=list)  # queries the ground truth has no pose for (left out)
    alignment: Alignment | None = None  # None: the map was already in the ground truth's frame
    truth: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    estimated: dict[str, np.ndarray | None] = field(default_factory=dict, repr=False)  # None: not localized
    map_poses: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    def to_json(self) -> dict[str, Any]:
        """The `evaluation` entry of results.json."""
        return {"summary": self.summary, "errors": {name: {"translation_m": dt, "rotation_deg": dr}
                                                    for name, (dt, dr) in self.errors.items()}}


@dataclass
class LocalizeRun:
    """What `localize_queries` did: a result per query (in order), their evaluation, and the files written."""

    map: Path
    map_summary: str
    load_seconds: float
    results: list[LocalizationResult]
    timings: dict[str, dict[str, float]]  # per stage: median and mean seconds (`summarize_timings`)
    evaluation: PoseEvaluation | None = None  # with a ground truth
    out: Path | None = None
    poses_file: Path | None = None  # hloc format: name qw qx qy qz tx ty tz, world-to-camera; failures omitted
    results_file: Path | None = None  # results.json: every query, inliers, per-stage timings
    localization_png: Path | None = None  # map cameras, queries and errors (with a ground truth)
    matches_pngs: list[Path] = field(default_factory=list)

    @property
    def num_localized(self) -> int:
        """Queries with a pose."""
        return sum(result.success for result in self.results)

    @property
    def median_seconds(self) -> float:
        """Median time per query over every stage."""
        return self.timings["total"]["median_s"]


def load_queries(config: LocalizeConfig, ground_truth: GroundTruthPoses | None = None,
                 map_camera: Camera | None = None) -> list[QueryImage]:
    """The config's query images (lazily decoded), each with its camera as `config.camera` says.

    `map_camera` is the map's camera for `camera="map"`; `ground_truth` gives the cameras of `auto`.
    """
    from ..localization import QueryImage
    from ..utils.images import list_images, read_image

    queries = []
    if config.image_topic:
        if len(config.queries) != 1:
            raise ValueError("with --image-topic give exactly one ROS bag")
        from ..maps import load_map

        bag = load_map(config.queries[0], kind="rosbag", image_topic=config.image_topic)
        for kf in bag.keyframes():
            # hloc's pose list is split on spaces, so a name must hold none.
            queries.append(QueryImage(kf.name.replace(" ", "_"), kf.load_image, kf.camera, None))
    else:
        for path, name in list_images(config.queries):
            queries.append(QueryImage(name, (lambda p=path: read_image(p)), None, path))
    if not queries:
        raise FileNotFoundError(f"no query images in {config.queries}")
    if config.camera == "map":
        if map_camera is None:
            raise ValueError(f"{config.map}: --camera map needs the map's one camera")
        for query in queries:
            query.camera = map_camera
    elif config.camera != "auto":
        camera = parse_camera(config.camera)
        for query in queries:
            query.camera = camera
    elif ground_truth is not None:
        for query in queries:
            known = None if query.camera is not None else ground_truth.find(query.name, query.image_path)
            if known is not None and known.camera is not None:
                query.camera = known.camera
    return queries


def _single_camera(scene: SceneMap) -> tuple[Camera | None, int]:
    """(the map's camera when all its images share one, else None; the number of distinct cameras)."""
    cameras = {(im.camera.model, im.camera.width, im.camera.height, tuple(im.camera.params)) for im in scene.images}
    return (scene.images[0].camera if len(cameras) == 1 else None), len(cameras)


def evaluate_poses(results: Sequence[LocalizationResult], scene: SceneMap, ground_truth: GroundTruthPoses,
                   truth_of: dict[str, Keyframe | None] | None = None) -> PoseEvaluation:
    """Pose errors of the results against the ground truth; an SfM map is aligned to it first.

    `truth_of` (query name -> its ground-truth keyframe) saves pairing the queries again.
    """
    from ..evaluation.pose_errors import align_similarity, pose_errors, summarize_errors

    if truth_of is None:
        truth_of = {result.name: ground_truth.find(result.name) for result in results}
    estimated, truth, without_truth = {}, {}, []
    for result in results:
        known = truth_of.get(result.name)
        if known is None:
            logger.warning("%s has no ground-truth pose in %s", result.name, ground_truth.source)
            without_truth.append(result.name)
            continue
        truth[result.name] = known.pose
        estimated[result.name] = result.T_world_cam
    map_poses = {im.name: im.pose for im in scene.images}
    alignment = None
    if not scene.is_metric:
        # An SfM map has its own frame and scale: a similarity from the map images brings it onto the truth.
        map_truth = {im.name: ground_truth.find(im.name, im.image_path) for im in scene.images}
        reference = {name: kf.pose for name, kf in map_truth.items() if kf is not None}
        similarity = align_similarity({n: map_poses[n] for n in reference}, reference)
        estimated = {n: None if T is None else similarity.transform_pose(T) for n, T in estimated.items()}
        map_poses = {n: similarity.transform_pose(T) for n, T in map_poses.items()}
        alignment = Alignment(similarity, len(reference))
    errors = pose_errors(estimated, truth)
    return PoseEvaluation(ground_truth.source, errors, summarize_errors(errors), without_truth, alignment, truth,
                          estimated, map_poses)


def _write_match_pictures(out: Path, queries: Sequence[QueryImage], results: Sequence[LocalizationResult],
                          scene: SceneMap, count: int) -> list[Path]:
    """matches_NNN.png: the inlier matches of the first `count` queries; a query whose map images are gone is
    skipped with a warning (a map can be moved without its images)."""
    import cv2

    from ..localization.visualize import localization_figure
    from ..utils.images import read_image
    from ..utils.io import atomic_path

    image_for = {im.name: im.image_path for im in scene.images}

    def load_map_image(name: str) -> np.ndarray:
        if image_for.get(name) is None:
            raise FileNotFoundError(f"the map has no image file for {name}")
        return read_image(image_for[name])

    written = []
    for k, (query, result) in enumerate(zip(queries[:count], results)):
        try:
            figure = localization_figure(query.load(), result, load_map_image, scene)
        except FileNotFoundError as exc:
            logger.warning("no match picture for %s: %s", result.name, exc)
            continue
        path = out / f"matches_{k:03d}.png"
        with atomic_path(path, suffix=".png") as tmp:
            cv2.imwrite(str(tmp), cv2.cvtColor(figure, cv2.COLOR_RGB2BGR))
        written.append(path)
    return written


def _write_outputs(run: LocalizeRun, config: LocalizeConfig, localizer: Localizer,
                   queries: Sequence[QueryImage]) -> None:
    """poses.txt, results.json, localization.png and matches_NNN.png in `run.out`; their paths go into `run`."""
    from ..evaluation.pose_errors import format_summary, plot_localization
    from ..localization.results import write_hloc_poses, write_results_json

    out = run.out
    settings = config.localizer
    extra: dict[str, Any] = {"map": str(Path(config.map).resolve()), "map_load_s": run.load_seconds, "config": {
        "num_retrieved": settings.num_retrieved, "clustering": settings.covisibility_clustering,
        "min_inliers": settings.min_inliers, "ransac_max_error": settings.pose.ransac_max_error,
        "matcher": localizer.matcher.describe_config()}}
    evaluation = run.evaluation
    if evaluation is not None:
        if evaluation.alignment is not None:
            extra["alignment"] = {"scale": evaluation.alignment.scale,
                                  "from_map_images": evaluation.alignment.from_map_images}
        extra["evaluation"] = evaluation.to_json()
        run.localization_png = out / "localization.png"
        plot_localization(run.localization_png, evaluation.map_poses, evaluation.truth, evaluation.estimated,
                          f"{Path(config.map).name}: {format_summary(evaluation.summary)}")
    run.poses_file = write_hloc_poses(out / "poses.txt", run.results)
    run.results_file = write_results_json(out / "results.json", run.results, extra)
    run.matches_pngs = _write_match_pictures(out, queries, run.results, localizer.scene, config.matches_png)


def localize_queries(config: LocalizeConfig,
                     on_start: Callable[[LocalizeStart], None] | None = None) -> LocalizeRun:
    """Load the map and the queries, localize every query, evaluate against the ground truth, write the outputs.

    `on_start` is called once the map, networks, queries and ground truth are loaded, just before the slow
    part. Bad inputs (an ambiguous ground truth, --camera map with several map cameras, no queries) raise
    ValueError or FileNotFoundError before any query is localized.
    """
    from ..localization import Localizer, SceneMap, summarize_timings
    from ..utils.threads import configure_threads

    configure_threads(config.threads)
    out = Path(config.out) if config.out is not None else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    t_load = time.perf_counter()
    scene = SceneMap.load(config.map)
    localizer = Localizer(scene, config.localizer, device=config.device, matcher=config.matcher)
    load_seconds = time.perf_counter() - t_load
    map_camera, num_cameras = _single_camera(scene)
    if config.camera == "map" and map_camera is None:
        raise ValueError(f"{config.map}: the map has {num_cameras} cameras; --camera map needs exactly one")
    ground_truth = GroundTruthPoses(config.ground_truth) if config.ground_truth else None
    queries = load_queries(config, ground_truth, map_camera)
    # Paired before localizing so that an ambiguous ground truth stops the run before the slow part.
    truth_of = ({query.name: ground_truth.find(query.name, query.image_path) for query in queries}
                if ground_truth is not None else {})
    summary = scene.summary()
    if on_start is not None:
        on_start(LocalizeStart(summary, load_seconds, len(queries)))

    if config.sequence:
        results = track_sequence(localizer, queries, progress=config.progress, tracking=config.tracking)
    else:
        results = localizer.localize_many(queries, progress=config.progress, overlap=config.overlap)
    run = LocalizeRun(Path(config.map), summary, load_seconds, results, summarize_timings(results), out=out)
    if ground_truth is not None:
        run.evaluation = evaluate_poses(results, scene, ground_truth, truth_of)
    if out is not None:
        _write_outputs(run, config, localizer, queries)
    return run
