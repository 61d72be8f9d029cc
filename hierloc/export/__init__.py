"""Deployment: TorchScript and ONNX files of the networks, and runners for them (onnxruntime, OpenVINO)."""

from .model_export import (
    PARITY_TOLERANCE,
    check_parity,
    export_metadata,
    export_onnx,
    export_torchscript,
    fuse_same_padding,
)
from .runtime import (
    ExportedModel,
    ExportedModelError,
    OnnxModel,
    OpenVinoModel,
    TorchScriptModel,
    exported_model_name,
    is_exported_model,
    is_torchscript_file,
    load_exported_model,
    network_engine,
)

__all__ = ["export_torchscript", "export_onnx", "check_parity", "export_metadata", "PARITY_TOLERANCE",
           "fuse_same_padding", "load_exported_model", "is_exported_model", "is_torchscript_file",
           "exported_model_name", "network_engine", "ExportedModel", "TorchScriptModel", "OnnxModel",
           "OpenVinoModel", "ExportedModelError"]
