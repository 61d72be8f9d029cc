"""The training loop: Adam, validation, TensorBoard, atomic checkpoints, clean interruption and resume.

`train(config, experiment_dir)` runs a completed configuration (`hierloc.training.config`). The
experiment folder receives `config.yaml` (the configuration used), `log.txt`, TensorBoard events
(`training/loss`, `training/learning_rate`, `validation/<metric>`), `checkpoints/ckpt-N.pt` (every
`save_interval` iterations, at the end and on interruption; the newest `keep_checkpoints` kept),
`model.pt` (a hierloc checkpoint of the final network: `--weights` / `--model` accept it) and
`training_summary.json` (with the validation curve and the logged training losses). Ctrl+C or
SIGTERM finishes the current iteration, saves (without validating) and returns; `resume=True`
continues from the newest checkpoint with its iteration, optimizer, scaler, sampler position,
running loss sums and random streams (`hierloc.training.randomness`), so that a run stopped by
a signal, or killed and resumed from its last periodic checkpoint, ends bit for bit where the
uninterrupted run ends (on the CPU; CUDA kernels may themselves be non-deterministic). Under
`torchrun` (WORLD_SIZE > 1) it trains with DistributedDataParallel; on CUDA, `amp` enables float16
autocast with a gradient scaler.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import random
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from ..models.checkpoint import load_state_dict_strict, save_checkpoint
from ..models.configs import config_from_dict
from ..models.loading import build_model
from ..utils.io import atomic_write_text, to_json_text
from .checkpoints import (
    latest_checkpoint,
    list_checkpoints,
    read_training_checkpoint,
    rng_state,
    save_training_checkpoint,
    set_rng_state,
)
from .config import dump_config
from .data import InfiniteShuffledSampler, collate, ignore_sigint_in_worker
from .model_setup import (
    build_training_model,
    configure_trainable,
    count_parameters,
    initialize_vlad_from_images,
    set_train_mode,
)
from .randomness import TrainingStreams, seeded_global_rng
from .tasks import make_task

logger = logging.getLogger("hierloc.training")


class TrainingError(RuntimeError):
    """A training run cannot start or continue (inconsistent folder, configuration or data)."""


@dataclass
class DistributedContext:
    """Process group settings; a single process unless started by torchrun with WORLD_SIZE > 1."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        """Whether more than one process takes part."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Whether this is the rank-0 process (the one that logs and writes checkpoints)."""
        return self.rank == 0

    @classmethod
    def from_env(cls) -> "DistributedContext":
        """Join the process group torchrun describes in the environment, if any."""
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        if world_size <= 1:
            return cls()
        import torch.distributed as dist

        if not dist.is_initialized():
            dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
        return cls(rank=dist.get_rank(), world_size=dist.get_world_size(),
                   local_rank=int(os.environ.get("LOCAL_RANK", "0")))


class StopRequest:
    """Set by SIGINT/SIGTERM: the loop finishes its iteration, saves and returns."""

    def __init__(self) -> None:
        self.requested = False
        self.signal_name = ""
        self._previous: dict[int, object] = {}

    def _handle(self, signum, _frame) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl+C stops at once
        self.requested = True
        self.signal_name = signal.Signals(signum).name
        logger.warning("%s received: saving a checkpoint after this iteration (Ctrl+C again to abort)",
                       self.signal_name)

    def __enter__(self) -> "StopRequest":
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def learning_rate_at(iteration: int, learning_rate, steps, schedule: str = "step", warmup: int = 0,
                     total: int | None = None) -> float:
    """The learning rate of an iteration.

    "step": piecewise constant, `learning_rate[i]` until iteration `steps[i]` (a float: constant).
    "cosine": from the first value down to the last one (0 for a float) along half a cosine over
    `total` iterations; `steps` is ignored. Either is scaled by a linear warm-up over the first
    `warmup` iterations (from 1/warmup to 1).
    """
    factor = min(1.0, (iteration + 1) / warmup) if warmup and warmup > 0 else 1.0
    return factor * _scheduled_rate(iteration, learning_rate, steps, schedule, total)


