"""Describers recorded in artifacts: an index file or a 3-D map knows what built it.

An artifact's metadata holds a describer record (JSON):

    {"format": "hierloc.describer", "version": 1, "kind": "network", "name": "mobilenetvlad_imagenet",
     "descriptor_dim": 10240, "weights_sha256": "...", "preprocessing": {...},
     "weights_name": null, "weights_file": "describer-mobilenetvlad_imagenet-0123456789abcdef.pth"}

Weights from the registry are referenced by name (`weights_name`) and checked by SHA-256 when
loaded; any other weights (a user's checkpoint, a network adapted to the map, an exported file, a
DenseVLAD vocabulary) are stored beside the artifact under a plain file name that carries their
fingerprint, so several indexes in one folder share one copy. Loading verifies the fingerprint,
so a damaged or replaced weights file is refused instead of giving other descriptors.

`describer_for_artifact` is the one check used by every command that reads an index or map: with
no describer asked for, the recorded one; with another, a DescriberMismatchError unless forced.
Artifacts written before records existed get a describer rebuilt from their legacy fields.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from .base import Describer, DescriberError, DescriberIdentity, DescriberMismatchError, Preprocessing

logger = logging.getLogger(__name__)

RECORD_FORMAT = "hierloc.describer"
RECORD_VERSION = 1
METADATA_KEY = "describer"
MAP_INDEX_FILE = "global_index.h5"
KINDS = ("network", "exported", "densevlad")


def weights_file_name(describer: Describer) -> str:
    """Plain file name for the describer's weights: its name and fingerprint."""
    return f"describer-{describer.name}-{describer.weights_sha256[:16]}{describer.weights_file_suffix()}"


def describer_record(describer: Describer, folder: str | os.PathLike) -> dict[str, Any]:
    """The record of `describer` for an artifact in `folder`; weights not in the registry are written there."""
    identity = describer.identity
    record = {"format": RECORD_FORMAT, "version": RECORD_VERSION, "kind": identity.kind, "name": identity.name,
              "descriptor_dim": identity.descriptor_dim, "weights_sha256": identity.weights_sha256,
              "preprocessing": identity.preprocessing.to_json(), "weights_name": describer.weights_name,
              "weights_file": None}
    if describer.weights_name is None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        name = weights_file_name(describer)
        if not (folder / name).is_file():  # the same weights are already there otherwise (name = fingerprint)
            describer.write_weights(folder / name)
        record["weights_file"] = name
    return record


def _plain_name(value: Any, source: str) -> str:
    if (not isinstance(value, str) or not value or value in (".", "..") or "/" in value or "\\" in value
            or "\x00" in value or os.path.isabs(value)):
        raise DescriberError(f"{source}: the recorded describer file {value!r} is not a plain file name")
    return value


def identity_of_record(record: Any, source: str) -> DescriberIdentity:
    """The identity a record states, validated (one-line errors naming `source`)."""
    if not isinstance(record, dict) or record.get("format") != RECORD_FORMAT:
        raise DescriberError(f"{source}: the describer record is missing or not a {RECORD_FORMAT} record")
    if not isinstance(record.get("version"), int) or record["version"] > RECORD_VERSION:
        raise DescriberError(f"{source}: describer record version {record.get('version')!r} is not one this "
                             f"hierloc reads (<= {RECORD_VERSION}); upgrade hierloc")
    kind, name, dim, sha = (record.get(k) for k in ("kind", "name", "descriptor_dim", "weights_sha256"))
    if kind not in KINDS or not isinstance(name, str) or not name:
        raise DescriberError(f"{source}: describer record has kind {kind!r} and name {name!r}")
    if isinstance(dim, bool) or not isinstance(dim, int) or not 1 <= dim <= 1 << 20:
        raise DescriberError(f"{source}: describer record has descriptor_dim {dim!r}")
    if sha is not None and (not isinstance(sha, str) or len(sha) != 64):
        raise DescriberError(f"{source}: describer record has weights_sha256 {sha!r}")
    try:
        preprocessing = Preprocessing.from_json(record.get("preprocessing", {}))
    except DescriberError as exc:
        raise DescriberError(f"{source}: {exc}") from None
    return DescriberIdentity(kind, name, dim, sha, preprocessing)


