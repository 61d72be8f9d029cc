"""3-D maps and localization on the synthetic world, whose poses, cameras and depth are exact."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from hierloc.evaluation.pose_errors import pose_error
from hierloc.features import write_features
from hierloc.localization import (
    GlobalConfig,
    Localizer,
    LocalizerConfig,
    MapBuildConfig,
    SceneMap,
    build_scene_map,
    read_hloc_poses,
    write_hloc_poses,
    write_results_json,
)
from hierloc.localization.build import import_colmap_model
from hierloc.maps import SyntheticWorld, make_synthetic_map
from hierloc.maps.synthetic import APPEARANCES

IMAGE_SIZE = (480, 360)
FRAMES = 24


@pytest.fixture(scope="module")
def world():
    """Day (map) and dusk (queries: other light, blur, noise, other path) loops around the corridor."""
    return make_synthetic_map(num_missions=2, frames_per_mission=FRAMES, image_size=IMAGE_SIZE, seed=0)


@pytest.fixture(scope="module")
def scene(world):
    """The day mission triangulated from its exact poses (no retrieval network: see the retrieval test)."""
    config = MapBuildConfig(features="sift", pairs="sequential", num_neighbors=3,
                            global_model=GlobalConfig(model="none"))
    scene, report = build_scene_map(world.select(["day"]), config, progress=False)
    assert report["mode"] == "triangulation" and report["registered"] == FRAMES
    return scene


def _errors(localizer, keyframes):
    results = [localizer.localize(kf.load_image(), kf.camera, kf.name) for kf in keyframes]
    errors = np.array([pose_error(r.T_world_cam, kf.pose) if r.success else (np.inf, np.inf)
                       for r, kf in zip(results, keyframes)])
    return results, errors


def test_triangulated_points_agree_with_the_rendered_depth(world, scene):
    assert scene.num_points > 1000
    day = {kf.name: kf for kf in world.missions["day"]}
    relative = []
    for image in scene.images:
        keyframe = day[image.name]
        np.testing.assert_allclose(image.pose, keyframe.pose, atol=1e-9)  # poses were kept fixed
        rows = scene.point_index[image.name]
        seen = rows >= 0
        T_cam_world = np.linalg.inv(keyframe.pose)
        z = (scene.points_xyz[rows[seen]] @ T_cam_world[:3, :3].T + T_cam_world[:3, 3])[:, 2]
        pixel = np.floor(scene.features[image.name].keypoints[seen]).astype(int)  # COLMAP pixel -> array index
        depth = keyframe.depth[pixel[:, 1], pixel[:, 0]]
        relative.append((z - depth) / depth)
    relative = np.abs(np.concatenate(relative))
    # Narrow baselines (about 1 m between frames, walls 2 to 10 m away) allow a few millimetres per metre.
    assert np.median(relative) < 0.01
    assert np.mean(relative < 0.05) > 0.95
    assert np.median(SyntheticWorld(0).surface_distance(scene.points_xyz)) < 0.05


def test_sift_localizes_dusk_queries_within_tight_bounds(world, scene):
    localizer = Localizer(scene, LocalizerConfig(num_retrieved=0))
    queries = world.missions["dusk"].keyframes[::3]
    results, errors = _errors(localizer, queries)
    assert np.mean(np.isfinite(errors[:, 0])) >= 0.9
    assert np.median(errors[:, 0]) < 0.01  # metres
    assert np.median(errors[:, 1]) < 0.1  # degrees
    good = [r for r in results if r.success]
    assert all(r.num_inliers >= 20 for r in good)
    assert all(set(r.timings) >= {"retrieval", "local_features", "clustering", "matching", "pose", "total"}
               for r in results)
    assert np.all(errors[np.isfinite(errors[:, 0]), 0] < 0.15)  # a localized query is never grossly wrong


def test_batch_mode_overlapping_stages_gives_the_single_query_poses(world, scene):
    from hierloc.localization.localizer import QueryImage

    localizer = Localizer(scene, LocalizerConfig(num_retrieved=0))
    keyframes = world.missions["dusk"].keyframes[1:8:2]
    queries = [QueryImage(kf.name, kf.load_image, kf.camera) for kf in keyframes]
    overlapped = localizer.localize_many(queries, progress=False, overlap=True)
    sequential = localizer.localize_many(queries, progress=False, overlap=False)
    assert [r.name for r in overlapped] == [kf.name for kf in keyframes]
    for a, b in zip(overlapped, sequential):
        assert a.success == b.success and a.num_inliers == b.num_inliers
        if a.success:
            np.testing.assert_allclose(a.T_cam_world, b.T_cam_world, atol=1e-9)
        assert a.timings["decode"] >= 0 and a.timings["total"] >= a.timings["local_features"]


def test_query_from_another_scene_is_reported_as_a_failure(scene):
    other = SyntheticWorld(seed=7)  # other textures everywhere
    camera = other.default_camera(IMAGE_SIZE)
    image, _ = other.render(other.loop_pose(5.0), camera, APPEARANCES["day"])
    localizer = Localizer(scene, LocalizerConfig(num_retrieved=0))
    result = localizer.localize(image, camera, "elsewhere.png")
    assert not result.success
    assert result.T_cam_world is None and result.T_world_cam is None
    assert "min_inliers" in result.message or "correspondences" in result.message
    noise = np.random.default_rng(0).integers(0, 255, (IMAGE_SIZE[1], IMAGE_SIZE[0], 3), dtype=np.uint8)
    assert not localizer.localize(noise, camera, "noise.png").success


def test_map_folder_round_trip_and_hloc_result_files(tmp_path, world, scene):
    scene.save(tmp_path / "map")
    loaded = SceneMap.load(tmp_path / "map")
    assert loaded.names == scene.names and loaded.num_points == scene.num_points
    np.testing.assert_allclose(loaded.points_xyz, scene.points_xyz)
    for name in scene.names[:3]:
        np.testing.assert_array_equal(loaded.point_index[name], scene.point_index[name])
        np.testing.assert_allclose(loaded.features[name].keypoints, scene.features[name].keypoints, atol=1e-4)
    localizer = Localizer(loaded, LocalizerConfig(num_retrieved=0))
    queries = world.missions["dusk"].keyframes[1:3]
    results = [localizer.localize(kf.load_image(), kf.camera, kf.name.replace("/", "_")) for kf in queries]
    path = write_hloc_poses(tmp_path / "poses.txt", results)
    lines = path.read_text().splitlines()
    assert len(lines) == sum(r.success for r in results) and len(lines[0].split()) == 8
    back = read_hloc_poses(path)
    for result in results:
        if result.success:  # world-to-camera, as hloc writes it
            np.testing.assert_allclose(back[result.name], result.T_cam_world, atol=1e-9)
    report = write_results_json(tmp_path / "results.json", results).read_text()
    assert '"timings_s"' in report and '"num_inliers"' in report


def test_colmap_model_import_keeps_its_points(tmp_path, world, scene):
    # An existing COLMAP model and the hloc-layout features its keypoints came from.
    model = tmp_path / "sparse"
    model.mkdir()
    scene.reconstruction.write_binary(str(model))
    write_features(tmp_path / "features.h5", scene.features)  # no hierloc config: like a file from hloc
    imported, report = import_colmap_model(model, tmp_path / "features.h5", "sift",
                                           global_config=GlobalConfig(model="none"))
    assert report["mode"] == "colmap-import" and imported.num_points == scene.num_points
    assert imported.is_metric
    localizer = Localizer(imported, LocalizerConfig(num_retrieved=0))
    query = world.missions["dusk"].keyframes[4]
    result = localizer.localize(query.load_image(), query.camera, query.name)
    assert result.success
    dt, dr = pose_error(result.T_world_cam, query.pose)
    assert dt < 0.05 and dr < 0.5
    write_features(tmp_path / "other.h5", {n: f.subset(np.arange(10)) for n, f in scene.features.items()})
    with pytest.raises(ValueError, match=r"sparse/images.bin and .*other.h5 disagree: .* has \d+ keypoints in the "
                                         r"model and 10 in the feature file"):
        import_colmap_model(model, tmp_path / "other.h5", "sift", global_config=GlobalConfig(model="none"))
    shifted = {n: dataclasses.replace(f, keypoints=f.keypoints + 2.0) for n, f in scene.features.items()}
    write_features(tmp_path / "shifted.h5", shifted)
    with pytest.raises(ValueError, match=r"disagree: keypoints of .* are up to 2 px apart"):
        import_colmap_model(model, tmp_path / "shifted.h5", "sift", global_config=GlobalConfig(model="none"))
