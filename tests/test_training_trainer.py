"""The training loop: learning, checkpoints, resume, interruption, freezing, triplets."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from hierloc.models import load_model
from hierloc.training.checkpoints import list_checkpoints, read_training_checkpoint
from hierloc.training.config import complete_config
from hierloc.training.trainer import TrainingError, learning_rate_at, train

# A very small MobileNetVLAD (trunk cut early, 4 clusters) keeps every run to seconds.
TINY_MODEL = {"name": "mobilenetvlad", "endpoint": "layer_4", "num_clusters": 4, "reduction_dim": "auto",
              "batch_size": 4, "eval_batch_size": 4, "learning_rate": 0.01}


pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.fixture(scope="module")
def distillation_root(tmp_path_factory):
    """16 images whose teacher descriptor is a fixed random projection of their mean intensities."""
    root = tmp_path_factory.mktemp("distill")
    (root / "images").mkdir()
    (root / "teacher").mkdir()
    rng = np.random.default_rng(0)
    projection = rng.normal(size=(3, 8)).astype(np.float32)
    for i in range(16):
        image = np.zeros((24, 32, 3), np.uint8)
        image[:] = rng.integers(0, 256, 3)
        image[rng.integers(0, 12):, :] //= 2
        cv2.imwrite(str(root / "images" / f"{i:03d}.png"), image)
        target = image.reshape(-1, 3).mean(0) / 255 @ projection
        np.save(root / "teacher" / f"{i:03d}.npy", (target / np.linalg.norm(target)).astype(np.float32))
    return root


def make_config(**run) -> dict:
    values = {
        "data": {"name": "distillation", "image_folders": ["images"], "descriptor_folders": ["teacher"],
                 "validation_size": 4, "preprocessing": {"resize": [24, 32], "grayscale": True}, "num_workers": 0,
                 "augmentation": {"photometric": {"enable": True,
                                                  "primitives": ["random_brightness", "additive_gaussian_noise"]}}},
        "model": dict(TINY_MODEL),
        "train_iter": 6, "validation_interval": 3, "save_interval": 2, "keep_checkpoints": 2, "log_interval": 1,
        "seed": 0,
    }
    model = run.pop("model", {})
    values.update(run)
    values["model"].update(model)
    return complete_config(values)


def test_tiny_distillation_reduces_the_validation_error_and_writes_the_experiment(distillation_root, tmp_path):
    result = train(make_config(train_iter=30, validation_interval=15, save_interval=10), tmp_path / "exp",
                   data_root=distillation_root, progress=False)
    errors = [v["l2_error"] for v in result["validation"]]
    assert [v["iteration"] for v in result["validation"]] == [0, 15, 30]
    assert errors[-1] < 0.5 * errors[0]
    exp = tmp_path / "exp"
    assert (exp / "config.yaml").is_file() and (exp / "log.txt").is_file() and (exp / "training_summary.json").is_file()
    assert list(exp.glob("events.out.tfevents.*"))
    assert [i for i, _ in list_checkpoints(exp)] == [20, 30]  # keep-last-2 of 10, 20, 30
    # model.pt is a regular hierloc checkpoint: loadable by name, same descriptors as training ended with
    model = load_model("mobilenetvlad", weights=exp / "model.pt")
    assert model.descriptor_dim == 8 and model.config.endpoint == "layer_4"


def test_tensorboard_has_loss_validation_and_learning_rate(distillation_root, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    train(make_config(), tmp_path / "exp", data_root=distillation_root, progress=False)
    events = EventAccumulator(str(tmp_path / "exp"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"training/loss", "training/learning_rate", "validation/l2_error"} <= tags


def test_resume_continues_exactly_where_it_stopped(distillation_root, tmp_path):
    straight = train(make_config(), tmp_path / "a", data_root=distillation_root, progress=False)
    train(make_config(train_iter=3), tmp_path / "b", data_root=distillation_root, progress=False)
    resumed = train(make_config(), tmp_path / "b", data_root=distillation_root, resume=True, progress=False)
    assert resumed["started_at"] == 3 and resumed["iteration"] == 6
    a = read_training_checkpoint(tmp_path / "a" / "checkpoints" / "ckpt-00000006.pt")
    b = read_training_checkpoint(tmp_path / "b" / "checkpoints" / "ckpt-00000006.pt")
    for key, value in a["state_dict"].items():
        assert torch.equal(value, b["state_dict"][key]), key
    assert a["iteration"] == b["iteration"] == 6
    assert straight["validation"][-1]["l2_error"] == pytest.approx(resumed["validation"][-1]["l2_error"], abs=1e-7)
    # the resumed run reports the whole validation curve
    assert [v["iteration"] for v in resumed["validation"]][:2] == [0, 3]


def test_an_existing_experiment_needs_resume(distillation_root, tmp_path):
    train(make_config(train_iter=2, validation_interval=0), tmp_path / "exp", data_root=distillation_root,
          progress=False)
    with pytest.raises(TrainingError, match="--resume"):
        train(make_config(train_iter=2), tmp_path / "exp", data_root=distillation_root, progress=False)


def test_teacher_size_mismatch_is_explained(distillation_root, tmp_path):
    with pytest.raises(TrainingError, match="reduction_dim to 8"):
        train(make_config(model={"reduction_dim": 5}), tmp_path / "exp", data_root=distillation_root, progress=False)


def test_frozen_backbone_keeps_weights_and_batchnorm_statistics(distillation_root, tmp_path):
    config = make_config(train_iter=3, validation_interval=0, model={"train_backbone": False})
    train(config, tmp_path / "exp", data_root=distillation_root, progress=False)
    trained = read_training_checkpoint(tmp_path / "exp" / "checkpoints" / "ckpt-00000003.pt")["state_dict"]
    from hierloc.training.model_setup import build_training_model

    initial = build_training_model(config["model"], None, target_dim=8).state_dict()
    backbone = [k for k in initial if k.startswith("backbone.")]
    assert backbone and all(torch.equal(initial[k], trained[k]) for k in backbone)
    assert any(not torch.equal(initial[k], trained[k]) for k in initial if k.startswith("aggregation."))


def test_learning_rate_schedule():
    assert learning_rate_at(10, 0.001, []) == 0.001
    rates = [1e-3, 1e-4, 1e-5]
    expected = [1e-3, 1e-3, 1e-4, 1e-4, 1e-5, 1e-5]
    assert [learning_rate_at(i, rates, [10, 20]) for i in (0, 9, 10, 19, 20, 99)] == expected
    with pytest.raises(ValueError, match="boundaries"):
        learning_rate_at(0, rates, [10])


def test_ctrl_c_saves_a_valid_checkpoint_and_exits_cleanly(distillation_root, tmp_path):
    exp = tmp_path / "exp"
    config_path = tmp_path / "config.yaml"
    import yaml

    config = make_config(train_iter=100000, validation_interval=0, save_interval=0)
    config_path.write_text(yaml.safe_dump(config))
    env = dict(os.environ, HIERLOC_NUM_THREADS="1")
    process = subprocess.Popen([sys.executable, "-m", "hierloc.cli.main", "train", str(config_path), str(exp),
                                "--data-root", str(distillation_root), "--no-progress", "--threads", "1"],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    deadline = time.time() + 120
    while time.time() < deadline and process.poll() is None:
        log = exp / "log.txt"
        if log.is_file() and "training mobilenetvlad" in log.read_text():
            break
        time.sleep(0.2)
    time.sleep(1.0)
    process.send_signal(signal.SIGINT)
    output, _ = process.communicate(timeout=120)
    assert process.returncode == 0, output
    assert "stopped by SIGINT" in output
    checkpoints = list_checkpoints(exp)
    assert len(checkpoints) == 1
    payload = read_training_checkpoint(checkpoints[0][1])
    assert payload["iteration"] >= 1 and payload["optimizer"]["state"]
    assert (exp / "model.pt").is_file()
    assert not [p for p in (exp / "checkpoints").iterdir() if p.name.startswith(".")]  # no temporary files left


def test_triplet_training_on_a_synthetic_map(tmp_path):
    from hierloc.maps.synthetic import make_synthetic_map, write_synthetic_dataset

    write_synthetic_dataset(make_synthetic_map(num_missions=2, frames_per_mission=12, image_size=(48, 32), seed=0),
                            tmp_path / "world")
    config = complete_config({
        "data": {"name": "triplets", "map": "world", "positive_distance": 2.0, "negative_distance": 4.0,
                 "validation_size": 4, "preprocessing": {"resize": [32, 48], "grayscale": True}, "num_workers": 0},
        "model": {"name": "mobilenetvlad", "endpoint": "layer_4", "num_clusters": 4, "reduction_dim": 8,
                  "batch_size": 2, "eval_batch_size": 4, "triplet_margin": 0.3, "loss_in": True},
        "train_iter": 4, "validation_interval": 2, "save_interval": 0, "seed": 0,
    })
    result = train(config, tmp_path / "exp", data_root=tmp_path, progress=False)
    assert result["iteration"] == 4
    last = result["validation"][-1]
    assert {"loss", "distance_p", "distance_n", "triplet_accuracy"} <= set(last)
    assert all(np.isfinite(v) for v in last.values())
    assert Path(result["model_path"]).is_file()


def test_cli_trains_a_shipped_config_on_a_folder_and_resumes(distillation_root, tmp_path, capsys):
    from hierloc.cli.main import main

    exp = tmp_path / "exp"
    common = ["mobilenetvlad_train_distill", str(exp), "--images", str(distillation_root / "images"),
              "--descriptors", str(distillation_root / "teacher"), "--set", "data.validation_size=4",
              "--set", "data.preprocessing.resize=[24, 32]", "--set", "data.num_workers=0",
              "--set", "model.endpoint=layer_4", "--set", "model.batch_size=4", "--set", "validation_interval=2",
              "--no-progress", "--threads", "1"]
    assert main(["train", *common, "--set", "train_iter=2"]) == 0
    assert "trained to iteration 2" in capsys.readouterr().out
    assert main(["train", *common, "--set", "train_iter=4"]) == 1  # exists: needs --resume
    assert "--resume" in capsys.readouterr().err
    assert main(["train", *common, "--set", "train_iter=4", "--resume"]) == 0
    out = capsys.readouterr().out
    assert "at iteration 0 ->" in out and "trained to iteration 4" in out
    assert [i for i, _ in list_checkpoints(exp)] == [2, 4]


@pytest.mark.skipif(not os.environ.get("HIERLOC_SLOW_TESTS"),
                    reason="starts three 2-process torchrun jobs (about a minute): set HIERLOC_SLOW_TESTS=1")
def test_two_process_distributed_training_resumes_exactly(distillation_root, tmp_path):
    """DistributedDataParallel over gloo on the CPU (the code path GPUs use with nccl)."""
    import yaml

    config_path = tmp_path / "config.yaml"
    config_path.write_text(yaml.safe_dump(make_config(train_iter=4, validation_interval=2, save_interval=2)))
    env = dict(os.environ, HIERLOC_NUM_THREADS="1", OMP_NUM_THREADS="1")

    def torchrun(experiment, *extra):
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                   "-m", "hierloc.cli.main", "train", str(config_path), str(tmp_path / experiment),
                   "--data-root", str(distillation_root), "--no-progress", "--threads", "1", *extra]
        done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    straight = torchrun("straight")
    assert straight.count("trained to iteration 4") == 1  # only the main process reports
    torchrun("resumed", "--set", "train_iter=2")
    torchrun("resumed", "--resume")
    a = read_training_checkpoint(tmp_path / "straight" / "checkpoints" / "ckpt-00000004.pt")
    b = read_training_checkpoint(tmp_path / "resumed" / "checkpoints" / "ckpt-00000004.pt")
    assert len(a["rng_per_rank"]) == 2
    assert all(torch.equal(v, b["state_dict"][k]) for k, v in a["state_dict"].items())
