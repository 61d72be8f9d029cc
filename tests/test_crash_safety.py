"""Crash safety: folders switch in one step, torn maps are refused, leftovers of kills are removed, extract commits."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from hierloc.utils import io as hio
from hierloc.utils.io import (
    TornFolderError,
    atomic_directory,
    atomic_write_text,
    leftover_temporaries,
    recover_directory,
    replace_directory,
    temporary_prefix,
    verify_manifest,
    write_manifest,
)

REPO = Path(__file__).resolve().parents[1]


def load_crash_bench():
    """bench/crash.py as a module (registered, as its dataclasses need)."""
    if "hierloc_crash_bench" not in sys.modules:
        spec = importlib.util.spec_from_file_location("hierloc_crash_bench", REPO / "bench" / "crash.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules["hierloc_crash_bench"] = module
        spec.loader.exec_module(module)
    return sys.modules["hierloc_crash_bench"]


def dead_pid() -> int:
    """The pid of a process that has finished (for names that look like a killed writer's)."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def write_tree(folder: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)


# ---------------------------------------------------------------------------------------------- folders


@pytest.mark.parametrize("exchange", [True, False], ids=["renameat2", "rename-aside"])
def test_atomic_directory_replaces_a_full_folder_in_one_step(tmp_path, monkeypatch, exchange):
    if not exchange:
        monkeypatch.setattr(hio, "_exchange_paths", lambda a, b: False)
    target = tmp_path / "map"
    write_tree(target, {"a.txt": "old a", "sub/b.txt": "old b", "only-old.txt": "x"})
    with atomic_directory(target) as staging:
        assert staging.parent == tmp_path and staging.name.startswith(".map.hierloc-tmp-")
        write_tree(staging, {"a.txt": "new a", "sub/b.txt": "new b"})
        assert (target / "a.txt").read_text() == "old a"  # untouched until the block ends
    assert sorted(p.relative_to(target).as_posix() for p in target.rglob("*")) == ["a.txt", "sub", "sub/b.txt"]
    assert (target / "sub" / "b.txt").read_text() == "new b"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["map"]  # nothing beside it


def test_a_failed_block_keeps_the_old_folder_and_removes_its_temporary(tmp_path):
    target = tmp_path / "map"
    write_tree(target, {"a.txt": "old"})
    with pytest.raises(RuntimeError), atomic_directory(target) as staging:
        write_tree(staging, {"a.txt": "half"})
        raise RuntimeError("stopped")
    assert (target / "a.txt").read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["map"]


def test_a_kill_between_the_two_renames_is_recovered(tmp_path):
    target = tmp_path / "map"
    aside = tmp_path / f".map.hierloc-old-{dead_pid()}-abc"
    write_tree(aside, {"a.txt": "old"})
    assert recover_directory(target)
    assert (target / "a.txt").read_text() == "old" and not aside.exists()
    assert not recover_directory(target)  # present: nothing to do


def test_replace_directory_refuses_a_file_in_the_way(tmp_path):
    (tmp_path / "new").mkdir()
    (tmp_path / "map").write_text("a file")
    with pytest.raises(OSError, match="not a folder"):
        replace_directory(tmp_path / "new", tmp_path / "map")


# ---------------------------------------------------------------------------------------------- leftovers


def test_a_successful_write_removes_only_the_leftovers_of_dead_writers(tmp_path):
    target = tmp_path / "index.h5"
    dead = dead_pid()
    stale_file = tmp_path / f".index.h5.hierloc-tmp-{dead}-x1.h5"
    stale_dir = tmp_path / f".index.h5.hierloc-tmp-{dead}-x2"
    live = tmp_path / f"{temporary_prefix(target)}x3.h5"  # this process: still writing it
    foreign = [tmp_path / ".index.h5.abc.tmp", tmp_path / f".other.h5.hierloc-tmp-{dead}-x4", tmp_path / "notes.txt"]
    for path in (stale_file, live, *foreign):
        path.write_text("x")
    write_tree(stale_dir, {"inner.bin": "x"})
    assert leftover_temporaries(target) == sorted([stale_file, stale_dir])
    atomic_write_text(target, "new")
    assert not stale_file.exists() and not stale_dir.exists()
    assert live.exists() and all(p.exists() for p in foreign)  # not ours, or not dead
    assert target.read_text() == "new"


def test_temporary_names_are_recognisable(tmp_path):
    with hio.atomic_path(tmp_path / "out.h5", suffix=".h5") as tmp:
        assert tmp.name.startswith(f".out.h5.hierloc-tmp-{os.getpid()}-") and tmp.name.endswith(".h5")
        tmp.write_text("x")


# ---------------------------------------------------------------------------------------------- manifests


def test_manifest_detects_missing_truncated_and_changed_files(tmp_path):
    write_tree(tmp_path, {"map.json": "{}", "sfm/points3D.bin": "0123456789"})
    manifest = write_manifest(tmp_path)
    assert set(manifest["files"]) == {"map.json", "sfm/points3D.bin"}
    verify_manifest(tmp_path)
    (tmp_path / "sfm" / "points3D.bin").write_text("0123456780")  # same size, other bytes
    with pytest.raises(TornFolderError, match="checksum of sfm/points3D.bin"):
        verify_manifest(tmp_path)
    verify_manifest(tmp_path, checksum_max_bytes=4)  # large files: sizes only
    (tmp_path / "sfm" / "points3D.bin").write_text("01234")
    with pytest.raises(TornFolderError, match="5 bytes"):
        verify_manifest(tmp_path)
    (tmp_path / "sfm" / "points3D.bin").unlink()
    with pytest.raises(TornFolderError, match="missing"):
        verify_manifest(tmp_path)


def test_manifest_names_stay_inside_the_folder(tmp_path):
    (tmp_path / "MANIFEST.json").write_text(json.dumps({"format": "hierloc-manifest", "version": 1,
                                                        "files": {"../outside": {"size": 1, "crc32c": "0"}}}))
    with pytest.raises(TornFolderError, match="not a plain name"):
        verify_manifest(tmp_path)
    (tmp_path / "MANIFEST.json").unlink()
    with pytest.raises(TornFolderError, match="no MANIFEST.json"):
        verify_manifest(tmp_path)


# ---------------------------------------------------------------------------------------------- maps


@pytest.fixture(scope="module")
def two_maps(tmp_path_factory):
    """Two maps of one synthetic mission (the second leaves an image out)."""
    from hierloc.cli.main import main
    from hierloc.maps import make_synthetic_map, write_synthetic_dataset

    root = tmp_path_factory.mktemp("maps")
    world = make_synthetic_map(num_missions=1, frames_per_mission=8, image_size=(192, 144), seed=5)
    write_synthetic_dataset(world, root / "world")
    common = ["--global-model", "none", "--pairs", "sequential", "--num-neighbors", "3", "--threads", "1"]
    assert main(["map", "build", str(root / "world"), "--out", str(root / "a"), *common]) == 0
    names = sorted(p.name for p in next(p for p in (root / "world").iterdir() if p.is_dir()).glob("*.png"))
    assert main(["map", "build", str(root / "world"), "--out", str(root / "b"), *common, "--exclude", names[0]]) == 0
    return root


def copy_map(source: Path, target: Path) -> Path:
    import shutil

    shutil.copytree(source, target)
    return target


def test_map_build_over_an_existing_map_swaps_it_and_cleans_leftovers(two_maps, tmp_path):
    from hierloc.cli.main import main
    from hierloc.localization.scene_map import SceneMap

    out = copy_map(two_maps / "b", tmp_path / "map")
    stale = tmp_path / f".map.hierloc-tmp-{dead_pid()}-zz"
    write_tree(stale, {"map.json": "half"})
    assert main(["map", "build", str(two_maps / "world"), "--out", str(out), "--global-model", "none",
                 "--pairs", "sequential", "--num-neighbors", "3", "--threads", "1"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["map"]
    assert len(SceneMap.load(out)) == len(SceneMap.load(two_maps / "a"))


def test_a_mixed_map_is_refused_in_one_line(two_maps, tmp_path, capsys):
    from hierloc.cli.main import main
    from hierloc.localization.scene_map import MapFormatError, SceneMap

    mixed = copy_map(two_maps / "a", tmp_path / "mixed")
    for name in ("images.bin", "points3D.bin"):
        (mixed / "sfm" / name).write_bytes((two_maps / "b" / "sfm" / name).read_bytes())
    with pytest.raises(MapFormatError, match="torn or mixed") as error:
        SceneMap.load(mixed)
    assert str(mixed) in str(error.value) and "\n" not in str(error.value)
    capsys.readouterr()
    assert main(["map", "info", str(mixed)]) == 1
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("hierloc map: error:") and "torn or mixed" in line
    (mixed / "MANIFEST.json").unlink()
    with pytest.raises(MapFormatError, match="no MANIFEST.json"):
        SceneMap.load(mixed)


def rewrite_map_json(folder: Path, change) -> None:
    description = json.loads((folder / "map.json").read_text())
    change(description)
    (folder / "map.json").write_text(json.dumps(description))
    write_manifest(folder)  # the damage is in the content, not a torn write


@pytest.mark.parametrize("change, message", [
    (lambda d: d.update(metadata=None), "'metadata' is NoneType"),
    (lambda d: d.update(images=[1, 2]), r"images\[0\] is int"),
    (lambda d: d.update(features="sift"), "'features' is str"),
    (lambda d: d.update(version=True), "version True"),
    (lambda d: d["images"][0].update(name=["x"]), "not a non-empty string"),
    (lambda d: d["images"][0].update(image_name="../../secret.png"), "not a plain relative name"),
    (lambda d: d["images"][0].update(image_name="x/secret.txt"), "not an image file"),
    (lambda d: (d.update(version=1), d["images"][0].pop("image_name"), d["images"][0].update(image_path="/etc/x.txt")),
     "not an image file"),
    (lambda d: d["images"].append(dict(d["images"][0])), "listed twice"),
    (lambda d: d.update(image_root="relative/folder"), "not an absolute folder"),
])
def test_map_json_is_validated_field_by_field(two_maps, tmp_path, change, message):
    from hierloc.localization.scene_map import MapFormatError, SceneMap

    folder = copy_map(two_maps / "a", tmp_path / "map")
    rewrite_map_json(folder, change)
    with pytest.raises(MapFormatError, match=message) as error:
        SceneMap.load(folder)
    assert "map.json" in str(error.value) and "\n" not in str(error.value)


def test_version_1_maps_keep_their_relative_image_paths(two_maps, tmp_path):
    from hierloc.localization.scene_map import MapFormatError, SceneMap

    folder = copy_map(two_maps / "a", tmp_path / "map")
    rewrite_map_json(folder, lambda d: (d.update(version=1), d.pop("image_root"),
                                        [entry.update(image_path=f"outputs/demo/{entry.pop('image_name')}")
                                         for entry in d["images"]]))
    scene = SceneMap.load(folder)  # as version 1 read them: relative to the directory the map was built from
    assert all(str(im.image_path).startswith("outputs/demo/") for im in scene.images)
    rewrite_map_json(folder, lambda d: d["images"][0].update(image_path="../outside/x.png"))
    with pytest.raises(MapFormatError, match="is not a path without '..'"):
        SceneMap.load(folder)


def test_map_images_are_plain_names_under_the_image_root(two_maps):
    from hierloc.localization.scene_map import SceneMap

    description = json.loads((two_maps / "a" / "map.json").read_text())
    assert Path(description["image_root"]).is_absolute()
    assert all("image_path" not in entry and not entry["image_name"].startswith("/")
               for entry in description["images"])
    scene = SceneMap.load(two_maps / "a")
    assert all(im.image_path.is_file() for im in scene.images)


def test_a_nan_pose_is_refused(two_maps, tmp_path):
    import pycolmap

    from hierloc.localization.scene_map import MapFormatError, SceneMap

    folder = copy_map(two_maps / "a", tmp_path / "map")
    reconstruction = pycolmap.Reconstruction(str(folder / "sfm"))
    if hasattr(reconstruction, "frames"):  # pycolmap >= 3.12: poses belong to frames
        frame = next(iter(reconstruction.frames.values()))
        frame.rig_from_world = pycolmap.Rigid3d(frame.rig_from_world.rotation, np.array([np.nan, 0.0, 0.0]))
    else:
        image = next(iter(reconstruction.images.values()))
        image.cam_from_world = pycolmap.Rigid3d(image.cam_from_world.rotation, np.array([np.nan, 0.0, 0.0]))
    reconstruction.write_binary(str(folder / "sfm"))
    write_manifest(folder)
    with pytest.raises(MapFormatError, match="non-finite"):
        SceneMap.load(folder)


# ---------------------------------------------------------------------------------------------- extract


def test_periodic_commit_publishes_complete_files(tmp_path):
    from hierloc.extraction.pipeline import PeriodicCommit

    now = [0.0]
    destination = tmp_path / "out.h5"
    commits = PeriodicCommit(destination, min_seconds=2.0, clock=lambda: now[0])
    working = tmp_path / "working.h5"
    with h5py.File(working, "w") as f:
        for i in range(5):
            f.create_group(f"im{i}").create_dataset("global_descriptor", data=np.full(4, i, np.float32))
            now[0] += 1.0
            committed = commits.tick(f, working)
            assert committed == (i in (1, 3))  # every 2 s
            if committed:
                with h5py.File(destination, "r") as published:
                    assert sorted(published) == [f"im{k}" for k in range(i + 1)]
    assert commits.commits == 2 and sorted(p.name for p in tmp_path.iterdir()) == ["out.h5", "working.h5"]


def test_extract_killed_keeps_committed_work_and_the_rerun_resumes(tmp_path):
    import cv2

    from hierloc.extraction import read_global_descriptors

    rng = np.random.default_rng(0)
    total = 64  # large enough that the first periodic commit (2 s) usually comes before the end
    (tmp_path / "images").mkdir()
    for i in range(total):
        cv2.imwrite(str(tmp_path / "images" / f"{i:03d}.jpg"), rng.integers(0, 256, (480, 640, 3), dtype=np.uint8))
    out = tmp_path / "out" / "d.h5"
    command = [sys.executable, "-m", "hierloc.cli.main", "extract", str(tmp_path / "images"), "--out", str(out),
               "--model", "mobilenetvlad", "--weights", "none", "--threads", "1"]
    env = dict(os.environ, HIERLOC_NUM_THREADS="1", OMP_NUM_THREADS="1")
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    deadline = time.monotonic() + 120
    while not out.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)  # the first periodic commit
    finished = process.poll() is not None
    process.send_signal(signal.SIGKILL)
    process.wait()
    names, _ = read_global_descriptors(out)
    # On a fast machine the whole run may be published before the kill lands: then nothing was lost either.
    complete = finished or len(names) == total
    assert 1 <= len(names) <= total
    leftovers = [p.name for p in out.parent.iterdir() if p.name != "d.h5"]
    assert complete or leftovers  # the killed writer's working copy is there
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert f"{total - len(names)} new descriptors" in done.stdout and f"{len(names)} already present" in done.stdout
    assert sorted(p.name for p in out.parent.iterdir()) == ["d.h5"]  # the rerun removed the leftovers
    assert len(read_global_descriptors(out)[0]) == total


def test_dataloader_workers_die_with_their_parent(tmp_path):
    script = tmp_path / "loader.py"
    script.write_text(
        "import os, sys, time\n"
        "import torch\n"
        "from torch.utils.data import DataLoader\n"
        "from hierloc.utils.processes import worker_init\n"
        "class Slow(torch.utils.data.Dataset):\n"
        "    def __len__(self): return 1000\n"
        "    def __getitem__(self, i):\n"
        "        time.sleep(0.2)\n"
        "        return i\n"
        "if __name__ == '__main__':\n"
        "    loader = DataLoader(Slow(), num_workers=2, worker_init_fn=worker_init())\n"
        "    for i, _ in enumerate(loader):\n"
        "        if i == 1:\n"
        "            print('running', flush=True)\n")
    process = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "running"
    crash = load_crash_bench()
    workers = crash.child_pids(process.pid)
    assert len(workers) >= 2
    process.send_signal(signal.SIGKILL)
    process.wait()
    deadline = time.monotonic() + 10
    while any(crash.alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(crash.alive(pid) for pid in workers)


# ---------------------------------------------------------------------------------------------- the harness


def test_crash_harness_small(tmp_path):
    """bench/crash.py with 2 kills of map build and extract: nothing corrupt, mixed, lost or left over."""
    crash = load_crash_bench()
    results = crash.run_crash_bench(["map-build", "extract"], kills=2, seed=1, threads=1, work_dir=tmp_path, jobs=2)
    for result in results:
        assert sum(result["outcomes"].values()) == 2
        assert not any(result["outcomes"].get(k) for k in crash.BAD_OUTCOMES), result
        assert result["leftover_after_rerun"] == 0 and result["failed_reruns"] == 0, result


def test_map_build_refuses_to_replace_a_folder_that_is_not_a_map(two_maps, tmp_path, capsys):
    from hierloc.cli.main import main

    precious = tmp_path / "documents"
    write_tree(precious, {"thesis.tex": "years of work"})
    capsys.readouterr()
    assert main(["map", "build", str(two_maps / "world"), "--out", str(precious), "--global-model", "none",
                 "--threads", "1"]) == 1
    assert "is not a hierloc 3-D map" in capsys.readouterr().err
    assert (precious / "thesis.tex").read_text() == "years of work"
