"""The released TF1 MobileNetVLAD (SavedModel or checkpoint) -> a hierloc `mobilenetvlad` checkpoint.

Variables (exact names of the release, see `../shared/seed/.../variables.index`):
- `MobilenetV2/...`: the TF-slim trunk, all 19 layers (TF-slim builds `Conv_1` = layer_19 although
  the VLAD layer reads layer_18); kept in hierloc as unused trunk layers so that nothing is dropped.
- `vlad/memberships/weights` [1, 1, D, K] -> 1x1 conv [K, D, 1, 1]; `vlad/memberships/BatchNorm/
  {beta, moving_mean, moving_variance}` (no gamma: slim's scale=False) -> BatchNormNoScale.
- `vlad/clusters` [1, 1, 1, K, D] (or [K, D]) -> [K, D].
- optional `vlad/pre_proj/{weights, BatchNorm/*}` -> the intermediate projection.
- `dimensionality_reduction/{weights [K*D, N], biases [N]}` -> nn.Linear [N, K*D]; the input is the
  [K, D] VLAD flattened cluster-major (TF's reshape of [B, K, D]), as hierloc flattens it.

When the SavedModel graph is present it is read (no TensorFlow needed) and decides the settings
that change the output: endpoint, input channels and normalisation, BatchNorm epsilon, the axis of
the first VLAD normalisation (the release normalises across clusters, not per cluster).
"""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from ..backbones.mobilenetv2 import endpoint_index
from ..checkpoint import load_state_dict_strict, save_checkpoint
from ..configs import MobileNetVLADConfig, config_to_dict
from .common import ConversionError, StateBuilder, conv_hwio_to_oihw, dense_io_to_oi, make_provenance
from .mobilenetv2_slim import (
    BN_EPSILON,
    BOOKKEEPING_VARIABLES,
    SCOPE,
    infer_depth_multiplier,
    map_trunk,
    select_ema,
    trunk_layers_present,
)
from .tf_checkpoint import TensorBundleReader
from .tf_saved_model import SAVED_MODEL_FILE, MobileNetVLADGraph, describe_mobilenetvlad_graph

logger = logging.getLogger(__name__)

VLAD = "vlad"
REDUCTION = "dimensionality_reduction"


def find_saved_model_graph(source: str | os.PathLike, prefix: Path) -> Path | None:
    """The `saved_model.pb` belonging to a SavedModel folder or its `variables/variables` prefix."""
    source = Path(source)
    for candidate in (source / SAVED_MODEL_FILE, prefix.parent.parent / SAVED_MODEL_FILE):
        if candidate.is_file() and prefix.parent.name == "variables":
            return candidate
    return None


def config_from_checkpoint(shapes: dict[str, tuple[int, ...]], graph: MobileNetVLADGraph | None,
                           trunk_layers: int) -> MobileNetVLADConfig:
    """The hierloc configuration that runs this checkpoint (and graph, when known) as the original did."""
    clusters = shapes.get(f"{VLAD}/clusters")
    if clusters is None or f"{VLAD}/memberships/weights" not in shapes:
        raise ConversionError("no vlad/clusters or vlad/memberships/weights: not a MobileNetVLAD checkpoint")
    proj = shapes.get(f"{VLAD}/pre_proj/weights")
    reduction = shapes.get(f"{REDUCTION}/weights")
    endpoint = graph.vlad_endpoint if graph else "layer_18"
    if endpoint_index(endpoint) > trunk_layers:
        raise ConversionError(f"the VLAD layer reads {endpoint} "
                              f"but the checkpoint's trunk stops at layer_{trunk_layers}")
    config = MobileNetVLADConfig(
        depth_multiplier=infer_depth_multiplier(shapes),
        endpoint=endpoint,
        num_clusters=int(clusters[-2]),
        intermediate_proj=int(proj[-1]) if proj else None,
        reduction_dim=int(reduction[-1]) if reduction else None,
        input_channels=1,
        normalization="tf",
        tf_same_padding=True,
        bn_eps=BN_EPSILON,
        intra_normalization="across_clusters",  # the original code's tf.nn.l2_normalize(v, axis=1)
        keep_layers_after_endpoint=trunk_layers > endpoint_index(endpoint),
        last_channels=int(shapes[f"{SCOPE}/Conv_1/weights"][-1]) if f"{SCOPE}/Conv_1/weights" in shapes else None,
    )
    if graph is None:
        return config
    problems = []
    if graph.input_channels not in (1, 3):
        problems.append(f"input with {graph.input_channels} channels")
    if (graph.input_offset, graph.input_scale) != (128.0, 128.0):
        problems.append(f"input normalisation (x - {graph.input_offset}) / {graph.input_scale}, not (x - 128) / 128")
    if graph.resize_ops:
        problems.append(f"input resizing ({graph.resize_ops[0]})")
    if graph.paddings - {"SAME"}:
        problems.append(f"paddings {sorted(graph.paddings)}")
    if len(graph.bn_epsilons) > 1:
        problems.append(f"several BatchNorm epsilons {sorted(graph.bn_epsilons)}")
    if graph.has_intermediate_proj != bool(proj):
        problems.append("the graph and the checkpoint disagree on the intermediate projection")
    if problems:
        raise ConversionError("the graph uses what hierloc's MobileNetVLAD does not implement: " + "; ".join(problems))
    return dataclasses.replace(
        config, input_channels=graph.input_channels, intra_normalization=graph.intra_normalization,
        bn_eps=next(iter(graph.bn_epsilons), BN_EPSILON),
    )


