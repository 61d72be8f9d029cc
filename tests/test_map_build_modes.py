"""`hierloc map build`: poses without cameras stop with a reason instead of silently becoming SfM."""

from __future__ import annotations

import logging

import pytest

from hierloc.cli.main import main
from hierloc.localization.build import choose_build_mode
from hierloc.maps import load_map, make_synthetic_map, write_synthetic_dataset


@pytest.fixture(scope="module")
def posed_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("modes")
    world = make_synthetic_map(num_missions=1, frames_per_mission=12, image_size=(320, 240), seed=3)
    write_synthetic_dataset(world, root / "with_cameras")
    write_synthetic_dataset(world, root / "no_cameras")
    (root / "no_cameras" / "cameras.txt").unlink()  # poses.txt stays
    return root


def test_poses_without_cameras_stop_with_the_remedy(posed_folder, tmp_path, capsys):
    out = tmp_path / "map"
    assert main(["map", "build", str(posed_folder / "no_cameras"), "--out", str(out), "--global-model", "none"]) == 1
    (err,) = [line for line in capsys.readouterr().err.splitlines() if "error" in line]  # one line
    assert "every image has a pose but 12 of 12 have no camera" in err
    assert "cameras.txt" in err and "--mode sfm" in err and "ignores the poses" in err
    assert not out.exists()  # stopped before features were extracted or anything written


def test_choose_build_mode():
    world = make_synthetic_map(num_missions=1, frames_per_mission=3, image_size=(64, 48), seed=0)
    keyframes = list(world.keyframes())
    assert choose_build_mode(world, keyframes) == "triangulation"
    assert choose_build_mode(world, keyframes, "sfm") == "sfm"
    for kf in keyframes:
        kf.camera = None
    with pytest.raises(ValueError, match="have no camera"):
        choose_build_mode(world, keyframes)
    with pytest.raises(ValueError, match="have no camera"):
        choose_build_mode(world, keyframes, "triangulation")
    assert choose_build_mode(world, keyframes, "sfm") == "sfm"
    for kf in keyframes:
        kf.pose = None
    assert choose_build_mode(world, keyframes) == "sfm"  # nothing posed: SfM is the only way
    with pytest.raises(ValueError, match="needs a pose for every image"):
        choose_build_mode(world, keyframes, "triangulation")
    with pytest.raises(ValueError, match="unknown build mode"):
        choose_build_mode(world, keyframes, "magic")


def test_partly_posed_folder_warns_that_sfm_ignores_the_poses(posed_folder, caplog):
    map_ = load_map(str(posed_folder / "with_cameras"))
    keyframes = list(map_.keyframes())
    keyframes[0].pose = None
    with caplog.at_level(logging.WARNING):
        assert choose_build_mode(map_, keyframes) == "sfm"
    assert "1 of 12 images have no pose" in caplog.text and "ignores the poses" in caplog.text


def test_map_build_reports_how_many_images_registered(posed_folder, tmp_path, capsys):
    assert main(["map", "build", str(posed_folder / "with_cameras"), "--out", str(tmp_path / "map"),
                 "--global-model", "none", "--pairs", "sequential", "--num-neighbors", "3"]) == 0
    assert "12 of 12 images registered (triangulation)" in capsys.readouterr().out
