"""Build a 3-D map from a hierloc Map: local features, global index, pairs, matching, triangulation or SfM."""

from __future__ import annotations

import functools
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np
from tqdm import tqdm

from ..describers import adaptation_loader
from ..features import extract_features, make_extractor, make_matcher
from ..features.h5io import FeatureFileError, read_feature_config, read_matches, write_matches, write_pairs
from ..features.types import matches_to_pairs
from ..maps.poses import invert_pose
from ..maps.types import Camera, Keyframe, Map
from .pairs import choose_strategy, exhaustive_pairs, pairs_from_poses, pairs_from_retrieval, sequential_pairs
from .reconstruction import ReconstructionConfig, incremental_sfm, triangulate_from_poses
from .retrieval import GlobalConfig, describe_prepared_images, global_describer, reuse_index_rows
from .scene_map import MapImage, SceneMap

logger = logging.getLogger(__name__)

BUILD_MODES = ("auto", "triangulation", "sfm")


@dataclass
class MapBuildConfig:
    """How to build a 3-D map; option dicts override the named feature / matcher configurations."""

    features: str = "sift"
    feature_options: dict[str, Any] = field(default_factory=dict)
    matcher: str = "auto"
    matcher_options: dict[str, Any] = field(default_factory=dict)
    pairs: str = "auto"
    num_neighbors: int = 10  # per image, for pairs from poses / retrieval, and the sequential window
    mode: str = "auto"  # triangulation from the keyframe poses, or SfM; auto: triangulation when all are posed
    global_model: GlobalConfig = field(default_factory=GlobalConfig)
    reconstruction: ReconstructionConfig = field(default_factory=ReconstructionConfig)
    default_fov_deg: float | None = None  # SfM cameras without EXIF or calibration: COLMAP's 1.2 * max side focal
    device: str = "cpu"


@dataclass
class MatchCache:
    """Matches of image pairs by name, reused across builds (e.g. leave-one-out) and optionally kept in a file.

    `config` names the features and the matcher: keypoint indices mean nothing for other features.
    """

    config: dict
    pairs: dict[tuple[str, str], np.ndarray] = field(default_factory=dict)
    path: Path | None = None

    def get(self, name0: str, name1: str) -> np.ndarray | None:
        """(M, 2) matches of a pair in the given order, or None if not cached."""
        if (name0, name1) in self.pairs:
            return self.pairs[(name0, name1)]
        if (name1, name0) in self.pairs:
            return self.pairs[(name1, name0)][:, ::-1].copy()
        if self.path is not None and self.path.is_file():
            try:
                found, _ = read_matches(self.path, name0, name1)
            except FeatureFileError:
                return None
            self.pairs[(name0, name1)] = found
            return found
        return None

    @staticmethod
    def config_of(feature_config: dict, matcher_config: dict) -> dict:
        """What a cache of these features and this matcher is checked against."""
        return {"features": feature_config, "matcher": matcher_config}

    @classmethod
    def open(cls, path: str | os.PathLike | None, feature_config: dict, matcher_config: dict) -> "MatchCache":
        """A cache backed by an hloc-layout match file (refused when written for other features or matcher)."""
        config = cls.config_of(feature_config, matcher_config)
        if path is not None and Path(path).is_file():
            stored = read_feature_config(path)
            if stored is not None and stored != config:
                raise FeatureFileError(f"{path}: holds matches of other features or another matcher ({stored}), "
                                       f"not {config}")
        return cls(config, {}, None if path is None else Path(path))


def _load_image(keyframe: Keyframe) -> np.ndarray:
    return keyframe.load_image()


def _default_camera(keyframe: Keyframe, image: np.ndarray, default_fov_deg: float | None) -> tuple[Camera, bool]:
    """(camera, calibrated) for a keyframe without one: EXIF focal length if its file has one, else a guess."""
    import pycolmap

    height, width = image.shape[:2]
    if keyframe.image_path is not None:
        camera = pycolmap.infer_camera_from_image(str(keyframe.image_path))
        if camera.has_prior_focal_length and (camera.width, camera.height) == (width, height):
            return Camera.from_pycolmap(camera), True
    focal = (0.5 * max(width, height) / np.tan(np.radians(default_fov_deg) / 2) if default_fov_deg
             else 1.2 * max(width, height))
    return Camera("SIMPLE_RADIAL", width, height, [focal, width / 2.0, height / 2.0, 0.0]), False


