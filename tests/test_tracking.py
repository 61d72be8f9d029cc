"""Tracking a stream: points followed by optical flow, frames localized around the previous pose, global retrieval
when lost."""

from __future__ import annotations

import numpy as np
import pytest

from hierloc.evaluation.pose_errors import pose_errors
from hierloc.localization import GlobalConfig, Localizer, LocalizerConfig, MapBuildConfig, build_scene_map
from hierloc.localization.localizer import LocalizationResult
from hierloc.localization.tracking import Tracker, TrackingConfig, keyframe_spacing
from hierloc.maps.synthetic import APPEARANCES, SyntheticWorld, make_synthetic_map, mission_name
from hierloc.maps.types import Keyframe, Map


@pytest.fixture(scope="module")
def world_and_localizer():
    world = make_synthetic_map(num_missions=2, frames_per_mission=24, image_size=(320, 240), seed=11)
    config = MapBuildConfig(features="sift", pairs="sequential", num_neighbors=3,
                            global_model=GlobalConfig(model="mobilenetvlad_imagenet"))
    scene, _ = build_scene_map(world.select(["day"]), config, progress=False)
    return world, Localizer(scene, LocalizerConfig(num_retrieved=5, trace_global_network=False))


def test_tracking_serves_a_stream_as_accurately_as_global_retrieval(world_and_localizer):
    world, localizer = world_and_localizer
    frames = world.missions["dusk"].keyframes
    tracker = Tracker(localizer)
    retrievals = []
    original_retrieve = localizer.retrieve
    localizer.retrieve = lambda image: retrievals.append(1) or original_retrieve(image)  # counts network runs
    try:
        tracked = [tracker.track(kf.load_image(), kf.camera, kf.name) for kf in frames]
    finally:
        del localizer.retrieve
    independent = [localizer.localize(kf.load_image(), kf.camera, kf.name) for kf in frames]
    assert tracked[0].retrieval_path == "global"  # nothing to track from yet
    paths = [r.retrieval_path for r in tracked]
    assert paths.count("tracking") >= len(frames) // 2
    assert len(retrievals) == paths.count("global")  # a tracked frame runs no global network
    truth = {kf.name: kf.pose for kf in frames}
    tracked_errors = pose_errors({r.name: r.T_world_cam for r in tracked}, truth)
    independent_errors = pose_errors({r.name: r.T_world_cam for r in independent}, truth)
    assert sum(r.success for r in tracked) >= sum(r.success for r in independent)
    t_tracked = np.median([e[0] for e in tracked_errors.values() if np.isfinite(e[0])])
    t_independent = np.median([e[0] for e in independent_errors.values() if np.isfinite(e[0])])
    assert t_tracked <= max(2 * t_independent, 0.02)


