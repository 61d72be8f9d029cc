"""Local features (SIFT, XFeat, ALIKED, DISK) and matchers (mutual NN, LightGlue), hloc-compatible files.

    from hierloc.features import make_extractor, make_matcher
    extractor = make_extractor("aliked", max_keypoints=2048)
    matcher = make_matcher("auto", "aliked")          # LightGlue for ALIKED, ratio test for SIFT
    f0, f1 = extractor.extract(image0), extractor.extract(image1)
    matches0, scores0 = matcher.match(f0, f1)          # hloc's matches0: index into image 1 or -1

Keypoints are in COLMAP pixels (top-left pixel centre at (0.5, 0.5)); files use hloc's layout.
"""

from .base import ExtractorConfig, LocalFeatureExtractor
from .extract import extract_features
from .h5io import (
    FeatureFileError,
    FeatureWriter,
    feature_names,
    names_to_pair,
    read_feature_config,
    read_features,
    read_matches,
    read_pairs,
    write_features,
    write_matches,
    write_pairs,
)
from .learned import ALIKED, DISK, ALIKEDConfig, DISKConfig, XFeat, XFeatConfig
from .matchers import LightGlue, LightGlueConfig, Matcher, MutualNearestNeighbor, MutualNNConfig
from .registry import DEFAULT_MATCHERS, FEATURE_CONFS, MATCHER_NAMES, feature_family, make_extractor, make_matcher
from .sift import SIFT, SIFTConfig
from .types import LocalFeatures, matches_to_pairs, pairs_to_matches

__all__ = [
    "ALIKED", "ALIKEDConfig", "DEFAULT_MATCHERS", "DISK", "DISKConfig", "ExtractorConfig", "FEATURE_CONFS",
    "FeatureFileError", "FeatureWriter", "LightGlue", "LightGlueConfig", "LocalFeatureExtractor", "LocalFeatures",
    "MATCHER_NAMES", "Matcher", "MutualNNConfig", "MutualNearestNeighbor", "SIFT", "SIFTConfig", "XFeat",
    "XFeatConfig", "extract_features", "feature_family", "feature_names", "make_extractor", "make_matcher",
    "matches_to_pairs", "names_to_pair", "pairs_to_matches", "read_feature_config", "read_features",
    "read_matches", "read_pairs", "write_features", "write_matches", "write_pairs",
]
