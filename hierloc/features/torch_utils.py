"""Loading network weights for local features from hierloc's weight registry, with exact key checks."""

from __future__ import annotations

import re

import torch

from ..models.weights import resolve_weights


def read_weights(name_or_path: str) -> tuple[dict, str]:
    """(state dict, source path) of a registry name or a file; never downloads."""
    path = resolve_weights(name_or_path)
    return torch.load(path, map_location="cpu", weights_only=True), str(path)


def load_state_dict(module: torch.nn.Module, state_dict: dict, source: str, derived: tuple[str, ...] = (),
                    unused: str | None = None) -> None:
    """Load weights; only `derived` buffers (rebuilt by the module) may be missing,
    only keys matching `unused` extra."""
    result = module.load_state_dict(state_dict, strict=False)
    missing = [k for k in result.missing_keys if k not in derived]
    unexpected = [k for k in result.unexpected_keys if unused is None or not re.fullmatch(unused, k)]
    if missing or unexpected:
        raise RuntimeError(f"{source}: weights do not fit {type(module).__name__}: missing {missing[:5]}, "
                           f"unexpected {unexpected[:5]}")
