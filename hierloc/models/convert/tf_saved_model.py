"""Read a TF1 SavedModel's graph (`saved_model.pb`) without TensorFlow, to check what a converter assumes.

The graph protos (MetaGraphDef, GraphDef, NodeDef, TensorProto) are the compiled copies that
TensorBoard ships (a hierloc dependency); the two-field `SavedModel` wrapper is walked by hand.
`describe_mobilenetvlad_graph` reads, from the released MobileNetVLAD graph, every setting that
changes its output: input channels and normalisation constants, the trunk endpoint that feeds the
VLAD layer, paddings, BatchNorm epsilons, the axis of the first VLAD normalisation, resizing.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from google.protobuf.message import DecodeError

from .common import ConversionError
from .tf_checkpoint import _varint

SAVED_MODEL_FILE = "saved_model.pb"
TRUNK_OUTPUT_SUFFIXES = {"Conv/Relu6": 1, "expanded_conv/output": 2, "Conv_1/Relu6": 19}
RESIZE_OPS = {"ResizeBilinear", "ResizeNearestNeighbor", "ResizeBicubic", "ResizeArea"}


def read_meta_graph(path: str | os.PathLike, tag: str = "serve"):
    """The MetaGraphDef tagged `tag` of a SavedModel folder or `saved_model.pb` file."""
    from tensorboard.compat.proto import meta_graph_pb2

    path = Path(path)
    if path.is_dir():
        path = path / SAVED_MODEL_FILE
    data = path.read_bytes()
    graphs, pos = [], 0
    try:
        while pos < len(data):  # SavedModel: 1 = schema version (varint), 2 = repeated MetaGraphDef
            tag_number, pos = _varint(data, pos, str(path))
            number, wire = tag_number >> 3, tag_number & 7
            if wire == 0:
                _, pos = _varint(data, pos, str(path))
            elif wire == 2:
                length, pos = _varint(data, pos, str(path))
                if number == 2:
                    graphs.append(meta_graph_pb2.MetaGraphDef.FromString(data[pos:pos + length]))
                pos += length
            else:
                raise ConversionError(f"{path}: not a SavedModel (wire type {wire} at the top level)")
    except (DecodeError, ValueError) as exc:
        raise ConversionError(f"{path}: not a readable SavedModel ({exc})") from None
    for graph in graphs:
        if tag in graph.meta_info_def.tags:
            return graph
    raise ConversionError(f"{path}: no meta graph tagged {tag!r} (found {len(graphs)} graphs)")


def _const(node) -> np.ndarray:
    from tensorboard.util import tensor_util

    return tensor_util.make_ndarray(node.attr["value"].tensor)


@dataclass
class MobileNetVLADGraph:
    """Facts about a MobileNetVLAD SavedModel graph that decide how hierloc must run it."""

    tensorflow_version: str
    input_name: str
    input_channels: int
    output_name: str
    output_dim: int | None
    input_offset: float | None
    input_scale: float | None
    tiles_to_rgb: bool
    vlad_endpoint: str
    intra_normalization: str
    bn_epsilons: set[float] = field(default_factory=set)
    paddings: set[str] = field(default_factory=set)
    resize_ops: list[str] = field(default_factory=list)
    has_intermediate_proj: bool = False

    def as_dict(self) -> dict:
        """Plain values for a checkpoint's provenance."""
        d = dict(self.__dict__)
        d["bn_epsilons"] = sorted(float(e) for e in self.bn_epsilons)
        d["paddings"] = sorted(self.paddings)
        return d


