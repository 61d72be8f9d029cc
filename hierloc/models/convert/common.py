"""What every converter shares: layout transposes, the name -> key mapping bookkeeping, provenance."""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from ... import __version__
from ...utils.hashing import file_sha256

# Bumped whenever a converter's output for the same input changes.
CONVERTER_VERSION = 1


class ConversionError(ValueError):
    """A source model cannot be converted: unexpected variables, shapes or architecture."""


def conv_hwio_to_oihw(kernel: np.ndarray) -> np.ndarray:
    """TF/MatConvNet conv kernel [h, w, in, out] -> PyTorch [out, in, h, w]."""
    return np.ascontiguousarray(kernel.transpose(3, 2, 0, 1))


def depthwise_hwim_to_oihw(kernel: np.ndarray) -> np.ndarray:
    """TF depthwise kernel [h, w, in, multiplier] -> PyTorch grouped conv [in * multiplier, 1, h, w].

    TF's output channel c * multiplier + m is input channel c filtered by kernel[..., c, m], which is
    PyTorch's group c, output m.
    """
    h, w, cin, multiplier = kernel.shape
    return np.ascontiguousarray(kernel.transpose(2, 3, 0, 1).reshape(cin * multiplier, 1, h, w))


def dense_io_to_oi(weights: np.ndarray) -> np.ndarray:
    """TF fully connected [in, out] (or a 1x1 conv [1, 1, in, out]) -> nn.Linear [out, in]."""
    if weights.ndim == 4:
        if weights.shape[:2] != (1, 1):
            raise ConversionError(f"expected a 1x1 kernel for a fully connected layer, got {weights.shape}")
        weights = weights[0, 0]
    return np.ascontiguousarray(weights.T)


@dataclass
class StateBuilder:
    """Fill a model's state dict from source tensors, recording which source tensor went where.

    `finish()` refuses any model key left unset (BatchNorm's `num_batches_tracked` counters, which
    no source has, keep their initial value) and reports the source tensors that were not used.
    """

    source: str
    target: dict[str, torch.Tensor]
    used: dict[str, str] = field(default_factory=dict)  # source name -> target key
    filled: dict[str, str] = field(default_factory=dict)  # target key -> why it holds a default
    _set: set[str] = field(default_factory=set)

    def put(self, key: str, value: np.ndarray, source_name: str | None = None) -> None:
        """Set target `key` from `value` (already in PyTorch layout), checking the shape."""
        if key not in self.target:
            raise ConversionError(f"{self.source}: {source_name or key} maps to {key!r}, which the model lacks")
        expected = tuple(self.target[key].shape)
        if tuple(value.shape) != expected:
            raise ConversionError(f"{self.source}: {source_name or key} has shape {tuple(value.shape)} after "
                                  f"conversion, the model's {key} needs {expected}")
        array = np.ascontiguousarray(value, dtype=np.float32)
        if not np.isfinite(array).all():
            raise ConversionError(f"{self.source}: {source_name or key} contains NaN or infinity")
        self.target[key] = torch.from_numpy(array).to(self.target[key].dtype)
        self._set.add(key)
        if source_name is not None:
            self.used[source_name] = key

    def fill(self, key: str, value: float, reason: str) -> None:
        """Set target `key` to a constant the source implies but does not store."""
        self.target[key] = torch.full_like(self.target[key], value)
        self._set.add(key)
        self.filled[key] = reason

    def take(self, tensors: dict[str, np.ndarray], name: str, key: str,
             transform: Callable[[np.ndarray], np.ndarray] | None = None) -> None:
        """Set target `key` from source tensor `name`, optionally re-laid out by `transform`."""
        if name not in tensors:
            raise ConversionError(f"{self.source}: variable {name!r} is missing")
        value = tensors[name]
        self.put(key, transform(value) if transform else value, name)

    def finish(self) -> dict[str, torch.Tensor]:
        """The complete state dict, or an error naming the keys nothing filled."""
        missing = [k for k in self.target if k not in self._set and not k.endswith("num_batches_tracked")]
        if missing:
            raise ConversionError(f"{self.source}: nothing in the source for {len(missing)} model entries "
                                  f"(e.g. {missing[:3]})")
        return self.target


def file_record(path: str | os.PathLike) -> dict[str, Any]:
    """Name, size and SHA-256 of one source file (for the provenance)."""
    path = Path(path)
    return {"file": path.name, "bytes": path.stat().st_size, "sha256": file_sha256(path)}


def make_provenance(kind: str, source: str | os.PathLike, files: list[Path], **details: Any) -> dict[str, Any]:
    """Where a converted checkpoint came from: source files with hashes, converter and versions."""
    return {
        "converter": f"hierloc convert {kind}",
        "converter_version": CONVERTER_VERSION,
        "hierloc_version": __version__,
        "converted_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "source": str(source),
        "source_files": [file_record(p) for p in files],
        **details,
    }
