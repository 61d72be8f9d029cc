"""Fuzz targets of the index side: native (h5) and protobuf indexes with their side files, hloc h5 local feature
and global descriptor files, model checkpoints, VPR-Bench and folder ground truth, and `convert netvlad-mat`.

Seeds are tiny: 5 images of 64x48 pixels described by DenseVLAD with a 4-word vocabulary (512-D) for the
indexes and datasets, and a MobileNetVLAD with 4 clusters and a 16-D output (about 1 MB) for checkpoints. A
template is built once per process and copied into each seed. Structure-aware mutators open the h5, protobuf,
torch and .npy files with their own libraries and change one field: counts and sizes set huge, negative or
zero, NaN in descriptors and PCA, wrong dtypes and shapes, names with "../", duplicate ids, metadata fields of
the wrong type.
"""

from __future__ import annotations

import io
import json
import math
import random
import shutil
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .mutators import BYTE_MUTATORS, bit_flips
from .target import FuzzTarget, Mutator

IMAGE_SIZE = (64, 48)
NUM_IMAGES = 5
VOCABULARY = "vocabulary.npz"
CHECKPOINT = "tiny.pt"
HOSTILE_NAMES = ("../victim.faiss", "../../etc/passwd", "/tmp/x.faiss", "a/b.faiss", "..", "", "x\x00.faiss",
                 "map.h5.0000000g.faiss", "x" * 4000)
HUGE_INTS = (0, -1, -(2**31), 2**31, 2**40, 2**62, 10**9)
HOSTILE_VALUES: tuple[Any, ...] = (None, "x", [], {}, [1, 2], -1, 0, 1e9, 2**62, math.nan, math.inf, True, 1.5)


# --------------------------------------------------------------------------- seeds


def _write_images(folder: Path, names: list[str], seed: int) -> None:
    import cv2

    rng = np.random.default_rng(seed)
    for name in names:
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        width, height = IMAGE_SIZE
        cv2.imwrite(str(path), (rng.random((height, width, 3)) * 255).astype(np.uint8))


def _image_names() -> list[str]:
    return [f"{i:06d}.png" for i in range(NUM_IMAGES)]


def _run_cli(argv: list[str]) -> None:
    import contextlib

    from hierloc.cli.main import main

    with contextlib.redirect_stdout(io.StringIO()):
        code = main(argv)
    if code != 0:
        raise RuntimeError(f"building a fuzz seed failed: hierloc {' '.join(argv)} exited with {code}")


