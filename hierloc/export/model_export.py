"""Deployment files of a global descriptor network: TorchScript and ONNX with a dynamic image size.

Both take `image`: float32 [B, C, H, W] raw pixel values 0..255 (C = the network's input channels,
H and W free) and give `descriptor`: float32 [B, D] unit vectors, like the eager model and the
original's SavedModel (which was [B, H, W, C]). A JSON description (model name, descriptor size,
input channels, configuration) is stored inside each file, so `--model FILE` needs nothing else.

`check_parity` runs the eager model and the exported files on random images of several sizes and
reports the largest absolute difference of the descriptors.
"""

from __future__ import annotations

import copy
import logging
import os
import warnings
from pathlib import Path

import numpy as np
import torch

from .. import __version__
from ..models.base import GlobalDescriptorModel
from ..models.checkpoint import tensors_sha256
from ..models.configs import config_to_dict
from ..utils.io import atomic_path, to_json_text
from .file_format import EXPORT_FORMAT, INPUT_NAME, METADATA_KEY, OUTPUT_NAME
from .scriptable import SamePaddingConv2d

logger = logging.getLogger(__name__)

PARITY_TOLERANCE = 1e-4
DEFAULT_PARITY_SIZES = ((480, 640), (375, 500), (241, 319))


def export_metadata(model: GlobalDescriptorModel) -> dict:
    """What a deployment needs to know about an exported network."""
    return {
        "format": EXPORT_FORMAT,
        "hierloc_version": __version__,
        "model_name": model.name,
        "model_kind": model.kind,
        "descriptor_dim": int(model.descriptor_dim),
        "input_channels": int(model.input_channels),
        "input": f"{INPUT_NAME}: float32 [B, C, H, W], raw pixel values 0..255",
        "output": f"{OUTPUT_NAME}: float32 [B, D], L2-normalised",
        "config": config_to_dict(model.config),
        # The network's own fingerprint: an index built with it accepts this export as the same describer.
        "weights_sha256": tensors_sha256(model.state_dict()),
    }


def with_traceable_padding(model: torch.nn.Module) -> torch.nn.Module:
    """A deployment copy of `model`: size-dependent TF-SAME convolutions as compiled TorchScript modules,
    and a grayscale network's stem folded to take the 1-channel image (exact, see `fold_grayscale_stem`)."""
    from ..models.backbones.padding import Conv2dSame

    model = copy.deepcopy(model)
    if getattr(model, "can_fold_grayscale_stem", lambda: False)():
        model.fold_grayscale_stem()
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, Conv2dSame) and not child._symmetric:
                setattr(module, name, torch.jit.script(SamePaddingConv2d(child)))
    return model


class _Exportable(torch.nn.Module):
    """The model behind a stable interface: fixed channel count, float32 unit descriptors out."""

    def __init__(self, model: GlobalDescriptorModel) -> None:
        super().__init__()
        if getattr(model.config, "resize_factor", None) not in (None, 1):
            raise ValueError(f"{model.name}: resize_factor {model.config.resize_factor} cannot be exported with a "
                             "dynamic image size; resize the images before the network instead")
        self.model = with_traceable_padding(model)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.normalize(self.model(image).float(), dim=-1)


