"""Run exported networks (TorchScript, ONNX via onnxruntime) with the interface of GlobalExtractor.

`load_exported_model(path)` gives an object with `describe(image)`, `describe_batch(images)`,
`run(batch)`, `descriptor_dim`, `name` and `model_name` (the hierloc model it was exported from,
which index files record), so every command that takes `--model` can take an exported file.
"""

from __future__ import annotations

import json
import os
import threading
import zipfile
from pathlib import Path

import numpy as np
import torch

from ..extraction.global_descriptors import image_to_tensor, run_by_shape
from ..models.base import LUMA_WEIGHTS
from ..utils.device import resolve_device
from .file_format import EXPORT_FORMAT, INPUT_NAME, METADATA_KEY

ONNX_SUFFIXES = (".onnx",)


class ExportedModelError(RuntimeError):
    """An exported model file is missing, foreign or unreadable."""


def is_torchscript_file(path: str | os.PathLike) -> bool:
    """True for a TorchScript archive (a zip holding compiled `code/`), not a torch.save checkpoint."""
    path = Path(path)
    if not path.is_file() or not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any("/code/" in name or name.startswith("code/") for name in archive.namelist())


def is_exported_model(path: str | os.PathLike) -> bool:
    """True for an ONNX file or a TorchScript archive."""
    path = Path(path)
    return path.is_file() and (path.suffix.lower() in ONNX_SUFFIXES or is_torchscript_file(path))


def adapt_channels(batch: np.ndarray, channels: int) -> np.ndarray:
    """[B, C, H, W] float32 pixels with C = 1 or 3 -> `channels` channels (gray repeated, or luma of RGB).

    numpy, not torch, on purpose: a torch op wakes torch's OpenMP threads, which keep spinning for a few
    milliseconds after it and then compete for the cores with the ONNX runtime's own threads. On 2 cores
    that cost OpenVINO 3.5 ms per 480x640 image (11.5 against 8.3 ms).
    """
    if batch.shape[1] == channels:
        return batch
    if batch.shape[1] == 1 and channels == 3:
        return np.ascontiguousarray(np.broadcast_to(batch, (batch.shape[0], 3, *batch.shape[2:])))
    if batch.shape[1] == 3 and channels == 1:
        red, green, blue = (np.float32(w) for w in LUMA_WEIGHTS)
        return batch[:, 0:1] * red + batch[:, 1:2] * green + batch[:, 2:3] * blue
    raise ValueError(f"images must have 1 or 3 channels, got {batch.shape[1]}")


class ExportedModel:
    """Common part: metadata, channel adaptation, numpy images in, float32 descriptors out."""

    def __init__(self, path: Path, metadata: dict) -> None:
        if metadata.get("format") != EXPORT_FORMAT:
            raise ExportedModelError(f"{path}: no hierloc export description inside; export it with "
                                     "`hierloc export-model`")
        self.path = path
        self.metadata = metadata
        self.model_name = str(metadata["model_name"])
        self.name = f"{self.model_name} ({path.name})"
        self.input_channels = int(metadata["input_channels"])
        self._descriptor_dim = int(metadata["descriptor_dim"])

    @property
    def descriptor_dim(self) -> int:
        """Size of the descriptors."""
        return self._descriptor_dim

    def _forward(self, batch: torch.Tensor) -> np.ndarray:
        raise NotImplementedError

    def run(self, batch: torch.Tensor) -> np.ndarray:
        """[B, C, H, W] raw-pixel tensor -> [B, D] float32 unit descriptors."""
        pixels = np.ascontiguousarray(batch.detach().cpu().numpy(), dtype=np.float32)
        pixels = adapt_channels(pixels, self.input_channels)
        descriptors = self._forward(torch.from_numpy(pixels)).astype(np.float32, copy=False)
        norms = np.linalg.norm(descriptors, axis=1, keepdims=True)
        return descriptors / np.maximum(norms, 1e-12)

    def describe(self, image: np.ndarray) -> np.ndarray:
        """One image -> [D] float32 unit descriptor."""
        return self.run(image_to_tensor(image))[0]

    def describe_batch(self, images: list[np.ndarray]) -> np.ndarray:
        """Images of any sizes -> [N, D]; images of equal size are batched together."""
        return run_by_shape(images, self.run, self.descriptor_dim)


class TorchScriptModel(ExportedModel):
    """A TorchScript file written by `hierloc export-model`."""

    def __init__(self, path: str | os.PathLike, device: str = "auto", precision: str = "auto") -> None:
        path = Path(path)
        extra = {METADATA_KEY: ""}
        self.device = resolve_device(device)
        try:
            self.module = torch.jit.load(str(path), map_location=self.device, _extra_files=extra)
        except Exception as exc:  # torch raises RuntimeError/ValueError variants for foreign files
            raise ExportedModelError(f"{path}: not a readable TorchScript file ({exc})") from None
        try:
            metadata = json.loads(extra[METADATA_KEY] or "{}")
        except ValueError:
            metadata = {}
        super().__init__(path, metadata)
        self.module.eval()
        self.half = self.device.type == "cuda" and precision in ("auto", "fp16")

    @torch.inference_mode()
    def _forward(self, batch: torch.Tensor) -> np.ndarray:
        batch = batch.to(self.device)
        if self.half:
            with torch.autocast("cuda", dtype=torch.float16):
                return self.module(batch).float().cpu().numpy()
        return self.module(batch).float().cpu().numpy()


