"""Global descriptor inference on the CPU: images/second at batch 1, 480x640, and each variant's accuracy.

Every variant (PyTorch eager / traced / bf16 / torch.compile, onnxruntime fp32 / int8, OpenVINO
fp32 / bf16 when installed) runs in one process, interleaved round by round, so that they share the
machine's state; the ratios between them are the steady numbers on a shared machine. Thread counts
are explicit (torch and the ONNX runtimes alike: --threads, default 2).

Accuracy: each variant describes every image of the shared data (Strecha, Sacre Coeur, Nordland;
prepared as the network describer does: long side <= 640, short side >= 96) and its descriptors
are compared with the fp32 eager network's; `min_cosine` is the worst image. A variant qualifies
when min_cosine >= hierloc.utils.device.DESCRIPTOR_COSINE_TARGET (0.999); `mobilenetvlad_fps`
is the fastest qualifying variant.

Weights (--weights): the trained MobileNetVLAD when installed, else "calibrated": the untrained
network with its BatchNorm statistics measured on real images, its NetVLAD clusters initialised by
k-means on their local features and the reduction layer's bias set to zero. The plain untrained
network (--weights none) hides precision errors: its descriptors are mostly that bias (bf16 reaches
cosine 1.0000 there, against about 0.5 on real activations). Timings do not depend on the weights.

Usage: python bench/inference.py [--threads 2] [--json out.json] [--max-images 200] [--compile]
       [--netvlad] [--data ../shared/data] [--rounds 5] [--seconds 2]
"""

from __future__ import annotations

import hierloc  # noqa: F401  (first: it stops OpenBLAS threads spinning, which it must do before numpy loads)

# isort: split

import argparse
import logging
import platform
import statistics
import tempfile
import time
import warnings
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
import torch
from tqdm import tqdm

from hierloc.describers.base import NETWORK_PREPROCESSING
from hierloc.export.runtime import adapt_channels
from hierloc.extraction import GlobalExtractor
from hierloc.extraction.global_descriptors import image_to_tensor
from hierloc.models import load_model
from hierloc.utils.device import DESCRIPTOR_COSINE_TARGET, runtime_available
from hierloc.utils.io import atomic_write_text, to_json_text
from hierloc.utils.threads import configure_threads

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
Runner = Callable[[torch.Tensor], np.ndarray]  # [1, C, H, W] raw pixels -> [1, D] descriptors


