"""The describer contract: one factory, identities recorded in artifacts, refusals, legacy files."""

from __future__ import annotations

import json

import numpy as np
import pytest

from hierloc.cli.main import main
from hierloc.describers import (
    DescriberError,
    DescriberMismatchError,
    Preprocessing,
    adapt_to_images,
    describer_for_artifact,
    describer_record,
    load_artifact_describer,
    load_recorded_describer,
    make_describer,
)
from hierloc.index.io import load_index
from hierloc.maps.synthetic import make_synthetic_map, write_synthetic_dataset
from hierloc.pipelines.indexing import DescriberChoice, QueryConfig, query_index


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("world")
    world = make_synthetic_map(num_missions=2, frames_per_mission=8, image_size=(160, 120), seed=5)
    write_synthetic_dataset(world, root)
    return root, world


def test_preprocessing_policy_and_round_trip():
    policy = Preprocessing(resize_max=640, min_side=96)
    assert policy.apply(np.zeros((32, 64), np.uint8)).shape == (96, 192)  # Nordland-size frames are enlarged
    assert policy.apply(np.zeros((1024, 1536, 3), np.uint8)).shape == (427, 640, 3)
    image = np.zeros((120, 160, 3), np.uint8)
    assert policy.apply(image) is image  # frames within the limits are left alone
    assert Preprocessing.from_json(policy.to_json()) == policy
    with pytest.raises(DescriberError):
        Preprocessing.from_json({"resize_max": 10**9})
    with pytest.raises(DescriberError):
        Preprocessing.from_json({"resize": [1, 2], "evil": 1})


def test_record_round_trip_verifies_the_weights(tmp_path):
    describer = make_describer("mobilenetvlad=none")
    record = describer_record(describer, tmp_path)
    assert (record["weights_file"].startswith("describer-mobilenetvlad-")
            and (tmp_path / record["weights_file"]).is_file())
    again = load_recorded_describer(record, tmp_path, "test")
    assert again.identity == describer.identity
    image = np.random.default_rng(0).integers(0, 255, (120, 160, 3), np.uint8)
    np.testing.assert_allclose(again.describe(image), describer.describe(image), atol=1e-5)
    # Another network's weights under the recorded name are refused, not silently used.
    other = make_describer("mobilenetvlad=none")
    with np.errstate(all="ignore"):
        next(other.model.parameters()).data.add_(1.0)
    other.forget_fingerprint()
    other.write_weights(tmp_path / record["weights_file"])
    with pytest.raises(DescriberError, match="does not match its record"):
        load_recorded_describer(record, tmp_path, "test")
    # Stored names stay inside their folder.
    with pytest.raises(DescriberError, match="plain file name"):
        load_recorded_describer({**record, "weights_file": "../x.pth"}, tmp_path, "test")


def test_adapted_index_is_queried_with_its_own_describer(world, tmp_path, capsys):
    """An index built with a network adapted to the map answers CLI queries without a model option,
    with the same neighbours as the library, and refuses another describer."""
    root, synthetic = world
    out = tmp_path / "index.h5"
    assert main(["index", "build", str(root), "--out", str(out), "--model", "mobilenetvlad_imagenet",
                 "--mission", list(synthetic.missions)[0], "--workers", "0"]) == 0
    capsys.readouterr()
    index = load_index(out)
    record = index.metadata["describer"]
    assert record["name"] == "mobilenetvlad_imagenet" and record["weights_file"]
    # The library: k-means adaptation of the same network on the same images gives the same describer.
    describer = make_describer("mobilenetvlad_imagenet")
    adapt_to_images(describer, [kf.load_image() for kf in synthetic.missions[list(synthetic.missions)[0]].keyframes])
    assert describer.weights_sha256 == record["weights_sha256"]
    queries = sorted((root / list(synthetic.missions)[1]).glob("*.png"))[:3]
    library = query_index(QueryConfig(out, [str(q) for q in queries], k=3, describer=DescriberChoice(spelling=None)))
    assert main(["query", str(out), *map(str, queries), "-k", "3", "--json", "-"]) == 0
    cli = json.loads(capsys.readouterr().out)
    assert cli["max_distance"] is None  # JSON, not Infinity
    for from_library, from_cli in zip(library.queries, cli["queries"]):
        assert [h.name for h in from_library["results"]] == [h["name"] for h in from_cli["results"]]
    # The untrained network (another fingerprint) is refused, and used only when forced.
    assert main(["query", str(out), str(queries[0]), "--model", "mobilenetvlad_imagenet=none"]) == 1
    assert "built by another describer" in capsys.readouterr().err
    with pytest.raises(DescriberMismatchError):
        describer_for_artifact(out, "mobilenetvlad_imagenet=none")
    forced = describer_for_artifact(out, "mobilenetvlad_imagenet=none", force=True)
    assert forced.weights_sha256 != record["weights_sha256"]
    # The index itself is a describer spelling.
    assert make_describer(str(out)).identity == load_artifact_describer(out).identity


def test_legacy_index_without_record_still_opens(world, tmp_path):
    root, synthetic = world
    out = tmp_path / "legacy.h5"
    assert main(["index", "build", str(root), "--out", str(out), "--model", "mobilenetvlad", "--weights", "none",
                 "--workers", "0"]) == 0
    index = load_index(out)
    del index.metadata["describer"]
    index.metadata["weights"] = "none"
    from hierloc.index.io import save_index

    save_index(index, out)
    describer = load_artifact_describer(out)
    assert describer.name == "mobilenetvlad" and describer.preprocessing == Preprocessing()