def describe_mobilenetvlad_graph(path: str | os.PathLike) -> MobileNetVLADGraph:
    """Read a MobileNetVLAD SavedModel graph's inference settings (see the module docstring)."""
    meta = read_meta_graph(path)
    nodes = {n.name: n for n in meta.graph_def.node}
    signature = meta.signature_def.get("serving_default") or next(iter(meta.signature_def.values()), None)
    if signature is None or "image" not in signature.inputs or "descriptor" not in signature.outputs:
        raise ConversionError(f"{path}: no signature with input 'image' and output 'descriptor'")
    image, descriptor = signature.inputs["image"], signature.outputs["descriptor"]
    input_name = image.name.split(":")[0]
    channels = image.tensor_shape.dim[-1].size if image.tensor_shape.dim else -1
    out_dims = [d.size for d in descriptor.tensor_shape.dim]

    # Input normalisation: (image - offset) / scale, then Tile to 3 channels.
    offset = scale = None
    consumers = [n for n in nodes.values() if input_name in [i.split(":")[0] for i in n.input]]
    for n in consumers:
        if n.op == "Sub" and n.input[1] in nodes and nodes[n.input[1]].op == "Const":
            offset = float(_const(nodes[n.input[1]]))
            for m in nodes.values():
                if m.op in ("RealDiv", "Mul") and n.name in m.input and nodes.get(m.input[1], None) is not None \
                        and nodes[m.input[1]].op == "Const":
                    value = float(_const(nodes[m.input[1]]))
                    scale = value if m.op == "RealDiv" else 1.0 / value
    tiles = any(n.op == "Tile" for n in nodes.values())

    # The trunk endpoint that the memberships conv reads.
    memberships = [n for n in nodes.values() if n.op == "Conv2D" and n.name.endswith("vlad/memberships/Conv2D")]
    if len(memberships) != 1:
        raise ConversionError(f"{path}: no (or several) vlad/memberships/Conv2D nodes: not a MobileNetVLAD graph")
    feed = memberships[0].input[0].split(":")[0]
    has_proj = "pre_proj" in feed
    if has_proj:
        proj = [n for n in nodes.values() if n.op == "Conv2D" and n.name.endswith("vlad/pre_proj/Conv2D")]
        feed = proj[0].input[0].split(":")[0] if proj else feed
    endpoint = None
    for suffix, index in TRUNK_OUTPUT_SUFFIXES.items():
        if feed.endswith(f"MobilenetV2/{suffix}"):
            endpoint = index
    if endpoint is None and "/expanded_conv_" in feed and feed.endswith("/output"):
        endpoint = int(feed.rsplit("/expanded_conv_", 1)[1].split("/")[0]) + 2
    if endpoint is None:
        raise ConversionError(f"{path}: the VLAD layer reads {feed!r}, not a MobileNetV2 endpoint")

    # The first VLAD normalisation: l2_normalize over which axis of [B, K, D].
    axis_nodes = [n for n in nodes.values() if n.name.endswith("vlad/l2_normalize/Sum/reduction_indices")]
    if len(axis_nodes) != 1:
        raise ConversionError(f"{path}: cannot find the VLAD layer's first l2_normalize")
    axis = int(np.asarray(_const(axis_nodes[0])).reshape(-1)[0])
    if axis not in (1, 2, -1):
        raise ConversionError(f"{path}: VLAD normalisation over axis {axis} of [B, K, D] is not supported")
    intra = "across_clusters" if axis == 1 else "per_cluster"

    epsilons = {round(float(n.attr["epsilon"].f), 7) for n in nodes.values() if n.op.startswith("FusedBatchNorm")}
    paddings = {n.attr["padding"].s.decode() for n in nodes.values() if n.op in ("Conv2D", "DepthwiseConv2dNative")}
    resizes = sorted(n.name for n in nodes.values() if n.op in RESIZE_OPS)
    return MobileNetVLADGraph(
        tensorflow_version=meta.meta_info_def.tensorflow_version, input_name=input_name, input_channels=int(channels),
        output_name=descriptor.name.split(":")[0], output_dim=out_dims[-1] if out_dims else None,
        input_offset=offset, input_scale=scale, tiles_to_rgb=tiles, vlad_endpoint=f"layer_{endpoint}",
        intra_normalization=intra, bn_epsilons=epsilons, paddings=paddings, resize_ops=resizes,
        has_intermediate_proj=has_proj,
    )