@lru_cache(maxsize=1)
def _template() -> Path:
    """Images, a DenseVLAD vocabulary, an indexed map (h5 + HNSW side file + PCA, and .pb), a tiny checkpoint."""
    import atexit
    import tempfile

    from hierloc.models import build_model, save_checkpoint
    from hierloc.models.densevlad import DenseVLAD, DenseVLADConfig

    root = Path(tempfile.mkdtemp(prefix="hierloc-fuzz-indexes-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    config = DenseVLADConfig(num_clusters=4, pca_dim=None, scales=(1.0,))
    DenseVLAD(config, np.random.default_rng(0).random((4, 128)).astype(np.float32)).save(root / VOCABULARY)
    _write_images(root / "imgs" / "day", _image_names(), seed=0)
    _write_poses(root / "imgs" / "day")
    _write_images(root, ["q.png"], seed=1)
    densevlad = ["--model", f"densevlad={root / VOCABULARY}", "--workers", "0", "--threads", "1"]
    _run_cli(["index", "build", str(root / "imgs"), "--out", str(root / "map.h5"), *densevlad, "--index", "hnsw",
              "--pca-dims", "3", "--store-poses"])
    _run_cli(["index", "convert", str(root / "map.h5"), str(root / "map.pb")])
    _run_cli(["query", str(root / "map.h5"), str(root / "q.png"), "-k", "2", "--rerank", "2", "--rerank-features",
              "sift", "--reference-root", str(root / "imgs"), "--threads", "1"])
    model = build_model("mobilenetvlad", num_clusters=4, reduction_dim=16)
    save_checkpoint(model, root / "net" / CHECKPOINT)
    _write_images(root / "net" / "imgs" / "day", _image_names()[:3], seed=2)
    _run_cli(["index", "build", str(root / "net" / "imgs"), "--out", str(root / "net" / "map.h5"), "--model",
              f"mobilenetvlad={root / 'net' / CHECKPOINT}", "--workers", "0", "--threads", "1", "--index", "flat"])
    return root


def _write_poses(folder: Path) -> None:
    """A TUM pose file of the mission's images, in image order (identity rotations along a line)."""
    lines = ["# timestamp tx ty tz qx qy qz qw"] + [f"{i:.1f} {i:.1f} 0 0 0 0 0 1" for i in range(NUM_IMAGES)]
    (folder / "poses.txt").write_text("\n".join(lines) + "\n")


def _copy_template(folder: Path, names: list[str]) -> None:
    root = _template()
    for name in names:
        source = root / name
        if source.is_dir():
            shutil.copytree(source, folder / name)
        else:
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, folder / name)


def _side_file(folder: Path) -> str:
    return next(p.name for p in folder.glob("map.h5.*.faiss"))


def _native_seed(folder: Path) -> list[str]:
    root = _template()
    describer = next(p.name for p in root.glob("describer-densevlad-*.npz"))
    _copy_template(folder, ["map.h5", _side_file(root), describer, "q.png", "imgs"])
    return ["map.h5", _side_file(folder)]


def _proto_seed(folder: Path) -> list[str]:
    root = _template()
    describer = next(p.name for p in root.glob("describer-densevlad-*.npz"))
    _copy_template(folder, ["map.pb", describer, "q.png"])
    return ["map.pb"]


def _local_features_seed(folder: Path) -> list[str]:
    _native_seed(folder)
    cache = next(p.name for p in _template().glob("map.h5.rerank-sift-*.h5"))
    _copy_template(folder, [cache])
    return [cache]


def _checkpoint_seed(folder: Path) -> list[str]:
    _copy_template(folder, ["net", "q.png"])
    return [f"net/{CHECKPOINT}"]


def _dataset_seed(layout: str) -> Callable[[Path], list[str]]:
    """A folders or VPR-Bench dataset of 4 references and 2 queries, with precomputed 8-D global descriptors."""

    def make(folder: Path) -> list[str]:
        import h5py

        reference, query = ("ref", "query") if layout == "vprbench" else ("reference", "query")
        names = [f"{i}.png" for i in range(4)]
        _write_images(folder / reference, names, seed=3)
        _write_images(folder / query, names[:2], seed=4)
        rng = np.random.default_rng(5)
        with h5py.File(folder / "descriptors.h5", "w") as f:
            for prefix, count in ((reference, 4), (query, 2)):
                for name in names[:count]:
                    vector = rng.standard_normal(8).astype(np.float32)
                    f.create_dataset(f"{prefix}/{name}/global_descriptor", data=vector / np.linalg.norm(vector))
        if layout == "vprbench":
            truth = np.empty((2, 2), dtype=object)
            truth[0] = [0, np.array([0, 1])]
            truth[1] = [1, np.array([1])]
            np.save(folder / "ground_truth_new.npy", truth)  # object arrays are pickled by default
            return ["ground_truth_new.npy", "descriptors.h5"]
        np.save(folder / "ground_truth.npy", np.array([[0, 1], [1, 2]]))
        return ["ground_truth.npy", "descriptors.h5"]

    return make


def _netvlad_mat_seed(folder: Path) -> list[str]:
    """A MatConvNet SimpleNN struct with the layer kinds the converter knows (far too small to convert)."""
    from scipy.io import savemat

    rng = np.random.default_rng(6)

    def layer(kind: str, name: str, **fields: Any) -> dict[str, Any]:
        return {"type": kind, "name": name, **fields}

    conv_weights = np.empty(2, dtype=object)
    conv_weights[0], conv_weights[1] = rng.random((3, 3, 3, 4)).astype(np.float32), np.zeros(4, np.float32)
    vlad_weights = np.empty(2, dtype=object)
    vlad_weights[0], vlad_weights[1] = rng.random((4, 2)).astype(np.float32), rng.random((4, 2)).astype(np.float32)
    layers = np.empty(5, dtype=object)
    layers[0] = layer("conv", "conv1_1", weights=conv_weights, pad=1, stride=1)
    layers[1] = layer("relu", "relu1_1", leak=0)
    layers[2] = layer("pool", "pool1", method="max", pool=[2, 2], stride=2, pad=0)
    layers[3] = layer("normalize", "preL2", param=[1024.0, 1e-12, 1.0, 0.5])
    layers[4] = layer("custom", "vlad:core", weights=vlad_weights)
    net = {"layers": layers, "meta": {"normalization": {"averageImage": np.array([123.0, 117.0, 104.0])}}}
    savemat(folder / "net.mat", {"net": net})
    return ["net.mat"]


# --------------------------------------------------------------------------- command lines


def _info_argv(name: str) -> Callable[[Path], list[str]]:
    return lambda folder: ["index", "info", str(folder / name), "--json"]


def _query_argv(name: str) -> Callable[[Path], list[str]]:
    return lambda folder: ["query", str(folder / name), str(folder / "q.png"), "-k", "3", "--json",
                           "--threads", "1"]


def _rerank_argv(folder: Path) -> list[str]:
    return ["query", str(folder / "map.h5"), str(folder / "q.png"), "-k", "2", "--rerank", "2", "--rerank-features",
            "sift", "--reference-root", str(folder / "imgs"), "--threads", "1", "--json"]


def _checkpoint_argv(folder: Path) -> list[str]:
    return ["query", str(folder / "net" / "map.h5"), str(folder / "q.png"), "-k", "2", "--json", "--threads", "1",
            "--model", f"mobilenetvlad={folder / 'net' / CHECKPOINT}"]


def _evaluate_argv(kind: str) -> Callable[[Path], list[str]]:
    return lambda folder: ["evaluate", "--dataset", kind, str(folder), "--method", str(folder / "descriptors.h5"),
                           "--no-cache", "--max-n", "2", "--json", str(folder / "out.json")]


def _convert_argv(folder: Path) -> list[str]:
    return ["convert", "netvlad-mat", str(folder / "net.mat"), str(folder / "out.pt")]


# --------------------------------------------------------------------------- implausible results


def _json_of(stdout: str) -> Any:
    start = stdout.find("{")
    return json.loads(stdout[start:]) if start >= 0 else None


def _query_implausible(known_names: Callable[[Path], set[str]]) -> Callable[[Path, str], str | None]:
    def check(folder: Path, stdout: str) -> str | None:
        result = _json_of(stdout)
        if result is None:
            return "no JSON result"
        names = known_names(folder)
        for query in result["queries"]:
            hits = query["results"]
            if not hits:
                return "no keyframe retrieved from a non-empty index"
            distances = [hit["distance"] for hit in hits]
            if any(d is None or not math.isfinite(d) or d < 0 or d > 2.0001 for d in distances):
                return f"distances {distances} are not Euclidean distances of unit vectors"
            if "rerank" not in query and distances != sorted(distances):
                return f"distances {distances} are not in increasing order"
            if [hit["rank"] for hit in hits] != list(range(len(hits))):
                return "ranks are not 0, 1, ..."
            unknown = [hit["name"] for hit in hits if hit["name"] not in names]
            if unknown:
                return f"retrieved keyframes that were never indexed: {unknown[:2]}"
            for hit in hits:
                position = hit.get("position")
                if position is not None and not all(math.isfinite(v) for v in position):
                    return f"non-finite keyframe position {position}"
        return None

    return check


def _map_names(folder: Path) -> set[str]:
    return {f"day/{name}" for name in _image_names()}


def _net_names(folder: Path) -> set[str]:
    return {f"day/{name}" for name in _image_names()[:3]}


def _info_implausible(folder: Path, stdout: str) -> str | None:
    info = _json_of(stdout)
    if info is None:
        return "no JSON result"
    if not isinstance(info.get("keyframes"), int) or info["keyframes"] < 0:
        return f"keyframes {info.get('keyframes')!r}"
    if not isinstance(info.get("descriptor_size"), int) or not 1 <= info["descriptor_size"] <= 2**20:
        return f"descriptor_size {info.get('descriptor_size')!r}"
    if sum(info["missions"].values()) != info["keyframes"]:
        return "missions do not add up to the keyframes"
    return None


def _evaluate_implausible(folder: Path, stdout: str) -> str | None:
    path = folder / "out.json"
    if not path.is_file():
        return "no results written"
    text = path.read_text()
    if "NaN" in text or "Infinity" in text:
        return "non-finite numbers in the results"

    def walk(value: Any) -> str | None:
        if isinstance(value, dict):
            for key, item in value.items():
                if "recall" in str(key).lower() and isinstance(item, (int, float)) and not 0 <= item <= 1:
                    return f"{key} = {item}"
                found = walk(item)
                if found:
                    return found
        elif isinstance(value, list):
            for item in value:
                found = walk(item)
                if found:
                    return found
        return None

    return walk(json.loads(text))


# --------------------------------------------------------------------------- structure-aware mutators


def _h5_edit(edit: Callable[[Any, random.Random], None], name: str) -> Mutator:
    """A mutator that opens the h5 bytes with h5py, applies `edit(file, rng)` and returns the new bytes."""

    def mutate(data: bytes, rng: random.Random) -> bytes:
        import h5py

        buffer = io.BytesIO(data)
        try:
            with h5py.File(buffer, "r+") as f:
                edit(f, rng)
        except (OSError, KeyError, ValueError, TypeError, IndexError):
            return bit_flips(data, rng)  # not an h5 file this edit applies to (e.g. the side file)
        return _resigned(buffer.getvalue())

    mutate.__name__ = name
    return mutate


def _resigned(data: bytes) -> bytes:
    """A native index's bytes with its CRC-32C header recomputed: a hostile (or buggy) writer signs what it wrote,
    so the edit reaches the reader's own checks instead of stopping at the checksum."""
    from hierloc.index.native_format import INTEGRITY_MAGIC, signed_index_bytes

    return signed_index_bytes(data) if data.startswith(INTEGRITY_MAGIC) and len(data) >= 512 else data


def _damage_resigned(data: bytes, rng: random.Random) -> bytes:
    """Byte-level damage (also to HDF5's own structures) under a valid checksum: what libhdf5 faces from a hostile
    file."""
    return _resigned(rng.choice(BYTE_MUTATORS)(data, rng))


def _replace_dataset(group: Any, key: str, value: Any, **options: Any) -> None:
    if key in group:
        del group[key]
    group.create_dataset(key, data=value, **options)


def _datasets(f: Any) -> list[str]:
    import h5py

    found: list[str] = []
    f.visititems(lambda name, obj: found.append(name) if isinstance(obj, h5py.Dataset) else None)
    return found


def _hostile_array(rng: random.Random, like: np.ndarray) -> np.ndarray:
    """An array of the wrong dtype, shape or values in place of `like`."""
    choice = rng.randrange(7)
    if choice == 0:
        bad = like.astype(np.float64, copy=True).reshape(-1)
        if bad.size:
            bad[rng.randrange(bad.size)] = rng.choice((math.nan, math.inf, -math.inf, 1e300))
        return bad.reshape(like.shape)
    if choice == 1:
        return np.array([b"x" * 8] * max(1, like.size), dtype="S8")
    if choice == 2:
        return like.reshape(-1)
    if choice == 3:
        return np.zeros((*like.shape, 2), like.dtype if like.dtype.kind != "O" else np.float32)
    if choice == 4:
        return np.zeros((0,) + like.shape[1:], np.float32)
    if choice == 5:
        return np.full(like.shape, rng.choice((1e30, -1e30, 65504.0)), np.float32)
    return like.T.copy() if like.ndim == 2 else np.zeros((), np.int32)


def _sparse_huge_dataset(f: Any, rng: random.Random) -> None:
    """Replace a dataset by one declaring billions of elements with no chunk written (costs no bytes)."""
    name = rng.choice(_datasets(f))
    shape = f[name].shape or (1,)
    huge = (rng.choice((2**31, 2**40)),) + tuple(shape[1:])
    del f[name]
    f.create_dataset(name, shape=huge, dtype=np.float32, chunks=(1,) + tuple(shape[1:]))


def _bad_dataset(f: Any, rng: random.Random) -> None:
    name = rng.choice(_datasets(f))
    _replace_dataset(f, name, _hostile_array(rng, np.asarray(f[name][...])))


def _bad_attr(f: Any, rng: random.Random) -> None:
    groups = [f, *[f[n] for n in _datasets(f)]]
    if "pca" in f:
        groups.append(f["pca"])
    target = rng.choice(groups)
    keys = list(target.attrs)
    if not keys:
        raise KeyError("no attributes")
    key = rng.choice(keys)
    value = rng.choice((*HUGE_INTS, "x", math.nan, np.array([1, 2]), b"\xff\xfe"))
    target.attrs[key] = value


def _nan_values(f: Any, rng: random.Random) -> None:
    names = [n for n in _datasets(f) if f[n].dtype.kind == "f"]
    name = rng.choice(names)
    values = np.array(f[name][...])
    if values.size:
        values.reshape(-1)[rng.randrange(values.size)] = rng.choice((math.nan, math.inf, -math.inf))
    f[name][...] = values


def _edit_metadata(f: Any, rng: random.Random) -> None:
    """A field of the native index's metadata JSON (search record, describer record...) of a hostile value."""
    from hierloc.index.native_format import read_text_dataset, write_text_dataset

    metadata = json.loads(read_text_dataset(f, "metadata_json"))
    records = [(metadata, key) for key in metadata]
    for key in ("search_index", "describer"):
        if isinstance(metadata.get(key), dict):
            records += [(metadata[key], field) for field in metadata[key]]
            if isinstance(metadata[key].get("params"), dict):
                records += [(metadata[key]["params"], field) for field in metadata[key]["params"]]
    container, key = rng.choice(records)
    if key in ("file", "weights_file") and rng.random() < 0.7:
        container[key] = rng.choice(HOSTILE_NAMES)
    else:
        container[key] = rng.choice(HOSTILE_VALUES)
    write_text_dataset(f, "metadata_json", json.dumps(metadata))


def _duplicate_id(f: Any, rng: random.Random) -> None:
    ids = np.array(f["keyframe_ids"][...])
    if len(ids) > 1:
        ids[rng.randrange(1, len(ids))] = ids[0]
    f["keyframe_ids"][...] = ids


def _hostile_row_name(f: Any, rng: random.Random) -> None:
    from hierloc.index.native_format import read_text_dataset, write_text_dataset

    key = rng.choice(("names", "missions", "resource_names"))
    values = read_text_dataset(f, key).split("\x00")
    values[rng.randrange(len(values))] = rng.choice(HOSTILE_NAMES)
    write_text_dataset(f, key, "\x00".join(values))


def _pca_damage(f: Any, rng: random.Random) -> None:
    key = rng.choice(("mean", "components", "explained_variance"))
    values = np.array(f["pca"][key][...], dtype=np.float64)
    values.reshape(-1)[rng.randrange(values.size)] = rng.choice((math.nan, math.inf, 1e30, -5.0))
    _replace_dataset(f["pca"], key, values)


NATIVE_MUTATORS: tuple[Mutator, ...] = (
    _h5_edit(_bad_attr, "native_bad_attribute"), _h5_edit(_bad_dataset, "native_bad_dataset"),
    _h5_edit(_sparse_huge_dataset, "native_sparse_huge_dataset"), _h5_edit(_nan_values, "native_nan_values"),
    _h5_edit(_edit_metadata, "native_metadata_field"), _h5_edit(_duplicate_id, "native_duplicate_id"),
    _h5_edit(_hostile_row_name, "native_hostile_name"), _h5_edit(_pca_damage, "native_pca_damage"),
    _damage_resigned,
)


def _local_feature_edit(f: Any, rng: random.Random) -> None:
    """One image's keypoints, descriptors, scores or image_size of a hostile shape, dtype or value."""
    images = [n.rsplit("/", 1)[0] for n in _datasets(f) if n.endswith("/keypoints")]
    group = f[rng.choice(images)]
    key = rng.choice(("keypoints", "descriptors", "scores", "image_size"))
    if key in group:
        _replace_dataset(group, key, _hostile_array(rng, np.asarray(group[key][...])))


H5_FEATURE_MUTATORS: tuple[Mutator, ...] = (
    _h5_edit(_local_feature_edit, "features_hostile_dataset"), _h5_edit(_nan_values, "features_nan_values"),
    _h5_edit(_sparse_huge_dataset, "features_sparse_huge_dataset"), _h5_edit(_bad_dataset, "features_bad_dataset"),
)
GLOBAL_DESCRIPTOR_MUTATORS: tuple[Mutator, ...] = (
    _h5_edit(_bad_dataset, "descriptors_bad_dataset"), _h5_edit(_nan_values, "descriptors_nan_values"),
    _h5_edit(_sparse_huge_dataset, "descriptors_sparse_huge_dataset"),
)


def _proto_edit(edit: Callable[[Any, random.Random], None], name: str) -> Mutator:
    def mutate(data: bytes, rng: random.Random) -> bytes:
        from hierloc.index.proto_format import DescriptorIndexMessage

        message = DescriptorIndexMessage()
        try:
            message.ParseFromString(data)
            edit(message, rng)
        except Exception:  # not a message this edit applies to
            return bit_flips(data, rng)
        return message.SerializePartialToString()

    mutate.__name__ = name
    return mutate


def _proto_sizes(message: Any, rng: random.Random) -> None:
    choice = rng.randrange(4)
    if choice == 0:
        message.descriptor_size = rng.choice(HUGE_INTS)
    elif choice == 1:
        message.hierloc_extras.num_frames = rng.choice((0, 1, 2**40, 2**63))
    else:
        matrix = rng.choice(message.frames).global_descriptor
        if choice == 2:
            matrix.rows = rng.choice((0, 1, 2**31, 2**32 - 1))
        else:
            del matrix.data[rng.randrange(len(matrix.data)):]


def _proto_values(message: Any, rng: random.Random) -> None:
    frame = rng.choice(message.frames)
    choice = rng.randrange(4)
    if choice == 0:
        frame.global_descriptor.data[rng.randrange(len(frame.global_descriptor.data))] = rng.choice(
            (math.nan, math.inf, 1e38))
    elif choice == 1:
        frame.vertex_id.uint[:] = list(message.frames[0].vertex_id.uint)  # a duplicate keyframe id
    elif choice == 2:
        frame.rotation_matrix.data[rng.randrange(9)] = rng.choice((math.nan, 5.0, 0.0))
    else:
        frame.resource_name = rng.choice(HOSTILE_NAMES)


def _proto_metadata(message: Any, rng: random.Random) -> None:
    extras = message.hierloc_extras
    metadata = json.loads(extras.metadata_json) if extras.metadata_json else {}
    if metadata and rng.random() < 0.7:
        key = rng.choice(list(metadata))
        metadata[key] = rng.choice(HOSTILE_VALUES)
        extras.metadata_json = json.dumps(metadata)
    else:
        extras.metadata_json = rng.choice(("[]", "null", "{", "\"x\"", "{\"describer\": 5}"))
    if rng.random() < 0.3:
        extras.missions.append("extra")


PROTO_MUTATORS: tuple[Mutator, ...] = (
    _proto_edit(_proto_sizes, "proto_sizes"), _proto_edit(_proto_values, "proto_values"),
    _proto_edit(_proto_metadata, "proto_metadata"),
)


def _checkpoint_edit(edit: Callable[[dict, random.Random], None], name: str) -> Mutator:
    def mutate(data: bytes, rng: random.Random) -> bytes:
        import torch

        try:
            payload = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
            edit(payload, rng)
        except Exception:
            return bit_flips(data, rng)
        buffer = io.BytesIO()
        torch.save(payload, buffer)
        return buffer.getvalue()

    mutate.__name__ = name
    return mutate


def _checkpoint_config(payload: dict, rng: random.Random) -> None:
    key = rng.choice(list(payload["config"]))
    payload["config"][key] = rng.choice((10**9, 2**40, -1, 0, "x", None, 1e300, [1], True))


def _checkpoint_tensor(payload: dict, rng: random.Random) -> None:
    import torch

    state = payload["state_dict"]
    key = rng.choice([k for k, v in state.items() if v.is_floating_point() and v.numel()])
    tensor = state[key].clone()
    choice = rng.randrange(4)
    if choice == 0:
        tensor.view(-1)[rng.randrange(tensor.numel())] = rng.choice((math.nan, math.inf, 1e30))
    elif choice == 1:
        tensor = torch.zeros(tensor.numel() + 1)
    elif choice == 2:
        del state[key]
        return
    else:
        tensor.view(-1)[rng.randrange(tensor.numel())] += 0.5  # silent damage: only the checksum tells
    state[key] = tensor


def _checkpoint_fields(payload: dict, rng: random.Random) -> None:
    key = rng.choice(("model_kind", "config", "state_dict", "format", "tensors_sha256", "model_name"))
    if rng.random() < 0.3:
        payload.pop(key, None)
    else:
        payload[key] = rng.choice(("netvlad", None, 5, [1, 2], {"a": 1}, "x"))


CHECKPOINT_MUTATORS: tuple[Mutator, ...] = (
    _checkpoint_edit(_checkpoint_config, "checkpoint_config_value"),
    _checkpoint_edit(_checkpoint_tensor, "checkpoint_tensor"),
    _checkpoint_edit(_checkpoint_fields, "checkpoint_fields"),
)


def _npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)  # object dtype: written as a pickle (np.save's default)
    return buffer.getvalue()


