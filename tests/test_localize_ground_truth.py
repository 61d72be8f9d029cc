"""`hierloc localize --ground-truth` with a ground truth of several missions that reuse frame names."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from hierloc.cli.main import main
from hierloc.maps import make_synthetic_map, write_synthetic_dataset
from hierloc.pipelines.localizing import GroundTruthPoses


@pytest.fixture(scope="module")
def two_missions(tmp_path_factory):
    """day/000000.png ... and dusk/000000.png ...: the same file names in both missions, different poses."""
    root = tmp_path_factory.mktemp("gt")
    world = make_synthetic_map(num_missions=2, frames_per_mission=20, image_size=(320, 240), seed=2)
    write_synthetic_dataset(world, root / "both")
    write_synthetic_dataset(world.select(["day"]), root / "mapping")
    return root, world


def _pose(world, mission: str, frame: int) -> np.ndarray:
    return world.missions[mission].keyframes[frame].pose


def test_ground_truth_matches_queries_by_file_then_by_mission_path(two_missions, tmp_path):
    root, world = two_missions
    assert not np.allclose(_pose(world, "day", 3), _pose(world, "dusk", 3))
    truth = GroundTruthPoses(str(root / "both"))
    # The same file: unambiguous whatever the query's name.
    found = truth.find("000003.png", root / "both" / "dusk" / "000003.png")
    assert found.name == "dusk/000003.png" and np.allclose(found.pose, _pose(world, "dusk", 3))
    # A copy whose path still carries the mission folder.
    shutil.copytree(root / "both" / "dusk", tmp_path / "copy" / "dusk")
    found = truth.find("000003.png", tmp_path / "copy" / "dusk" / "000003.png")
    assert found.name == "dusk/000003.png"
    assert truth.find("dusk/000003.png").name == "dusk/000003.png"
    assert truth.find("nothing.png") is None
    # A bare frame name of two missions is refused, naming it, rather than paired with the first mission.
    with pytest.raises(ValueError, match=r"'000003.png' names 2 posed images \(day/000003.png, dusk/000003.png\)"):
        truth.find("000003.png")


def test_localize_with_a_two_mission_ground_truth(two_missions, tmp_path, capsys):
    root, world = two_missions
    map_dir = tmp_path / "map"
    assert main(["map", "build", str(root / "mapping"), "--out", str(map_dir), "--global-model", "none",
                 "--pairs", "sequential", "--num-neighbors", "3", "--threads", "2"]) == 0
    capsys.readouterr()
    out = tmp_path / "out"
    assert main(["localize", str(map_dir), str(root / "both" / "dusk"), "--ground-truth", str(root / "both"),
                 "--out", str(out), "--num-retrieved", "0", "--camera", "map", "--matches-png", "0"]) == 0
    report = json.loads((out / "results.json").read_text())
    # Paired with day's poses, the errors were metres (0 % recall); with dusk's they are centimetres.
    assert report["evaluation"]["summary"]["recall"]["0.25m_2deg"] >= 60.0
    assert set(report["evaluation"]["errors"]) == {f"{i:06d}.png" for i in range(20)}

    # Copies outside the ground-truth folder with no mission in their path: one-line refusal, before localizing.
    shutil.copytree(root / "both" / "dusk", tmp_path / "frames")
    capsys.readouterr()
    assert main(["localize", str(map_dir), str(tmp_path / "frames"), "--ground-truth", str(root / "both"),
                 "--out", str(tmp_path / "out2"), "--camera", "map"]) == 1
    captured = capsys.readouterr()
    (error,) = [line for line in captured.err.splitlines() if "error" in line]  # one line
    assert "ambiguous: '000000.png' names 2 posed images" in error
    assert "localized" not in captured.out