def _scheduled_rate(iteration: int, learning_rate, steps, schedule: str, total: int | None) -> float:
    if schedule == "cosine":
        values = list(learning_rate) if isinstance(learning_rate, (list, tuple)) else [learning_rate, 0.0]
        if not total or total < 1:
            raise ValueError("the cosine learning rate schedule needs the number of iterations")
        progress = min(1.0, iteration / total)
        start, end = float(values[0]), float(values[-1])
        return end + 0.5 * (start - end) * (1.0 + math.cos(math.pi * progress))
    if schedule != "step":
        raise ValueError(f"unknown learning_rate_schedule {schedule!r}: use 'step' or 'cosine'")
    if not isinstance(learning_rate, (list, tuple)):
        return float(learning_rate)
    if len(steps or []) != len(learning_rate) - 1:
        raise ValueError(f"learning_rate has {len(learning_rate)} values: learning_rate_step needs "
                         f"{len(learning_rate) - 1} boundaries, got {steps}")
    for value, boundary in zip(learning_rate, steps):
        if iteration < boundary:
            return float(value)
    return float(learning_rate[-1])


def seed_everything(seed: int) -> None:
    """Seed torch, numpy's global generator and Python's `random`."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


def resolve_training_device(name: str, distributed: DistributedContext) -> torch.device:
    """'auto': this process's GPU when there is one, else the CPU."""
    if name in (None, "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda", distributed.local_rank)
        return torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise TrainingError("device cuda was asked for but no CUDA device is available")
    return device