def _object_array(items: list[Any]) -> np.ndarray:
    array = np.empty(len(items), dtype=object)
    for i, item in enumerate(items):
        array[i] = item
    return array


def _hostile_ground_truth(data: bytes, rng: random.Random) -> bytes:
    """A ground-truth .npy of a wrong shape, dtype or values (the right file name, the wrong contents)."""
    if not data.startswith(b"\x93NUMPY"):
        return bit_flips(data, rng)
    candidates: list[Callable[[], np.ndarray]] = [
        lambda: np.array(5),
        lambda: np.array([[0, math.nan]]),
        lambda: np.array([[0.5, 1.5]]),
        lambda: np.array([[2**40, -1]]),
        lambda: np.array(["a", "b"]),
        lambda: np.zeros((2, 2, 2), np.int64),
        lambda: np.array([[True, False]]),
        lambda: np.zeros(3, dtype=[("a", "i4"), ("b", "f4")]),
        lambda: _object_array([[0, [[1], [2, 3]]], [1, [0]]]),
        lambda: _object_array([{"a": 1}, None]),
        lambda: _object_array([[0, "x"], [1, [0]]]),
        lambda: _object_array([[0, np.array([1.5])], [1, [99]]]),
        lambda: _object_array([]),
        lambda: np.empty((0, 2), np.int64),
        lambda: np.arange(10**5).reshape(-1, 2),
    ]
    return _npy_bytes(rng.choice(candidates)())


