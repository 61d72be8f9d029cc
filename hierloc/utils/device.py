"""Device selection and the mixed-precision policy, decided in one place for every network hierloc runs.

- `resolve_device("auto" | "cpu" | "cuda" | "cuda:N" | "mps")`: "auto" picks CUDA, else the CPU (MPS
  only when asked for: not every operator of the local feature networks runs there); a device that is
  asked for but absent is a clear error (never a silent CPU fallback).
- `resolve_precision(precision, device)`: "auto" is fp16 on CUDA (tensor cores, every CUDA card since
  Volta) and fp32 elsewhere; bf16 on CUDA needs a card that has it (Ampere and later).
- `autocast(device, precision)`: the autocast context for a forward pass (a no-op for fp32).
- `resolve_runtime(runtime, device)`: which engine runs a global descriptor network ("torch",
  "onnxruntime", "openvino"); "auto" is `CPU_DEFAULT_RUNTIME` on the CPU and torch elsewhere.

Why fp32 stays the CPU default: NetVLAD sums residuals `cluster - feature` that cancel most of
their magnitude, so a relative error of 0.4 % per value in a bf16 trunk (8-bit mantissa) grows to
descriptors at cosine 0.5-0.9 to the fp32 network on real images (bench/inference.py measures it:
`min_cosine` per variant over every image of the shared data; an untrained network hides this, its
descriptors being mostly the reduction layer's bias). A variant may become a default only when its
minimum cosine to the fp32 network is >= `DESCRIPTOR_COSINE_TARGET` on all of them, so the CPU
speed-up comes from a faster fp32 engine: onnxruntime on an ONNX export whose TF-SAME padding is
fused into the convolutions (cosine 1.0000, about 2x PyTorch's traced network). It is opt-in
(`runtime="onnxruntime"`, or export once with `hierloc export-model` and pass the .onnx file as the
model) because exporting the network takes seconds to tens of seconds at the first run; change
`CPU_DEFAULT_RUNTIME` to make it the default.
"""

from __future__ import annotations

import contextlib
import importlib.util
from typing import ContextManager

import torch

DEVICE_SPELLINGS = ("auto", "cpu", "cuda", "cuda:N", "mps")
PRECISIONS = ("fp32", "fp16", "bf16")
PRECISION_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
RUNTIMES = ("torch", "onnxruntime", "openvino")
# Smallest cosine to the fp32 network, over every image of the shared data, for a faster variant to
# be offered as a default (bench/inference.py reports each variant's minimum).
DESCRIPTOR_COSINE_TARGET = 0.999
# The engine "auto" picks for global descriptors on the CPU ("torch": no export at start-up; see above).
CPU_DEFAULT_RUNTIME = "torch"


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """The torch device for a user's spelling; absent accelerators are a ValueError/RuntimeError, never a fallback.

    'auto': CUDA if available, else the CPU. 'cuda' is the current CUDA device, 'cuda:N' the N-th
    (checked against the number of devices), 'mps' Apple's GPU.
    """
    spelling = str(device).strip().lower()
    if spelling == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(spelling)
    except RuntimeError:
        raise ValueError(f"unknown device {device!r}: use one of {', '.join(DEVICE_SPELLINGS)}") from None
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError(f"--device {device} was asked for but no CUDA device is available")
        count = torch.cuda.device_count()
        if resolved.index is not None and not 0 <= resolved.index < count:
            raise RuntimeError(f"--device {device}: there are {count} CUDA devices (cuda:0 .. cuda:{count - 1})")
    elif resolved.type == "mps":
        if not _mps_available():
            raise RuntimeError(f"--device {device} was asked for but MPS (Apple GPU) is not available")
    elif resolved.type != "cpu":
        raise ValueError(f"unsupported device {device!r}: use one of {', '.join(DEVICE_SPELLINGS)}")
    return resolved


def device_name(device: torch.device) -> str:
    """Human name of a device: the card's name on CUDA, else the device type."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return device.type


def bf16_supported(device: torch.device) -> bool:
    """Whether bf16 arithmetic runs natively (CUDA: Ampere or later; the CPU and MPS always emulate at worst)."""
    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    return True


def resolve_precision(precision: str, device: torch.device) -> str:
    """'auto' -> fp16 on CUDA, fp32 on the CPU and MPS; explicit values are checked against the device."""
    if precision == "auto":
        return "fp16" if device.type == "cuda" else "fp32"
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}: use one of {', '.join(PRECISIONS)} or auto")
    if precision == "bf16" and not bf16_supported(device):
        raise RuntimeError(f"precision bf16 is not supported by {device_name(device)}: use fp16 or fp32")
    return precision


def precision_dtype(precision: str) -> torch.dtype:
    """torch dtype of a precision name."""
    if precision not in PRECISION_DTYPES:
        raise ValueError(f"unknown precision {precision!r}: use one of {', '.join(PRECISIONS)}")
    return PRECISION_DTYPES[precision]


def autocast(device: torch.device, precision: str) -> ContextManager:
    """Autocast context for a forward pass at `precision` on `device` (a no-op context for fp32)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=precision_dtype(precision))


def runtime_available(runtime: str) -> bool:
    """Whether the engine's Python package is installed (torch always is)."""
    if runtime == "torch":
        return True
    return importlib.util.find_spec(runtime) is not None


def resolve_runtime(runtime: str, device: torch.device, precision: str) -> str:
    """The engine that runs a global descriptor network.

    'auto': `CPU_DEFAULT_RUNTIME` for fp32 on the CPU when installed (else torch); torch on every
    other device and precision. The ONNX runtimes run fp32 on the CPU only (their low-precision
    variants miss the cosine target, see the module docstring); asking for them elsewhere is an error.
    """
    if runtime == "auto":
        if device.type == "cpu" and precision == "fp32" and runtime_available(CPU_DEFAULT_RUNTIME):
            return CPU_DEFAULT_RUNTIME
        return "torch"
    if runtime not in RUNTIMES:
        raise ValueError(f"unknown runtime {runtime!r}: use one of {', '.join(RUNTIMES)} or auto")
    if runtime != "torch":
        if device.type != "cpu" or precision != "fp32":
            raise ValueError(f"runtime {runtime} runs fp32 on the CPU only (asked: {precision} on {device})")
        if not runtime_available(runtime):
            raise RuntimeError(f"runtime {runtime} is not installed (pip install {runtime})")
    return runtime