def select_keyframes(map_: Map, exclude: Iterable[str] = ()) -> list[Keyframe]:
    """The map's keyframes that have pixels, without the excluded names (names or file names)."""
    excluded = set(exclude)
    keyframes = [kf for kf in map_.keyframes()
                 if kf.name not in excluded and Path(kf.name).name not in excluded and kf.has_image]
    unknown = excluded - {kf.name for kf in map_.keyframes()} - {Path(kf.name).name for kf in map_.keyframes()}
    if unknown:
        raise ValueError(f"cannot exclude {sorted(unknown)}: not images of map {map_.name!r}")
    if len(keyframes) < 2:
        raise ValueError(f"map {map_.name!r}: a 3-D map needs at least 2 images, got {len(keyframes)}")
    return keyframes


def _camera_sources(map_: Map, keyframes: list[Keyframe]) -> str:
    """Where the reader of `map_` takes intrinsics from, for an error message."""
    if map_.root is not None and Path(map_.root).is_dir() and any(kf.image_path is not None for kf in keyframes):
        # hierloc.maps.readers.folder: cameras.txt in the mission folder or the root; Strecha's .camera files.
        missions = sorted({kf.mission for kf in keyframes if kf.camera is None})
        return (f"a COLMAP cameras.txt holding one camera in {map_.root}/ or in the mission folder "
                f"({', '.join(missions[:3])}{', ...' if len(missions) > 3 else ''}), or a Strecha "
                "gt_dense_cameras/<image>.camera per image")
    return "a source that gives the camera intrinsics (a COLMAP model, a ROS bag with its camera info topic)"


def choose_build_mode(map_: Map, keyframes: list[Keyframe], requested: str = "auto") -> str:
    """'triangulation' or 'sfm' for building `keyframes`; ValueError (one line) when the poses cannot be used.

    auto: triangulation when every image has a pose and a camera, SfM when none has a pose. When every
    image has a pose but some lack a camera, it stops instead of silently falling back to SfM (which would
    drop the poses and, with guessed focal lengths, often register few images): the user adds the cameras
    or asks for SfM explicitly.
    """
    if requested not in BUILD_MODES:
        raise ValueError(f"unknown build mode {requested!r}; choose one of {', '.join(BUILD_MODES)}")
    no_pose = [kf.name for kf in keyframes if kf.pose is None]
    no_camera = [kf.name for kf in keyframes if kf.camera is None]
    if requested == "sfm":
        if len(no_pose) < len(keyframes):
            logger.info("SfM ignores the poses of %d images; the map gets its own frame and scale",
                        len(keyframes) - len(no_pose))
        return "sfm"
    if not no_pose and no_camera:
        raise ValueError(
            f"{map_.name}: every image has a pose but {len(no_camera)} of {len(keyframes)} have no camera "
            f"(e.g. {no_camera[0]}); triangulating from the poses needs the intrinsics: add "
            f"{_camera_sources(map_, keyframes)}; or build with --mode sfm, which ignores the poses")
    if requested == "triangulation" and no_pose:
        raise ValueError(f"triangulation needs a pose for every image; {len(no_pose)} of {len(keyframes)} have "
                         f"none (e.g. {no_pose[0]}); build with --mode sfm to reconstruct without poses")
    if no_pose and len(no_pose) < len(keyframes):
        logger.warning("%d of %d images have no pose (e.g. %s): building by SfM, which ignores the poses of the "
                       "others", len(no_pose), len(keyframes), no_pose[0])
    return "sfm" if no_pose else "triangulation"


