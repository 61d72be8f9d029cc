"""Build named models and load their weights (hierloc checkpoints or torchvision trunks)."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import torch

from .base import GlobalDescriptorModel
from .checkpoint import CheckpointError, is_hierloc_checkpoint, load_state_dict_strict, read_checkpoint
from .configs import ModelSpec, config_from_dict, get_model_spec, validate_config
from .fetch import ensure_weights
from .mobilenetvlad import MobileNetVLAD
from .netvlad import NetVLADModel
from .triplet import DelfModel, ResNetNetVLAD

MODEL_CLASSES = {"mobilenetvlad": MobileNetVLAD, "netvlad": NetVLADModel, "resnet_netvlad": ResNetNetVLAD,
                 "delf": DelfModel}
INIT_SEED = 0


def build_model(name: str, config=None, *, init_seed: int = INIT_SEED, **overrides) -> GlobalDescriptorModel:
    """Instantiate a named model with its default (or given) configuration, initial weights seeded by `init_seed`."""
    spec: ModelSpec = get_model_spec(name)
    config = dataclasses.replace(config or spec.config, **overrides)
    validate_config(spec.kind, config)  # before anything is allocated
    # Seeded so that an untrained network (or untrained head) gives reproducible descriptors.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(init_seed)
        model = MODEL_CLASSES[spec.kind](config, name=name)
    model.eval()
    return model


def load_torchvision_mobilenetv2(backbone: torch.nn.Module, state_dict: dict[str, torch.Tensor], source: str) -> None:
    """Load a torchvision MobileNetV2 state dict into a (possibly cut) trunk: every trunk key matched.

    Keys of layers beyond the cut and of the classifier are the only ones left unused.
    """
    own = backbone.state_dict()
    beyond = {k for k in state_dict if k not in own}
    not_beyond_cut = [k for k in beyond if k.startswith("features.")
                      and int(k.split(".")[1]) < len(backbone.features)]
    if not_beyond_cut:
        raise CheckpointError(f"{source}: keys inside the trunk that the model lacks: {sorted(not_beyond_cut)[:3]}")
    load_state_dict_strict(backbone, {k: v for k, v in state_dict.items() if k in own}, source)


def _load_weights_file(model: GlobalDescriptorModel, path: Path) -> dict:
    payload = read_checkpoint(path)
    if is_hierloc_checkpoint(payload):
        if payload.get("model_kind") != model.kind:
            raise CheckpointError(f"{path}: a {payload.get('model_kind')} checkpoint "
                                  f"({payload.get('model_name')}), not a {model.kind} one")
        load_state_dict_strict(model, payload["state_dict"], str(path))
        return payload
    if any(k.startswith("features.") for k in payload) and isinstance(model, MobileNetVLAD):
        load_torchvision_mobilenetv2(model.backbone, payload, str(path))
        return {"provenance": {"backbone": str(path)}}
    raise CheckpointError(f"{path}: neither a hierloc checkpoint nor a torchvision MobileNetV2 state dict")


def load_model(
    name: str,
    weights: str | os.PathLike | None = "auto",
    device: str | torch.device = "cpu",
    download: bool = True,
) -> GlobalDescriptorModel:
    """A named model ready for inference.

    `weights`: a checkpoint path or weight name; "auto" for the model's default weights (the initial
    network for a model that has none); None for the initial network. Named weights without a local
    copy are downloaded, verified and cached on first use (`hierloc.models.fetch`); when that is not
    possible (`download=False`, $HIERLOC_OFFLINE=1, no network) WeightsNotFoundError says, in one line,
    what is missing, where to put it and which command fetches it. The untrained network is never a
    silent fallback. A hierloc checkpoint's stored configuration overrides the named defaults.
    """
    spec = get_model_spec(name)
    if weights == "auto":
        weights = spec.default_weights
    if weights is not None:
        # Default weights load as an explicit path: a converted checkpoint's stored configuration
        # (e.g. trunk layers kept past the endpoint) must decide the architecture.
        path = ensure_weights(weights, download=download)
        payload = read_checkpoint(path)
        if is_hierloc_checkpoint(payload):
            kind = payload.get("model_kind")
            if kind != spec.kind:
                raise CheckpointError(f"{path}: a {kind} checkpoint ({payload.get('model_name')}), "
                                      f"not one for {name} ({spec.kind})")
            try:
                config = config_from_dict(kind, payload["config"])
            except (TypeError, ValueError) as exc:  # a damaged or hostile configuration: say which file
                raise CheckpointError(f"{path}: {exc}") from None
            model = build_model(name, config)
            load_state_dict_strict(model, payload["state_dict"], str(path))
        else:
            model = build_model(name)
            _init_backbone(model, download)
            _load_weights_file(model, path)
        return model.to(device).eval()
    model = build_model(name)
    _init_backbone(model, download)
    return model.to(device).eval()


def _init_backbone(model: GlobalDescriptorModel, download: bool = True) -> None:
    # The trunk initialisation (e.g. ImageNet MobileNetV2) is part of the initial network, fetched like any weights.
    backbone_init = getattr(model.config, "backbone_init", None)
    if backbone_init:
        path = ensure_weights(backbone_init, download=download)
        state_dict = read_checkpoint(path)
        if hasattr(model, "load_backbone_state_dict"):  # the ResNet models (hierloc.models.triplet)
            model.load_backbone_state_dict(state_dict, str(path))
        else:
            load_torchvision_mobilenetv2(model.backbone, state_dict, str(path))
