"""Fuzz targets of the map side: COLMAP models (binary, text), pose files (TUM, KITTI, CSV), Strecha cameras,
images (PNG, JPEG) and hierloc map folders, each read by the cheapest hierloc command that reads it.

Seeds are tiny (a few images of 64x48 to 128x96 pixels, a few dozen 3-D points) so that a case takes well under
a second. Global descriptors come from DenseVLAD with a 4-word vocabulary written into each seed (about 0.1 s for
an index of 3 images, where a network takes 1 s on a busy 2-core machine); the vocabulary is not fuzzed here.
"""

from __future__ import annotations

import json
import random
import re
import shutil
import struct
from functools import lru_cache
from pathlib import Path

import numpy as np

from .mutators import (
    HOSTILE_FLOATS,
    HOSTILE_NUMBER_TOKENS,
    data_line_indices,
    huge_field,
    replace_token,
    text_lines_mutator,
)
from .target import FuzzTarget, Mutator

IMAGE_SIZE = (64, 48)
VOCABULARY = "vocabulary.npz"


def _index_options(folder: Path) -> list[str]:
    return ["--model", f"densevlad={folder / VOCABULARY}", "--workers", "0", "--threads", "1", "--batch-size", "4"]


def _write_vocabulary(folder: Path) -> None:
    """A DenseVLAD vocabulary of 4 random words at one scale, no PCA: 512-D descriptors, cheap to compute."""
    from hierloc.models.densevlad import DenseVLAD, DenseVLADConfig

    config = DenseVLADConfig(num_clusters=4, pca_dim=None, scales=(1.0,))
    DenseVLAD(config, np.random.default_rng(0).random((4, 128)).astype(np.float32)).save(folder / VOCABULARY)
HOSTILE_NAMES = ("../outside/x.png", "/etc/passwd", "day/../../x.png", "a\x00b.png", "", "..", "C:\\x.png",
                 "x" * 5000 + ".png", "day/000000.png")


# --------------------------------------------------------------------------- seeds


def _textured_image(rng: np.random.Generator, size: tuple[int, int] = IMAGE_SIZE) -> np.ndarray:
    width, height = size
    image = (rng.random((height, width, 3)) * 255).astype(np.uint8)
    return image


def _write_images(folder: Path, names: list[str], seed: int = 0) -> None:
    import cv2

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        ok, encoded = cv2.imencode(Path(name).suffix, _textured_image(rng))
        assert ok
        (folder / name).write_bytes(encoded.tobytes())


