"""TF-slim MobileNetV2 variables -> hierloc's (torchvision-named) MobileNetV2, at any depth multiplier.

TF-slim scopes, in order: `Conv` (stem, endpoint layer_1), `expanded_conv` (no expansion conv),
`expanded_conv_1` .. `expanded_conv_16` (each `expand`, `depthwise`, `project`), `Conv_1` (1x1 to
1280 * depth, layer_19) and, in ImageNet checkpoints, `Logits/Conv2d_1c_1x1` (1x1 conv to 1001
classes, class 0 = background). Every conv is followed by `BatchNorm` (gamma, beta, moving_mean,
moving_variance; TF-slim's epsilon 0.001) and, except `project`, ReLU6; padding is TF 'SAME'.
hierloc's torchvision layout: `features.0` = Conv, `features.1..17` = the blocks, `features.18` =
Conv_1; in a block `conv.0` = expand (when present), then depthwise, then the project conv + BN.

`hierloc convert tf-slim-mobilenetv2` turns an ImageNet checkpoint (`mobilenet_v2_<depth>_224.ckpt`)
into a torchvision-layout state dict that `MobileNetVLADConfig(backbone_init=PATH, tf_same_padding=
True, bn_eps=1e-3)` loads as the trunk initialisation, as the original training started from.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ...utils.io import atomic_path
from ..backbones.mobilenetv2 import INVERTED_RESIDUAL_SETTING, NUM_ENDPOINTS, MobileNetV2, make_divisible
from ..checkpoint import CHECKSUM_KEY, checksummed_tensors, tensors_sha256
from .common import (
    ConversionError,
    StateBuilder,
    conv_hwio_to_oihw,
    dense_io_to_oi,
    depthwise_hwim_to_oihw,
    make_provenance,
)
from .tf_checkpoint import TensorBundleReader

SCOPE = "MobilenetV2"
BN_EPSILON = 1e-3
EMA_SUFFIX = "/ExponentialMovingAverage"
LOGITS = "Logits/Conv2d_1c_1x1"
# Depth multipliers of the published TF-slim checkpoints, preferred when several fit the shapes.
PUBLISHED_DEPTHS = (0.35, 0.5, 0.75, 1.0, 1.3, 1.4)
BOOKKEEPING_VARIABLES = ("global_step",)


def layer_scope(index: int) -> str:
    """TF-slim scope of trunk layer `index` (0-based: 0 = layer_1 = Conv, 18 = layer_19 = Conv_1)."""
    if index == 0:
        return "Conv"
    if index == NUM_ENDPOINTS - 1:
        return "Conv_1"
    return "expanded_conv" if index == 1 else f"expanded_conv_{index - 1}"


def block_expansions() -> list[int]:
    """Expansion factor of each of the 17 inverted-residual blocks."""
    return [t for t, _, n, _ in INVERTED_RESIDUAL_SETTING for _ in range(n)]


def trunk_layers_present(names: set[str], scope: str = SCOPE) -> int:
    """How many trunk layers (1..19) a checkpoint holds, checking that they are consecutive."""
    present = [i for i in range(NUM_ENDPOINTS) if any(n.startswith(f"{scope}/{layer_scope(i)}/") for n in names)]
    if not present or present != list(range(len(present))):
        raise ConversionError(f"the {scope} trunk layers are not a prefix of layer_1 .. layer_19 "
                              f"(found {[f'layer_{i + 1}' for i in present]})")
    return len(present)


def infer_depth_multiplier(shapes: dict[str, tuple[int, ...]], scope: str = SCOPE) -> float:
    """The depth multiplier that gives every layer width in the checkpoint (a published one if several do)."""
    stem = shapes.get(f"{scope}/Conv/weights")
    if stem is None:
        raise ConversionError(f"no {scope}/Conv/weights: not a TF-slim MobileNetV2 checkpoint")
    widths = [(32, stem[-1])]
    for block, (_, c, n, _) in enumerate((s for s in INVERTED_RESIDUAL_SETTING for _ in range(s[2]))):
        project = shapes.get(f"{scope}/{layer_scope(block + 1)}/project/weights")
        if project is not None:
            widths.append((c, project[-1]))
    candidates = list(PUBLISHED_DEPTHS) + [round(x, 3) for x in np.arange(0.05, 4.0, 0.005)]
    for depth in candidates:
        if all(make_divisible(base * depth) == width for base, width in widths):
            return float(depth)
    raise ConversionError(f"no depth multiplier gives the layer widths {[w for _, w in widths]}")


def map_trunk(builder: StateBuilder, tensors: dict[str, np.ndarray], num_layers: int, key_prefix: str = "",
              scope: str = SCOPE) -> None:
    """Copy trunk layers 0..num_layers-1 from TF-slim names into `builder` (keys `{key_prefix}features.*`)."""
    expansions = block_expansions()

    def conv_bn(tf_scope: str, conv_key: str, bn_key: str, depthwise: bool = False) -> None:
        weights = f"{tf_scope}/depthwise_weights" if depthwise else f"{tf_scope}/weights"
        builder.take(tensors, weights, f"{conv_key}.weight", depthwise_hwim_to_oihw if depthwise else conv_hwio_to_oihw)
        bn = f"{tf_scope}/BatchNorm"
        if f"{bn}/gamma" in tensors:
            builder.take(tensors, f"{bn}/gamma", f"{bn_key}.weight")
        else:  # slim.batch_norm(scale=False): no gamma variable, the scale is 1
            builder.fill(f"{bn_key}.weight", 1.0, f"{bn}/gamma absent (BatchNorm without scale)")
        builder.take(tensors, f"{bn}/beta", f"{bn_key}.bias")
        builder.take(tensors, f"{bn}/moving_mean", f"{bn_key}.running_mean")
        builder.take(tensors, f"{bn}/moving_variance", f"{bn_key}.running_var")

    for index in range(num_layers):
        tf_scope = f"{scope}/{layer_scope(index)}"
        key = f"{key_prefix}features.{index}"
        if index == 0 or index == NUM_ENDPOINTS - 1:
            conv_bn(tf_scope, f"{key}.0", f"{key}.1")
            continue
        sub = 0
        if expansions[index - 1] != 1:
            conv_bn(f"{tf_scope}/expand", f"{key}.conv.0.0", f"{key}.conv.0.1")
            sub = 1
        conv_bn(f"{tf_scope}/depthwise", f"{key}.conv.{sub}.0", f"{key}.conv.{sub}.1", depthwise=True)
        conv_bn(f"{tf_scope}/project", f"{key}.conv.{sub + 1}", f"{key}.conv.{sub + 2}")


def select_ema(names: list[str], use_ema: bool) -> tuple[dict[str, str], dict[str, str]]:
    """(model variable -> checkpoint tensor to read, ignored tensor -> reason) for EMA-averaged checkpoints."""
    chosen, ignored = {}, {}
    for name in names:
        if name.endswith(EMA_SUFFIX):
            continue
        ema = name + EMA_SUFFIX
        if ema in names and use_ema:
            chosen[name] = ema
            ignored[name] = "raw value; its exponential moving average is used (as TF-slim's evaluation does)"
        else:
            chosen[name] = name
            if ema in names:
                ignored[ema] = "exponential moving average; the raw value is used (--no-ema)"
    for name in names:
        if name.endswith(EMA_SUFFIX) and name[: -len(EMA_SUFFIX)] not in names:
            ignored[name] = "moving average of a variable the checkpoint lacks"
    return chosen, ignored


def convert_slim_mobilenetv2(
    source: str | os.PathLike,
    output: str | os.PathLike,
    use_ema: bool = True,
    include_logits: bool = True,
    verify: bool = True,
) -> dict[str, Any]:
    """Convert a TF-slim MobileNetV2 checkpoint into a torchvision-layout state dict at `output`.

    Returns the provenance stored in the file (under the key "provenance").
    """
    reader = TensorBundleReader(source, verify=verify)
    names = reader.names()
    chosen, ignored = select_ema(names, use_ema)
    tensors = {model_name: reader.read(stored) for model_name, stored in chosen.items()
               if model_name.startswith(f"{SCOPE}/")}
    shapes = {n: tuple(t.shape) for n, t in tensors.items()}
    depth = infer_depth_multiplier(shapes)
    num_layers = trunk_layers_present(set(tensors))
    logits_name = f"{SCOPE}/{LOGITS}/weights"
    has_logits = logits_name in tensors and include_logits and num_layers == NUM_ENDPOINTS
    last = shapes.get(f"{SCOPE}/Conv_1/weights", (None,))[-1]
    trunk = MobileNetV2(depth, f"layer_{num_layers}", tf_same_padding=True, bn_eps=BN_EPSILON, last_channels=last,
                        num_classes=shapes[logits_name][-1] if has_logits else None)
    builder = StateBuilder(str(reader.prefix), dict(trunk.state_dict()))
    map_trunk(builder, tensors, num_layers)
    if has_logits:
        builder.take(tensors, logits_name, "classifier.1.weight", dense_io_to_oi)
        builder.take(tensors, f"{SCOPE}/{LOGITS}/biases", "classifier.1.bias")
    state = builder.finish()
    for name in chosen:
        if chosen[name] not in builder.used and name not in builder.used:
            if name in BOOKKEEPING_VARIABLES:
                ignored[chosen[name]] = "training step counter"
            elif name.startswith(f"{SCOPE}/Logits/"):
                ignored[chosen[name]] = "ImageNet classifier (not kept: --no-logits or a cut trunk)"
            else:
                raise ConversionError(f"{reader.prefix}: variable {chosen[name]!r} is not part of a TF-slim "
                                      "MobileNetV2: refusing to drop it silently")
    files = [reader.index_path] + [reader.shard_path(i) for i in range(reader.num_shards)]
    provenance = make_provenance(
        "tf-slim-mobilenetv2", source, files, depth_multiplier=depth, trunk_layers=num_layers,
        last_channels=last, logits=bool(has_logits), exponential_moving_average=use_ema,
        variables=len(names), ignored=ignored, filled=builder.filled,
        usage="MobileNetVLADConfig(depth_multiplier=%g, tf_same_padding=True, bn_eps=0.001, backbone_init=PATH)"
              % depth,
    )
    payload: dict[str, Any] = {k: v.clone() for k, v in state.items()}
    payload["provenance"] = provenance
    payload[CHECKSUM_KEY] = tensors_sha256(checksummed_tensors(payload))  # verified by read_checkpoint
    output = Path(output)
    with atomic_path(output) as tmp:
        torch.save(payload, tmp)
    return provenance
