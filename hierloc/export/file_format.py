"""What an exported model file holds: names shared by the writer (`model_export`) and the runner (`runtime`).

A module of its own so that running an exported file does not import the exporter (and its eager models).
"""

from __future__ import annotations

EXPORT_FORMAT = "hierloc-exported-model"
METADATA_KEY = "hierloc.json"  # TorchScript extra file name and ONNX metadata key
INPUT_NAME = "image"
OUTPUT_NAME = "descriptor"

__all__ = ["EXPORT_FORMAT", "INPUT_NAME", "METADATA_KEY", "OUTPUT_NAME"]