@lru_cache(maxsize=1)
def _synthetic_map_template() -> Path:
    """A small synthetic dataset and its 3-D map (built once per process, copied into every seed that needs it)."""
    import atexit
    import contextlib
    import io
    import tempfile

    from hierloc.cli.main import main
    from hierloc.maps import make_synthetic_map, write_synthetic_dataset

    root = Path(tempfile.mkdtemp(prefix="hierloc-fuzz-template-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    world = make_synthetic_map(num_missions=2, frames_per_mission=20, image_size=(128, 96), seed=3)
    day, dusk = world.select(["day"]), world.select(["dusk"])
    for mission in day.missions.values():
        mission.keyframes = mission.keyframes[:5]
    for mission in dusk.missions.values():
        mission.keyframes = mission.keyframes[1:2]
    write_synthetic_dataset(day, root / "mapping")
    write_synthetic_dataset(dusk, root / "queries")
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        code = main(["map", "build", str(root / "mapping"), "--out", str(root / "map"), "--global-model", "none",
                     "--threads", "1", "--pairs", "exhaustive"])
    if code != 0:
        raise RuntimeError("cannot build the synthetic map the fuzz seeds need")
    return root


def _colmap_seed(folder: Path, text: bool) -> list[str]:
    import pycolmap

    template = _synthetic_map_template()
    _write_vocabulary(folder)
    shutil.copytree(template / "mapping", folder / "images")
    sparse = folder / "sparse"
    sparse.mkdir()
    model = pycolmap.Reconstruction(str(template / "map" / "sfm"))
    if text:
        model.write_text(str(sparse))
    else:
        model.write_binary(str(sparse))
    return sorted(str(p.relative_to(folder)) for p in sparse.iterdir())


def _colmap_argv(folder: Path) -> list[str]:
    return ["index", "build", str(folder / "sparse"), "--kind", "colmap", "--image-dir", str(folder / "images"),
            "--out", str(folder / "index.h5"), "--store-poses", *_index_options(folder)]


def _folder_names(count: int = 3) -> list[str]:
    return [f"{i:06d}.png" for i in range(count)]


def _poses(count: int = 3) -> list[tuple[np.ndarray, np.ndarray]]:
    from scipy.spatial.transform import Rotation

    rng = np.random.default_rng(1)
    return [(Rotation.from_euler("xyz", rng.normal(size=3) * 0.2).as_matrix(), rng.normal(size=3))
            for _ in range(count)]


def _pose_file_seed(folder: Path, file_name: str, lines: list[str]) -> list[str]:
    """A folder of images, a vocabulary and one pose file of `lines`: the seed of a pose-format target."""
    _write_vocabulary(folder)
    _write_images(folder / "images", _folder_names())
    (folder / file_name).write_text("\n".join(lines) + "\n")
    return [file_name]


def _tum_seed(folder: Path) -> list[str]:
    from scipy.spatial.transform import Rotation

    lines = ["# timestamp tx ty tz qx qy qz qw"]
    for i, (R, t) in enumerate(_poses()):
        qx, qy, qz, qw = Rotation.from_matrix(R).as_quat()
        lines.append(" ".join(f"{v:.9f}" for v in (float(i), *t, qx, qy, qz, qw)))
    return _pose_file_seed(folder, "poses.txt", lines)


def _kitti_seed(folder: Path) -> list[str]:
    lines = [" ".join(f"{v:.9e}" for v in np.hstack([R, t[:, None]]).ravel()) for R, t in _poses()]
    return _pose_file_seed(folder, "poses.txt", lines)


def _csv_seed(folder: Path) -> list[str]:
    from scipy.spatial.transform import Rotation

    lines = ["name,timestamp,x,y,z,qw,qx,qy,qz"]
    for i, (R, t) in enumerate(_poses()):
        qx, qy, qz, qw = Rotation.from_matrix(R).as_quat()
        lines.append(",".join([_folder_names()[i], f"{i:.3f}", *(f"{v:.9f}" for v in (*t, qw, qx, qy, qz))]))
    return _pose_file_seed(folder, "poses.csv", lines)


def _pose_argv(pose_file: str):
    def argv(folder: Path) -> list[str]:
        return ["index", "build", str(folder / "images"), "--poses", str(folder / pose_file), "--store-poses",
                "--out", str(folder / "index.h5"), *_index_options(folder)]

    return argv


def _strecha_seed(folder: Path) -> list[str]:
    names = [f"{i:04d}.jpg" for i in range(3)]
    _write_vocabulary(folder)
    _write_images(folder / "images", names)
    cameras = folder / "gt_dense_cameras"
    cameras.mkdir()
    width, height = IMAGE_SIZE
    for name, (R, t) in zip(names, _poses()):
        rows = [[50.0, 0.0, width / 2], [0.0, 50.0, height / 2], [0.0, 0.0, 1.0], [0.0, 0.0, 0.0],
                *R.tolist(), t.tolist(), [width, height]]
        (cameras / f"{name}.camera").write_text("\n".join(" ".join(f"{v:.12g}" for v in row) for row in rows) + "\n")
    return [f"gt_dense_cameras/{name}.camera" for name in names]


def _strecha_argv(folder: Path) -> list[str]:
    return ["index", "build", str(folder), "--store-poses", "--out", str(folder / "index.h5"), *_index_options(folder)]


def _image_seed(extension: str):
    def make(folder: Path) -> list[str]:
        _write_vocabulary(folder)
        _write_images(folder / "images", [f"a{extension}", f"b{extension}"])
        return [f"images/a{extension}"]

    return make


def _extract_argv(folder: Path) -> list[str]:
    return ["extract", str(folder / "images"), "--out", str(folder / "descriptors.h5"),
            "--model", f"densevlad={folder / VOCABULARY}", "--threads", "1"]


def _map_seed(folder: Path) -> list[str]:
    template = _synthetic_map_template()
    shutil.copytree(template / "map", folder / "map")
    shutil.copytree(template / "queries", folder / "queries")
    # map.json names the mapping images by absolute path: the template's, which lives as long as this process.
    return sorted(str(p.relative_to(folder)) for p in (folder / "map").rglob("*") if p.is_file())


def _map_info_argv(folder: Path) -> list[str]:
    return ["map", "info", str(folder / "map"), "--json"]


def _localize_argv(folder: Path) -> list[str]:
    return ["localize", str(folder / "map"), str(folder / "queries"), "--num-retrieved", "0", "--camera", "map",
            "--matches-png", "0", "--out", str(folder / "out"), "--threads", "1"]


def _resigned(argv):
    """The command of `argv`, run after the map's MANIFEST.json is rewritten to match the damaged files.

    A map's manifest (sizes and checksums) catches every damage, so the loader's own checks behind it are never
    reached; re-signing models a buggy writer (or a hand-edited map) whose manifest is honest about bad content.
    """

    def resigned_argv(folder: Path) -> list[str]:
        manifest = folder / "map" / "MANIFEST.json"
        if manifest.is_file():
            from hierloc.utils.io import write_manifest

            manifest.unlink()
            write_manifest(folder / "map", "MANIFEST.json")
        return argv(folder)

    return resigned_argv


def _map_files_signed(folder: Path) -> list[str]:
    """The map seed's files except the manifest (rewritten after each mutation)."""
    return [name for name in _map_seed(folder) if Path(name).name != "MANIFEST.json"]


def _colmap_import_seed(folder: Path) -> list[str]:
    """A COLMAP model and the hloc features its keypoints came from (the map's own), for --colmap-features."""
    template = _synthetic_map_template()
    files = _colmap_seed(folder, text=False)
    shutil.copy(template / "map" / "features.h5", folder / "features.h5")
    return files


def _colmap_import_argv(folder: Path) -> list[str]:
    return ["map", "build", str(folder / "sparse"), "--kind", "colmap", "--image-dir", str(folder / "images" / "day"),
            "--colmap-features", str(folder / "features.h5"), "--global-model", "none", "--out",
            str(folder / "map"), "--threads", "1"]


# --------------------------------------------------------------------------- plausibility of accepted runs


def _index_poses_implausible(folder: Path, stdout: str) -> str | None:
    """Stored keyframe positions and rotations must be finite, rotations orthonormal."""
    import h5py

    path = folder / "index.h5"
    if not path.is_file():
        return None
    with h5py.File(path, "r") as handle:
        for key in ("positions", "rotations"):
            if key not in handle:
                continue
            values = np.asarray(handle[key][()], dtype=np.float64)
            if values.size and not np.all(np.isfinite(values)):
                return f"index.h5 {key} hold non-finite values"
            if key == "rotations" and values.size:
                if values.shape[-2:] == (3, 3):
                    error = np.abs(values @ np.swapaxes(values, -1, -2) - np.eye(3)).max()
                    if error > 1e-3 or np.any(np.linalg.det(values) < 0.99):
                        return f"index.h5 rotations are not rotations (|R R^T - I| = {error:.3g})"
                elif values.shape[-1] == 4:
                    norms = np.linalg.norm(values, axis=-1)
                    if np.any(np.abs(norms - 1) > 1e-3):
                        return "index.h5 rotations are not unit quaternions"
    return None


def _localize_implausible(folder: Path, stdout: str) -> str | None:
    poses = folder / "out" / "poses.txt"
    if poses.is_file():
        for line in poses.read_text().splitlines():
            values = line.split()[1:]
            if values and not all(np.isfinite(float(v)) for v in values):
                return f"poses.txt holds a non-finite pose: {line[:80]}"
    if "nan" in stdout.lower().split():
        return "NaN printed"
    return None


def _map_info_implausible(folder: Path, stdout: str) -> str | None:
    try:
        info = json.loads(stdout[stdout.index("{"):])
    except ValueError:
        return "map info --json printed no JSON"
    if not isinstance(info.get("images"), int) or info["images"] < 1:
        return f"map info reports {info.get('images')!r} images"
    return None


# --------------------------------------------------------------------------- structured mutators: COLMAP binary


def _set_count(data: bytes, rng: random.Random) -> bytes:
    """The leading u64 record count of any COLMAP .bin set to 0, huge, 'negative' or off by one."""
    if len(data) < 8:
        return data
    (count,) = struct.unpack_from("<Q", data)
    new = rng.choice((0, count + 1, max(0, count - 1), (1 << 64) - 1, (1 << 63), 1 << 32, 10**9, 2**31 - 1))
    return struct.pack("<Q", new) + data[8:]


def _records(data: bytes) -> tuple[int, list[bytes]] | None:
    """Split an images.bin or points3D.bin into its records (None for other files or damage)."""
    for splitter in (_split_images, _split_points):
        try:
            return splitter(data)
        except (struct.error, ValueError, IndexError):
            continue
    return None


def _split_images(data: bytes) -> tuple[int, list[bytes]]:
    (count,) = struct.unpack_from("<Q", data)
    offset, records = 8, []
    for _ in range(count):
        start = offset
        offset += 4 + 56 + 4
        end = data.index(b"\x00", offset)
        if end - offset > 4096 or not data[offset:end].endswith((b".png", b".jpg")):
            raise ValueError("not an images.bin")
        offset = end + 1
        (points,) = struct.unpack_from("<Q", data, offset)
        offset += 8 + 24 * points
        if offset > len(data):
            raise ValueError("truncated")
        records.append(data[start:offset])
    if offset != len(data):
        raise ValueError("trailing bytes")
    return 0, records


def _split_points(data: bytes) -> tuple[int, list[bytes]]:
    (count,) = struct.unpack_from("<Q", data)
    offset, records = 8, []
    for _ in range(count):
        start = offset
        offset += 8 + 24 + 3 + 8
        (length,) = struct.unpack_from("<Q", data, offset)
        offset += 8 + 8 * length
        if offset > len(data):
            raise ValueError("truncated")
        records.append(data[start:offset])
    if offset != len(data):
        raise ValueError("trailing bytes")
    return 1, records


def _join(records: list[bytes], count: int | None = None) -> bytes:
    return struct.pack("<Q", len(records) if count is None else count) + b"".join(records)


def _duplicate_record(data: bytes, rng: random.Random) -> bytes:
    """A record (image or 3-D point) repeated: duplicate ids."""
    split = _records(data)
    if split is None or not split[1]:
        return _set_count(data, rng)
    records = split[1]
    records.insert(rng.randrange(len(records) + 1), rng.choice(records))
    return _join(records)


def _truncated_record(data: bytes, rng: random.Random) -> bytes:
    """The last record cut at a random byte while the count still claims it, or the count one too high."""
    split = _records(data)
    if split is None or not split[1]:
        return data[: max(8, len(data) - rng.randint(1, 16))]
    records = split[1]
    if rng.random() < 0.5:
        records[-1] = records[-1][: rng.randrange(len(records[-1]))]
        return _join(records)
    return _join(records, len(records) + 1)


def _hostile_record_value(data: bytes, rng: random.Random) -> bytes:
    """A pose, point, 2-D point, track length or point count of one record set to NaN/inf/huge."""
    split = _records(data)
    if split is None or not split[1]:
        return _nan_double(data, rng)
    kind, records = split
    index = rng.randrange(len(records))
    record = bytearray(records[index])
    if kind == 0:  # image: id, qvec/tvec at 4..60, camera at 60, name, num_points2D, points
        name_end = record.index(b"\x00", 64)
        choice = rng.random()
        if choice < 0.4:
            offset = 4 + 8 * rng.randrange(7)
            record[offset:offset + 8] = struct.pack("<d", rng.choice(HOSTILE_FLOATS))
        elif choice < 0.55:
            record[4:36] = bytes(32)  # zero quaternion
        elif choice < 0.7:
            record[60:64] = struct.pack("<I", rng.choice((0, 9999, 0xFFFFFFFF)))  # unknown camera
        elif choice < 0.85:
            record[name_end + 1:name_end + 9] = struct.pack("<Q", rng.choice(((1 << 64) - 1, 1 << 40, 10**6)))
        else:
            points = (len(record) - name_end - 9) // 24
            if points:
                offset = name_end + 9 + 24 * rng.randrange(points)
                if rng.random() < 0.5:
                    record[offset:offset + 8] = struct.pack("<d", rng.choice(HOSTILE_FLOATS))
                else:
                    record[offset + 16:offset + 24] = struct.pack("<Q", rng.choice((123456789, 0, (1 << 64) - 2)))
    else:  # 3-D point: id, xyz at 8..32, rgb, error at 35, track length at 43, track
        choice = rng.random()
        if choice < 0.5:
            offset = 8 + 8 * rng.randrange(3)
            record[offset:offset + 8] = struct.pack("<d", rng.choice(HOSTILE_FLOATS))
        elif choice < 0.7:
            record[43:51] = struct.pack("<Q", rng.choice(((1 << 64) - 1, 1 << 40, 10**6)))
        elif len(record) > 51:
            element = 51 + 8 * rng.randrange((len(record) - 51) // 8)
            record[element + rng.choice((0, 4)):element + rng.choice((0, 4)) + 4] = struct.pack(
                "<I", rng.choice((0, 9999, 0xFFFFFFFF, 100000)))
    records[index] = bytes(record)
    return _join(records)


def _nan_double(data: bytes, rng: random.Random) -> bytes:
    """An 8-byte slot after the count set to NaN/inf/huge (aligned on the record layout or not)."""
    if len(data) < 16:
        return data
    offset = rng.randrange(8, len(data) - 7)
    return data[:offset] + struct.pack("<d", rng.choice(HOSTILE_FLOATS)) + data[offset + 8:]


def _rename_image(data: bytes, rng: random.Random) -> bytes:
    """An image name replaced by one outside the image folder, absolute, empty, huge or duplicated."""
    split = _records(data)
    if split is None or split[0] != 0 or not split[1]:
        return _set_count(data, rng)
    records = split[1]
    index = rng.randrange(len(records))
    record = records[index]
    name_end = record.index(b"\x00", 64)
    name = rng.choice(HOSTILE_NAMES).encode("utf-8")
    if name == b"day/000000.png" and len(records) > 1:  # the name of another image
        other = records[(index + 1) % len(records)]
        name = other[64:other.index(b"\x00", 64)]
    records[index] = record[:64] + name + record[name_end:]
    return _join(records)


COLMAP_BINARY_MUTATORS: tuple[Mutator, ...] = (_set_count, _duplicate_record, _truncated_record,
                                               _hostile_record_value, _nan_double, _rename_image)


# --------------------------------------------------------------------------- structured mutators: text files


def _hostile_token(lines: list[str], rng: random.Random) -> list[str]:
    rows = data_line_indices(lines)
    if rows:
        i = rng.choice(rows)
        lines[i] = replace_token(lines[i], rng, HOSTILE_NUMBER_TOKENS)
    return lines


def _duplicate_line(lines: list[str], rng: random.Random) -> list[str]:
    rows = data_line_indices(lines)
    if rows:
        i = rng.choice(rows)
        lines.insert(i + 1, lines[i])
    return lines


def _drop_line(lines: list[str], rng: random.Random) -> list[str]:
    rows = data_line_indices(lines)
    if rows:
        del lines[rng.choice(rows)]
    return lines


def _hostile_name(lines: list[str], rng: random.Random) -> list[str]:
    """A token that looks like an image name replaced by one outside the folder, absolute, with NUL, empty."""
    rows = [i for i in data_line_indices(lines) if re.search(r"\.(png|jpg)\b", lines[i])]
    if rows:
        i = rng.choice(rows)
        lines[i] = re.sub(r"[^\s,;]*\.(png|jpg)\b", lambda m: rng.choice(HOSTILE_NAMES), lines[i], count=1)
    return lines


def _many_tokens(lines: list[str], rng: random.Random) -> list[str]:
    """A count field (NUM_DATA_IDS, NUM_SENSORS, a number of values) set huge, or a line repeated in width."""
    rows = data_line_indices(lines)
    if rows:
        i = rng.choice(rows)
        if rng.random() < 0.5:
            lines[i] = replace_token(lines[i], rng, ("1000000000", "4294967295", "-1", "99999999999"))
        else:
            lines[i] = " ".join([lines[i]] * rng.choice((2, 3, 1000)))
    return lines


TEXT_MUTATORS: tuple[Mutator, ...] = tuple(text_lines_mutator(edit, name) for edit, name in (
    (_hostile_token, "hostile_token"), (_duplicate_line, "duplicate_line"), (_drop_line, "drop_line"),
    (huge_field, "huge_field"), (_hostile_name, "hostile_name"), (_many_tokens, "many_tokens")))


def _kitti_not_rotation(lines: list[str], rng: random.Random) -> list[str]:
    """A KITTI matrix whose 3x3 part is scaled, sheared, reflected or singular."""
    rows = data_line_indices(lines)
    if not rows:
        return lines
    i = rng.choice(rows)
    try:
        values = np.array([float(v) for v in lines[i].split()]).reshape(3, 4)
    except ValueError:
        return lines
    R = values[:, :3]
    kind = rng.randrange(4)
    if kind == 0:
        R = R * rng.choice((2.0, 0.5, 1.01, 1000.0))
    elif kind == 1:
        R = R + np.array([[0, 0.3, 0], [0, 0, 0], [0, 0, 0]])
    elif kind == 2:
        R = R * np.array([[-1.0], [1.0], [1.0]])  # a reflection: determinant -1
    else:
        R = np.zeros((3, 3))
    values[:, :3] = R
    lines[i] = " ".join(f"{v:.9e}" for v in values.ravel())
    return lines


def _quaternion_zero(lines: list[str], rng: random.Random) -> list[str]:
    """A TUM or CSV quaternion set to zero or non-unit (zero cannot be normalised)."""
    rows = data_line_indices(lines)[1:] if lines and not re.match(r"^[\d.\s-]", lines[0]) else data_line_indices(lines)
    if not rows:
        return lines
    i = rng.choice(rows)
    separator = "," if "," in lines[i] else " "
    tokens = lines[i].split(separator)
    if len(tokens) >= 4:
        for k in range(len(tokens) - 4, len(tokens)):
            tokens[k] = "0"
    lines[i] = separator.join(tokens)
    return lines


POSE_MUTATORS: tuple[Mutator, ...] = (*TEXT_MUTATORS, text_lines_mutator(_quaternion_zero, "quaternion_zero"))
KITTI_MUTATORS: tuple[Mutator, ...] = (*TEXT_MUTATORS, text_lines_mutator(_kitti_not_rotation, "kitti_not_rotation"),
                                       text_lines_mutator(_kitti_not_rotation, "kitti_not_rotation"))


def _strecha_not_rotation(lines: list[str], rng: random.Random) -> list[str]:
    rows = data_line_indices(lines)
    if len(rows) >= 9:
        i = rows[rng.choice((4, 5, 6))]
        lines[i] = " ".join(f"{float(v) * rng.choice((2.0, -1.0, 0.0)):.9g}" for v in lines[i].split()
                            if re.match(r"^-?[\d.e+-]+$", v))
    return lines


def _strecha_size(lines: list[str], rng: random.Random) -> list[str]:
    rows = data_line_indices(lines)
    if rows:
        lines[rows[-1]] = rng.choice(("0 0", "-64 48", "1e12 1e12", "nan 48", "64", "64 48 3", "4294967296 1"))
    return lines


STRECHA_MUTATORS: tuple[Mutator, ...] = (*TEXT_MUTATORS, text_lines_mutator(_strecha_not_rotation, "strecha_rotation"),
                                         text_lines_mutator(_strecha_size, "strecha_size"))


# --------------------------------------------------------------------------- structured mutators: images


def _png_huge_size(data: bytes, rng: random.Random) -> bytes:
    """A PNG whose IHDR declares a huge (or zero) size, with its CRC fixed or not."""
    import zlib

    if len(data) < 33 or data[12:16] != b"IHDR":
        return data
    width, height = rng.choice(((30000, 30000), (1 << 31, 1), (65535, 65535), (0, 48), (1 << 16, 1 << 15),
                                (0xFFFFFFFF, 0xFFFFFFFF), (64, 100000)))
    ihdr = bytearray(data[12:29])
    ihdr[4:12] = struct.pack(">II", width, height)
    crc = struct.pack(">I", zlib.crc32(bytes(ihdr)) & 0xFFFFFFFF) if rng.random() < 0.8 else data[29:33]
    return data[:12] + bytes(ihdr) + crc + data[33:]


def _jpeg_huge_size(data: bytes, rng: random.Random) -> bytes:
    """A JPEG whose frame header (SOFn) declares a huge or zero size."""
    match = re.search(rb"\xff[\xc0-\xc3]", data)
    if match is None or match.start() + 9 > len(data):
        return data
    offset = match.start() + 5
    height, width = rng.choice(((65535, 65535), (0, 64), (48, 0), (30000, 30000), (1, 65535)))
    return data[:offset] + struct.pack(">HH", height, width) + data[offset + 4:]


def _damage_body(data: bytes, rng: random.Random) -> bytes:
    """Damage after the header: image data corrupted but the header intact."""
    if len(data) < 64:
        return data
    start = rng.randrange(40, len(data))
    length = min(len(data) - start, rng.choice((1, 16, 256, 4096)))
    return data[:start] + rng.randbytes(length) + data[start + length:]


IMAGE_MUTATORS: tuple[Mutator, ...] = (_png_huge_size, _jpeg_huge_size, _damage_body, _damage_body)


# --------------------------------------------------------------------------- structured mutators: map.json


def _json_wrong_type(data: bytes, rng: random.Random) -> bytes:
    """A map.json field replaced by a value of the wrong type (null, list of ints, string, huge number...)."""
    try:
        document = json.loads(data)
    except ValueError:
        return data
    paths = list(_json_paths(document))
    if not paths:
        return data
    path = rng.choice(paths)
    value = rng.choice((None, [1, 2], "x", 1e308, -1, {}, [], True, "../outside/x.png", "/etc/passwd", [[None]]))
    _json_set(document, path, value)
    return json.dumps(document).encode()


def _json_paths(node, prefix=()):
    if isinstance(node, dict):
        for key, value in node.items():
            yield (*prefix, key)
            yield from _json_paths(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node[:3]):
            yield (*prefix, index)
            yield from _json_paths(value, (*prefix, index))


def _json_set(document, path, value) -> None:
    node = document
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value


def _json_drop_key(data: bytes, rng: random.Random) -> bytes:
    try:
        document = json.loads(data)
    except ValueError:
        return data
    paths = [p for p in _json_paths(document) if isinstance(p[-1], str)]
    if paths:
        path = rng.choice(paths)
        node = document
        for key in path[:-1]:
            node = node[key]
        del node[path[-1]]
    return json.dumps(document).encode()


MAP_MUTATORS: tuple[Mutator, ...] = (_json_wrong_type, _json_wrong_type, _json_drop_key, *COLMAP_BINARY_MUTATORS)


TARGETS: list[FuzzTarget] = [
    FuzzTarget("colmap-binary", lambda folder: _colmap_seed(folder, text=False), _colmap_argv,
               COLMAP_BINARY_MUTATORS, _index_poses_implausible),
    FuzzTarget("colmap-text", lambda folder: _colmap_seed(folder, text=True), _colmap_argv,
               TEXT_MUTATORS, _index_poses_implausible),
    FuzzTarget("poses-tum", _tum_seed, _pose_argv("poses.txt"), POSE_MUTATORS, _index_poses_implausible),
    FuzzTarget("poses-kitti", _kitti_seed, _pose_argv("poses.txt"), KITTI_MUTATORS, _index_poses_implausible),
    FuzzTarget("poses-csv", _csv_seed, _pose_argv("poses.csv"), POSE_MUTATORS, _index_poses_implausible),
    FuzzTarget("strecha-cameras", _strecha_seed, _strecha_argv, STRECHA_MUTATORS, _index_poses_implausible),
    FuzzTarget("image-png", _image_seed(".png"), _extract_argv, IMAGE_MUTATORS),
    FuzzTarget("image-jpeg", _image_seed(".jpg"), _extract_argv, IMAGE_MUTATORS),
    FuzzTarget("map-info", _map_seed, _map_info_argv, MAP_MUTATORS, _map_info_implausible),
    FuzzTarget("map-localize", _map_seed, _localize_argv, MAP_MUTATORS, _localize_implausible),
    FuzzTarget("map-info-resigned", _map_files_signed, _resigned(_map_info_argv), MAP_MUTATORS,
               _map_info_implausible),
    FuzzTarget("map-localize-resigned", _map_files_signed, _resigned(_localize_argv), MAP_MUTATORS,
               _localize_implausible),
    FuzzTarget("colmap-import", _colmap_import_seed, _colmap_import_argv, COLMAP_BINARY_MUTATORS),
]
