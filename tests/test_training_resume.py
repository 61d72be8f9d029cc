"""Interrupted and resumed training equals uninterrupted training bit for bit (issue 14 point 8).

Augmentation on (photometric and crops), two DataLoader workers, validation and periodic checkpoints
on. SIGINT and SIGTERM are sent by the training process to itself at a chosen iteration (the real
signal handlers and stop path run); SIGKILL kills a training subprocess at a chosen iteration, and
the run resumes from its last periodic checkpoint.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import cv2
import numpy as np
import pytest
import torch

from hierloc.training import trainer as trainer_module
from hierloc.training.checkpoints import list_checkpoints, read_training_checkpoint
from hierloc.training.config import complete_config
from hierloc.training.randomness import TrainingStreams, derive_seed
from hierloc.training.trainer import train

ITERATIONS = 8


pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    """14 textured images with teacher descriptors (a fixed projection of coarse image statistics)."""
    root = tmp_path_factory.mktemp("resume")
    (root / "images").mkdir()
    (root / "teacher").mkdir()
    rng = np.random.default_rng(1)
    projection = rng.normal(size=(4, 8)).astype(np.float32)
    for i in range(14):
        image = cv2.resize(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8), (32, 24), interpolation=cv2.INTER_CUBIC)
        cv2.imwrite(str(root / "images" / f"{i:03d}.png"), image)
        gray = image.mean(2) / 255
        target = np.array([gray.mean(), gray[:12].mean(), gray[:, :16].mean(), gray.std()]) @ projection
        np.save(root / "teacher" / f"{i:03d}.npy", (target / np.linalg.norm(target)).astype(np.float32))
    return root


def make_config() -> dict:
    return complete_config({
        "data": {"name": "distillation", "image_folders": ["images"], "descriptor_folders": ["teacher"],
                 "validation_size": 4, "preprocessing": {"resize": [24, 32], "grayscale": True}, "num_workers": 2,
                 "augmentation": {
                     "photometric": {"enable": True, "primitives": ["random_brightness", "random_contrast",
                                                                    "additive_gaussian_noise", "additive_shade"]},
                     "crop": {"enable": True, "scale": [0.7, 1.0], "ratio": [0.9, 1.1]}}},
        "model": {"name": "mobilenetvlad", "endpoint": "layer_4", "num_clusters": 4, "reduction_dim": "auto",
                  "batch_size": 4, "eval_batch_size": 4, "learning_rate": 0.01},
        "train_iter": ITERATIONS, "validation_interval": 4, "save_interval": 3, "keep_checkpoints": 0,
        "log_interval": 2, "seed": 3,
    })


def signal_at(iteration: int, signum: int):
    """A learning_rate_at that sends `signum` to this process when iteration `iteration` begins."""
    original = trainer_module.learning_rate_at

    def wrapped(current, *args):
        if current == iteration:
            os.kill(os.getpid(), signum)
        return original(current, *args)

    return wrapped


@pytest.fixture(scope="module")
def uninterrupted(data_root, tmp_path_factory):
    experiment = tmp_path_factory.mktemp("straight") / "exp"
    summary = train(make_config(), experiment, data_root=data_root, progress=False)
    return summary, read_training_checkpoint(list_checkpoints(experiment)[-1][1])


def assert_same_run(resumed_summary: dict, experiment, uninterrupted) -> None:
    summary, final = uninterrupted
    checkpoints = list_checkpoints(experiment)
    assert checkpoints[-1][0] == ITERATIONS
    other = read_training_checkpoint(checkpoints[-1][1])
    assert final["state_dict"].keys() == other["state_dict"].keys()
    for key, value in final["state_dict"].items():
        assert torch.equal(value, other["state_dict"][key]), key
    for index, state in final["optimizer"]["state"].items():
        for key, value in state.items():
            assert torch.equal(value, other["optimizer"]["state"][index][key]), (index, key)
    assert torch.equal(final["rng"]["streams"]["augmentation"], other["rng"]["streams"]["augmentation"])
    assert final["sampler_position"] == other["sampler_position"] == ITERATIONS * 4
    # Logged training losses (means over each log interval) and the validation curve, exactly.
    assert [e["iteration"] for e in summary["training_log"]] == [2, 4, 6, 8]
    assert resumed_summary["training_log"] == summary["training_log"]
    assert [v["iteration"] for v in summary["validation"]] == [0, 4, 8]
    assert resumed_summary["validation"] == summary["validation"]


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_stop_by_signal_then_resume_equals_the_uninterrupted_run(data_root, tmp_path, monkeypatch, signum,
                                                                  uninterrupted):
    experiment = tmp_path / "exp"
    # The signal arrives during the 7th iteration (after a validation at 4 and a checkpoint at 6, before
    # the next log at 8): the run finishes that iteration, saves without validating and returns.
    monkeypatch.setattr(trainer_module, "learning_rate_at", signal_at(6, signum))
    stopped = train(make_config(), experiment, data_root=data_root, progress=False)
    assert stopped["stopped_by"] == signal.Signals(signum).name and stopped["iteration"] == 7
    assert [i for i, _ in list_checkpoints(experiment)] == [3, 6, 7]
    monkeypatch.undo()
    resumed = train(make_config(), experiment, data_root=data_root, resume=True, progress=False)
    assert resumed["started_at"] == 7 and not resumed["stopped_by"]
    assert_same_run(resumed, experiment, uninterrupted)


def test_kill_then_resume_from_the_last_checkpoint_equals_the_uninterrupted_run(data_root, tmp_path, uninterrupted):
    experiment = tmp_path / "exp"
    script = textwrap.dedent(f"""
        import os, signal, sys, torch
        torch.set_num_threads(1)
        sys.path.insert(0, {str(os.path.dirname(__file__))!r})
        from test_training_resume import make_config, signal_at
        from hierloc.training import trainer
        trainer.learning_rate_at = signal_at(7, signal.SIGKILL)
        trainer.train(make_config(), {str(experiment)!r}, data_root={str(data_root)!r}, progress=False)
    """)
    env = dict(os.environ, HIERLOC_NUM_THREADS="1", OMP_NUM_THREADS="1")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == -signal.SIGKILL, done.stderr[-2000:]
    assert [i for i, _ in list_checkpoints(experiment)] == [3, 6]  # killed after 7 steps, before the 8th
    resumed = train(make_config(), experiment, data_root=data_root, resume=True, progress=False)
    assert resumed["started_at"] == 6
    assert_same_run(resumed, experiment, uninterrupted)


def test_validation_moves_no_training_stream():
    streams = TrainingStreams(seed=3)
    first = streams.validation_seed(4)
    before = streams.augmentation.get_state().clone()
    global_before = torch.get_rng_state().clone()
    streams.validation_generator(4)
    assert streams.validation_seed(4) == first != streams.validation_seed(8)
    assert torch.equal(streams.augmentation.get_state(), before)
    assert torch.equal(torch.get_rng_state(), global_before)
    assert derive_seed(3, 0, 1) != derive_seed(3, 1, 1) and 0 <= derive_seed(2**40, 5) < 2**63


def test_seeded_augmentation_leaves_the_global_generator_alone():
    from hierloc.training.augmentation import build_augmentation

    augmentation = build_augmentation({"photometric": {"enable": True}, "crop": {"enable": True}}, (24, 32))
    images = torch.randint(0, 256, (3, 1, 24, 32), dtype=torch.uint8)
    before = torch.get_rng_state().clone()
    a = augmentation(images, seed=11)
    assert torch.equal(torch.get_rng_state(), before)
    assert torch.equal(a, augmentation(images, seed=11)) and not torch.equal(a, augmentation(images, seed=12))


def test_a_checkpoint_from_before_the_streams_still_resumes(data_root, tmp_path, caplog):
    config = make_config()
    config.update(train_iter=3, validation_interval=0, save_interval=3)
    config["data"]["num_workers"] = 0
    train(config, tmp_path / "exp", data_root=data_root, progress=False)
    path = list_checkpoints(tmp_path / "exp")[-1][1]
    payload = read_training_checkpoint(path)
    payload.update(version=1, rng={k: v for k, v in payload["rng"].items() if k != "streams"})
    del payload["sampler_position"]
    torch.save(payload, path)
    config["train_iter"] = 4
    resumed = train(config, tmp_path / "exp", data_root=data_root, resume=True, progress=False)
    assert resumed["started_at"] == 3 and resumed["iteration"] == 4
    assert "predates the checkpointed random streams" in caplog.text
    payload = read_training_checkpoint(list_checkpoints(tmp_path / "exp")[-1][1])
    assert payload["sampler_position"] == 16 and set(payload["rng"]["streams"]) == {"augmentation"}
