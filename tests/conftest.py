"""Shared test set-up: few threads, quiet logs, no downloads, paths to the optional shared data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HIERLOC_NUM_THREADS", "2")

from hierloc.utils.threads import configure_threads  # noqa: E402

configure_threads(2)

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


@pytest.fixture(scope="module")
def torch_one_thread():
    """One torch thread for a whole module (`pytestmark = pytest.mark.usefixtures("torch_one_thread")`): tiny
    networks run faster on one thread than on two, and CPU training results depend on the thread count."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(autouse=True)
def isolated_weights_cache(tmp_path_factory, monkeypatch):
    """Tests never see (or write) the user's weight cache."""
    monkeypatch.setenv("HIERLOC_WEIGHTS_DIR", str(tmp_path_factory.mktemp("weights")))


@pytest.fixture(autouse=True)
def no_weight_downloads(monkeypatch):
    """No test downloads weights: missing named weights raise WeightsNotFoundError instead of reaching a network.

    Tests that exercise downloads (against a local server) remove the variable themselves.
    """
    monkeypatch.setenv("HIERLOC_OFFLINE", "1")


def shared_path(*parts: str) -> Path:
    """A path under ../shared, or skip the test when that material is absent."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} not available")
    return path


@pytest.fixture(scope="session")
def service_world_map(tmp_path_factory):
    """(map folder, Localizer, dusk keyframes): a 10-frame synthetic map (SIFT, a global index from ImageNet
    MobileNetVLAD, offline weights) saved to disk, shared by the service's test files."""
    from hierloc.localization import GlobalConfig, Localizer, LocalizerConfig, MapBuildConfig, build_scene_map
    from hierloc.maps.synthetic import make_synthetic_map

    world = make_synthetic_map(num_missions=2, frames_per_mission=10, image_size=(320, 240), seed=3)
    config = MapBuildConfig(features="sift", pairs="sequential", num_neighbors=2,
                            global_model=GlobalConfig(model="mobilenetvlad_imagenet", search="flat"))
    scene, _ = build_scene_map(world.select(["day"]), config, progress=False)
    folder = tmp_path_factory.mktemp("service") / "map"
    scene.save(folder)
    localizer = Localizer.load(folder, LocalizerConfig(num_retrieved=3, trace_global_network=False))
    return folder, localizer, world.missions["dusk"].keyframes