def build_scene_map(map_: Map, config: MapBuildConfig | None = None, *, exclude: Iterable[str] = (),
                    feature_cache: str | os.PathLike | None = None, match_cache: MatchCache | None = None,
                    global_adaptation_images: int = 200, work_dir: str | os.PathLike | None = None,
                    progress: bool = True) -> tuple[SceneMap, dict[str, Any]]:
    """Build the 3-D map of `map_` (minus `exclude`); returns it (unsaved) and a report with timings and counts."""
    config = config or MapBuildConfig()
    if config.mode not in BUILD_MODES:
        raise ValueError(f"unknown build mode {config.mode!r}; choose one of {', '.join(BUILD_MODES)}")
    timings: dict[str, float] = {}
    keyframes = select_keyframes(map_, exclude)
    mode = choose_build_mode(map_, keyframes, config.mode)
    posed = all(kf.pose is not None and kf.camera is not None for kf in keyframes)

    extractor = make_extractor(config.features, device=config.device, **config.feature_options)
    matcher = make_matcher(config.matcher, extractor.describe_config(), device=config.device, **config.matcher_options)

    # The describer first (adapting one reads a spread of map images), then one pass over the images:
    # local features (unless cached) and the prepared copies the describer needs.
    t0 = time.perf_counter()
    names = [kf.name for kf in keyframes]
    describer = global_describer(config.global_model,
                                 adaptation_loader([kf.load_image for kf in keyframes], global_adaptation_images),
                                 config.device)
    timings["global_describer"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    global_images: dict[str, np.ndarray] = {}
    cameras: dict[str, tuple[Camera, bool]] = {kf.name: (kf.camera, True) for kf in keyframes if kf.camera is not None}
    wants_global = describer is not None

    def load(kf: Keyframe) -> np.ndarray:
        image = kf.load_image()
        if wants_global:
            global_images[kf.name] = describer.prepare(image)
        if kf.name not in cameras:
            cameras[kf.name] = _default_camera(kf, image, config.default_fov_deg)
        return image

    features = extract_features(extractor, [(kf.name, (lambda kf=kf: load(kf))) for kf in keyframes],
                                feature_cache, progress=progress)
    missing_side = [kf for kf in keyframes if kf.name not in cameras or (wants_global and kf.name not in global_images)]
    if missing_side:  # features came from the cache: the images are still needed for cameras / retrieval
        with ThreadPoolExecutor(max_workers=2) as pool:
            list(tqdm(pool.map(load, missing_side), total=len(missing_side), desc="images", unit="img",
                      disable=not progress))
    timings["local_features"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    descriptors = None
    if wants_global:
        descriptors = describe_globally(describer, [global_images[n] for n in names], names,
                                        config.global_model.index, progress)
    timings["global_descriptors"] = time.perf_counter() - t0

    # Pairs and matching.
    t0 = time.perf_counter()
    strategy = choose_strategy(config.pairs, len(keyframes), posed, descriptors is not None)
    if strategy == "exhaustive":
        pairs = exhaustive_pairs(len(keyframes))
    elif strategy == "poses":
        pairs = pairs_from_poses(np.stack([kf.pose for kf in keyframes]), config.num_neighbors)
    elif strategy == "retrieval":
        pairs = pairs_from_retrieval(descriptors, config.num_neighbors)
    else:
        pairs = sequential_pairs([kf.mission for kf in keyframes], config.num_neighbors)
    expected = MatchCache.config_of(extractor.describe_config(), matcher.describe_config())
    cache = match_cache or MatchCache(expected)
    if cache.config != expected:
        raise ValueError(f"the match cache holds matches of {cache.config}, not {expected}")
    matches: dict[tuple[int, int], np.ndarray] = {}
    new: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]] = {}
    for i, j in tqdm(pairs, desc=f"matching ({strategy} pairs)", unit="pair", disable=not progress):
        found = cache.get(names[i], names[j])
        if found is None:
            matches0, scores0 = matcher.match(features[names[i]], features[names[j]])
            found = matches_to_pairs(matches0)
            cache.pairs[(names[i], names[j])] = found
            new[(names[i], names[j])] = (matches0, scores0)
        matches[(i, j)] = found
    if new and cache.path is not None:
        write_matches(cache.path, new, expected, overwrite=False)
    timings["matching"] = time.perf_counter() - t0

    # 3-D points.
    t0 = time.perf_counter()
    images = [MapImage(kf.name, kf.id, kf.mission, cameras[kf.name][0], kf.pose if kf.pose is not None else np.eye(4),
                       kf.image_path, calibrated=cameras[kf.name][1]) for kf in keyframes]
    if mode == "triangulation":
        reconstruction = triangulate_from_poses(images, features, matches, work_dir, config.reconstruction)
    else:
        reconstruction = incremental_sfm(images, features, matches, work_dir, config.reconstruction)
    timings["reconstruction"] = time.perf_counter() - t0

    metadata = {"mode": mode, "source": map_.name, "pairs": strategy, "num_pairs": len(pairs),
                "excluded": sorted(set(exclude)), "build_config": _jsonable(asdict(config)), "timings": timings}
    scene = SceneMap.from_reconstruction(reconstruction, images, features, extractor.describe_config(),
                                         matcher.describe_config(), metadata=metadata)
    if descriptors is not None:
        attach_global_index(scene, describer, descriptors, names, config.global_model)
    registered = {im.name for im in scene.images}
    unregistered = [name for name in names if name not in registered]
    if unregistered:
        logger.warning("%s: %d of %d images registered; %d are not in the map (e.g. %s)", mode, len(registered),
                       len(keyframes), len(unregistered), ", ".join(unregistered[:3]))
    report = {"mode": mode, "pairs": strategy, "num_pairs": len(pairs), "images": len(keyframes),
              "registered": len(scene), "unregistered": unregistered, "points": scene.num_points, "timings": timings,
              "pair_list": [(names[i], names[j]) for i, j in pairs]}
    return scene, report


