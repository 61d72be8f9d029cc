"""`build_map`: a 3-D map folder from images with poses, by SfM, or from a COLMAP model, as one library call."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..localization.build import MapBuildConfig
from ..localization.retrieval import GlobalConfig
from .indexing import MapSource


@dataclass
class MapJobConfig:
    """What `build_map` builds: the source, how (`build`), and where it goes."""

    source: MapSource
    out: Path
    build: MapBuildConfig = field(default_factory=MapBuildConfig)
    exclude: list[str] = field(default_factory=list)
    feature_cache: str | None = None
    match_cache: str | None = None
    colmap_features: str | None = None  # import a COLMAP model keeping its points (its features file)
    threads: int | None = None


@dataclass
class MapJobResult:
    """What `build_map` wrote and what happened."""

    out: Path
    summary: str
    report: dict[str, Any]
    has_global_index: bool
    seconds: float


def build_map(config: MapJobConfig) -> MapJobResult:
    """Build the 3-D map (triangulation, SfM or COLMAP import), save the folder, and report."""
    from ..features import make_extractor, make_matcher
    from ..localization import MatchCache, build_scene_map, write_build_outputs
    from ..localization.build import import_colmap_model
    from ..localization.scene_map import check_map_target
    from ..utils.threads import configure_threads

    configure_threads(config.threads)
    check_map_target(config.out)  # before the slow part: the build replaces the whole --out folder
    start = time.perf_counter()
    build = config.build
    if config.colmap_features:
        if config.exclude:
            raise ValueError("--exclude cannot be combined with --colmap-features (the model's points are kept)")
        scene, report = import_colmap_model(config.source.path, config.colmap_features, build.features, build.matcher,
                                            feature_options=build.feature_options, image_dir=config.source.image_dir,
                                            global_config=build.global_model, device=build.device)
    else:
        match_cache = None
        if config.match_cache:
            features = make_extractor(build.features, device=build.device, **build.feature_options).describe_config()
            match_cache = MatchCache.open(config.match_cache, features,
                                          make_matcher(build.matcher, features).describe_config())
        map_ = config.source.load()
        if config.source.missions:
            map_ = map_.select(config.source.missions)
        scene, report = build_scene_map(map_, build, exclude=config.exclude,
                                        feature_cache=config.feature_cache, match_cache=match_cache)
    out = write_build_outputs(scene, report, config.out)
    return MapJobResult(out, scene.summary(), report, scene.global_index is not None, time.perf_counter() - start)


__all__ = ["GlobalConfig", "MapBuildConfig", "MapJobConfig", "MapJobResult", "build_map"]