def _reduction_weights(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    return [p for n, p in model.named_parameters() if "reduction" in n and n.endswith("weight") and p.requires_grad]


class _FileLog:
    """Copies the hierloc log records into EXPERIMENT/log.txt while training runs."""

    def __init__(self, path: Path) -> None:
        self.handler = logging.FileHandler(path, mode="a", encoding="utf-8")
        self.handler.setFormatter(logging.Formatter("[%(asctime)s %(levelname)s] %(message)s", "%Y-%m-%d %H:%M:%S"))
        self.handler.setLevel(logging.INFO)

    def __enter__(self) -> "_FileLog":
        logging.getLogger("hierloc").addHandler(self.handler)
        return self

    def __exit__(self, *exc) -> None:
        logging.getLogger("hierloc").removeHandler(self.handler)
        self.handler.close()


def _build_or_restore_model(config: dict, task, payload: dict | None):
    if payload is not None:
        kind = payload["model_kind"]
        model = build_model(payload["model_name"], config_from_dict(kind, payload["model_config"]))
        load_state_dict_strict(model, payload["state_dict"], "training checkpoint")
        return model
    model_section = config["model"]
    model = build_training_model(model_section, config.get("weights"), task.target_dim, init_seed=int(config["seed"]))
    if model_section.get("vlad_init") == "kmeans" and not config.get("weights"):
        initialize_vlad_from_images(model, task.sample_images(int(model_section["vlad_init_images"])),
                                    seed=int(config["seed"]))
    elif model_section.get("vlad_init") not in (None, "kmeans"):
        raise TrainingError(f"model.vlad_init must be null or 'kmeans', got {model_section['vlad_init']!r}")
    return model


@torch.no_grad()
def evaluate(model: torch.nn.Module, task, loader: DataLoader, device: torch.device, use_amp: bool,
             seed: int | None = None) -> dict[str, float]:
    """Validation metrics averaged over the validation set (weighted by batch size).

    `seed`: run under a forked global generator seeded with it (training's streams stay untouched).
    """
    if seed is not None:
        with seeded_global_rng(seed, device):
            return evaluate(model, task, loader, device, use_amp)
    was_training = model.training
    model.eval()
    totals: dict[str, float] = {}
    count = 0
    for batch in loader:
        size = len(next(v for v in batch.values() if isinstance(v, torch.Tensor)))
        with torch.autocast(device.type, dtype=torch.float16, enabled=use_amp):
            metrics = task.validation_metrics(model, batch, device)
        for key, value in metrics.items():
            totals[key] = totals.get(key, 0.0) + float(value) * size
        count += size
    model.train(was_training)
    return {k: v / max(count, 1) for k, v in totals.items()}


def train(config: dict, experiment: str | os.PathLike, data_root: str | os.PathLike | None = None,
          resume: bool = False, progress: bool = True) -> dict:
    """Run (or resume) the training a completed config describes; returns the training summary."""
    experiment = Path(experiment)
    distributed = DistributedContext.from_env()
    device = resolve_training_device(config.get("device", "auto"), distributed)
    existing = latest_checkpoint(experiment)
    if existing is not None and not resume:
        raise TrainingError(f"{experiment} already holds checkpoints (newest {existing.name}): pass --resume to "
                            "continue that run, or choose another experiment folder")
    payload = None
    if resume:
        if existing is None:
            logger.warning("%s: no checkpoint to resume from; starting a new run", experiment)
        else:
            payload = read_training_checkpoint(existing)
    experiment.mkdir(parents=True, exist_ok=True)
    with _FileLog(experiment / "log.txt") if distributed.is_main else contextlib.nullcontext():
        return _train(config, experiment, data_root, payload, existing, distributed, device, progress)


def _train(config, experiment, data_root, payload, checkpoint_file, distributed, device, progress) -> dict:
    model_section = config["model"]
    seed = int(config["seed"])
    seed_everything(seed + distributed.rank)
    task = make_task(config, data_root)
    model = _build_or_restore_model(config, task, payload)
    if task.target_dim is not None and model.descriptor_dim != task.target_dim:
        raise TrainingError(f"{model.name} gives {model.descriptor_dim}-D descriptors but the teacher's are "
                            f"{task.target_dim}-D: set model.reduction_dim to {task.target_dim} (or 'auto')")
    train_vlad = model_section.get("train_vlad", True) and model_section.get("train_attention", True)
    frozen = configure_trainable(model, bool(model_section["train_backbone"]), bool(train_vlad))
    model.to(device)
    trainable, total = count_parameters(model)
    use_amp = bool(config.get("amp", True)) and device.type == "cuda"
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    # learning_rate_at's arguments after the iteration (positional: tests wrap it with *args).
    schedule = (model_section["learning_rate"], model_section["learning_rate_step"],
                model_section.get("learning_rate_schedule", "step"), int(model_section.get("warmup_iter") or 0),
                int(config["train_iter"]))
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad],
                                 lr=learning_rate_at(0, *schedule),
                                 weight_decay=float(model_section.get("weight_decay") or 0.0))
    scaler = torch.amp.GradScaler("cuda") if use_amp else None
    streams = TrainingStreams(seed, distributed.rank)
    start = 0
    train_iter = int(config["train_iter"])
    batch_size = int(model_section["batch_size"])
    sampler_position = 0
    if payload is not None:
        optimizer.load_state_dict(payload["optimizer"])
        if scaler is not None and payload.get("scaler"):
            scaler.load_state_dict(payload["scaler"])
        per_rank = payload.get("rng_per_rank") or []
        state = per_rank[distributed.rank] if len(per_rank) == distributed.world_size else payload["rng"]
        set_rng_state(state)
        start = int(payload["iteration"])
        if state.get("streams"):
            streams.load_state_dict(state["streams"])
        else:  # a version 1 checkpoint: its augmentation drew from the global generator
            logger.warning("%s predates the checkpointed random streams: the resumed run will not repeat the "
                           "augmentation the uninterrupted run would have drawn", checkpoint_file)
        stored_position = payload.get("sampler_position")
        sampler_position = int(stored_position) if stored_position is not None else start * batch_size
        logger.info("resuming %s from iteration %d (%s)", experiment, start, checkpoint_file.name)
    workers = int(config["data"].get("num_workers", 0))
    sampler = InfiniteShuffledSampler(len(task.train_dataset), seed=seed, start=sampler_position,
                                      rank=distributed.rank, world_size=distributed.world_size)
    loader = DataLoader(task.train_dataset, batch_size=batch_size, sampler=sampler, num_workers=workers,
                        collate_fn=collate, pin_memory=device.type == "cuda", drop_last=True,
                        worker_init_fn=ignore_sigint_in_worker if workers else None,
                        persistent_workers=False, prefetch_factor=2 if workers else None,
                        # Its own generator (worker base seeds): creating the iterator must not draw
                        # from the global generator, whose restored state a resumed run relies on.
                        generator=streams.worker_generator(sampler_position))
    net = model
    if distributed.enabled:
        from torch.nn.parallel import DistributedDataParallel

        net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    writer = None
    if distributed.is_main:
        from torch.utils.tensorboard import SummaryWriter

        atomic_write_text(experiment / "config.yaml", dump_config(config))
        writer = SummaryWriter(str(experiment), purge_step=start if payload is not None else None)
    logger.info("training %s on %s: %d of %d parameters trainable, batch %d, %d iterations%s", model.name, device,
                trainable, total, batch_size, train_iter,
                f", {distributed.world_size} processes" if distributed.enabled else "")
    # Validation results and logged losses so far travel in the checkpoints, so a resumed run reports
    # whole curves; so do the loss sums of the current log interval.
    extra = (payload or {}).get("extra", {})
    history = list(extra.get("validation", []))
    training_log = list(extra.get("training_log", []))
    running: dict[str, float] = {k: float(v) for k, v in (extra.get("running") or {}).items()}
    running_count = int(extra.get("running_count") or 0)
    regularizer = float(model_section.get("proj_regularizer") or 0.0)
    interval = {k: int(config[k]) if config.get(k) else 0
                for k in ("validation_interval", "save_interval", "log_interval")}

    last_validated = [-1]  # the same on every process (history is only kept by the main one)

    def validate(iteration: int) -> dict:
        last_validated[0] = iteration
        metrics = {}
        if distributed.is_main:
            validation_loader = DataLoader(task.validation_dataset, batch_size=int(model_section["eval_batch_size"]),
                                           shuffle=False, num_workers=0, collate_fn=collate,
                                           generator=streams.validation_generator(iteration))
            metrics = evaluate(model, task, validation_loader, device, use_amp,
                               seed=streams.validation_seed(iteration))
        if distributed.is_main:
            for key, value in metrics.items():
                writer.add_scalar(f"validation/{key}", value, iteration)
            writer.flush()
            history.append({"iteration": iteration, **metrics})
            logger.info("iteration %d: validation %s", iteration,
                        ", ".join(f"{k} {v:.5f}" for k, v in metrics.items()))
        if distributed.enabled:
            torch.distributed.barrier()
        return metrics

    def save(iteration: int) -> Path | None:
        per_rank = None
        if distributed.enabled:  # every process's random state, so that each resumes its own stream
            per_rank = [None] * distributed.world_size
            torch.distributed.all_gather_object(per_rank, {**rng_state(), "streams": streams.state_dict()})
        if not distributed.is_main:
            return None
        path = save_training_checkpoint(experiment, iteration, model, optimizer, scaler, config,
                                        keep=int(config.get("keep_checkpoints") or 0) or None,
                                        extra={"validation": history, "training_log": training_log,
                                               "running": dict(running), "running_count": running_count},
                                        rng_per_rank=per_rank, streams=streams.state_dict(),
                                        sampler_position=sampler_position + (iteration - start) * batch_size)
        logger.info("checkpoint %s written", path)
        return path

    if start == 0 and interval["validation_interval"]:
        validate(0)
    iteration = start
    step_times: list[float] = []
    stopped_by = ""
    last_saved = start if payload is not None else -1
    bar = tqdm(total=train_iter, initial=start, desc="training", unit="it",
               disable=not (progress and distributed.is_main))
    data_iter = iter(loader)
    try:
        with StopRequest() as stop:
            while iteration < train_iter:
                batch = next(data_iter)
                t0 = time.perf_counter()
                lr = learning_rate_at(iteration, *schedule)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                set_train_mode(model, frozen)
                augmentation_seed = streams.next_augmentation_seed()
                with torch.autocast(device.type, dtype=torch.float16, enabled=use_amp):
                    loss, metrics = task.loss(net, batch, device, augment=True, augmentation_seed=augmentation_seed)
                if regularizer:
                    loss = loss + 0.5 * regularizer * sum(w.float().pow(2).sum() for w in _reduction_weights(model))
                if not torch.isfinite(loss):
                    raise TrainingError(f"the loss became {float(loss)} at iteration {iteration}: lower "
                                        "model.learning_rate or check the teacher descriptors")
                optimizer.zero_grad(set_to_none=True)
                if scaler is not None:
                    scaler.scale(loss).backward()
                    scaler.step(optimizer)
                    scaler.update()
                else:
                    loss.backward()
                    optimizer.step()
                iteration += 1
                step_times.append(time.perf_counter() - t0)
                for key, value in metrics.items():
                    running[key] = running.get(key, 0.0) + float(value)
                running_count += 1
                bar.update(1)
                if interval["log_interval"] and iteration % interval["log_interval"] == 0:
                    means = {key: value / running_count for key, value in running.items()}
                    training_log.append({"iteration": iteration, **means, "learning_rate": lr})
                    if distributed.is_main:
                        for key, value in means.items():
                            writer.add_scalar(f"training/{key}", value, iteration)
                        writer.add_scalar("training/learning_rate", lr, iteration)
                        bar.set_postfix(loss=f"{means['loss']:.4f}")
                    running, running_count = {}, 0
                if interval["validation_interval"] and iteration % interval["validation_interval"] == 0:
                    validate(iteration)
                if interval["save_interval"] and iteration % interval["save_interval"] == 0:
                    save(iteration)
                    last_saved = iteration
                requested = stop.requested
                if distributed.enabled:  # every process stops at the same iteration
                    flag = torch.tensor([float(requested)], device=device)
                    torch.distributed.all_reduce(flag)
                    requested = bool(flag.item())
                if requested:
                    stopped_by = stop.signal_name or "a signal"
                    break
    finally:
        bar.close()
    # The stop path only saves: validating would delay the stop and add a point the uninterrupted run lacks.
    if interval["validation_interval"] and last_validated[0] != iteration and not stopped_by:
        validate(iteration)
    if last_saved != iteration:
        save(iteration)
    result = {"experiment": str(experiment), "rank": distributed.rank, "model": model.name, "iteration": iteration,
              "train_iter": train_iter,
              "started_at": start, "stopped_by": stopped_by or None, "device": str(device),
              "seconds_per_iteration": float(np.median(step_times)) if step_times else None,
              "validation": history, "training_log": training_log}
    if distributed.is_main:
        final_path = save_checkpoint(model.cpu(), experiment / "model.pt", provenance={
            "experiment": str(experiment), "iteration": iteration,
            "validation": history[-1] if history else None})
        writer.close()
        atomic_write_text(experiment / "training_summary.json", to_json_text(result, indent=2))
        result["model_path"] = str(final_path)
        checkpoints = list_checkpoints(experiment)
        result["checkpoint"] = str(checkpoints[-1][1]) if checkpoints else None
    if distributed.enabled:
        torch.distributed.barrier()
    return result


__all__ = ["train", "evaluate", "learning_rate_at", "TrainingError", "DistributedContext", "StopRequest"]
