"""Geometric re-ranking: a wrong global order fixed by verified local matches, inconclusive checks kept."""

from __future__ import annotations

import json

import numpy as np
import pytest

from hierloc.cli.main import main
from hierloc.features import MutualNearestNeighbor, MutualNNConfig, read_feature_config
from hierloc.index.io import load_index, save_index
from hierloc.maps.synthetic import make_synthetic_map, write_synthetic_dataset
from hierloc.reranking import (
    GeometricReranker,
    RankedCandidate,
    ReferenceFeatures,
    RerankConfig,
    RerankError,
    ScaledExtractor,
    order_candidates,
)

FRAMES = 12
CONFIG = RerankConfig(k=20, features="sift", max_keypoints=512, workers=1)


@pytest.fixture(scope="module")
def world():
    world = make_synthetic_map(num_missions=2, frames_per_mission=FRAMES, image_size=(320, 240), seed=3)
    reference, query = (list(m.keyframes) for m in world.missions.values())
    return world, reference, query


def _far_then_true(reference, i: int) -> list[str]:
    """A deliberately wrong global order: places at least 3 frames away first, the true place last."""
    far = [reference[j].name for j in range(FRAMES) if min(abs(j - i), FRAMES - abs(j - i)) >= 3]
    return far + [reference[i].name]


def test_reranking_fixes_a_wrong_global_order(world, tmp_path):
    _, reference, query = world
    cache = tmp_path / "refs.h5"
    references = ReferenceFeatures.for_images({kf.name: kf.load_image for kf in reference}, cache, CONFIG)
    reranker = GeometricReranker(CONFIG, references)
    for i in (0, 4, 8):
        names = _far_then_true(reference, i)
        result = reranker.rerank(query[i].load_image(), names, np.linspace(0.5, 1.0, len(names)))
        first = result.candidates[0]
        assert result.conclusive
        assert first.name == reference[i].name and first.global_rank == len(names) - 1
        assert first.verified and first.inliers >= CONFIG.min_inliers and first.distance == pytest.approx(1.0)
        assert sorted(result.order) == list(range(len(names)))
        assert {"query_features", "matching", "geometry", "total"} <= set(result.timings)
    # Only the candidates that appeared were extracted, into hloc's layout with the configuration.
    stored = read_feature_config(cache)
    assert stored["name"] == "sift" and stored["min_side"] == CONFIG.min_side
    import h5py

    with h5py.File(cache) as f:
        assert {"keypoints", "descriptors", "scores", "image_size"} <= set(f[reference[0].name])


def test_failed_verification_keeps_the_global_order(world):
    _, _, query = world

    def noise(seed: int):
        return lambda: np.random.default_rng(seed).integers(0, 256, (240, 320, 3), dtype=np.uint8)

    names = [f"noise{i}.png" for i in range(6)]
    references = ReferenceFeatures.for_images({name: noise(i) for i, name in enumerate(names)}, None, CONFIG)
    result = GeometricReranker(CONFIG, references).rerank(query[0].load_image(), names)
    assert not result.conclusive
    assert [c.name for c in result.candidates] == names and result.order == list(range(6))
    assert all(not c.verified and c.inliers < CONFIG.min_inliers for c in result.candidates)


def test_order_candidates_puts_unverified_after_verified_in_global_order():
    candidates = [RankedCandidate(f"c{i}", i, float(i), inliers) for i, inliers in enumerate([5, 40, 0, 25, 40])]
    ordered, conclusive = order_candidates(candidates, min_inliers=20)
    assert conclusive and [c.global_rank for c in ordered] == [1, 4, 3, 0, 2]
    ordered, conclusive = order_candidates(candidates, min_inliers=50)
    assert not conclusive and [c.global_rank for c in ordered] == [0, 1, 2, 3, 4]


def test_candidates_beyond_k_keep_their_place(world):
    _, reference, query = world
    config = RerankConfig(k=3, features="sift", max_keypoints=512, workers=1)
    names = _far_then_true(reference, 4)[-3:] + [reference[0].name, reference[1].name]
    loaders = {kf.name: kf.load_image for kf in reference}
    result = GeometricReranker(config, ReferenceFeatures.for_images(loaders, None, config)).rerank(
        query[4].load_image(), names)
    assert result.candidates[0].name == reference[4].name
    assert result.order[3:] == [3, 4] and all(c.inliers == 0 for c in result.candidates[3:])


@pytest.mark.parametrize("config", [MutualNNConfig(ratio_threshold=0.8), MutualNNConfig(min_similarity=0.3)])
def test_batched_mutual_nn_equals_pairwise(config):
    rng = np.random.default_rng(0)

    def unit(n: int) -> np.ndarray:
        x = rng.standard_normal((n, 16)).astype(np.float32)
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    query = unit(50)
    others = [unit(n) for n in (40, 0, 1, 70, 50)]
    others[3][:10] = query[:10] + 0.01  # some true matches
    matcher = MutualNearestNeighbor(config)
    for (batched, batched_scores), other in zip(matcher.match_many(query, others, max_elements=5000), others):
        pairwise, scores = matcher.match_descriptors(query, other)
        np.testing.assert_array_equal(batched, pairwise)
        np.testing.assert_allclose(batched_scores, scores, atol=1e-6)


