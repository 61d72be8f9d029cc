"""Named local feature and matcher configurations (like hloc's `confs`), built by name or from a stored dict."""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from .base import ExtractorConfig, LocalFeatureExtractor
from .learned import ALIKED, DISK, ALIKEDConfig, DISKConfig, XFeat, XFeatConfig
from .matchers import LIGHTGLUE_WEIGHTS, LightGlue, LightGlueConfig, Matcher, MutualNearestNeighbor, MutualNNConfig
from .sift import SIFT, SIFTConfig

EXTRACTOR_CLASSES: dict[str, type[LocalFeatureExtractor]] = {"sift": SIFT, "xfeat": XFeat, "aliked": ALIKED,
                                                             "disk": DISK}
CONFIG_CLASSES: dict[str, type[ExtractorConfig]] = {"sift": SIFTConfig, "xfeat": XFeatConfig,
                                                    "aliked": ALIKEDConfig, "disk": DISKConfig}

# name -> (extractor family, configuration)
FEATURE_CONFS: dict[str, tuple[str, ExtractorConfig]] = {
    "sift": ("sift", SIFTConfig()),  # OpenCV RootSIFT
    "sift-l2": ("sift", SIFTConfig(root_sift=False)),
    "sift-pycolmap": ("sift", SIFTConfig(backend="pycolmap")),
    # The CPU fast path: OpenCV SIFT doubles the image for its first octave, so 512 px is searched at
    # 1024 px; the 1024 strongest keypoints localize Strecha's 1536x1024 queries more accurately than
    # 2048 at 1024 px (0.22 against 0.26 cm on fountain) in a third of the time (bench/localize.py, issue 15).
    "sift-fast": ("sift", SIFTConfig(resize_max=512, max_keypoints=1024)),
    "xfeat": ("xfeat", XFeatConfig()),
    # The CPU fast path: XFeat's cost grows with the pixels (a 1536x1024 frame is 5 VGA frames), so
    # large frames are described at 800 px with subpixel keypoints (bench/localize.py, issue 15).
    "xfeat-fast": ("xfeat", XFeatConfig(max_keypoints=2048, resize_max=800, subpixel=True)),
    "aliked": ("aliked", ALIKEDConfig()),
    "aliked-n32": ("aliked", ALIKEDConfig(model="aliked-n32")),
    "aliked-t16": ("aliked", ALIKEDConfig(model="aliked-t16")),
    "disk": ("disk", DISKConfig()),
}

MATCHER_NAMES = ("auto", "mnn", "mnn-ratio", "lightglue", "lighterglue")
# The matcher `auto` picks for each feature family.
DEFAULT_MATCHERS = {"sift": "mnn-ratio", "xfeat": "mnn", "aliked": "lightglue", "disk": "lightglue"}
# Mutual nearest neighbour thresholds per family: Lowe's ratio for SIFT, XFeat's own 0.82 similarity.
MNN_DEFAULTS = {"sift": MutualNNConfig(ratio_threshold=0.8), "xfeat": MutualNNConfig(min_similarity=0.82),
                "aliked": MutualNNConfig(min_similarity=0.75), "disk": MutualNNConfig(min_similarity=0.75)}


def feature_family(name_or_config: str | dict) -> str:
    """'sift', 'xfeat', 'aliked' or 'disk' for a feature name or a stored configuration."""
    if isinstance(name_or_config, dict):
        return name_or_config["name"]
    if name_or_config not in FEATURE_CONFS:
        raise ValueError(f"unknown local features {name_or_config!r}; known: {', '.join(FEATURE_CONFS)}")
    return FEATURE_CONFS[name_or_config][0]


def make_extractor(name_or_config: str | dict, device: str | torch.device = "cpu",
                   **overrides: Any) -> LocalFeatureExtractor:
    """An extractor from a name in FEATURE_CONFS (with option overrides; None values ignored) or a stored dict."""
    if isinstance(name_or_config, dict):
        values = dict(name_or_config)
        family = values.pop("name")
        if family not in CONFIG_CLASSES:
            raise ValueError(f"unknown local feature extractor {family!r}; known: {', '.join(CONFIG_CLASSES)}")
        config = _config_from_dict(CONFIG_CLASSES[family], values)
    else:
        family = feature_family(name_or_config)
        config = FEATURE_CONFS[name_or_config][1]
    config = _override(config, overrides)
    cls = EXTRACTOR_CLASSES[family]
    return cls(config) if family == "sift" else cls(config, device=device)


def make_matcher(name_or_config: str | dict, features: str | dict, device: str | torch.device = "cpu",
                 **overrides: Any) -> Matcher:
    """A matcher by name ('auto', 'mnn', 'mnn-ratio', 'lightglue'/'lighterglue') for the given features,
    or a stored dict."""
    family = feature_family(features)
    if isinstance(name_or_config, dict):
        values = dict(name_or_config)
        kind = values.pop("name")
        if kind == MutualNearestNeighbor.name:
            return MutualNearestNeighbor(_override(_config_from_dict(MutualNNConfig, values), overrides))
        if kind == LightGlue.name:
            return LightGlue(_override(_config_from_dict(LightGlueConfig, values), overrides), device=device)
        raise ValueError(f"unknown matcher {kind!r}; known: {MutualNearestNeighbor.name}, {LightGlue.name}")
    name = DEFAULT_MATCHERS[family] if name_or_config == "auto" else name_or_config
    if name in ("mnn", "mnn-ratio"):
        config = MNN_DEFAULTS[family]
        if name == "mnn-ratio" and config.ratio_threshold is None:
            config = dataclasses.replace(config, ratio_threshold=0.8)
        return MutualNearestNeighbor(_override(config, overrides))
    if name in ("lightglue", "lighterglue"):
        if family not in LIGHTGLUE_WEIGHTS:
            raise ValueError(f"no LightGlue weights for {family} features "
                             f"(available for {', '.join(LIGHTGLUE_WEIGHTS)}); "
                             "use --matcher mnn or mnn-ratio")
        return LightGlue(_override(LightGlueConfig(features=family), overrides), device=device)
    raise ValueError(f"unknown matcher {name_or_config!r}; known: {', '.join(MATCHER_NAMES)}")


def _override(config, overrides: dict[str, Any]):
    values = {k: v for k, v in overrides.items() if v is not None}
    known = {f.name for f in dataclasses.fields(config)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"{type(config).__name__} has no option {', '.join(unknown)}; "
                         f"options: {', '.join(sorted(known))}")
    return dataclasses.replace(config, **values)


def _config_from_dict(cls, values: dict[str, Any]):
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"stored {cls.__name__} has unknown options {', '.join(unknown)}")
    return cls(**values)