class OnnxModel(ExportedModel):
    """An ONNX file written by `hierloc export-model`, run by onnxruntime (CUDA when asked and present)."""

    def __init__(self, path: str | os.PathLike, device: str = "auto", threads: int | None = None) -> None:
        import onnxruntime as ort

        path = Path(path)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.inter_op_num_threads = 1
        options.log_severity_level = 3  # not the optimizer's notes on constants it folded away
        available = ort.get_available_providers()
        wants_cuda = str(device) != "cpu" and (str(device) != "auto" or torch.cuda.is_available())
        providers = (["CUDAExecutionProvider"] if wants_cuda and "CUDAExecutionProvider" in available else [])
        providers.append("CPUExecutionProvider")
        try:
            self.session = ort.InferenceSession(str(path), sess_options=options, providers=providers)
        except Exception as exc:  # onnxruntime raises its own exception types
            raise ExportedModelError(f"{path}: not a readable ONNX model ({exc})") from None
        metadata_text = self.session.get_modelmeta().custom_metadata_map.get(METADATA_KEY, "{}")
        try:
            metadata = json.loads(metadata_text)
        except ValueError:
            metadata = {}
        super().__init__(path, metadata)
        self.input_name = self.session.get_inputs()[0].name if self.session.get_inputs() else INPUT_NAME
        self._lock = threading.Lock()  # one run at a time keeps the thread count what was asked for

    def _forward(self, batch: torch.Tensor) -> np.ndarray:
        feed = {self.input_name: np.ascontiguousarray(batch.cpu().numpy(), dtype=np.float32)}
        with self._lock:
            return self.session.run(None, feed)[0]


class OpenVinoModel(ExportedModel):
    """An ONNX file written by `hierloc export-model`, run by OpenVINO on the CPU (fp32 by default).

    fp32 is set explicitly: on CPUs with AMX OpenVINO's default is bf16, whose descriptors miss
    the cosine target (see hierloc.utils.device); `inference_precision="bf16"` is for measuring that.
    """

    def __init__(self, path: str | os.PathLike, threads: int | None = None, inference_precision: str = "f32") -> None:
        import openvino

        path = Path(path)
        core = openvino.Core()
        config = {"INFERENCE_NUM_THREADS": threads or torch.get_num_threads(), "PERFORMANCE_HINT": "LATENCY",
                  "INFERENCE_PRECISION_HINT": inference_precision, "NUM_STREAMS": 1}
        try:
            network = core.read_model(str(path))
            self.compiled = core.compile_model(network, "CPU", config)
        except Exception as exc:  # OpenVINO raises its own exception types
            raise ExportedModelError(f"{path}: not a model OpenVINO can run ({exc})") from None
        try:
            metadata = json.loads(_onnx_metadata_text(path))
        except ValueError:
            metadata = {}
        super().__init__(path, metadata)
        self._request = self.compiled.create_infer_request()
        self._lock = threading.Lock()  # one infer request: one run at a time

    def _forward(self, batch: torch.Tensor) -> np.ndarray:
        feed = np.ascontiguousarray(batch.cpu().numpy(), dtype=np.float32)
        with self._lock:
            return np.array(self._request.infer({0: feed})[0], copy=True)


def _onnx_metadata_text(path: Path) -> str:
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    return {p.key: p.value for p in proto.metadata_props}.get(METADATA_KEY, "{}")


def network_engine(model, runtime: str, threads: int | None = None,
                   example_size: tuple[int, int] = (480, 640)) -> ExportedModel:
    """`model` (a GlobalDescriptorModel) run by `runtime` ("onnxruntime" or "openvino") on the CPU, in fp32.

    The network is exported to ONNX in a temporary folder (seconds; tens on a busy 2-core machine),
    TF-SAME padding fused into the convolutions and a grayscale stem folded; descriptors equal the
    eager network's up to float rounding (cosine 1.0000).
    """
    import tempfile

    from .model_export import export_onnx

    with tempfile.TemporaryDirectory(prefix="hierloc-engine-") as folder:
        path = export_onnx(model, Path(folder) / f"{model.name}.onnx", example_size)
        if runtime == "onnxruntime":
            return OnnxModel(path, device="cpu", threads=threads)
        if runtime == "openvino":
            return OpenVinoModel(path, threads=threads)
    raise ValueError(f"unknown runtime {runtime!r}: use onnxruntime or openvino")


def load_exported_model(path: str | os.PathLike, device: str = "auto", precision: str = "auto",
                        threads: int | None = None) -> ExportedModel:
    """The runner for an exported file, by its content (ONNX by the `.onnx` extension)."""
    path = Path(path)
    if not path.is_file():
        raise ExportedModelError(f"{path}: no such model file")
    if path.suffix.lower() in ONNX_SUFFIXES:
        return OnnxModel(path, device=device, threads=threads)
    if is_torchscript_file(path):
        return TorchScriptModel(path, device=device, precision=precision)
    raise ExportedModelError(f"{path}: neither an ONNX file nor a TorchScript archive")


def exported_model_name(path: str | os.PathLike) -> str:
    """The hierloc model name stored in an exported file (without building a session)."""
    path = Path(path)
    if path.suffix.lower() in ONNX_SUFFIXES:
        metadata = json.loads(_onnx_metadata_text(path))
    else:
        with zipfile.ZipFile(path) as archive:
            names = [n for n in archive.namelist() if n.endswith(f"extra/{METADATA_KEY}")]
            metadata = json.loads(archive.read(names[0])) if names else {}
    if metadata.get("format") != EXPORT_FORMAT:
        raise ExportedModelError(f"{path}: no hierloc export description inside")
    return str(metadata["model_name"])
