"""Deployment: TorchScript and ONNX files of the networks, and runners for them."""

from .model_export import PARITY_TOLERANCE, check_parity, export_metadata, export_onnx, export_torchscript
from .runtime import (
                      ExportedModel,
                      ExportedModelError,
                      OnnxModel,
                      TorchScriptModel,
                      exported_model_name,
                      is_exported_model,
                      is_torchscript_file,
                      load_exported_model,
)

__all__ = ["export_torchscript", "export_onnx", "check_parity", "export_metadata", "PARITY_TOLERANCE",
           "load_exported_model", "is_exported_model", "is_torchscript_file", "exported_model_name",
           "ExportedModel", "TorchScriptModel", "OnnxModel", "ExportedModelError"]
