"""Map types: ids, cameras, keyframes, selection."""

from __future__ import annotations

import hashlib

import cv2
import numpy as np
import pytest

from hierloc.maps import Camera, Keyframe, Map, Mission, id_to_uint64_pair, keyframe_id, uint64_pair_to_id
from hierloc.utils.images import ImageReadError


def test_keyframe_id_is_stable_blake2b_of_mission_and_name():
    expected = hashlib.blake2b(b"day/day/000001.png", digest_size=16).hexdigest()
    assert keyframe_id("day/000001.png", "day") == expected
    assert len(expected) == 32
    assert keyframe_id("a.png", "m1") != keyframe_id("a.png", "m2")


def test_id_uint64_pair_round_trip_and_order():
    hex_id = "0123456789abcdef" + "fedcba9876543210"
    first, second = id_to_uint64_pair(hex_id)
    assert first == 0x0123456789ABCDEF and second == 0xFEDCBA9876543210
    assert uint64_pair_to_id(first, second) == hex_id
    assert uint64_pair_to_id(*id_to_uint64_pair(hex_id.upper())) == hex_id
    for bad in ("abc", "g" * 32, 123):
        with pytest.raises(ValueError):
            id_to_uint64_pair(bad)
    with pytest.raises(ValueError, match=r"\[0, 2\*\*64\)"):
        uint64_pair_to_id(-1, 0)
    with pytest.raises(ValueError, match=r"\[0, 2\*\*64\)"):
        uint64_pair_to_id(1 << 64, 0)


def test_camera_models_and_K():
    cam = Camera.pinhole(500, 510, 320, 240, 640, 480)
    np.testing.assert_allclose(cam.K, [[500, 0, 320], [0, 510, 240], [0, 0, 1]])
    radial = Camera("SIMPLE_RADIAL", 640, 480, [400, 320, 240, 0.01])
    np.testing.assert_allclose(radial.K, [[400, 0, 320], [0, 400, 240], [0, 0, 1]])
    opencv = Camera("opencv", 640, 480, [400, 410, 321, 239, 0.1, 0.01, 0, 0])
    assert opencv.model == "OPENCV" and opencv.K[1, 1] == 410
    half = cam.rescaled(320, 240)
    np.testing.assert_allclose(half.params, [250, 255, 160, 120])
    with pytest.raises(ValueError, match="takes 4 parameters"):
        Camera("PINHOLE", 640, 480, [1, 2, 3])
    with pytest.raises(ValueError, match="unknown camera model"):
        Camera("BANANA", 640, 480, [1, 2, 3])
    with pytest.raises(ValueError, match="positive"):
        Camera.pinhole(1, 1, 0, 0, 0, 480)


def _kf(name, mission, index, **kwargs):
    return Keyframe.create(name, mission, index, **kwargs)


def test_keyframe_image_sources(tmp_path):
    rgb = np.zeros((4, 5, 3), np.uint8)
    rgb[..., 0] = 200
    kf = _kf("m/a.png", "m", 0, image=rgb)
    assert kf.load_image().shape == (4, 5, 3)
    assert kf.load_image(grayscale=True).shape == (4, 5)
    path = tmp_path / "a.png"
    cv2.imwrite(str(path), rgb[:, :, ::-1])
    from_file = _kf("m/a.png", "m", 0, image_path=path)
    np.testing.assert_array_equal(from_file.load_image(), rgb)
    lazy = _kf("m/a.png", "m", 0, image_loader=lambda: rgb)
    np.testing.assert_array_equal(lazy.load_image(), rgb)
    with pytest.raises(ValueError, match="has no image"):
        _kf("m/b.png", "m", 1).load_image()
    with pytest.raises(ImageReadError):
        _kf("m/c.png", "m", 2, image_path=tmp_path / "missing.png").load_image()


def test_keyframe_validates_pose_and_id():
    kf = _kf("a.png", "m", 0, pose=np.eye(4)[:3])
    assert kf.pose.shape == (4, 4)
    np.testing.assert_array_equal(kf.position, [0, 0, 0])
    with pytest.raises(ValueError, match="4x4"):
        _kf("a.png", "m", 0, pose=np.eye(3))
    with pytest.raises(ValueError, match="32 hex characters"):
        Keyframe(id="xyz", name="a.png", mission="m", index=0)


def test_map_select_and_iteration():
    missions = {
        name: Mission(name, [_kf(f"{name}/{i}.png", name, i) for i in range(10)]) for name in ("day", "night")
    }
    map_ = Map("demo", missions)
    assert len(map_) == 20
    assert [kf.mission for kf in map_.keyframes()][:11] == ["day"] * 10 + ["night"]
    every3 = map_.select(subsampling=3)
    assert len(every3) == 8 and [kf.index for kf in every3.missions["day"]] == [0, 3, 6, 9]
    night = map_.select("night", 2)
    assert list(night.missions) == ["night"] and len(night) == 5
    assert len(map_) == 20  # the original is untouched
    with pytest.raises(KeyError, match="'dusk'.*available: 'day', 'night'"):
        map_.select(["day", "dusk"])
    with pytest.raises(ValueError, match="positive integer"):
        map_.select(subsampling=0)
    kf = missions["night"].keyframes[4]
    assert map_.keyframe(kf.id) is kf
    assert "night: 10 keyframes" in map_.summary()
    grouped = Map.from_keyframes("g", list(map_.keyframes()))
    assert list(grouped.missions) == ["day", "night"] and len(grouped) == 20
