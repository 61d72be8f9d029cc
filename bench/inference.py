"""Global descriptor inference speed: images/second at batch 1, 480x640, eager fp32 vs the fast path.

Runs every variant in one process so that they share the machine's state; prints a table and
optionally writes JSON (`--json out.json`). Usage: python bench/inference.py [--threads 2]
"""

from __future__ import annotations

import argparse
import logging
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from hierloc.extraction import GlobalExtractor
from hierloc.models import load_model
from hierloc.utils.io import atomic_write_text, to_json_text
from hierloc.utils.threads import configure_threads


def time_extractor(extractor: GlobalExtractor, image: np.ndarray, seconds: float, min_runs: int) -> dict:
    """Median and mean latency (ms) of `describe(image)` after warm-up."""
    for _ in range(3):  # warm-up; the second call of a size builds the traced network
        extractor.describe(image)
    times = []
    start = time.perf_counter()
    while len(times) < min_runs or time.perf_counter() - start < seconds:
        t0 = time.perf_counter()
        extractor.describe(image)
        times.append(time.perf_counter() - t0)
    median = statistics.median(times)
    return {"median_ms": median * 1e3, "mean_ms": statistics.fmean(times) * 1e3, "runs": len(times),
            "fps": 1.0 / median}


def main() -> None:
    """Run the benchmark and report."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: all usable cores)")
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--seconds", type=float, default=5.0, help="time budget per variant")
    parser.add_argument("--json", type=Path, default=None, help="write the results to this JSON file")
    args = parser.parse_args()
    logging.disable(logging.WARNING)  # untrained default weights are fine for timing
    threads = configure_threads(args.threads)
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (args.height, args.width, 3), dtype=np.uint8)

    rows = []
    for name in ("mobilenetvlad", "netvlad"):
        model = load_model(name, weights=None)
        for variant, fast in (("fp32 eager", False), ("fp32 traced+frozen, channels-last", True)):
            result = time_extractor(GlobalExtractor(model, device="cpu", precision="fp32", fast=fast), image,
                                    args.seconds, min_runs=3 if name == "netvlad" else 10)
            rows.append({"model": name, "variant": variant, **result})

    def fps(model: str, fast: bool) -> float:
        return next(r["fps"] for r in rows if r["model"] == model and ("traced" in r["variant"]) == fast)

    results = {
        "mobilenetvlad_fps": fps("mobilenetvlad", True),
        "mobilenetvlad_eager_fps": fps("mobilenetvlad", False),
        "netvlad_fps": fps("netvlad", True),
        "netvlad_eager_fps": fps("netvlad", False),
        # The target compares MobileNetVLAD's fastest path with fp32 eager NetVLAD.
        "speedup": fps("mobilenetvlad", True) / fps("netvlad", False),
        "speedup_vs_netvlad_fast": fps("mobilenetvlad", True) / fps("netvlad", True),
        "rows": rows,
        "image_size": [args.height, args.width],
        "threads": threads,
        "torch": torch.__version__,
        "machine": platform.machine(),
        "processor": platform.processor(),
    }
    print(f"\nbatch 1, {args.height}x{args.width}, {threads} threads, torch {torch.__version__}")
    print(f"{'model':15s} {'variant':36s} {'median ms':>10s} {'img/s':>8s} {'runs':>5s}")
    for r in rows:
        print(f"{r['model']:15s} {r['variant']:36s} {r['median_ms']:10.1f} {r['fps']:8.2f} {r['runs']:5d}")
    print(f"\nmobilenetvlad fastest: {results['mobilenetvlad_fps']:.1f} img/s; speedup over fp32 eager netvlad: "
          f"{results['speedup']:.1f}x (over the fast netvlad: {results['speedup_vs_netvlad_fast']:.1f}x)")
    if args.json:
        atomic_write_text(args.json, to_json_text(results, indent=2))
        print(f"results written to {args.json}")


if __name__ == "__main__":
    main()
