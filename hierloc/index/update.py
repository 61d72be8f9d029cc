"""Change a saved index in place: add keyframes (a robot extends its map) or remove a mission.

The stored search structure is updated, not rebuilt: new vectors go through the trained quantizers
and the PCA fitted at build time (so a very different new area is searched less precisely than a
rebuilt index would: rebuild once the added part dominates); removed rows are deleted from IVF-PQ
and flat structures and become tombstones in an HNSW graph. The h5 and its side file are rewritten
atomically, as by `save_index_with_search`.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import numpy as np

from hierloc.index.descriptor_index import DescriptorIndex
from hierloc.index.errors import IndexCompatibilityError
from hierloc.index.io import detect_format, load_index, save_index
from hierloc.index.search import SearchBackend
from hierloc.index.stored_search import (
    StoredSearchInfo,
    load_stored_search,
    project_map,
    save_index_with_search,
)

logger = logging.getLogger(__name__)


@dataclass
class UpdateReport:
    """What an update did: rows before and after, and how the search structure followed."""

    rows_before: int
    rows_after: int
    search: str  # "updated in place", "re-filled", "rebuilt", or "none stored"


def _stored_backend(path: str | os.PathLike,
                    index: DescriptorIndex) -> tuple[SearchBackend | None, StoredSearchInfo | None]:
    info = StoredSearchInfo.from_metadata(index.metadata, path)
    if info is None or info.file is None:
        return None, info
    loaded = load_stored_search(path, index, mmap=False)
    return (loaded[0], info) if loaded is not None else (None, info)


def _save(index: DescriptorIndex, path: str | os.PathLike, backend: SearchBackend | None,
          info: StoredSearchInfo | None) -> None:
    if info is None:
        save_index(index, path)
        return
    if backend is None:
        # Flat (no side file) or an unusable side file: rebuild from the descriptors as recorded.
        from hierloc.index.approximate import build_backend

        backend = build_backend(info.kind, project_map(index.descriptors, index.pca if info.pca else None),
                                info.params)
    save_index_with_search(index, backend, path, pca=index.pca if info.pca else None)


def add_keyframes(path: str | os.PathLike, new: DescriptorIndex) -> UpdateReport:
    """Append the rows of `new` (same model, new keyframe ids) to the index at `path` and its search structure."""
    if detect_format(path) != "native":
        index = load_index(path)
        merged = index.concatenate(new)
        save_index(merged, path, format="protobuf")
        return UpdateReport(len(index), len(merged), "none stored")
    index = load_index(path)
    if new.model_name != index.model_name or new.descriptor_size != index.descriptor_size:
        raise IndexCompatibilityError(
            f"{path}: built by model {index.model_name!r} ({index.descriptor_size}-D); the new keyframes come from "
            f"{new.model_name!r} ({new.descriptor_size}-D)"
        )
    duplicates = sorted(set(index.keyframe_ids) & set(new.keyframe_ids))
    if duplicates:
        raise ValueError(f"{path}: {len(duplicates)} of the new keyframes are already indexed, e.g. {duplicates[0]}")
    backend, info = _stored_backend(path, index)
    pca = index.pca
    merged = index.concatenate(new)
    merged.pca = pca  # the structure's search space stays the one fitted at build time
    merged.metadata = dict(index.metadata)
    merged.metadata["missions"] = sorted(set(merged.missions))
    how = "none stored" if info is None else "rebuilt"
    if backend is not None:
        backend.add(project_map(new.descriptors, pca if info.pca else None))
        how = "updated in place"
    _save(merged, path, backend, info)
    return UpdateReport(len(index), len(merged), how)


def remove_mission(path: str | os.PathLike, mission: str) -> UpdateReport:
    """Delete every keyframe of `mission` from the index at `path` and from its search structure."""
    index = load_index(path)
    missions = np.asarray(index.missions, dtype=object)
    doomed = np.flatnonzero(missions == mission)
    if not doomed.size:
        known = sorted(set(index.missions))
        raise ValueError(f"{path}: no mission {mission!r} in the index; it has {known}")
    kept = index.subset(missions != mission)
    kept.metadata = dict(index.metadata)
    kept.metadata["missions"] = sorted(set(kept.missions))
    if detect_format(path) != "native":
        save_index(kept, path, format="protobuf")
        return UpdateReport(len(index), len(kept), "none stored")
    backend, info = _stored_backend(path, index)
    how = "none stored" if info is None else "rebuilt"
    if backend is not None:
        try:
            backend.remove(doomed)
            how = "updated in place"
        except NotImplementedError:
            # Re-ranked IVF-PQ addresses its copy by insertion order: keep the training, re-add the rest.
            backend.reset()
            backend.add(project_map(kept.descriptors, kept.pca if info.pca else None))
            how = "re-filled"
    _save(kept, path, backend, info)
    return UpdateReport(len(index), len(kept), how)