def load_recorded_describer(record: dict[str, Any], folder: str | os.PathLike, source: str, *, device: str = "auto",
                            precision: str = "auto", threads: int | None = None, fast: bool = True) -> Describer:
    """Rebuild the describer a record names, from the weights beside the artifact or the registry; verified."""
    from ..export.runtime import load_exported_model
    from ..models.densevlad import DenseVLAD
    from .factory import network_describer
    from .implementations import DenseVLADDescriber, ExportedDescriber

    identity = identity_of_record(record, source)
    weights_file, weights_name = record.get("weights_file"), record.get("weights_name")
    path = Path(folder) / _plain_name(weights_file, source) if weights_file is not None else None
    if path is not None and not path.is_file():
        raise DescriberError(f"{source}: its describer's weights {path} are missing (they are stored beside it; "
                             "copy them along with the index or map)")
    if path is None and (identity.kind != "network" or not isinstance(weights_name, str)):
        raise DescriberError(f"{source}: the describer record names neither a weights file nor registry weights")
    if identity.kind == "network":
        describer = network_describer(identity.name, path if path is not None else weights_name, device=device,
                                      precision=precision, fast=fast, preprocessing=identity.preprocessing)
    elif identity.kind == "exported":
        describer = ExportedDescriber(load_exported_model(path, device=device, precision=precision, threads=threads),
                                      identity.preprocessing)
    else:
        describer = DenseVLADDescriber(DenseVLAD.load(path), identity.preprocessing)
    problem = identity.mismatch(describer.identity)
    if problem is None and identity.weights_sha256 != describer.weights_sha256:
        problem = "weights whose SHA-256 differs from the recorded one"
    if problem is not None:
        raise DescriberError(f"{source}: the stored describer ({path or weights_name}) does not match its record: "
                             f"{problem} (damaged or replaced file)")
    return describer


def _legacy_preprocessing(metadata: dict[str, Any]) -> Preprocessing:
    """Images were given to the network as they were, or resized as an old index or map recorded."""
    resize = metadata.get("image_resize")
    return Preprocessing(resize=tuple(resize) if isinstance(resize, list) and len(resize) == 2 else None,
                         resize_max=metadata.get("resize_max"))


def _legacy_describer(metadata: dict[str, Any], model_name: str, source: str, **options) -> Describer:
    """The describer of an artifact written before records: its model name, weights and image resize."""
    from .factory import make_describer

    weights = metadata.get("weights", "auto")
    preprocessing = _legacy_preprocessing(metadata)
    logger.info("%s was written before describers were recorded: using %s with weights %s", source, model_name,
                weights)
    return make_describer(model_name, weights if weights not in (None, "None") else "auto",
                          preprocessing=preprocessing, **options)


def is_describer_artifact(path: str | os.PathLike) -> bool:
    """Whether `path` is an index file or a 3-D map folder (whose describer can be read)."""
    path = Path(path)
    if path.is_dir():
        return (path / "map.json").is_file()
    return path.suffix.lower() in (".h5", ".hdf5", ".pb", ".proto", ".protobuf") and _index_format(path) is not None


def _index_format(path: Path) -> str | None:
    from ..index.io import detect_format
    from ..index.native_format import NATIVE_FORMAT

    try:
        kind = detect_format(path)
        if kind == "native":
            # Any HDF5 file has the signature (hloc's descriptor and feature files too): an index says so.
            import h5py

            with h5py.File(path, "r") as f:
                stated = f.attrs.get("format")
            if (stated.decode() if isinstance(stated, bytes) else stated) != NATIVE_FORMAT:
                return None
        return kind
    except (ValueError, OSError):
        return None


