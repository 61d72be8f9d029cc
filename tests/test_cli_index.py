"""The index commands end to end on a synthetic map written as an image folder."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from conftest import shared_path

from hierloc.cli.main import main
from hierloc.index.io import load_index
from hierloc.maps.synthetic import make_synthetic_map, write_synthetic_dataset


@pytest.fixture(scope="module")
def world_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("world")
    world = make_synthetic_map(num_missions=2, frames_per_mission=8, image_size=(160, 120), seed=3)
    write_synthetic_dataset(world, root)
    return root, world


@pytest.fixture(scope="module")
def built_index(world_folder, tmp_path_factory):
    root, world = world_folder
    out = tmp_path_factory.mktemp("index") / "map.h5"
    first = list(world.missions)[0]
    assert main(["index", "build", str(root), "--out", str(out), "--model", "mobilenetvlad", "--weights", "none",
                 "--mission", first, "--store-poses", "--subsampling", "2"]) == 0
    return out, world, first


def test_index_build_selects_mission_subsamples_and_stores_poses(built_index):
    out, world, first = built_index
    index = load_index(out)
    assert len(index) == 4 and set(index.missions) == {first}
    assert index.model_name == "mobilenetvlad" and index.descriptor_size == 4096
    poses = {kf.name: kf.pose for kf in world.missions[first].keyframes}
    for name, position in zip(index.names, index.positions):
        stem = name.split("/")[-1]
        expected = next(p for n, p in poses.items() if n.split("/")[-1] == stem)
        np.testing.assert_allclose(position, expected[:3, 3], atol=1e-6)


def test_query_json_lists_top_k(built_index, world_folder, tmp_path, capsys):
    out, world, first = built_index
    root, _ = world_folder
    query_mission = list(world.missions)[1]
    queries = sorted((root / query_mission).glob("*.png"))[:2]
    json_path = tmp_path / "q.json"
    assert main(["query", str(out), *map(str, queries), "-k", "3", "--json", str(json_path)]) == 0
    result = json.loads(json_path.read_text())
    assert [q["query"] for q in result["queries"]] == [q.name for q in queries]
    hits = result["queries"][0]["results"]
    assert len(hits) == 3 and [h["rank"] for h in hits] == [0, 1, 2]
    assert all(hits[i]["distance"] <= hits[i + 1]["distance"] for i in range(2))
    assert "position" in hits[0] and len(hits[0]["rotation"]) == 3
    assert str(json_path) in capsys.readouterr().out


def test_query_refuses_another_model(built_index, world_folder, capsys):
    out, world, _ = built_index
    image = next((world_folder[0] / list(world.missions)[1]).glob("*.png"))
    assert main(["query", str(out), str(image), "--model", "netvlad"]) == 1
    assert "model 'netvlad' instead of 'mobilenetvlad'" in capsys.readouterr().err


def test_time_query_reports_statistics(built_index, world_folder, tmp_path):
    out, world, _ = built_index
    json_path = tmp_path / "t.json"
    assert main(["time-query", str(out), "--query-map", str(world_folder[0]), "--query-mission",
                 list(world.missions)[1], "--max-queries", "3", "--pca-dims", "3", "--json", str(json_path)]) == 0
    stats = json.loads(json_path.read_text())
    assert stats["queries"] == 3 and stats["search_dim"] == 3 and stats["k"] == 20
    assert 0 < stats["average_retrieved"] <= 4
    for stage in ("compute_descriptor", "get_neighbours"):
        assert stats[stage]["count"] == 3 and stats[stage]["median_ms"] > 0


def test_proto_index_round_trip_through_convert_and_info(built_index, tmp_path, capsys):
    out, _, _ = built_index
    pb = tmp_path / "map.pb"
    assert main(["index", "convert", str(out), str(pb)]) == 0
    assert main(["index", "info", str(pb), "--json"]) == 0
    info = json.loads(capsys.readouterr().out.split("\n", 1)[1])
    assert info["format"] == "protobuf" and info["keyframes"] == 4 and info["has_poses"]
    np.testing.assert_array_equal(load_index(pb).descriptors, load_index(out).descriptors)


def test_index_build_format_proto_spelling(world_folder, tmp_path):
    out = tmp_path / "map.bin"
    assert main(["index", "build", str(world_folder[0]), "--out", str(out), "--model", "mobilenetvlad",
                 "--weights", "none", "--format", "proto", "--subsampling", "4"]) == 0
    assert out.read_bytes()[:1] != b"\x89"  # protobuf, not HDF5
    assert len(load_index(out)) == 4


def test_corrupt_index_is_a_one_line_error(tmp_path, capsys):
    bad = tmp_path / "bad.h5"
    bad.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 40)
    assert main(["index", "info", str(bad)]) == 1
    err = capsys.readouterr().err
    assert "bad.h5" in err and "Traceback" not in err


def test_demo_runs_and_writes_its_outputs(tmp_path):
    out = tmp_path / "demo"
    completed = subprocess.run([sys.executable, "-m", "hierloc.cli.main", "demo", "--out", str(out), "--frames", "16",
                                "--width", "160", "--height", "120", "--pca-dims", "8"],
                               capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr
    assert "R@1" in completed.stdout and str(out) in completed.stdout
    results = json.loads((out / "results.json").read_text())
    assert set(results["variants"]) == {"exact", "pca8"}
    assert results["variants"]["exact"]["recall"]["@10"] >= results["variants"]["exact"]["recall"]["@1"]
    assert (out / "retrievals.png").stat().st_size > 1000
    assert len(load_index(out / "index.pb")) == len(load_index(out / "index.h5")) == 16


def test_nordland_index_query_and_time_query(tmp_path):
    nordland = shared_path("data", "nordland")
    out = tmp_path / "summer.h5"
    summer = tmp_path / "summer"
    summer.mkdir()
    for image in sorted((nordland / "summer").glob("*.png"))[:40]:
        (summer / image.name).symlink_to(image)
    assert main(["index", "build", str(summer), "--out", str(out), "--model", "mobilenetvlad",
                 "--weights", "none"]) == 0
    json_path = tmp_path / "t.json"
    assert main(["time-query", str(out), "--queries", str(nordland / "winter"), "--max-queries", "5",
                 "--json", str(json_path)]) == 0
    assert json.loads(json_path.read_text())["queries"] == 5
