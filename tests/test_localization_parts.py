"""Pieces of the localization pipeline: pairs, covisibility clustering, absolute pose, pose errors, retrieval."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from hierloc.evaluation.pose_errors import (
    Similarity,
    align_similarity,
    format_summary,
    plot_localization,
    pose_error,
    pose_errors,
    rotation_error_deg,
    summarize_errors,
)
from hierloc.index.native_format import read_native_metadata
from hierloc.localization import (
    GlobalConfig,
    Localizer,
    LocalizerConfig,
    MapBuildConfig,
    build_scene_map,
    covisibility_clusters,
    estimate_absolute_pose,
    exhaustive_pairs,
    pairs_from_poses,
    pairs_from_retrieval,
    query_camera,
    sequential_pairs,
)
from hierloc.localization.pairs import choose_strategy
from hierloc.maps import make_pose, make_synthetic_map
from hierloc.maps.types import Camera


def test_pair_strategies():
    assert exhaustive_pairs(4) == [(0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3)]
    assert sequential_pairs(["a", "a", "a", "b", "b"], 1) == [(0, 1), (1, 2), (3, 4)]
    forward = Rotation.from_euler("y", 0).as_matrix()
    backward = Rotation.from_euler("y", 180, degrees=True).as_matrix()
    poses = np.stack([make_pose(forward, [x, 0, 0]) for x in (0.0, 1.0, 5.0)] + [make_pose(backward, [0.5, 0, 0])])
    pairs = pairs_from_poses(poses, num_neighbors=1)
    assert (0, 1) in pairs and all(3 not in p for p in pairs)  # the camera looking the other way is never paired
    descriptors = np.eye(3, dtype=np.float32)[[0, 0, 1, 2]]
    assert (0, 1) in pairs_from_retrieval(descriptors, num_neighbors=1)
    assert choose_strategy("auto", 10, True, True) == "exhaustive"
    assert choose_strategy("auto", 100, True, True) == "poses"
    assert choose_strategy("auto", 100, False, True) == "retrieval"
    with pytest.raises(ValueError, match="pose"):
        choose_strategy("poses", 10, False, True)


def test_covisibility_clustering_groups_connected_candidates():
    covisibility = np.array([[0, 0, 30, 0, 0],
                             [0, 0, 0, 12, 0],
                             [30, 0, 0, 0, 5],
                             [0, 12, 0, 0, 0],
                             [0, 0, 5, 0, 0]])
    places = covisibility_clusters(list("abcde"), covisibility, min_shared=1)
    assert places == [["a", "c", "e"], ["b", "d"]]
    assert covisibility_clusters(list("abcde"), covisibility, min_shared=10) == [["a", "c"], ["b", "d"], ["e"]]


def test_absolute_pose_recovers_a_known_pose_and_rejects_garbage():
    rng = np.random.default_rng(0)
    camera = Camera.pinhole(500, 500, 320, 240, 640, 480)
    T_cam_world = make_pose(Rotation.from_euler("xyz", [5, -10, 3], degrees=True).as_matrix(), [0.2, -0.1, 0.5])
    points_cam = np.c_[rng.uniform(-2, 2, (200, 2)), rng.uniform(3, 8, 200)]
    points_world = (points_cam - T_cam_world[:3, 3]) @ T_cam_world[:3, :3]
    pixels = points_cam[:, :2] / points_cam[:, 2:] * 500 + [320, 240] + rng.normal(0, 0.3, (200, 2))
    pixels[:40] = rng.uniform(0, 480, (40, 2))  # 20 % outliers
    result = estimate_absolute_pose(pixels, points_world, camera)
    assert result["num_inliers"] >= 155 and not result["inlier_mask"][:40].any()
    dt, dr = pose_error(np.linalg.inv(result["T_cam_world"]), np.linalg.inv(T_cam_world))
    assert dt < 0.01 and dr < 0.05
    assert estimate_absolute_pose(pixels[:3], points_world[:3], camera) is None
    # An uncalibrated query: focal length estimated with the pose.
    guess, source = query_camera(640, 480)
    assert source == "guess" and guess.params[0] == pytest.approx(1.2 * 640)
    refined = estimate_absolute_pose(pixels[40:], points_world[40:], guess, estimate_focal=True)
    assert refined["camera"].params[0] == pytest.approx(500, rel=0.02)


def test_rotation_error_is_accurate_for_small_angles_and_rounded_matrices():
    R = Rotation.random(random_state=1).as_matrix()
    turned = R @ Rotation.from_rotvec([0, 0, np.radians(0.02)]).as_matrix()
    assert rotation_error_deg(np.round(R, 6), turned) == pytest.approx(0.02, abs=2e-4)
    assert rotation_error_deg(R, R @ Rotation.from_euler("x", 90, degrees=True).as_matrix()) == pytest.approx(90)


def test_error_summary_counts_failures_as_infinite():
    truth = {n: make_pose(np.eye(3), [i, 0, 0]) for i, n in enumerate("abcd")}
    estimated = {"a": make_pose(np.eye(3), [0.1, 0, 0]),
                 "b": make_pose(Rotation.from_euler("z", 3, degrees=True).as_matrix(), [1.3, 0, 0]),
                 "c": make_pose(np.eye(3), [2, 4, 0]), "d": None}
    errors = pose_errors(estimated, truth)
    assert errors["d"] == (math.inf, math.inf)
    summary = summarize_errors(errors)
    assert summary["num_localized"] == 3
    assert summary["recall"] == {"0.25m_2deg": 25.0, "0.5m_5deg": 50.0, "5m_10deg": 75.0}
    assert summary["median_translation_m"] == pytest.approx((0.3 + 4.0) / 2)
    assert "3/4 localized" in format_summary(summary)


def test_similarity_alignment_recovers_scale_rotation_and_translation(tmp_path):
    rng = np.random.default_rng(0)
    truth = {f"{i}": make_pose(Rotation.random(random_state=i).as_matrix(), rng.uniform(-5, 5, 3)) for i in range(8)}
    R = Rotation.from_euler("xyz", [10, 20, 30], degrees=True).as_matrix()
    to_sfm = Similarity(0.37, R, np.array([1.0, -2.0, 0.5]))
    sfm = {n: to_sfm.transform_pose(T) for n, T in truth.items()}
    back = align_similarity(sfm, truth)
    assert back.scale == pytest.approx(1 / 0.37, rel=1e-6)
    for name in truth:
        dt, dr = pose_error(back.transform_pose(sfm[name]), truth[name])
        assert dt < 1e-6 and dr < 1e-5
    png = plot_localization(tmp_path / "plot.png", {n: truth[n] for n in "0123"},
                            {n: truth[n] for n in "4567"}, {"4": sfm["4"], "5": truth["5"], "6": None}, "test")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_retrieval_picks_the_place_and_the_adapted_network_travels_with_the_map(tmp_path):
    world = make_synthetic_map(num_missions=2, frames_per_mission=10, image_size=(320, 240), seed=3)
    config = MapBuildConfig(features="sift", pairs="sequential", num_neighbors=2,
                            global_model=GlobalConfig(model="mobilenetvlad_imagenet", search="flat"))
    scene, _ = build_scene_map(world.select(["day"]), config, progress=False)
    assert scene.global_index is not None and len(scene.global_index) == len(scene)
    assert scene.global_describer.weights_name is None  # k-means initialised on this map: saved with it
    scene.save(tmp_path / "map")
    record = read_native_metadata(tmp_path / "map" / "global_index.h5")["describer"]
    assert (tmp_path / "map" / record["weights_file"]).is_file()
    # The same map with an HNSW global index: the stored structure serves retrieval, with the same poses.
    scene.global_model["search"]["kind"] = "hnsw"
    scene.save(tmp_path / "map_hnsw")
    localizers = {kind: Localizer.load(tmp_path / folder, LocalizerConfig(num_retrieved=3, trace_global_network=False))
                  for kind, folder in (("flat", "map"), ("hnsw", "map_hnsw"))}
    assert {kind: loc._retriever.backend.name for kind, loc in localizers.items()} == {"flat": "flat", "hnsw": "hnsw"}
    query = world.missions["dusk"].keyframes[2]
    result = localizers["flat"].localize(query.load_image(), query.camera, "q")
    assert len(result.retrieved) == 3 and set(result.place) <= set(result.retrieved)
    assert result.timings["retrieval"] > 0
    with_hnsw = localizers["hnsw"].localize(query.load_image(), query.camera, "q")
    assert with_hnsw.retrieved == result.retrieved and with_hnsw.success == result.success
    if result.success:
        np.testing.assert_allclose(with_hnsw.T_cam_world, result.T_cam_world, atol=1e-9)
    # The same retrieval as the in-memory map: the saved network is the adapted one.
    in_memory = Localizer(scene, LocalizerConfig(num_retrieved=3, trace_global_network=False))
    assert in_memory.retrieve(query.load_image()) == result.retrieved


def test_leave_one_out_builds_reuse_cached_features_and_matches(tmp_path):
    from hierloc.features import make_extractor, make_matcher
    from hierloc.features.h5io import FeatureFileError, feature_names
    from hierloc.localization import MatchCache

    world = make_synthetic_map(num_missions=1, frames_per_mission=8, image_size=(256, 192), seed=4)
    config = MapBuildConfig(features="sift", pairs="exhaustive", global_model=GlobalConfig(model="none"))
    sift = make_extractor("sift").describe_config()
    matcher = make_matcher("auto", sift).describe_config()
    cache = MatchCache.open(tmp_path / "matches.h5", sift, matcher)
    first, report = build_scene_map(world, config, exclude=["day/000003.png"], feature_cache=tmp_path / "f.h5",
                                    match_cache=cache, progress=False)
    assert len(first) == 7 and "day/000003.png" not in first.names and report["num_pairs"] == 21
    assert len(feature_names(tmp_path / "f.h5")) == 7
    again = MatchCache.open(tmp_path / "matches.h5", sift, matcher)  # a new process: read from the file
    second, _ = build_scene_map(world, config, exclude=["day/000005.png"], feature_cache=tmp_path / "f.h5",
                                match_cache=again, progress=False)
    assert len(second) == 7 and len(feature_names(tmp_path / "f.h5")) == 8
    shared = ("day/000000.png", "day/000001.png")
    np.testing.assert_array_equal(again.get(*shared), cache.get(*shared))
    with pytest.raises(FeatureFileError, match="other features"):
        MatchCache.open(tmp_path / "matches.h5", {**sift, "max_keypoints": 100}, matcher)
    with pytest.raises(ValueError, match="not images of map"):
        build_scene_map(world, config, exclude=["nope.png"], progress=False)
