"""hierloc checkpoints: configuration + state dict + provenance, loaded without unpickling code.

A checkpoint is untrusted input: its structure is checked, its configuration is bounded
(`configs.validate_config`) before a model is built, and the SHA-256 of its tensors recorded when
hierloc wrote it (`CHECKSUM_KEY`) is verified when it is read, so a damaged file is refused instead
of giving other descriptors. Checkpoints without the record (older ones, foreign state dicts) load
unchecked.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import torch

from .. import __version__
from ..utils.hashing import arrays_sha256
from ..utils.io import atomic_path

CHECKPOINT_FORMAT = "hierloc-checkpoint"
CHECKPOINT_VERSION = 1
# Key of the SHA-256 of the checkpoint's tensors (`tensors_sha256`), written by hierloc and verified on
# load: torch does not check the bytes it reads, and a flipped bit changes descriptors silently.
# Checkpoints written before it existed (and foreign ones) have none and load unchecked.
CHECKSUM_KEY = "tensors_sha256"


class CheckpointError(RuntimeError):
    """A checkpoint file is missing, corrupt, foreign or does not fit the model."""


def save_checkpoint(model, path: str | os.PathLike, provenance: dict[str, Any] | None = None) -> Path:
    """Write `model` (a GlobalDescriptorModel) with its configuration to `path`, atomically."""
    from .configs import config_to_dict

    payload = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "hierloc_version": __version__,
        "model_name": model.name,
        "model_kind": model.kind,
        "config": config_to_dict(model.config),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "provenance": provenance or {},
    }
    payload[CHECKSUM_KEY] = tensors_sha256(payload["state_dict"])
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return path


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Load a checkpoint file safely (`weights_only=True`), with errors that name the file.

    A hierloc checkpoint's structure is checked (configuration and tensors of the right types), and a
    recorded tensor checksum (`CHECKSUM_KEY`) must match the tensors read.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols of foreign files: not the user's concern
            warnings.simplefilter("ignore")
            payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for truncated or foreign files
        # torch's messages run over many lines (advice on weights_only); the first says what failed.
        first = next((line.strip() for line in str(exc).splitlines() if line.strip()), "")
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({type(exc).__name__}: "
                              f"{first[:300]})") from None
    if not isinstance(payload, dict):
        raise CheckpointError(f"{path}: expected a dict of tensors, found {type(payload).__name__}")
    if is_hierloc_checkpoint(payload):
        _check_structure(payload, path)
    if CHECKSUM_KEY in payload:
        verify_checksum(payload, path)
    return payload


def checksummed_tensors(payload: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The tensors a checkpoint's checksum covers: its state dict, or a plain state dict's top-level tensors."""
    if is_hierloc_checkpoint(payload):
        return payload["state_dict"]
    return {k: v for k, v in payload.items() if isinstance(v, torch.Tensor)}


def verify_checksum(payload: dict[str, Any], source: str | os.PathLike) -> None:
    """Raise CheckpointError unless the tensors match the checksum recorded when the file was written."""
    expected = payload.get(CHECKSUM_KEY)
    if not isinstance(expected, str):
        raise CheckpointError(f"{source}: its {CHECKSUM_KEY} record is a {type(expected).__name__}, not a digest")
    if tensors_sha256(checksummed_tensors(payload)) != expected:
        raise CheckpointError(f"{source}: its tensors do not match the checksum recorded when it was written "
                              "(the file is damaged)")


def _check_structure(payload: dict[str, Any], path: Path) -> None:
    for key, kind in (("model_kind", str), ("config", dict), ("state_dict", dict)):
        if not isinstance(payload.get(key), kind):
            raise CheckpointError(f"{path}: '{key}' is a {type(payload.get(key)).__name__}, not a {kind.__name__} "
                                  "(damaged checkpoint)")
    bad = [k for k, v in payload["state_dict"].items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"{path}: state_dict entry {bad[0]!r} is not a named tensor (damaged checkpoint)")


def tensors_sha256(tensors: dict[str, torch.Tensor]) -> str:
    """SHA-256 of named tensors (names, dtypes, shapes and values).

    A fingerprint of weights independent of the file they came in: the same network saved as a
    checkpoint, kept in memory or exported records the same value.
    """
    arrays = {}
    for name, tensor in tensors.items():
        tensor = tensor.detach().cpu()
        # Bytes in logical order whatever the memory format (channels-last) or dtype (bf16 has no numpy type).
        flat = tensor.clone(memory_format=torch.contiguous_format).reshape(-1).view(torch.uint8)
        arrays[f"{name}|{tensor.dtype}|{tuple(tensor.shape)}"] = flat.numpy()
    return arrays_sha256(arrays)


def is_hierloc_checkpoint(payload: dict[str, Any]) -> bool:
    """True when `payload` was written by `save_checkpoint`."""
    return payload.get("format") == CHECKPOINT_FORMAT


def load_state_dict_strict(module: torch.nn.Module, state_dict: dict[str, torch.Tensor], source: str) -> None:
    """Load with every key matched and every shape equal, or raise naming the offending keys."""
    own = module.state_dict()
    missing = sorted(set(own) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(own))
    mismatched = [
        f"{k}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own if k in state_dict and tuple(state_dict[k].shape) != tuple(own[k].shape)
    ]
    if missing or unexpected or mismatched:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} keys (e.g. {missing[:3]})")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)} keys (e.g. {unexpected[:3]})")
        if mismatched:
            parts.append(f"{len(mismatched)} shape mismatches (e.g. {mismatched[:2]})")
        raise CheckpointError(f"{source}: does not fit the model: " + "; ".join(parts))
    module.load_state_dict(state_dict, strict=True)
