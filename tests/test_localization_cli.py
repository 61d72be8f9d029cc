"""`hierloc map build` and `hierloc localize` on a synthetic dataset written to disk."""

from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pytest

from hierloc.cli.main import main
from hierloc.localization import LocalizerConfig, read_hloc_poses
from hierloc.maps import make_synthetic_map, write_synthetic_dataset
from hierloc.maps.poses import invert_pose
from hierloc.pipelines.localizing import LocalizeConfig, LocalizeStart, localize_queries


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    world = make_synthetic_map(num_missions=2, frames_per_mission=20, image_size=(320, 240), seed=2)
    write_synthetic_dataset(world.select(["day"]), root / "mapping")
    write_synthetic_dataset(world.select(["dusk"]), root / "queries")
    return root, world


@pytest.fixture(scope="module")
def built_map(datasets, tmp_path_factory):
    """(map folder, what `hierloc map build` printed): built once for the tests of this file."""
    root, _ = datasets
    map_dir = tmp_path_factory.mktemp("built") / "map"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = main(["map", "build", str(root / "mapping"), "--out", str(map_dir), "--global-model", "none",
                     "--pairs", "sequential", "--num-neighbors", "3", "--threads", "2"])
    assert code == 0
    return map_dir, printed.getvalue()


def test_map_build_then_localize_with_ground_truth(datasets, built_map, tmp_path, capsys):
    root, world = datasets
    map_dir, built = built_map
    assert "3-D map: 20 images" in built and f"map written to {map_dir}" in built
    assert (map_dir / "map.json").is_file() and (map_dir / "sfm" / "points3D.bin").is_file()
    assert (map_dir / "pairs.txt").read_text().count("\n") > 20

    out = tmp_path / "out"
    queries = root / "queries" / "dusk"
    assert main(["localize", str(map_dir), str(queries), "--ground-truth", str(root / "queries"), "--out", str(out),
                 "--num-retrieved", "0", "--camera", "map", "--matches-png", "1"]) == 0
    printed = capsys.readouterr().out
    assert "localized" in printed and "0.25 m, 2 deg" in printed
    report = json.loads((out / "results.json").read_text())
    # Small low-resolution frames 2.4 m apart: the plumbing is tested here, accuracy in test_localization_synthetic.
    assert report["num_queries"] == 20
    assert report["evaluation"]["summary"]["recall"]["0.25m_2deg"] >= 60.0
    assert {"retrieval", "local_features", "matching", "pose", "total"} <= set(report["queries"][0]["timings_s"])
    poses = read_hloc_poses(out / "poses.txt")
    assert len(poses) == report["num_localized"] >= 12
    dusk = {kf.name.split("/")[-1]: kf.pose for kf in world.missions["dusk"]}
    errors = [np.linalg.norm(invert_pose(T)[:3, 3] - dusk[name][:3, 3]) for name, T in poses.items()]
    assert np.median(errors) < 0.1  # poses.txt holds world-to-camera poses, hloc's convention
    assert (out / "localization.png").is_file() and (out / "matches_000.png").is_file()

    assert main(["map", "info", str(map_dir)]) == 0
    assert "20 images" in capsys.readouterr().out