def _example(model: GlobalDescriptorModel, size: tuple[int, int], batch: int = 1, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(batch, model.input_channels, size[0], size[1], generator=generator) * 255.0


def trace_model(model: GlobalDescriptorModel, example_size: tuple[int, int] = (480, 640)) -> torch.jit.ScriptModule:
    """The model traced with size-independent padding (what both export formats are made from)."""
    module = _Exportable(model.cpu().eval()).eval()
    with torch.no_grad(), warnings.catch_warnings():
        # Python-level shape logic (channel adaptation) is fixed on purpose; the size-dependent
        # padding runs in the compiled SamePaddingConv2d modules.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        return torch.jit.trace(module, _example(model, example_size), check_trace=False)


def export_torchscript(model: GlobalDescriptorModel, path: str | os.PathLike,
                       example_size: tuple[int, int] = (480, 640)) -> Path:
    """Write the traced model as a TorchScript file with its description inside."""
    path = Path(path)
    traced = trace_model(model, example_size)
    with atomic_path(path, suffix=".pt") as tmp:
        torch.jit.save(traced, str(tmp), _extra_files={METADATA_KEY: to_json_text(export_metadata(model))})
    return path


def fuse_same_padding(proto) -> int:
    """Replace each zero `Pad` that feeds only a `Conv` by the Conv's own `auto_pad="SAME_UPPER"` (in place).

    TF 'SAME' pads total // 2 before and the rest after, which is ONNX's SAME_UPPER for every input
    size, so the result is exact; the runtimes then skip a copy of the input (and, in onnxruntime,
    two layout reorders around it): about 30 % of MobileNetVLAD's CPU time. Returns the number of
    fused pairs; nodes left unused (the padding arithmetic) are removed.
    """
    from onnx import helper

    graph = proto.graph
    producers = {output: node for node in graph.node for output in node.output}
    consumers: dict[str, int] = {}
    for node in graph.node:
        for name in node.input:
            consumers[name] = consumers.get(name, 0) + 1
    fused = 0
    for conv in graph.node:
        pad = producers.get(conv.input[0]) if conv.op_type == "Conv" else None
        if pad is None or pad.op_type != "Pad" or consumers.get(pad.output[0]) != 1:
            continue
        pad_attributes = {a.name: helper.get_attribute_value(a) for a in pad.attribute}
        if pad_attributes.get("mode", b"constant") != b"constant" or (len(pad.input) > 2 and pad.input[2]):
            continue  # only zero padding is what a convolution's own padding does
        conv_attributes = {a.name: a for a in conv.attribute}
        if "pads" in conv_attributes and any(helper.get_attribute_value(conv_attributes["pads"])):
            continue
        auto_pad = conv_attributes.get("auto_pad")
        if auto_pad is not None and helper.get_attribute_value(auto_pad) not in (b"NOTSET", b"VALID"):
            continue
        conv.input[0] = pad.input[0]
        for name in ("pads", "auto_pad"):
            if name in conv_attributes:
                conv.attribute.remove(conv_attributes[name])
        conv.attribute.append(helper.make_attribute("auto_pad", "SAME_UPPER"))
        fused += 1
    needed = {output.name for output in graph.output}
    kept = []
    for node in reversed(list(graph.node)):
        if any(output in needed for output in node.output):
            kept.append(node)
            needed.update(name for name in node.input if name)
    del graph.node[:]
    graph.node.extend(reversed(kept))
    return fused


def export_onnx(model: GlobalDescriptorModel, path: str | os.PathLike, example_size: tuple[int, int] = (480, 640),
                opset: int = 17, exporter: str = "torchscript", fuse_padding: bool = True) -> Path:
    """Write an ONNX file with dynamic batch, height and width.

    `exporter`: "torchscript" (torch.onnx's tracing exporter: seconds) or "dynamo" (torch.export
    based: minutes on a small CPU, for PyTorch versions without the former). `fuse_padding`: TF-SAME
    padding as the convolutions' `auto_pad` (see `fuse_same_padding`; exact, and faster to run).
    """
    import onnx

    path = Path(path)
    example = _example(model, example_size)
    with atomic_path(path, suffix=".onnx") as tmp, torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if exporter == "torchscript":
            # From the traced graph: the exporter cannot trace compiled submodules itself.
            torch.onnx.export(trace_model(model, example_size), (example,), str(tmp), input_names=[INPUT_NAME],
                              output_names=[OUTPUT_NAME],
                              dynamic_axes={INPUT_NAME: {0: "batch", 2: "height", 3: "width"},
                                            OUTPUT_NAME: {0: "batch"}},
                              opset_version=opset, dynamo=False)
        elif exporter == "dynamo":
            batch, height, width = (torch.export.Dim.AUTO,) * 3
            module = _Exportable(model.cpu().eval()).eval()
            module.model = model.cpu().eval()  # torch.export follows the Python padding symbolically
            torch.onnx.export(module, (example,), str(tmp), input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                              dynamic_shapes={"image": {0: batch, 2: height, 3: width}}, opset_version=opset,
                              dynamo=True, external_data=False)
        else:
            raise ValueError(f"unknown ONNX exporter {exporter!r}: use 'torchscript' or 'dynamo'")
        proto = onnx.load(str(tmp))
        if fuse_padding:
            fuse_same_padding(proto)
        entry = proto.metadata_props.add()
        entry.key, entry.value = METADATA_KEY, to_json_text(export_metadata(model))
        proto.producer_name = "hierloc"
        onnx.checker.check_model(proto)
        onnx.save(proto, str(tmp))
    return path


def check_parity(model: GlobalDescriptorModel, exported: dict[str, str | os.PathLike],
                 sizes: tuple[tuple[int, int], ...] = DEFAULT_PARITY_SIZES, batch: int = 2) -> dict[str, dict]:
    """{format: {"max_abs_diff", "sizes"}}: the exported files against the eager model in fp32."""
    from .runtime import load_exported_model

    model = model.cpu().eval()
    results: dict[str, dict] = {}
    runners = {fmt: load_exported_model(path, device="cpu") for fmt, path in exported.items()}
    for fmt, runner in runners.items():
        worst = 0.0
        per_size = {}
        for i, size in enumerate(sizes):
            images = _example(model, size, batch=batch, seed=i + 1)
            with torch.no_grad():
                expected = torch.nn.functional.normalize(model(images).float(), dim=-1).numpy()
            got = runner.run(images)
            if got.shape != expected.shape:
                raise RuntimeError(f"{fmt}: output {got.shape} for input {tuple(images.shape)}, "
                                   f"expected {expected.shape}")
            diff = float(np.abs(got - expected).max())
            per_size[f"{size[0]}x{size[1]}"] = diff
            worst = max(worst, diff)
        results[fmt] = {"max_abs_diff": worst, "sizes": per_size, "ok": worst < PARITY_TOLERANCE}
    return results
