"""Stage times of one resident localizer in a steady loop: the cost of OpenBLAS's spinning threads and of
running retrieval beside SIFT.

One Strecha query (the scene's first image, 1536x1024) is localized again and again against a map of
the other images (`sift-fast`, retrieval network at --global-resize px, 2 threads), after warm-up calls,
in three child processes that differ only in:

- `blas-spin`: OpenBLAS's default thread timeout (OPENBLAS_THREAD_TIMEOUT=28: worker threads busy-wait
  2^28 cycles after each matrix product), stages in sequence: hierloc before `limit_blas_spinning`;
- `sequential`: hierloc's default timeout (4), stages in sequence;
- `concurrent`: the same, with SIFT on a worker thread while the network runs (one torch thread).

Each child reports the median ms per stage over --queries localizations and the CPU time per query.
The same query every time, so the differences are the modes', not the images'.

Usage: python bench/stage_contention.py [--scene ../shared/data/strecha/fountain-P11] [--queries 20]
       [--global-resize 320] [--json out.json]
"""

from __future__ import annotations

import hierloc  # noqa: F401  (first: it stops OpenBLAS threads spinning, which it must do before numpy loads)

# isort: split

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from hierloc.utils.io import atomic_write_text, to_json_text

MODES = {"blas-spin": ("28", False), "sequential": ("4", False), "concurrent": ("4", True)}
STAGES = ("retrieval", "local_features", "matching", "pose", "total")
DEFAULT_SCENE = Path(__file__).resolve().parents[2] / "shared" / "data" / "strecha" / "fountain-P11"


def run_child(scene: Path, queries: int, global_resize: int, concurrent: bool) -> dict:
    """Inside a child process: build the map, warm up, and time `queries` localizations of the first image."""
    from hierloc.utils.threads import configure_threads

    configure_threads(2)
    from hierloc.localization import GlobalConfig, Localizer, LocalizerConfig, MapBuildConfig, build_scene_map
    from hierloc.maps import load_map

    scene_map = load_map(scene)
    query = next(iter(scene_map.keyframes()))
    config = MapBuildConfig(features="sift-fast", matcher="mnn-ratio",
                            global_model=GlobalConfig(resize_max=global_resize))
    with tempfile.TemporaryDirectory(prefix="hierloc-contention-") as folder:
        built, _ = build_scene_map(scene_map, config, exclude=[query.name], progress=False,
                                   feature_cache=Path(folder) / "features.h5")
    localizer = Localizer(built, LocalizerConfig(concurrent_stages=concurrent))
    image = query.load_image()
    for _ in range(4):  # tracing, then the traced network's warm-up calls
        localizer.localize(image, query.camera, query.name)
    rows, cpu0 = [], time.process_time()
    for _ in range(queries):
        result = localizer.localize(image, query.camera, query.name)
        rows.append(result.timings)
    cpu = (time.process_time() - cpu0) / queries
    return {"median_ms": {stage: 1000 * statistics.median(r[stage] for r in rows) for stage in STAGES},
            "cpu_ms": 1000 * cpu, "inliers": result.num_inliers}


def main() -> None:
    """Run the three modes in child processes and report."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scene", type=Path, default=DEFAULT_SCENE)
    parser.add_argument("--queries", type=int, default=20)
    parser.add_argument("--global-resize", type=int, default=320)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--child", choices=sorted(MODES), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_child(args.scene, args.queries, args.global_resize, MODES[args.child][1])))
        return
    if not args.scene.is_dir():
        sys.exit(f"stage_contention.py: error: {args.scene}: no such Strecha scene")
    results = {}
    for mode, (timeout, _) in MODES.items():
        env = {**os.environ, "OPENBLAS_THREAD_TIMEOUT": timeout}
        out = subprocess.run([sys.executable, __file__, "--child", mode, "--scene", str(args.scene),
                              "--queries", str(args.queries), "--global-resize", str(args.global_resize)],
                             env=env, capture_output=True, text=True, check=True, timeout=900)
        results[mode] = json.loads(out.stdout.strip().splitlines()[-1])
    header = f"{'mode':12s} " + " ".join(f"{s[:10]:>10s}" for s in STAGES) + f" {'cpu':>8s}"
    print(f"{args.scene.name}, sift-fast, retrieval at {args.global_resize} px, 2 threads, "
          f"median ms over {args.queries} localizations of one query\n{header}\n" + "-" * len(header))
    for mode, row in results.items():
        print(f"{mode:12s} " + " ".join(f"{row['median_ms'][s]:10.1f}" for s in STAGES) + f" {row['cpu_ms']:8.1f}")
    print("(concurrent: retrieval and local features overlap, so they add up to more than the total)")
    if args.json:
        atomic_write_text(args.json, to_json_text({"scene": str(args.scene), "queries": args.queries,
                                                   "global_resize": args.global_resize, "modes": results},
                                                  indent=2))
        print(f"JSON written to {args.json}")


if __name__ == "__main__":
    main()