def describe_globally(describer, prepared: list[np.ndarray], names: list[str], index_path: str | None = None,
                      progress: bool = True) -> np.ndarray:
    """(N, D) descriptors of map images (already prepared by the describer); rows of `index_path` are reused."""
    if index_path is None:
        return describe_prepared_images(describer, prepared, progress)
    descriptors, missing = reuse_index_rows(index_path, names)
    if missing:
        logger.info("%s lacks %d of the map's %d images: describing them", index_path, len(missing), len(names))
        descriptors[missing] = describe_prepared_images(describer, [prepared[i] for i in missing], progress)
    return descriptors


def import_colmap_model(model_dir: str | os.PathLike, features_path: str | os.PathLike,
                        features: str | dict | None = None, matcher: str = "auto", *,
                        feature_options: dict[str, Any] | None = None, image_dir: str | os.PathLike | None = None,
                        global_config: GlobalConfig | None = None,
                        device: str = "cpu", progress: bool = True) -> tuple[SceneMap, dict[str, Any]]:
    """A 3-D map from an existing COLMAP model and the local features its keypoints came from (hloc layout).

    The model's poses, cameras and 3-D points are kept. `features_path` must hold, for every
    registered image, the keypoints of the model in the same order (as hloc writes them);
    `features` (+ `feature_options`) names the extractor that made them; a file written by hierloc
    says it itself.
    Global descriptors need the images (`image_dir`, default: `images/` beside the model).
    """
    from ..features.h5io import read_features
    from ..maps.readers.colmap_binary import load_colmap_reconstruction
    from ..maps.types import keyframe_id
    from .scene_map import cam_from_world_matrix

    model_dir, features_path = Path(model_dir), Path(features_path)
    reconstruction = load_colmap_reconstruction(model_dir)  # validated first: pycolmap trusts every count
    stored = read_feature_config(features_path)
    if stored is None and features is None:
        raise ValueError(f"{features_path} does not say which features it holds (written by hloc?): "
                         "name them (e.g. features='sift' or 'aliked')")
    extractor = (make_extractor(stored, device=device) if stored is not None
                 else make_extractor(features, device=device, **(feature_options or {})))
    matcher_ = make_matcher(matcher, extractor.describe_config(), device=device)
    registered = sorted((im for im in reconstruction.images.values() if im.has_pose), key=lambda im: im.name)
    if not registered:
        raise ValueError(f"{model_dir}: the COLMAP model has no registered image")
    local = read_features(features_path, [im.name for im in registered])
    # Either file may be the damaged one, so a disagreement names both.
    images_file = next((model_dir / name for name in ("images.bin", "images.txt") if (model_dir / name).is_file()),
                       model_dir)
    for im in registered:
        keypoints = local[im.name].keypoints
        model_xy = np.array([p.xy for p in im.points2D], dtype=np.float64).reshape(-1, 2)
        if not np.isfinite(model_xy).all():
            raise ValueError(f"{images_file}: the 2-D points of {im.name} are not finite")
        if len(keypoints) != len(model_xy):
            raise ValueError(f"{images_file} and {features_path} disagree: {im.name} has {len(model_xy)} keypoints "
                             f"in the model and {len(keypoints)} in the feature file; give the feature file the "
                             "model was built from")
        offset = float(np.abs(keypoints - model_xy).max()) if len(model_xy) else 0.0
        if offset > 0.05:
            raise ValueError(f"{images_file} and {features_path} disagree: keypoints of {im.name} are up to "
                             f"{offset:.3g} px apart; give the feature file the model was built from")
    if image_dir is None:  # the usual layouts: project/sparse/0 + project/images, or model/images
        candidates = [base / "images" for base in (model_dir, model_dir.parent, model_dir.parent.parent)]
        image_dir = next((c for c in candidates if (c / registered[0].name).is_file()), None)
    images = []
    for im in registered:
        parent = str(Path(im.name).parent)
        mission = parent if parent != "." else model_dir.resolve().name
        path = Path(image_dir) / im.name if image_dir is not None else None
        images.append(MapImage(im.name, keyframe_id(im.name, mission), mission,
                               Camera.from_pycolmap(reconstruction.cameras[im.camera_id]),
                               invert_pose(cam_from_world_matrix(im)), path if path and path.is_file() else None))
    global_config = global_config or GlobalConfig()
    describer, descriptors = None, None
    if global_config.enabled:
        if all(im.image_path is not None for im in images):
            from ..utils.images import read_image

            loaders = [functools.partial(read_image, im.image_path) for im in images]
            describer = global_describer(global_config, adaptation_loader(loaders), device)
            prepared = [describer.prepare(read_image(im.image_path)) for im in images]
            descriptors = describe_globally(describer, prepared, [im.name for im in images], global_config.index,
                                            progress)
        else:
            logger.warning("%s: images not found (give image_dir): the map has no global index", model_dir)
    metadata = {"mode": "colmap-import", "source": str(model_dir), "features_file": str(features_path)}
    scene = SceneMap.from_reconstruction(reconstruction, images, local, extractor.describe_config(),
                                         matcher_.describe_config(), metadata=metadata)
    if descriptors is not None:
        attach_global_index(scene, describer, descriptors, [im.name for im in images], global_config)
    report = {"mode": "colmap-import", "images": len(images), "registered": len(scene), "points": scene.num_points,
              "timings": {}, "pair_list": []}
    return scene, report


