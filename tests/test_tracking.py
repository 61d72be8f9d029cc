"""Tracking a stream: frames localized around the previous pose, global retrieval when lost."""

from __future__ import annotations

import numpy as np
import pytest

from hierloc.evaluation.pose_errors import pose_errors
from hierloc.localization import GlobalConfig, Localizer, LocalizerConfig, MapBuildConfig, build_scene_map
from hierloc.localization.tracking import Tracker
from hierloc.maps.synthetic import make_synthetic_map


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
    tracked = [tracker.track(kf.load_image(), kf.camera, kf.name) for kf in frames]
    independent = [localizer.localize(kf.load_image(), kf.camera, kf.name) for kf in frames]
    assert tracked[0].retrieval_path == "global"  # nothing to track from yet
    paths = [r.retrieval_path for r in tracked]
    assert paths.count("tracking") >= len(frames) // 2
    assert all(r.timings["retrieval"] < 1e-3 for r in tracked if r.retrieval_path == "tracking")  # no network
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