def _npy_header_field(data: bytes, rng: random.Random) -> bytes:
    """Rewrite the .npy header's shape or dtype (the data stays as it was)."""
    text = data[:256].decode("latin-1")
    replacements = [("'shape': (", f"'shape': ({rng.choice((2**31, 2**62, 0, 10**6))}, "),
                    ("'descr': '", f"'descr': '{rng.choice(('<f8', '|O', '<U99', '|V9', '>i8'))}"),
                    ("'fortran_order': False", "'fortran_order': True")]
    old, new = rng.choice(replacements)
    if old not in text:
        return bit_flips(data, rng)
    if old.startswith("'descr'"):  # replace the whole dtype string
        start = text.index(old) + len(old)
        end = text.index("'", start)
        text = text[:start - 1] + new[len("'descr': "):] + "'" + text[end + 1:]
        rebuilt = text.encode("latin-1")
    else:
        rebuilt = text.replace(old, new, 1).encode("latin-1")
    return rebuilt + data[256:]


GROUND_TRUTH_MUTATORS: tuple[Mutator, ...] = (_hostile_ground_truth, _npy_header_field)


def _mat_field(data: bytes, rng: random.Random) -> bytes:
    """Re-save the .mat with one layer field of a hostile type or value."""
    from scipy.io import loadmat, savemat

    try:
        mat = loadmat(io.BytesIO(data), squeeze_me=False, struct_as_record=True)
        net = mat["net"]
        layers = net["layers"][0, 0]
        flat = layers.reshape(-1)
        target = flat[rng.randrange(flat.size)]
        record = target[0, 0] if isinstance(target, np.ndarray) and target.dtype.names else target
        field = rng.choice(record.dtype.names)
        record[field] = np.array(rng.choice((np.nan, "x", 1e300, -1.0, np.zeros((0, 0)), np.ones((2, 2, 2)))),
                                 dtype=object)
    except Exception:
        return bit_flips(data, rng)
    buffer = io.BytesIO()
    try:
        savemat(buffer, {"net": net})
    except Exception:
        return bit_flips(data, rng)
    return buffer.getvalue()


