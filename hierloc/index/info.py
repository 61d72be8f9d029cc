"""What an index file holds, without loading its descriptors."""

from __future__ import annotations

import os
from typing import Any

from .io import detect_format, load_index
from .native_format import read_native_catalog
from .stored_search import SEARCH_METADATA_KEY


def index_info(path: str | os.PathLike) -> dict[str, Any]:
    """Format, model, keyframes per mission, descriptor size, poses, PCA, search structure, describer, metadata."""
    fmt = detect_format(path)
    index = read_native_catalog(path) if fmt == "native" else load_index(path)
    missions: dict[str, int] = {}
    for mission in index.missions:
        missions[mission] = missions.get(mission, 0) + 1
    metadata = dict(index.metadata)
    search = metadata.pop(SEARCH_METADATA_KEY, None) or {"kind": "flat (built when loaded)"}
    describer = metadata.pop("describer", None)
    return {"path": str(path), "format": fmt, "model_name": index.model_name, "data_name": index.data_name,
            "keyframes": len(index), "descriptor_size": index.descriptor_size,
            "has_poses": index.positions is not None and index.rotations is not None, "missions": missions,
            "pca_dims": None if index.pca is None else index.pca.n_components, "search": search,
            "describer": describer or "not recorded (an index written before describers were recorded)",
            "metadata": metadata}
