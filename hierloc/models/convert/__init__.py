"""Converters from the original published models to hierloc checkpoints, and a TF checkpoint reader.

Kinds (`hierloc convert KIND SOURCE OUTPUT`):
- `tf-mobilenetvlad`: the released TF1 MobileNetVLAD (SavedModel folder or checkpoint prefix).
- `tf-slim-mobilenetv2`: a TF-slim ImageNet MobileNetV2 checkpoint -> trunk initialisation.
- `netvlad-mat`: NetVLAD VGG16 Pitts30k, MatConvNet struct `.mat` (hloc's `Pitts30K_struct.mat`).
- `netvlad-tf`: NetVLAD VGG16 Pitts30k, netvlad_tf_open checkpoint.
"""

from __future__ import annotations

import os
from typing import Any, Callable

from .common import CONVERTER_VERSION, ConversionError
from .mobilenetv2_slim import convert_slim_mobilenetv2
from .mobilenetvlad_tf import convert_tf_mobilenetvlad
from .netvlad_mat import convert_netvlad_mat
from .netvlad_tf import convert_netvlad_tf
from .tf_checkpoint import CheckpointFormatError, TensorBundleReader, write_tensor_bundle

CONVERTERS: dict[str, Callable[..., dict[str, Any]]] = {
    "tf-mobilenetvlad": convert_tf_mobilenetvlad,
    "tf-slim-mobilenetv2": convert_slim_mobilenetv2,
    "netvlad-mat": convert_netvlad_mat,
    "netvlad-tf": convert_netvlad_tf,
}


def convert(kind: str, source: str | os.PathLike, output: str | os.PathLike, **options: Any) -> dict[str, Any]:
    """Run the converter `kind` on `source`, writing `output`; returns the provenance it recorded."""
    if kind not in CONVERTERS:
        raise ValueError(f"unknown conversion {kind!r}; known: {', '.join(CONVERTERS)}")
    return CONVERTERS[kind](source, output, **options)


__all__ = [
    "CONVERTERS", "CONVERTER_VERSION", "ConversionError", "CheckpointFormatError", "TensorBundleReader",
    "convert", "convert_netvlad_mat", "convert_netvlad_tf", "convert_slim_mobilenetv2", "convert_tf_mobilenetvlad",
    "write_tensor_bundle",
]