def attach_global_index(scene: SceneMap, describer, descriptors: np.ndarray, names: list[str],
                        config: GlobalConfig | None = None) -> SceneMap:
    """Give a map its retrieval stage: the describer, the global descriptors of `names` (rows) and the search.

    The index (`scene.global_index`) holds the map's images in map order; `config` says which search
    structure `SceneMap.save` stores with it (flat, HNSW, IVF-PQ, PCA).
    """
    from ..index.descriptor_index import DescriptorIndex

    config = config or GlobalConfig()
    rows = [names.index(im.name) for im in scene.images]
    scene.global_describer = describer
    scene.global_model = {"describer": describer.identity.summary(), "search": config.search_json()}
    scene.global_index = DescriptorIndex(
        model_name=describer.name, data_name=scene.metadata.get("source", ""),
        descriptors=np.asarray(descriptors)[rows].astype(np.float32),
        keyframe_ids=[im.keyframe_id for im in scene.images],
        missions=[im.mission for im in scene.images], names=[im.name for im in scene.images],
        positions=np.stack([im.pose[:3, 3] for im in scene.images]),
        rotations=np.stack([im.pose[:3, :3] for im in scene.images]),
        metadata={"descriptor_dim": int(np.asarray(descriptors).shape[1]), "purpose": "3-D map retrieval"})
    return scene


def write_build_outputs(scene: SceneMap, report: dict[str, Any], out_dir: str | os.PathLike) -> Path:
    """Save the map folder plus the pair list used (hloc layout), all in one step (see SceneMap.save)."""
    out_dir = Path(out_dir)
    scene.save(out_dir, extra_files=lambda staging: write_pairs(staging / "pairs.txt", report["pair_list"]))
    return out_dir


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    return value


__all__ = ["BUILD_MODES", "MapBuildConfig", "MatchCache", "attach_global_index", "build_scene_map", "choose_build_mode",
           "describe_globally", "import_colmap_model", "select_keyframes", "write_build_outputs"]