def test_localize_queries_returns_results_errors_and_written_files(datasets, built_map, tmp_path):
    root, world = datasets
    map_dir, _ = built_map
    frames = (4, 8, 12, 16)
    files = [str(root / "queries" / "dusk" / f"{i:06d}.png") for i in frames]
    config = LocalizeConfig(map_dir, files, tmp_path / "out", camera="map", ground_truth=str(root / "queries"),
                            localizer=LocalizerConfig(num_retrieved=0), matches_png=1, threads=2, progress=False)
    started = []
    run = localize_queries(config, on_start=started.append)
    assert started == [LocalizeStart(run.map_summary, run.load_seconds, len(frames))]
    assert run.map_summary.startswith("3-D map: 20 images")
    names = [f"{i:06d}.png" for i in frames]
    assert [r.name for r in run.results] == names
    assert run.num_localized >= 3 and {"total", "pose"} <= set(run.timings)
    assert run.median_seconds == pytest.approx(np.median([r.timings["total"] for r in run.results]))

    evaluation = run.evaluation
    assert evaluation is not None and list(evaluation.errors) == names and evaluation.without_truth == []
    assert evaluation.summary["recall"]["0.25m_2deg"] >= 60.0
    # Triangulated from the mapping poses, the map is in the ground truth's frame already: no alignment.
    assert evaluation.alignment is None and len(evaluation.map_poses) == 20
    dusk = {kf.name.split("/")[-1]: kf.pose for kf in world.missions["dusk"]}
    for name, T in evaluation.estimated.items():
        if T is not None:
            assert np.linalg.norm(T[:3, 3] - dusk[name][:3, 3]) < 0.25

    out = tmp_path / "out"
    assert (run.out, run.poses_file, run.results_file) == (out, out / "poses.txt", out / "results.json")
    assert run.localization_png == out / "localization.png" and run.localization_png.is_file()
    assert run.matches_pngs == [out / "matches_000.png"] and run.matches_pngs[0].is_file()
    assert len(read_hloc_poses(run.poses_file)) == run.num_localized
    report = json.loads(run.results_file.read_text())
    assert report["num_queries"] == len(frames) and report["evaluation"] == json.loads(json.dumps(
        evaluation.to_json()))


def test_map_build_from_a_colmap_model_triangulates_with_its_poses(datasets, tmp_path, capsys):
    import pycolmap

    root, world = datasets
    # A COLMAP model of the mapping images: their cameras and poses, no 3-D points.
    model = pycolmap.Reconstruction()
    camera = world.missions["day"].keyframes[0].camera.to_pycolmap(1)
    model.add_camera_with_trivial_rig(camera)
    for image_id, kf in enumerate(world.missions["day"].keyframes, start=1):
        image = pycolmap.Image(name=kf.name, camera_id=1, image_id=image_id)
        model.add_image_with_trivial_frame(image, pycolmap.Rigid3d(invert_pose(kf.pose)[:3, :]))
    (tmp_path / "sparse").mkdir()
    model.write_text(str(tmp_path / "sparse"))
    assert main(["map", "build", str(tmp_path / "sparse"), "--kind", "colmap", "--image-dir", str(root / "mapping"),
                 "--out", str(tmp_path / "map"), "--global-model", "none", "--pairs", "sequential"]) == 0
    printed = capsys.readouterr().out
    assert "3-D map: 20 images" in printed and "built by triangulation" in printed
    points = int(printed.split(" points,")[0].split()[-1])
    assert points > 500


def test_localize_reports_user_errors_in_one_line(tmp_path, capsys):
    assert main(["localize", str(tmp_path), str(tmp_path)]) == 1
    error = capsys.readouterr().err
    assert "not a hierloc 3-D map" in error and "Traceback" not in error
    assert main(["localize", str(tmp_path), str(tmp_path), "--optical-flow"]) == 1
    assert "--optical-flow follows a stream of frames: give --sequence as well" in capsys.readouterr().err


def test_localize_sequence_with_optical_flow(datasets, built_map, tmp_path):
    root, _ = datasets
    map_dir, _ = built_map
    out = tmp_path / "out"
    assert main(["localize", str(map_dir), str(root / "queries" / "dusk"), "--out", str(out), "--sequence",
                 "--optical-flow", "--num-retrieved", "3", "--camera", "map", "--matches-png", "0"]) == 0
    report = json.loads((out / "results.json").read_text())
    paths = {query["retrieval_path"] for query in report["queries"]}
    # Frames 2.4 m apart: the flow rarely holds here; the plumbing (the option reaching the Tracker) is tested,
    # the flow path itself in test_tracking.
    assert report["num_queries"] == 20 and paths <= {"flow", "tracking", "global"}
    assert report["num_localized"] >= 12