def test_small_frames_are_enlarged_and_keypoints_map_back():
    from hierloc.features import make_extractor

    extractor = ScaledExtractor(make_extractor("sift", max_keypoints=200), min_side=240)
    image = make_synthetic_map(num_missions=1, frames_per_mission=1, image_size=(160, 120), seed=1) \
        .missions["day"].keyframes[0].load_image()
    features = extractor.extract(image)
    assert features.image_size == (160, 120) and len(features) > 0
    assert features.keypoints.min() >= 0 and (features.keypoints.max(axis=0) <= [160, 120]).all()
    assert extractor.scale(160, 120) == pytest.approx(2.0)


@pytest.fixture(scope="module")
def small_index(tmp_path_factory):
    root = tmp_path_factory.mktemp("rerank_world")
    world = make_synthetic_map(num_missions=2, frames_per_mission=8, image_size=(320, 240), seed=3)
    write_synthetic_dataset(world, root)
    out = tmp_path_factory.mktemp("rerank_index") / "map.h5"
    first, second = list(world.missions)
    assert main(["index", "build", str(root), "--out", str(out), "--model", "mobilenetvlad", "--weights", "none",
                 "--mission", first]) == 0
    return root, out, second


def test_query_rerank_cli_prints_and_writes_scores(small_index, tmp_path, capsys):
    root, index, second = small_index
    queries = sorted((root / second).glob("*.png"))[:2]
    json_path = tmp_path / "q.json"
    assert main(["query", str(index), *map(str, queries), "-k", "3", "--rerank", "8", "--rerank-features", "sift",
                 "--rerank-max-keypoints", "512", "--json", str(json_path)]) == 0
    printed = capsys.readouterr().out
    assert "inliers" in printed and "global" in printed and "re-ranking:" in printed
    result = json.loads(json_path.read_text())
    assert result["rerank"]["config"]["k"] == 8 and result["rerank"]["config"]["features"] == "sift"
    for query in result["queries"]:
        hits = query["results"]
        assert len(hits) == 3 and [h["rank"] for h in hits] == [0, 1, 2]
        assert all("inliers" in h and "global_rank" in h for h in hits)
        if query["rerank"]["conclusive"]:
            assert hits[0]["inliers"] >= result["rerank"]["config"]["min_inliers"]
            # the true place (the same frame number, or a neighbour on the 8-frame loop) wins once verified
            gap = abs(int(hits[0]["name"].split("/")[-1][:6]) - int(query["query"][:6]))
            assert min(gap, 8 - gap) <= 1
    assert list(index.parent.glob("map.h5.rerank-sift-*.h5"))


def test_query_rerank_needs_a_reference_root_for_old_indexes(small_index, tmp_path, capsys):
    root, index, second = small_index
    old = load_index(index)
    del old.metadata["source"]
    old_path = index.parent / "old.h5"  # beside the describer's weights
    save_index(old, old_path)
    query = str(sorted((root / second).glob("*.png"))[0])
    assert main(["query", str(old_path), query, "--rerank", "4", "--rerank-features", "sift"]) == 1
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and "--reference-root" in error[0]
    assert main(["query", str(old_path), query, "--rerank", "4", "--rerank-features", "sift",
                 "--reference-root", str(root), "--json", str(tmp_path / "q.json")]) == 0
    assert json.loads((tmp_path / "q.json").read_text())["queries"][0]["results"][0]["global_rank"] is not None


def test_rerank_config_is_validated():
    with pytest.raises(RerankError):
        RerankConfig(geometry="affine").validate()
    with pytest.raises(RerankError):
        RerankConfig(features="orb").validate()


def test_evaluate_rerank_reports_both_rankings(tmp_path):
    root = tmp_path / "data"
    world = make_synthetic_map(num_missions=2, frames_per_mission=8, image_size=(320, 240), seed=3)
    write_synthetic_dataset(world, root)
    first, second = list(world.missions)
    out, json_path = tmp_path / "eval", tmp_path / "eval.json"
    assert main(["evaluate", "--dataset", "folders", str(root), "--reference", first, "--queries", second,
                 "--reference-poses", str(root / first / "poses.txt"),
                 "--query-poses", str(root / second / "poses.txt"),
                 "--max-distance", "1.5", "--max-angle", "45", "--method", "mobilenetvlad=none", "--max-n", "5",
                 "--rerank", "5", "--rerank-features", "sift", "--rerank-max-keypoints", "512",
                 "--cache", str(tmp_path / "cache"), "--json", str(json_path), "--out", str(out)]) == 0
    results = json.loads(json_path.read_text())["results"]
    plain, reranked = results
    assert reranked["method"] == plain["method"] + " + rerank sift@5"
    assert "rerank" not in plain and reranked["rerank"]["based_on"] == plain["method"]
    assert reranked["rerank"]["ms_per_query"] > 0 and reranked["rerank"]["queries"] == plain["valid_queries"]
    # re-ranking only re-sorts the top 5: recall@5 cannot change
    assert reranked["recall"]["5"] == plain["recall"]["5"]
    assert reranked["recall"]["1"] >= plain["recall"]["1"]
    assert (out / "recall_at_n.png").is_file()
    assert list((tmp_path / "cache" / "rerank").glob("*.h5"))