def artifact_metadata(path: str | os.PathLike) -> tuple[dict[str, Any], str, Path]:
    """(metadata, model name, folder of the weights) of an index file or a map folder, without its rows."""
    from ..index.io import load_index
    from ..index.native_format import read_native_catalog

    path = Path(path)
    if path.is_dir():
        legacy = _legacy_map_metadata(path)
        index_path = path / MAP_INDEX_FILE
        if not index_path.is_file():
            raise DescriberError(f"{path}: this 3-D map has no global index (it was built without retrieval)")
        path = index_path
    else:
        legacy = None
    catalog = read_native_catalog(path) if _index_format(path) == "native" else load_index(path)
    metadata = dict(catalog.metadata)
    if legacy is not None and METADATA_KEY not in metadata:
        metadata.update(legacy)
    return metadata, catalog.model_name, path.parent


def _legacy_map_metadata(folder: Path) -> dict[str, Any]:
    """What map.json said about the global network before records existed (name, weights, resize)."""
    import json

    try:
        description = json.loads((folder / "map.json").read_text())
        model = description.get("global_model") or {}
    except (OSError, ValueError, AttributeError):
        return {}
    if not isinstance(model, dict):
        return {}
    weights = model.get("weights")
    if isinstance(weights, str) and weights == Path(weights).name and (folder / weights).is_file():
        weights = str(folder / weights)
    return {"weights": weights or "auto", "resize_max": model.get("resize_max")}


def load_artifact_describer(path: str | os.PathLike, **options) -> Describer:
    """The describer that built an index file or a map folder (recorded, or rebuilt for older files)."""
    metadata, model_name, folder = artifact_metadata(path)
    record = metadata.get(METADATA_KEY)
    if record is None:
        return _legacy_describer(metadata, model_name, str(path), **options)
    return load_recorded_describer(record, folder, str(path), **options)


def describer_for_artifact(path: str | os.PathLike, requested: str | None = None, weights: str | None = "auto",
                           force: bool = False, **options) -> Describer:
    """The describer to query an index or map with: its own, or `requested` if it is the same (or `force`).

    A different describer gives descriptors that do not live in the index's space: refused with a
    one-line DescriberMismatchError naming both; with `force`, used and warned about.
    """
    from .factory import make_describer

    if requested is None:
        return load_artifact_describer(path, **options)
    metadata, model_name, _ = artifact_metadata(path)
    record = metadata.get(METADATA_KEY)
    recorded_name = identity_of_record(record, str(path)).name if record is not None else model_name
    spelled_name = _spelled_model_name(requested)
    if spelled_name is not None and spelled_name != _canonical(recorded_name) and not force:
        # Refused before a possibly large network is loaded for nothing.
        raise DescriberMismatchError(f"{path} was built by another describer: model {spelled_name!r} instead of "
                                     f"{recorded_name!r}; leave out the model option to use its own describer, or "
                                     "force it with --force-describer")
    describer = make_describer(requested, weights, **options)
    if record is not None:
        expected = identity_of_record(record, str(path))
        if not is_describer_artifact(requested):
            # A model spelled by name or file brings no preprocessing of its own: the artifact's applies.
            describer.preprocessing = expected.preprocessing
        problem = expected.mismatch(describer.identity)
    else:
        describer.preprocessing = _legacy_preprocessing(metadata)
        problem = (None if _canonical(model_name) == describer.name
                   else f"model {describer.name!r} instead of {model_name!r}")
    if problem is None:
        return describer
    message = f"{path} was built by another describer: {problem}"
    if not force:
        raise DescriberMismatchError(f"{message}; leave out the model option to use its own describer, or force it "
                                     "with --force-describer")
    logger.warning("%s; forced: its search results are not meaningful", message)
    return describer


def _canonical(name: str) -> str:
    from ..models.configs import canonical_model_name

    return canonical_model_name(name)


def _spelled_model_name(spelling: str) -> str | None:
    """The model a spelling names without loading it (a name, NAME=WEIGHTS, densevlad), or None for files."""
    from ..models import MODEL_SPECS
    from .factory import split_spelling

    name, _ = split_spelling(spelling)
    if name == "densevlad" or _canonical(name) in MODEL_SPECS:
        return _canonical(name)
    return None
