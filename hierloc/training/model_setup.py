"""The network to train: built from the `model` config, initialised, with parts frozen as asked."""

from __future__ import annotations

import dataclasses
import logging

import torch
from torch import nn

from ..models.base import GlobalDescriptorModel
from ..models.checkpoint import is_hierloc_checkpoint, load_state_dict_strict, read_checkpoint
from ..models.configs import config_from_dict, get_model_spec
from ..models.loading import _init_backbone, _load_weights_file, build_model
from ..models.weights import resolve_weights
from .config import architecture_overrides

logger = logging.getLogger(__name__)

# Architecture fields that set the output size, filled from the teacher with "auto".
OUTPUT_DIM_FIELDS = ("reduction_dim", "whitening_dim")


def _apply_auto(overrides: dict, target_dim: int | None, model_name: str) -> dict:
    out = dict(overrides)
    for key, value in overrides.items():
        if value == "auto":
            if key not in OUTPUT_DIM_FIELDS:
                raise ValueError(f"model.{key}: 'auto' is only accepted for {', '.join(OUTPUT_DIM_FIELDS)}")
            if target_dim is None:
                raise ValueError(f"model.{key}: 'auto' needs teacher descriptors to take the size from")
            out[key] = int(target_dim)
            logger.info("%s: %s set to the teacher's descriptor size %d", model_name, key, target_dim)
    return out


def build_training_model(model_section: dict, weights: str | None = None,
                         target_dim: int | None = None, init_seed: int = 0) -> GlobalDescriptorModel:
    """The named model with the config's architecture overrides and its initial weights.

    `weights`: a hierloc checkpoint (whole model; its stored architecture must agree with the
    overrides) or another file the model accepts (e.g. a torchvision trunk); None: initialisation
    seeded with `init_seed` (the run's seed) plus the configured `backbone_init` trunk.
    """
    name = model_section["name"]
    spec = get_model_spec(name)
    overrides = _apply_auto(architecture_overrides(model_section), target_dim, name)
    fields = {f.name for f in dataclasses.fields(spec.config)}
    if weights:
        path = resolve_weights(weights)
        payload = read_checkpoint(path)
        if is_hierloc_checkpoint(payload):
            if payload.get("model_kind") != spec.kind:
                raise ValueError(f"{path}: a {payload.get('model_kind')} checkpoint, not one for {name} ({spec.kind})")
            stored = config_from_dict(spec.kind, payload["config"])
            conflicts = {k: (getattr(stored, k), v) for k, v in overrides.items()
                         if k in fields and _normalize(getattr(stored, k)) != _normalize(v)}
            if conflicts:
                raise ValueError(f"{path}: its architecture differs from the config: "
                                 + ", ".join(f"{k} = {a!r} in the checkpoint, {b!r} in the config"
                                             for k, (a, b) in conflicts.items()))
            model = build_model(name, stored)
            load_state_dict_strict(model, payload["state_dict"], str(path))
            logger.info("initial weights: %s", path)
            return model
    model = build_model(name, dataclasses.replace(spec.config, **overrides), init_seed=int(init_seed))
    _init_backbone(model)
    if weights:
        _load_weights_file(model, path)
        logger.info("initial weights: %s", path)
    return model


def _normalize(value):
    return list(value) if isinstance(value, tuple) else value


def aggregation_parameters(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """Pooling parameters (VLAD or attention) other than the final dimensionality reduction."""
    return [(n, p) for n, p in model.aggregation.named_parameters() if not n.startswith("reduction.")]


def configure_trainable(model: GlobalDescriptorModel, train_backbone: bool = True,
                        train_vlad: bool = True) -> list[nn.Module]:
    """Freeze the trunk and/or the pooling (the original's `train_backbone`, `train_vlad`/`train_attention`).

    Returns the frozen modules, which must stay in eval mode (their BatchNorm statistics fixed)
    while the rest trains. The dimensionality reduction is always trained, as in the original.
    """
    frozen: list[nn.Module] = []
    if not train_backbone:
        for p in model.backbone.parameters():
            p.requires_grad_(False)
        frozen.append(model.backbone)
    if not train_vlad:
        for _, p in aggregation_parameters(model):
            p.requires_grad_(False)
        frozen.extend(m for n, m in model.aggregation.named_children() if n != "reduction")
    if not any(p.requires_grad for p in model.parameters()):
        raise ValueError("every parameter is frozen: nothing to train")
    return frozen


def set_train_mode(model: nn.Module, frozen: list[nn.Module]) -> None:
    """model.train(), except frozen parts, which keep their BatchNorm statistics."""
    model.train()
    for module in frozen:
        module.eval()


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, total


@torch.no_grad()
def initialize_vlad_from_images(model: GlobalDescriptorModel, images: list[torch.Tensor], seed: int = 0) -> None:
    """k-means VLAD centres from local features of `images` (only for VLAD pooling)."""
    from ..models.aggregation import MatConvNetVLAD, NetVLAD, initialize_vlad_clusters

    if not isinstance(model.aggregation, (NetVLAD, MatConvNetVLAD)):
        raise ValueError(f"vlad_init: kmeans needs a VLAD layer; {model.name} pools with "
                         f"{type(model.aggregation).__name__}")
    initialize_vlad_clusters(model, images, features_per_image=200, seed=seed)
