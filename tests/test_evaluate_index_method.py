"""`hierloc evaluate --method INDEX.h5`: an index is evaluated with the describer recorded in it."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import h5py
import numpy as np
import pytest

from hierloc.cli.main import main as hierloc

FRAMES = 16


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> Path:
    """The demo world as a `folders` dataset: reference/ (mission 1), query/ (mission 2), ground_truth.txt
    (within 1.5 m and 45 degrees, as `hierloc demo`)."""
    from hierloc.evaluation import pose_ground_truth
    from hierloc.maps.synthetic import make_synthetic_map

    root = tmp_path_factory.mktemp("world")
    world = make_synthetic_map(num_missions=2, frames_per_mission=FRAMES, image_size=(160, 120), seed=0)
    reference, query = (world.missions[name].keyframes for name in list(world.missions)[:2])
    for folder, keyframes in (("reference", reference), ("query", query)):
        (root / folder).mkdir()
        for i, keyframe in enumerate(keyframes):
            cv2.imwrite(str(root / folder / f"{i:04d}.png"), cv2.cvtColor(keyframe.load_image(), cv2.COLOR_RGB2BGR))
    truth = pose_ground_truth(np.stack([k.pose for k in query]), np.stack([k.pose for k in reference]), 1.5, 45)
    truth = truth.toarray() if hasattr(truth, "toarray") else np.asarray(truth)
    lines = [" ".join([f"{q:04d}.png"] + [f"{r:04d}.png" for r in np.flatnonzero(row)])
             for q, row in enumerate(truth) if row.any()]
    assert len(lines) >= FRAMES // 2
    (root / "ground_truth.txt").write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture(scope="module")
def index(folders, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("index") / "X.h5"
    assert hierloc(["index", "build", str(folders / "reference"), "--out", str(out), "--model", "mobilenetvlad",
                    "--weights", "none"]) == 0
    return out


def test_an_index_evaluates_as_the_network_that_built_it(folders, index, tmp_path):
    from hierloc.describers import is_describer_artifact

    assert is_describer_artifact(index)
    out = tmp_path / "out.json"
    assert hierloc(["evaluate", "--dataset", "folders", str(folders), "--method", str(index), "mobilenetvlad=none",
                    "--json", str(out), "--cache", str(tmp_path / "cache"), "--max-n", "5"]) == 0
    data = json.loads(out.read_text())
    recall = {r["method"]: r["recall"] for r in data["results"]}
    assert set(recall) == {"X (index)", "mobilenetvlad (untrained)"}
    assert recall["X (index)"] == recall["mobilenetvlad (untrained)"]
    methods = {m["label"]: m for m in data["methods"]}
    assert methods["X (index)"]["kind"] == "index"
    assert methods["X (index)"]["describer"] == methods["mobilenetvlad (untrained)"]["describer"]
    assert len(methods["X (index)"]["describer"]["weights_sha256"]) == 64


def test_an_hloc_descriptor_file_is_not_an_index(folders, index, tmp_path):
    """An HDF5 file of descriptors in hloc's layout carries the HDF5 signature too: it stays precomputed."""
    from hierloc.describers import is_describer_artifact
    from hierloc.index.io import detect_format

    features = tmp_path / "features.h5"
    rng = np.random.default_rng(0)
    names = sorted(p.name for p in (folders / "reference").iterdir())
    with h5py.File(features, "w") as f:
        for folder in ("reference", "query"):
            for i, name in enumerate(names):
                vector = np.eye(len(names), dtype=np.float32)[i] + 0.01 * rng.random(len(names), dtype=np.float32)
                f.create_group(f"{folder}/{name}").create_dataset("global_descriptor", data=vector)
    assert detect_format(features) == "native"  # by signature alone it would pass for an index
    assert not is_describer_artifact(features)
    out = tmp_path / "p.json"
    assert hierloc(["evaluate", "--dataset", "folders", str(folders), "--method", str(features), "--json", str(out),
                    "--no-cache"]) == 0
    (result,) = json.loads(out.read_text())["results"]
    assert result["method"] == "features" and result["recall"]["1"] > 0.5  # query i = reference i, mostly true


def test_model_options_are_checked_before_anything_is_loaded(folders, index, capsys):
    assert hierloc(["evaluate", "--dataset", "folders", str(folders), "--method", str(index), "nosuchmodel"]) == 1
    assert "--method 'nosuchmodel'" in capsys.readouterr().err
    assert hierloc(["evaluate", "--dataset", "folders", str(folders / "missing"), "--method", str(index)]) == 1
    assert "no such dataset folder" in capsys.readouterr().err
