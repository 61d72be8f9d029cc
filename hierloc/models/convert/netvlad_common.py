"""Build hierloc's `netvlad` model (VGG16 + MatConvNet VLAD + whitening) from the published arrays.

Both published forms store the same arrays: 13 VGG16 convs ([h, w, in, out] + bias), the soft
assignment [D, K] (a 1x1 conv, no bias), the *negated* cluster centres C [D, K] (MatConvNet and
netvlad_tf_open compute a * (x + C)), the whitening PCA [K * D, N] + bias [N] whose input is the
VLAD flattened dimension-major (index d * K + k), and the average RGB colour subtracted first.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
from torch import nn

from ..checkpoint import load_state_dict_strict, save_checkpoint
from ..configs import NetVLADConfig, config_to_dict
from .common import ConversionError, StateBuilder, conv_hwio_to_oihw, dense_io_to_oi

VGG16_CONV_NAMES = ("conv1_1", "conv1_2", "conv2_1", "conv2_2", "conv3_1", "conv3_2", "conv3_3",
                    "conv4_1", "conv4_2", "conv4_3", "conv5_1", "conv5_2", "conv5_3")


def build_netvlad_checkpoint(
    source: str,
    convs: dict[str, tuple[np.ndarray, np.ndarray]],
    assignment: np.ndarray,
    negated_centers: np.ndarray,
    whitening: tuple[np.ndarray, np.ndarray] | None,
    average_rgb: np.ndarray,
    output: str | os.PathLike,
    provenance: dict[str, Any],
    name: str = "netvlad",
) -> dict[str, Any]:
    """Fill a `netvlad` model from the arrays described in the module docstring and save it."""
    from ..loading import build_model

    assignment = assignment.reshape(assignment.shape[-2], assignment.shape[-1])  # [D, K]
    centers = negated_centers.reshape(negated_centers.shape[-2], negated_centers.shape[-1])  # [D, K]
    dim, clusters = assignment.shape
    if centers.shape != (dim, clusters):
        raise ConversionError(f"{source}: cluster centres {centers.shape} "
                              f"do not match the assignment {assignment.shape}")
    if dim != 512:
        raise ConversionError(f"{source}: VLAD on {dim}-D features; VGG16 conv5_3 gives 512")
    if average_rgb.size != 3:
        raise ConversionError(f"{source}: the average colour has {average_rgb.size} values, not 3")
    config = NetVLADConfig(num_clusters=int(clusters),
                           whitening_dim=int(whitening[1].size) if whitening is not None else None,
                           average_rgb=tuple(float(v) for v in average_rgb.reshape(3)))
    model = build_model(name, config)
    builder = StateBuilder(source, dict(model.state_dict()))
    conv_keys = [f"backbone.features.{i}" for i, m in enumerate(model.backbone.features) if isinstance(m, nn.Conv2d)]
    if set(convs) != set(VGG16_CONV_NAMES):
        raise ConversionError(f"{source}: expected the 13 VGG16 convs, found {sorted(convs)}")
    for conv_name, key in zip(VGG16_CONV_NAMES, conv_keys):
        kernel, bias = convs[conv_name]
        builder.put(f"{key}.weight", conv_hwio_to_oihw(kernel), f"{conv_name} weights")
        builder.put(f"{key}.bias", bias.reshape(-1), f"{conv_name} bias")
    builder.put("aggregation.assignment.weight", assignment.T[:, :, None, None], "vlad assignment")
    builder.put("aggregation.centers", -centers.T, "vlad centres (negated)")
    if whitening is not None:
        builder.put("aggregation.whitening.weight", dense_io_to_oi(whitening[0].reshape(-1, whitening[0].shape[-1])),
                    "WPCA weights")
        builder.put("aggregation.whitening.bias", whitening[1].reshape(-1), "WPCA bias")
    builder.put("average_rgb", average_rgb.reshape(1, 3, 1, 1), "average_rgb")
    state = builder.finish()
    load_state_dict_strict(model, state, source)
    provenance = {**provenance, "config": config_to_dict(config), "mapping": builder.used}
    save_checkpoint(model, output, provenance)
    return provenance
