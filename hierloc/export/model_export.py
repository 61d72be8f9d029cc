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
    """A copy of `model` whose size-dependent TF-SAME convolutions are compiled TorchScript modules."""
    from ..models.backbones.padding import Conv2dSame

    model = copy.deepcopy(model)
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


def export_onnx(model: GlobalDescriptorModel, path: str | os.PathLike, example_size: tuple[int, int] = (480, 640),
                opset: int = 17, exporter: str = "torchscript") -> Path:
    """Write an ONNX file with dynamic batch, height and width.

    `exporter`: "torchscript" (torch.onnx's tracing exporter: seconds) or "dynamo" (torch.export
    based: minutes on a small CPU, for PyTorch versions without the former).
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