def test_a_lost_track_falls_back_to_global_retrieval(world_and_localizer):
    world, localizer = world_and_localizer
    frames = world.missions["dusk"].keyframes
    tracker = Tracker(localizer)
    first = tracker.track(frames[0].load_image(), frames[0].camera, frames[0].name)
    assert first.success and tracker.tracking
    # A frame from the other end of the route: the keyframes around the previous pose do not see it.
    far = frames[len(frames) // 2]
    result = tracker.track(far.load_image(), far.camera, far.name)
    assert result.retrieval_path == "global" and result.success
    noise = np.random.default_rng(0).integers(0, 255, (240, 320, 3), np.uint8)
    lost = tracker.track(noise, far.camera, "noise")
    assert not lost.success and not tracker.tracking  # the next frame goes through global retrieval
    again = tracker.track(frames[3].load_image(), frames[3].camera, frames[3].name)
    assert again.retrieval_path == "global"


# ---------------------------------------------------------------------------------------------- the flow path
# A dense stretch of the synthetic corridor (160 frames per loop: 23 cm between frames, as a camera at about 5 Hz):
# the day mission's first 24 frames make the map, dusk frames inside that stretch make the stream. Only these
# frames are rendered, so the fixture stays fast.
LOOP_FRAMES = 160


def _render(world: SyntheticWorld, mission: int, indices) -> list[Keyframe]:
    camera = world.default_camera((320, 240))
    name = mission_name(mission)
    poses = world.mission_poses(mission, LOOP_FRAMES)
    keyframes = []
    for i in indices:
        image, depth = world.render(poses[i], camera, APPEARANCES[name], noise_seed=(0, mission, i))
        keyframes.append(Keyframe.create(f"{name}/{i:06d}.png", name, i, timestamp=float(i), pose=poses[i],
                                         camera=camera, image=image, depth=depth))
    return keyframes


@pytest.fixture(scope="module")
def stretch_and_localizer():
    world = SyntheticWorld(0)
    day = _render(world, 0, range(24))
    dusk = _render(world, 1, range(2, 18))
    config = MapBuildConfig(features="sift", pairs="sequential", num_neighbors=3,
                            global_model=GlobalConfig(model="mobilenetvlad_imagenet"))
    scene, _ = build_scene_map(Map.from_keyframes("stretch", day), config, progress=False)
    return dusk, Localizer(scene, LocalizerConfig(num_retrieved=5, trace_global_network=False))


def _errors(result: LocalizationResult, keyframe: Keyframe) -> tuple[float, float]:
    return pose_errors({keyframe.name: result.T_world_cam}, {keyframe.name: keyframe.pose})[keyframe.name]


def test_flow_serves_most_of_a_stream_close_to_ground_truth(stretch_and_localizer):
    frames, localizer = stretch_and_localizer
    config = TrackingConfig(optical_flow=True)
    tracker = Tracker(localizer, config)
    results = [tracker.track(kf.load_image(), kf.camera, kf.name) for kf in frames]
    paths = [r.retrieval_path for r in results]
    assert paths[0] == "global" and all(r.success for r in results), [(r.retrieval_path, r.message) for r in results]
    assert paths.count("flow") >= len(frames) // 2, paths
    # Full localizations refresh the followed points: never more than flow_refresh_frames flow frames in a row.
    assert "flow" * (config.flow_refresh_frames + 1) not in "".join("flow" if p == "flow" else "-" for p in paths)
    for result, keyframe in zip(results, frames):
        translation_m, rotation_deg = _errors(result, keyframe)
        assert translation_m < 0.03 and rotation_deg < 0.5, (result.retrieval_path, translation_m, rotation_deg)
        if result.retrieval_path == "flow":  # no local features, no retrieval: flow and PnP only
            assert result.timings["local_features"] == 0 and result.timings["retrieval"] == 0
            assert result.timings["flow"] > 0 and result.num_inliers >= localizer.config.min_inliers
            assert sum(len(pairs) for pairs in result.inlier_matches.values()) == result.num_inliers
            assert len(result.query_keypoints) == result.num_inliers


def test_flow_is_off_by_default_and_tracking_is_unchanged(stretch_and_localizer):
    frames, localizer = stretch_and_localizer
    tracker = Tracker(localizer)
    paths = [tracker.track(kf.load_image(), kf.camera, kf.name).retrieval_path for kf in frames[:4]]
    assert paths == ["global", "tracking", "tracking", "tracking"]


def test_a_jump_or_a_blank_frame_falls_back_from_flow(stretch_and_localizer):
    frames, localizer = stretch_and_localizer
    tracker = Tracker(localizer, TrackingConfig(optical_flow=True))
    for keyframe in frames[8:10]:
        result = tracker.track(keyframe.load_image(), keyframe.camera, keyframe.name)
    assert result.retrieval_path == "flow" and result.success
    # A jump 1.8 m back: the points of the previous frame cannot be followed into it; keyframe tracking serves it
    # (the keyframes near the last pose still see that stretch) or global retrieval, never flow.
    jump = frames[0]
    result = tracker.track(jump.load_image(), jump.camera, jump.name)
    assert result.retrieval_path in ("tracking", "global") and result.success, result.message
    assert result.timings["flow"] > 0 and result.timings["total"] >= result.timings["flow"]  # the attempt counts
    assert _errors(result, jump)[0] < 0.03
    nxt = frames[1]
    assert tracker.track(nxt.load_image(), nxt.camera, nxt.name).retrieval_path == "flow"  # flow from the new pose
    blank = np.full((240, 320, 3), 128, np.uint8)
    lost = tracker.track(blank, nxt.camera, "blank")
    assert not lost.success and lost.retrieval_path == "global" and not tracker.tracking
    after = frames[2]
    assert tracker.track(after.load_image(), after.camera, after.name).retrieval_path == "global"


# ---------------------------------------------------------------------------------------------- checks of tracked poses
def _tracked_attempts(localizer: Localizer) -> list[LocalizationResult]:
    """Records the results of the localizer's calls with candidates (the tracking attempts), as the check left them."""
    attempts: list[LocalizationResult] = []
    original = localizer.localize

    def recording(*args, **kwargs):
        result = original(*args, **kwargs)
        if kwargs.get("candidates") is not None:
            attempts.append(result)
        return result

    localizer.localize = recording
    return attempts


def test_keyframe_spacing_is_the_maps_own_scale(stretch_and_localizer):
    _, localizer = stretch_and_localizer
    centres = np.stack([image.pose[:3, 3] for image in localizer.scene.images])
    distances = np.linalg.norm(centres[:, None] - centres[None], axis=2)
    np.fill_diagonal(distances, np.inf)
    assert keyframe_spacing(localizer.scene) == pytest.approx(np.median(distances.min(axis=1)))
    assert 0.15 < Tracker(localizer).keyframe_spacing < 0.35  # 23 cm between frames of the stretch


def test_tracked_poses_are_estimated_again_within_the_tighter_threshold(stretch_and_localizer):
    frames, localizer = stretch_and_localizer
    tracker = Tracker(localizer)
    scene = localizer.scene
    for keyframe in frames[:4]:
        result = tracker.track(keyframe.load_image(), keyframe.camera, keyframe.name)
    assert result.retrieval_path == "tracking" and result.success
    assert _errors(result, frames[3])[0] < 0.03
    # Every inlier the tracker keeps (and tracks the next frame from) projects within the threshold (plus the
    # slack of the non-linear refinement after RANSAC).
    for map_name, pairs in result.inlier_matches.items():
        points = scene.points_xyz[scene.point_index[map_name][pairs[:, 1]]]
        in_camera = points @ result.T_cam_world[:3, :3].T + result.T_cam_world[:3, 3]
        projected = in_camera @ result.camera.K.T
        projected = projected[:, :2] / projected[:, 2:]
        residuals = np.linalg.norm(projected - result.query_keypoints[pairs[:, 0]], axis=1)
        assert residuals.max() < TrackingConfig().max_reprojection_px + 1.0, map_name


def test_a_tracked_pose_with_too_few_inliers_within_the_threshold_falls_back_to_global(stretch_and_localizer):
    frames, localizer = stretch_and_localizer
    tracker = Tracker(localizer, TrackingConfig(max_reprojection_px=0.01))  # almost no match is that close
    attempts = _tracked_attempts(localizer)
    try:
        results = [tracker.track(kf.load_image(), kf.camera, kf.name) for kf in frames[:3]]
    finally:
        del localizer.localize
    assert [r.retrieval_path for r in results] == ["global"] * 3 and all(r.success for r in results)
    assert len(attempts) == 2 and all("px" in a.message and not a.success for a in attempts), [
        a.message for a in attempts]


def test_a_tracked_pose_that_jumps_falls_back_to_global(stretch_and_localizer):
    frames, localizer = stretch_and_localizer
    pair = frames[8:10]  # one frame apart: about one keyframe spacing
    tracker = Tracker(localizer)
    paths = [tracker.track(kf.load_image(), kf.camera, kf.name).retrieval_path for kf in pair]
    assert paths == ["global", "tracking"]
    # The same step against a limit of a tenth of the keyframe spacing: the tracked pose is refused, global serves.
    tracker = Tracker(localizer, TrackingConfig(max_jump_keyframe_spacings=0.1))
    attempts = _tracked_attempts(localizer)
    try:
        results = [tracker.track(kf.load_image(), kf.camera, kf.name) for kf in pair]
    finally:
        del localizer.localize
    assert [r.retrieval_path for r in results] == ["global", "global"] and results[1].success
    assert _errors(results[1], pair[1])[0] < 0.03
    assert len(attempts) == 1 and "keyframe spacing" in attempts[0].message and not attempts[0].success
    tracker.reset()
    assert not tracker.tracking