def _clusters(value: np.ndarray) -> np.ndarray:
    return value.reshape(value.shape[-2], value.shape[-1])


def convert_tf_mobilenetvlad(
    source: str | os.PathLike,
    output: str | os.PathLike,
    name: str = "mobilenetvlad",
    use_ema: bool = True,
    verify: bool = True,
    use_graph: bool = True,
) -> dict[str, Any]:
    """Convert a TF MobileNetVLAD (SavedModel folder or checkpoint prefix) into a hierloc checkpoint.

    Every variable must be used (a training step counter excepted); returns the stored provenance.
    """
    from ..loading import build_model

    reader = TensorBundleReader(source, verify=verify)
    graph_path = find_saved_model_graph(source, reader.prefix) if use_graph else None
    graph = describe_mobilenetvlad_graph(graph_path) if graph_path else None
    if graph is None:
        logger.info("%s: no SavedModel graph next to the checkpoint; using the original code's settings", source)
    names = reader.names()
    chosen, ignored = select_ema(names, use_ema)
    shapes = {n: reader.entries[chosen[n]].shape for n in chosen}
    trunk_layers = trunk_layers_present(set(shapes))
    config = config_from_checkpoint(shapes, graph, trunk_layers)
    model = build_model(name, config)
    tensors = {n: reader.read(chosen[n]) for n in chosen if n not in BOOKKEEPING_VARIABLES}

    builder = StateBuilder(str(reader.prefix), dict(model.state_dict()))
    map_trunk(builder, tensors, trunk_layers, key_prefix="backbone.")
    if f"{VLAD}/memberships/BatchNorm/gamma" in tensors:
        raise ConversionError(f"{reader.prefix}: vlad/memberships/BatchNorm has a gamma (scale); hierloc's "
                              "memberships BatchNorm has none, as the original")
    if config.intermediate_proj:
        builder.take(tensors, f"{VLAD}/pre_proj/weights", "aggregation.intermediate_proj.0.weight", conv_hwio_to_oihw)
        for tf_name, key in (("beta", "bias"), ("moving_mean", "running_mean"), ("moving_variance", "running_var")):
            builder.take(tensors, f"{VLAD}/pre_proj/BatchNorm/{tf_name}", f"aggregation.intermediate_proj.1.{key}")
    builder.take(tensors, f"{VLAD}/memberships/weights", "aggregation.memberships.weight", conv_hwio_to_oihw)
    for tf_name, key in (("beta", "bias"), ("moving_mean", "running_mean"), ("moving_variance", "running_var")):
        builder.take(tensors, f"{VLAD}/memberships/BatchNorm/{tf_name}", f"aggregation.memberships_bn.{key}")
    builder.take(tensors, f"{VLAD}/clusters", "aggregation.clusters", _clusters)
    if config.reduction_dim:
        builder.take(tensors, f"{REDUCTION}/weights", "aggregation.reduction.weight", dense_io_to_oi)
        builder.take(tensors, f"{REDUCTION}/biases", "aggregation.reduction.bias")
    state = builder.finish()

    for model_name in chosen:
        if model_name in BOOKKEEPING_VARIABLES:
            ignored[chosen[model_name]] = "training step counter"
        elif model_name not in builder.used:
            raise ConversionError(f"{reader.prefix}: variable {chosen[model_name]!r} has no place in hierloc's "
                                  "MobileNetVLAD: refusing to drop it silently")
    load_state_dict_strict(model, state, str(reader.prefix))
    files = [reader.index_path] + [reader.shard_path(i) for i in range(reader.num_shards)]
    if graph_path:
        files.append(graph_path)
    provenance = make_provenance(
        "tf-mobilenetvlad", source, files, variables=len(names), mapped=len(builder.used), ignored=ignored,
        filled=builder.filled, graph=graph.as_dict() if graph else None, config=config_to_dict(config),
        unused_trunk_layers=[f"layer_{i + 1}" for i in range(endpoint_index(config.endpoint), trunk_layers)],
        mapping=builder.used,
    )
    save_checkpoint(model, output, provenance)
    return provenance