def shared_images(root: Path, max_images: int | None) -> list[tuple[str, Path]]:
    """(dataset, path) of every image under `root` (its first-level folder names the dataset), or an even subset."""
    paths = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if max_images and len(paths) > max_images:
        # Every dataset keeps a share: the few large Strecha images matter as much as thousands of Nordland frames.
        by_dataset: dict[str, list[Path]] = {}
        for path in paths:
            by_dataset.setdefault(path.relative_to(root).parts[0], []).append(path)
        share = max(1, max_images // len(by_dataset))
        paths = [p for group in by_dataset.values() for p in group[:: max(1, len(group) // share)][:share]]
    return [(p.relative_to(root).parts[0], p) for p in paths]


def load_prepared(path: Path) -> np.ndarray:
    """An image as the network describer sees it (uint8, RGB or gray, resized by its preprocessing)."""
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise OSError(f"{path}: not a readable image")
    if image.ndim == 3:
        image = cv2.cvtColor(image[:, :, :3], cv2.COLOR_BGR2RGB)
    if image.dtype != np.uint8:
        image = (image / (np.iinfo(image.dtype).max / 255.0)).astype(np.uint8)
    return NETWORK_PREPROCESSING.apply(image)


def calibrated_model(name: str, images: list[np.ndarray]):
    """The untrained network with realistic activations (see the module docstring)."""
    from hierloc.models.aggregation import initialize_vlad_clusters

    model = load_model(name, weights=None)
    torch.manual_seed(0)
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.reset_running_stats()
            module.momentum = None  # a plain average over the calibration images
    model.train()
    with torch.no_grad():
        for image in images:
            model.local_features(image_to_tensor(image))
    model.eval()
    initialize_vlad_clusters(model, (image_to_tensor(image) for image in images), features_per_image=200)
    if model.aggregation.reduction is not None:
        torch.nn.init.zeros_(model.aggregation.reduction.bias)
    return model


def build_model(name: str, weights: str, calibration: list[np.ndarray]):
    """(model, description of its weights)."""
    from hierloc.describers.factory import trained_weights_installed

    if weights == "auto":
        weights = "trained" if name == "mobilenetvlad" and trained_weights_installed() else "calibrated"
    if weights == "calibrated":
        return calibrated_model(name, calibration), "calibrated (untrained trunk, BatchNorm + k-means on real images)"
    if weights == "none":
        return load_model(name, weights=None), "untrained"
    return load_model(name, weights="auto" if weights == "trained" else weights), weights


def extractor_runner(extractor: GlobalExtractor) -> Runner:
    return extractor.run


def autocast_runner(model, dtype: torch.dtype) -> Runner:
    """The whole network under CPU autocast (aggregation included)."""
    @torch.inference_mode()
    def run(batch: torch.Tensor) -> np.ndarray:
        with torch.autocast("cpu", dtype=dtype):
            out = model(batch.contiguous(memory_format=torch.channels_last))
        return torch.nn.functional.normalize(out.float(), dim=-1).numpy()
    return run


def compiled_runner(model) -> Runner:
    """torch.compile (inductor, weights frozen); compiled for one size, recompiled for others."""
    import torch._inductor.config as inductor_config

    inductor_config.freezing = True
    compiled = torch.compile(model, dynamic=False)

    @torch.inference_mode()
    def run(batch: torch.Tensor) -> np.ndarray:
        return torch.nn.functional.normalize(compiled(batch).float(), dim=-1).numpy()
    return run


def onnx_variants(model, folder: Path, threads: int, calibration: list[np.ndarray],
                  height: int, width: int) -> dict[str, Runner]:
    """onnxruntime and OpenVINO runners on ONNX exports of `model`."""
    from hierloc.export.model_export import export_onnx
    from hierloc.export.runtime import OnnxModel, OpenVinoModel

    variants: dict[str, Runner] = {}
    plain = export_onnx(model, folder / "plain.onnx", (height, width), fuse_padding=False)
    fused = export_onnx(model, folder / "fused.onnx", (height, width))
    variants["onnxruntime fp32 (Pad + Conv)"] = OnnxModel(plain, device="cpu", threads=threads).run
    variants["onnxruntime fp32, padding fused"] = OnnxModel(fused, device="cpu", threads=threads).run
    try:
        from onnxruntime.quantization import (
            CalibrationDataReader,
            QuantFormat,
            QuantType,
            quantize_dynamic,
            quantize_static,
        )
    except ImportError:
        return variants
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # (main() has silenced the quantizer's logged advice)
        fc_int8 = folder / "fc_int8.onnx"
        quantize_dynamic(fused, fc_int8, op_types_to_quantize=["Gemm", "MatMul"], per_channel=True,
                         weight_type=QuantType.QInt8)
        variants["onnxruntime int8 dynamic (FC layer only)"] = OnnxModel(fc_int8, device="cpu", threads=threads).run
        channels = model.input_channels

        class Reader(CalibrationDataReader):
            def __init__(self) -> None:
                self.batches = iter([{"image": adapt_channels(image_to_tensor(cv2.resize(image, (width, height)))
                                                              .numpy(), channels)} for image in calibration])

            def get_next(self):
                return next(self.batches, None)

        static = folder / "static_int8.onnx"
        quantize_static(fused, static, Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
        variants["onnxruntime int8 static QDQ (whole network)"] = OnnxModel(static, device="cpu",
                                                                           threads=threads).run
    if runtime_available("openvino"):
        variants["openvino fp32, padding fused"] = OpenVinoModel(fused, threads=threads).run
        variants["openvino bf16"] = OpenVinoModel(fused, threads=threads, inference_precision="bf16").run
    return variants


def time_interleaved(runners: dict[str, Runner], image: np.ndarray, rounds: int, seconds: float) -> dict[str, dict]:
    """Per variant: median / mean latency (ms) and fps, measured in `rounds` interleaved rounds."""
    batch = image_to_tensor(image)
    times: dict[str, list[float]] = {name: [] for name in runners}
    cpu_times: dict[str, list[float]] = {name: [] for name in runners}  # all threads: steadier on a busy machine
    for run in runners.values():  # warm-up: traces, first-run exports and compilations
        for _ in range(3):
            run(batch)
    for _ in range(rounds):
        for name, run in runners.items():
            start = time.perf_counter()
            while time.perf_counter() - start < seconds / rounds or not times[name]:
                t0, cpu0 = time.perf_counter(), time.process_time()
                run(batch)
                times[name].append(time.perf_counter() - t0)
                cpu_times[name].append(time.process_time() - cpu0)
    results = {}
    for name, values in times.items():
        median = statistics.median(values)
        results[name] = {"median_ms": median * 1e3, "mean_ms": statistics.fmean(values) * 1e3, "runs": len(values),
                         "fps": 1.0 / median, "cpu_ms": statistics.median(cpu_times[name]) * 1e3}
    return results


def cosine_check(runners: dict[str, Runner], reference: Runner, images: list[tuple[str, np.ndarray]]) -> dict:
    """Per variant: the smallest cosine to `reference` over all images, overall and per dataset."""
    worst: dict[str, dict[str, float]] = {name: {} for name in runners}
    worst_image: dict[str, tuple[float, str]] = {}
    for index, (dataset, image) in enumerate(tqdm(images, desc="cosine check", unit="img")):
        batch = image_to_tensor(image)
        expected = reference(batch)[0]
        for name, run in runners.items():
            cosine = float(np.dot(run(batch)[0], expected))
            worst[name][dataset] = min(cosine, worst[name].get(dataset, 2.0))
            if cosine < worst_image.get(name, (2.0, ""))[0]:
                worst_image[name] = (cosine, f"{dataset} #{index}")
    return {name: {"min_cosine": min(values.values()) if values else None, "min_cosine_by_dataset": values,
                   "worst_image": worst_image[name][1] if name in worst_image else None}
            for name, values in worst.items()}


def main() -> None:
    """Run the benchmark and report."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2, help="torch and ONNX runtime threads (default 2)")
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds")
    parser.add_argument("--seconds", type=float, default=3.0, help="timing budget per variant (all rounds)")
    parser.add_argument("--weights", default="auto", help="auto, trained, calibrated, none or a checkpoint")
    parser.add_argument("--data", type=Path, default=SHARED_DATA, help="images for the cosine check")
    parser.add_argument("--max-images", type=int, default=0, help="cosine check on an even subset (0: all)")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile (tens of seconds to build)")
    parser.add_argument("--netvlad", action="store_true", help="also time the VGG16 NetVLAD teacher (eager, traced)")
    parser.add_argument("--json", type=Path, default=None, help="write the results to this JSON file")
    args = parser.parse_args()
    logging.disable(logging.WARNING)
    threads = configure_threads(args.threads)
    if not args.data.is_dir():
        raise SystemExit(f"bench/inference.py: error: {args.data}: no such folder (the shared data)")
    listed = shared_images(args.data, args.max_images or None)
    images = [(dataset, load_prepared(path)) for dataset, path in listed]
    calibration = [image for _, image in images if image.shape[0] * image.shape[1] >= 300 * 400][:24]
    model, weights = build_model("mobilenetvlad", args.weights, calibration or [image for _, image in images[:24]])
    rng = np.random.default_rng(0)
    timing_image = rng.integers(0, 256, (args.height, args.width, 3), dtype=np.uint8)

    reference = extractor_runner(GlobalExtractor(model, device="cpu", precision="fp32", fast=False))
    runners: dict[str, Runner] = {
        "torch fp32 eager": reference,
        "torch fp32 traced+frozen, channels-last": extractor_runner(
            GlobalExtractor(model, device="cpu", precision="fp32", runtime="torch")),
        "torch bf16 trunk, fp32 VLAD (traced)": extractor_runner(
            GlobalExtractor(model, device="cpu", precision="bf16", runtime="torch")),
        "torch bf16 autocast (whole network)": autocast_runner(model, torch.bfloat16),
    }
    if args.compile:
        runners["torch.compile fp32 (inductor, frozen)"] = compiled_runner(model)
    with tempfile.TemporaryDirectory(prefix="hierloc-bench-") as folder:
        runners.update(onnx_variants(model, Path(folder), threads, calibration[:8], args.height, args.width))
        timings = time_interleaved(runners, timing_image, args.rounds, args.seconds)
        checked = {name: run for name, run in runners.items() if name != "torch fp32 eager"}
        cosines = cosine_check(checked, reference, images)
    cosines["torch fp32 eager"] = {"min_cosine": 1.0, "min_cosine_by_dataset": {}, "worst_image": None}

    eager_fps = timings["torch fp32 eager"]["fps"]
    traced_fps = timings["torch fp32 traced+frozen, channels-last"]["fps"]
    rows = []
    for name in runners:
        ok = cosines[name]["min_cosine"] is not None and cosines[name]["min_cosine"] >= DESCRIPTOR_COSINE_TARGET
        rows.append({"model": "mobilenetvlad", "variant": name, **timings[name], **cosines[name], "qualifies": ok,
                     "speedup_vs_eager": timings[name]["fps"] / eager_fps,
                     "speedup_vs_traced": timings[name]["fps"] / traced_fps})
    best = max((r for r in rows if r["qualifies"]), key=lambda r: r["fps"])
    results = {
        "mobilenetvlad_fps": best["fps"],
        "mobilenetvlad_variant": best["variant"],
        "mobilenetvlad_eager_fps": eager_fps,
        "mobilenetvlad_traced_fps": traced_fps,
        "cosine_target": DESCRIPTOR_COSINE_TARGET,
        "weights": weights,
        "images_checked": len(images),
        "images_by_dataset": {d: sum(1 for x, _ in images if x == d) for d in sorted({d for d, _ in images})},
        "rows": rows,
        "image_size": [args.height, args.width],
        "threads": threads,
        "torch": torch.__version__,
        "machine": platform.machine(),
        "processor": platform.processor(),
    }
    if args.netvlad:
        teacher = load_model("netvlad", weights=None)
        teacher_runners = {"netvlad fp32 eager": GlobalExtractor(teacher, device="cpu", fast=False).run,
                           "netvlad fp32 traced+frozen": GlobalExtractor(teacher, device="cpu", runtime="torch").run}
        teacher_timings = time_interleaved(teacher_runners, timing_image, 2, args.seconds)
        results["netvlad_eager_fps"] = teacher_timings["netvlad fp32 eager"]["fps"]
        results["netvlad_fps"] = teacher_timings["netvlad fp32 traced+frozen"]["fps"]
        results["speedup"] = best["fps"] / results["netvlad_eager_fps"]

    print(f"\nmobilenetvlad, batch 1, {args.height}x{args.width}, {threads} threads, torch {torch.__version__}; "
          f"cosine to fp32 eager over {len(images)} images, weights: {weights}")
    print(f"{'variant':44s} {'median ms':>9s} {'cpu ms':>7s} {'img/s':>7s} {'x eager':>7s} {'x traced':>8s} "
          f"{'min cos':>8s}  ok")
    for r in rows:
        cosine = f"{r['min_cosine']:.5f}" if r["min_cosine"] is not None else "-"
        print(f"{r['variant']:44s} {r['median_ms']:9.2f} {r['cpu_ms']:7.1f} {r['fps']:7.1f} "
              f"{r['speedup_vs_eager']:7.2f} {r['speedup_vs_traced']:8.2f} {cosine:>8s}  "
              f"{'yes' if r['qualifies'] else 'no'}")
    print(f"\nfastest variant with cosine >= {DESCRIPTOR_COSINE_TARGET}: {best['variant']}, {best['fps']:.1f} img/s "
          f"({best['speedup_vs_traced']:.2f}x the traced torch network)")
    if args.netvlad:
        print(f"netvlad: eager {results['netvlad_eager_fps']:.2f} img/s, traced {results['netvlad_fps']:.2f}; "
              f"speedup {results['speedup']:.1f}x")
    if args.json:
        atomic_write_text(args.json, to_json_text(results, indent=2))
        print(f"results written to {args.json}")


if __name__ == "__main__":
    main()