# --------------------------------------------------------------------------- targets


TARGETS: list[FuzzTarget] = [
    FuzzTarget("index-native-info", _native_seed, _info_argv("map.h5"), NATIVE_MUTATORS, _info_implausible),
    FuzzTarget("index-native-query", _native_seed, _query_argv("map.h5"), NATIVE_MUTATORS,
               _query_implausible(_map_names)),
    FuzzTarget("index-proto-query", _proto_seed, _query_argv("map.pb"), PROTO_MUTATORS,
               _query_implausible(_map_names)),
    FuzzTarget("hloc-local-features", _local_features_seed, _rerank_argv, H5_FEATURE_MUTATORS,
               _query_implausible(_map_names)),
    FuzzTarget("hloc-global-descriptors", _dataset_seed("folders"), _evaluate_argv("folders"),
               GLOBAL_DESCRIPTOR_MUTATORS + GROUND_TRUTH_MUTATORS, _evaluate_implausible),
    FuzzTarget("checkpoint", _checkpoint_seed, _checkpoint_argv, CHECKPOINT_MUTATORS, _query_implausible(_net_names)),
    FuzzTarget("vprbench-ground-truth", _dataset_seed("vprbench"), _evaluate_argv("vprbench"),
               GROUND_TRUTH_MUTATORS + GLOBAL_DESCRIPTOR_MUTATORS, _evaluate_implausible),
]
# `convert netvlad-mat` cannot take part in a run: a seed it accepts is the full VGG16 (over 60 MB per case), and
# the runner wants seeds that are accepted. Its reader is fuzzed by tests/test_hardening_indexes.py instead
# (pickles, damaged and foreign .mat files, hostile layer fields from this target's seed and mutator).
NETVLAD_MAT_TARGET = FuzzTarget("convert-netvlad-mat", _netvlad_mat_seed, _convert_argv, (_mat_field,))
