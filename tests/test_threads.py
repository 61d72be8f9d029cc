"""`configure_threads` reaches the thread pools of libraries loaded before it ran (numpy's OpenBLAS)."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys

PROBE = """
import json
import numpy  # loads OpenBLAS with one thread per core before hierloc decides
import threadpoolctl
from hierloc.utils.threads import configure_threads
configure_threads(1)
print(json.dumps([(pool["internal_api"], pool["num_threads"]) for pool in threadpoolctl.threadpool_info()]))
"""


def test_blas_pools_loaded_earlier_follow_the_thread_count():
    env_free = {key: value for key, value in os.environ.items()
                if key not in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True, env=env_free,
                         timeout=120)
    pools = json.loads(out.stdout.strip().splitlines()[-1])
    assert any(api == "openblas" for api, _ in pools), pools  # numpy's BLAS is among them
    assert all(threads == 1 for _, threads in pools), pools


def _env_without(*names: str) -> dict[str, str]:
    return {key: value for key, value in os.environ.items() if key not in names}


def test_importing_hierloc_stops_openblas_spinning_unless_the_user_chose():
    probe = "import os, hierloc, numpy; print(os.environ['OPENBLAS_THREAD_TIMEOUT'])"
    env = _env_without("OPENBLAS_THREAD_TIMEOUT")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, env=env,
                         timeout=120)
    assert out.stdout.split() == ["4"]
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True,
                         env={**env, "OPENBLAS_THREAD_TIMEOUT": "10"}, timeout=120)
    assert out.stdout.split() == ["10"]


def test_torch_threads_are_restored_after_the_block_even_on_error():
    import pytest
    import torch

    from hierloc.utils.threads import torch_threads

    previous = torch.get_num_threads()
    with torch_threads(previous + 1):
        assert torch.get_num_threads() == previous + 1
    assert torch.get_num_threads() == previous
    with pytest.raises(RuntimeError), torch_threads(1):
        raise RuntimeError("inside")
    assert torch.get_num_threads() == previous
    with torch_threads(0):  # a machine with one core and a concurrent OpenCV stage: the network keeps one
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == previous


def test_concurrent_retrieval_and_sift_give_the_sequential_results(service_world_map):
    import numpy as np
    import torch

    from hierloc.localization import Localizer, LocalizerConfig

    folder, _, dusk = service_world_map
    config = LocalizerConfig(num_retrieved=3, trace_global_network=False)
    concurrent = Localizer.load(folder, dataclasses.replace(config, concurrent_stages=True))
    sequential = Localizer.load(folder, dataclasses.replace(config, concurrent_stages=False))
    assert not concurrent.extractor.uses_torch  # SIFT: the automatic choice runs it concurrently too
    threads = torch.get_num_threads()
    for keyframe in dusk[:4]:
        image = keyframe.load_image()
        a = concurrent.localize(image, keyframe.camera, keyframe.name)
        b = sequential.localize(image, keyframe.camera, keyframe.name)
        assert torch.get_num_threads() == threads
        assert a.retrieved == b.retrieved and a.success == b.success and a.num_inliers == b.num_inliers
        if a.success:
            np.testing.assert_allclose(a.T_cam_world, b.T_cam_world, atol=1e-9)
        # Both stages are timed; run side by side, the query takes no longer than the two one after the other.
        assert a.timings["retrieval"] > 0 and a.timings["local_features"] > 0
        assert a.timings["total"] >= max(a.timings["retrieval"], a.timings["local_features"])


def test_stage_mode_chooser_alternates_then_keeps_the_faster_mode():
    from hierloc.localization.stage_modes import CONCURRENT, SEQUENTIAL, StageModeChooser

    for faster in (CONCURRENT, SEQUENTIAL):
        chooser = StageModeChooser(trials=2)
        modes = [chooser.next_mode() for _ in range(4)]
        assert sorted(modes) == sorted([CONCURRENT, SEQUENTIAL] * 2) and chooser.chosen is None
        for mode in modes:
            chooser.record(mode, 0.01 if mode == faster else 0.03)
        assert chooser.chosen == faster
        assert {chooser.next_mode() for _ in range(5)} == {faster}
        chooser.record(faster, 10.0)  # after the choice, timings no longer count
        assert chooser.summary()["trial_seconds"][faster] == [0.01, 0.01]


def test_automatic_stage_mode_times_both_modes_on_warm_queries(service_world_map, monkeypatch):
    import torch

    from hierloc.localization import Localizer, LocalizerConfig, stage_modes
    from hierloc.utils.threads import torch_threads

    monkeypatch.setattr(stage_modes, "_CHOOSERS", {})  # a fresh process's choices
    folder, _, dusk = service_world_map
    image = dusk[0].load_image()
    with torch_threads(2):  # SIFT beside the network needs a second thread for it
        localizer = Localizer.load(folder, LocalizerConfig(num_retrieved=3, trace_global_network=False))
        assert localizer.stage_mode == {"chosen": None, "trial_seconds": {}}  # to be measured
        for _ in range(3 + 2 * 4):
            localizer.localize(image, dusk[0].camera, dusk[0].name)
        assert torch.get_num_threads() == 2
    mode = localizer.stage_mode
    assert mode["chosen"] in (stage_modes.CONCURRENT, stage_modes.SEQUENTIAL)
    assert [len(t) for t in mode["trial_seconds"].values()] == [4, 4]
    # A localizer built later with the same set-up (another map, say) reuses the choice.
    with torch_threads(2):
        again = Localizer.load(folder, LocalizerConfig(num_retrieved=3, trace_global_network=False))
        for _ in range(4):  # past its own warm-up: the shared chooser answers
            again.localize(image, dusk[0].camera, dusk[0].name)
    assert again.stage_mode["chosen"] == mode["chosen"]
