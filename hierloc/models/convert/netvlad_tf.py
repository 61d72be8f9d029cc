"""NetVLAD VGG16 from netvlad_tf_open's TF checkpoint (`vd16_pitts30k_conv5_3_vlad_preL2_intra_white`).

Variables under `vgg16_netvlad_pca/`: `average_rgb` [3]; `conv{1_1..5_3}/{kernel [3, 3, in, out],
bias}`; `assignment/kernel` [1, 1, 512, K]; `cluster_centers` [1, 1, 1, 512, K] (negated centres:
the port computes a * (x + C)); `WPCA/{kernel [1, 1, K * 512, N], bias [N]}` on the VLAD flattened
dimension-major. Every variable is used.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from .common import ConversionError, make_provenance
from .netvlad_common import VGG16_CONV_NAMES, build_netvlad_checkpoint
from .tf_checkpoint import TensorBundleReader

SCOPE = "vgg16_netvlad_pca"


def convert_netvlad_tf(source: str | os.PathLike, output: str | os.PathLike, name: str = "netvlad",
                       verify: bool = True) -> dict[str, Any]:
    """Convert a netvlad_tf_open checkpoint into a hierloc `netvlad` checkpoint; returns the provenance."""
    reader = TensorBundleReader(source, verify=verify)
    used: set[str] = set()

    def get(relative: str) -> np.ndarray:
        full = f"{SCOPE}/{relative}"
        if full not in reader:
            raise ConversionError(f"{reader.prefix}: variable {full!r} is missing: not a netvlad_tf_open checkpoint")
        used.add(full)
        return reader.read(full)

    convs = {conv: (get(f"{conv}/kernel"), get(f"{conv}/bias")) for conv in VGG16_CONV_NAMES}
    assignment = get("assignment/kernel")
    centers = get("cluster_centers")
    whitening = (get("WPCA/kernel"), get("WPCA/bias")) if f"{SCOPE}/WPCA/kernel" in reader else None
    average = get("average_rgb")
    ignored = {}
    for extra in set(reader.names()) - used:
        if extra == "global_step":
            ignored[extra] = "training step counter"
        else:
            raise ConversionError(f"{reader.prefix}: variable {extra!r} has no place in hierloc's NetVLAD: "
                                  "refusing to drop it silently")
    files = [reader.index_path] + [reader.shard_path(i) for i in range(reader.num_shards)]
    provenance = make_provenance("netvlad-tf", source, files, variables=len(reader), ignored=ignored)
    return build_netvlad_checkpoint(str(reader.prefix), convs, assignment, centers, whitening, average, output,
                                    provenance, name=name)
