"""The global (retrieval) stage of a 3-D map: which describer, its index and search structure.

A 3-D map retrieves through the same stack as any index (`hierloc.index`): its `global_index.h5`
is a native index file with the map's describer recorded in it (weights beside it in the map
folder) and the search structure chosen at build time (flat, HNSW, IVF-PQ, optional PCA), or the
rows of an existing index built by the same describer.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
from tqdm import tqdm

from ..describers import Describer, make_describer

logger = logging.getLogger(__name__)


@dataclass
class GlobalConfig:
    """Retrieval of a 3-D map. `model`: any `hierloc.describers.make_describer` spelling, or 'none' (no retrieval).

    'auto' takes the trained MobileNetVLAD when installed, else ImageNet MobileNetV2 + NetVLAD with
    its clusters initialised by k-means on the map images; `index`: an existing index file whose
    describer (and descriptors of the same keyframes, by name) the map reuses.
    """

    model: str | None = "auto"
    weights: str | None = "auto"
    search: str = "auto"  # flat, hnsw, ivfpq or auto (`hierloc.index.stored_search`)
    search_params: dict[str, dict] = field(default_factory=dict)
    pca_dims: int | None = None
    index: str | None = None
    # Longest image side the network sees (None: the describer's own, 640 px for networks). It is
    # part of the describer's identity, so queries of the map are prepared the same way; the
    # network's time per query grows with the square of it.
    resize_max: int | None = None

    @property
    def enabled(self) -> bool:
        """Whether the map gets a global index."""
        return self.index is not None or str(self.model).lower() not in ("none", "")

    def search_json(self) -> dict[str, Any]:
        """What the map records about its search structure."""
        return {"kind": self.search, "params": self.search_params, "pca_dims": self.pca_dims}


def global_describer(config: GlobalConfig, adaptation_images: Callable[[], Sequence[np.ndarray]] | None,
                     device: str = "cpu") -> Describer | None:
    """The map's describer: from `config.index`, or built as `config.model` spells it; None when retrieval is off."""
    if not config.enabled:
        return None
    if config.index is not None:
        return make_describer(config.index, device=device)
    # Tracing pays off only over many images; the map's describer describes each map image once.
    describer = make_describer(config.model, config.weights, device=device, adaptation_images=adaptation_images)
    if config.resize_max is not None:
        describer.preprocessing = describer.preprocessing.with_overrides(resize_max=config.resize_max)
    return describer


def describe_prepared_images(describer: Describer, images: Sequence[np.ndarray], progress: bool = True,
                             batch_size: int = 8) -> np.ndarray:
    """[N, D] descriptors of images already prepared by `describer.prepare`, batched, with a progress bar."""
    out = np.empty((len(images), describer.descriptor_dim), np.float32)
    with tqdm(total=len(images), desc="global descriptors", unit="img", disable=not progress) as bar:
        for start in range(0, len(images), batch_size):
            chunk = images[start:start + batch_size]
            out[start:start + len(chunk)] = describer.describe_prepared(chunk)
            bar.update(len(chunk))
    return out


def reuse_index_rows(index_path: str, names: Sequence[str]) -> tuple[np.ndarray, list[int]]:
    """Descriptors of `names` from an existing index (matched by image name) and the positions it lacks."""
    from ..index.io import load_index

    index = load_index(index_path)
    by_name: dict[str, int] = {}
    for row, name in enumerate(index.names):
        if name in by_name:
            by_name[name] = -1  # ambiguous (the same name in two missions): describe it again
        else:
            by_name[name] = row
    out = np.zeros((len(names), index.descriptor_size), np.float32)
    missing = []
    for i, name in enumerate(names):
        row = by_name.get(name, -1)
        if row < 0:
            missing.append(i)
        else:
            out[i] = index.descriptors[row]
    return out, missing
