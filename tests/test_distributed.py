"""`hierloc index build --ray local` builds the same index as the single-process path (skipped without Ray)."""

from __future__ import annotations

import numpy as np
import pytest

from hierloc.cli.main import main
from hierloc.distributed import RayConfig, ray_available
from hierloc.index.io import load_index
from hierloc.maps.synthetic import make_synthetic_map, write_synthetic_dataset

pytestmark = pytest.mark.skipif(not ray_available(), reason="Ray (with Ray Data) is not installed")


@pytest.fixture(scope="module")
def world_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("world")
    world = make_synthetic_map(num_missions=2, frames_per_mission=5, image_size=(96, 72), seed=4)
    write_synthetic_dataset(world, root)
    broken = sorted((root / list(world.missions)[1]).glob("*.png"))[2]
    broken.write_bytes(b"\x89PNG\r\n\x1a\n truncated")  # skipped the same way by both paths
    return root, broken


def test_ray_local_builds_the_same_index_as_one_process(world_folder, tmp_path, capsys):
    root, broken = world_folder
    single, distributed = tmp_path / "single.h5", tmp_path / "ray.h5"
    common = ["--model", "mobilenetvlad", "--weights", "none", "--batch-size", "4", "--store-poses", "--threads", "1"]
    assert main(["index", "build", str(root), "--out", str(single), "--workers", "0", *common]) == 0
    shards = tmp_path / "shards"
    assert main(["index", "build", str(root), "--out", str(distributed), "--ray", "local", "--ray-actors", "1",
                 "--ray-cpus-per-actor", "1", "--shard-dir", str(shards), *common]) == 0
    out = capsys.readouterr().out
    assert out.count("keyframes skipped (unreadable)") == 2 and broken.name in out
    a, b = load_index(single), load_index(distributed)
    assert len(a) == len(b) == 9
    assert a.keyframe_ids == b.keyframe_ids and a.missions == b.missions and a.names == b.names
    np.testing.assert_allclose(a.descriptors, b.descriptors, atol=1e-5)
    np.testing.assert_array_equal(a.positions, b.positions)
    assert not shards.exists() or not any(shards.iterdir())  # merged shards are cleaned up


def test_ray_config_defaults_are_the_local_ones():
    config = RayConfig()
    assert config.address == "local" and config.actors is None and config.shard_dir is None
