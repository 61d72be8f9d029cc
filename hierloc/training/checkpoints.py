"""Training checkpoints: model, optimizer, scaler, iteration, sampler position and random states, atomic.

The random states are the global generators' (`rng_state`) and the training's own streams
(`hierloc.training.randomness.TrainingStreams`), per process in a distributed run.

Files are `EXPERIMENT/checkpoints/ckpt-00001000.pt`; only the newest `keep` are kept. They load with
`torch.load(weights_only=True)`: everything in them is tensors and plain Python values.
"""

from __future__ import annotations

import logging
import os
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..models.checkpoint import CheckpointError, read_checkpoint
from ..models.configs import config_to_dict
from ..utils.io import atomic_path

logger = logging.getLogger(__name__)

TRAINING_CHECKPOINT_FORMAT = "hierloc-training-checkpoint"
CHECKPOINT_DIR = "checkpoints"
_NAME = re.compile(r"ckpt-(\d+)\.pt$")


def checkpoint_path(experiment: str | os.PathLike, iteration: int) -> Path:
    """Path of the checkpoint of `iteration` in an experiment folder."""
    return Path(experiment) / CHECKPOINT_DIR / f"ckpt-{iteration:08d}.pt"


def list_checkpoints(experiment: str | os.PathLike) -> list[tuple[int, Path]]:
    """(iteration, path) of the experiment's checkpoints, oldest first."""
    folder = Path(experiment) / CHECKPOINT_DIR
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _NAME.fullmatch(p.name))]
    return sorted(found)


def rng_state() -> dict[str, Any]:
    """Random states of torch (CPU and CUDA), numpy's global generator and Python's `random`."""
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *[float(v) for v in np_state[2:]]],
        "python": _python_state_to_plain(random.getstate()),
    }


def _python_state_to_plain(state):
    version, internal, gauss = state
    return [version, list(internal), gauss]


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what `rng_state` saved."""
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if state.get("numpy"):
        name, keys, pos, has_gauss, cached = state["numpy"]
        np.random.set_state((name, keys.numpy().astype(np.uint32), int(pos), int(has_gauss), float(cached)))
    if state.get("python"):
        version, internal, gauss = state["python"]
        random.setstate((version, tuple(internal), gauss))


def save_training_checkpoint(
    experiment: str | os.PathLike,
    iteration: int,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler | None,
    config: dict,
    keep: int | None = None,
    extra: dict | None = None,
    rng_per_rank: list[dict] | None = None,
    streams: dict | None = None,
    sampler_position: int | None = None,
) -> Path:
    """Write the checkpoint of `iteration` atomically, then delete all but the newest `keep`.

    `rng_per_rank`: the random states of every process of a distributed run (index = rank), each
    with its "streams"; `streams`: this process's `TrainingStreams.state_dict()`;
    `sampler_position`: samples the training sampler has handed out (per process).
    """
    payload = {
        "format": TRAINING_CHECKPOINT_FORMAT,
        "version": 2,
        "iteration": int(iteration),
        "sampler_position": None if sampler_position is None else int(sampler_position),
        "model_name": model.name,
        "model_kind": model.kind,
        "model_config": config_to_dict(model.config),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "optimizer": optimizer.state_dict(),
        "scaler": scaler.state_dict() if scaler is not None else {},
        "rng": {**rng_state(), "streams": streams or {}},
        "rng_per_rank": rng_per_rank or [],
        "config": config,
        "extra": extra or {},
    }
    path = checkpoint_path(experiment, iteration)
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    if keep:
        for _, old in list_checkpoints(experiment)[:-keep]:
            old.unlink(missing_ok=True)
    return path


def read_training_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """A training checkpoint, checked for its format."""
    payload = read_checkpoint(path)
    if payload.get("format") != TRAINING_CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path}: not a hierloc training checkpoint")
    return payload


def latest_checkpoint(experiment: str | os.PathLike) -> Path | None:
    """The newest readable checkpoint of an experiment (an unreadable one is reported and skipped)."""
    for _, path in reversed(list_checkpoints(experiment)):
        try:
            read_training_checkpoint(path)
        except CheckpointError as exc:
            logger.warning("skipping %s", exc)
            continue
        return path
    return None
