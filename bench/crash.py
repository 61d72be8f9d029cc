"""Crash harness: `kill -9` hierloc writers at random moments, then load what they left and rerun them.

For each writer (index build / add, extract, map build over an existing map, training) a tiny synthetic input
is prepared, the hierloc command runs once uninterrupted (its duration and its clean output listing), then for
each kill: the output is reset to its old state, the command is started as a subprocess and killed with SIGKILL
at a seeded random moment in [0, duration), the output is loaded and classified, and the command is rerun to
completion and the output folder compared with the clean listing.

Outcomes: intact-old, intact-new, intact-partial (extract / train: committed work, loads, resumable),
refused-torn (a load error that says the output is torn), corrupt (another load error), mixed (loads but is
neither old nor new), lost (extract: more than the work since the last commit is gone). Also counted: leftover
files after the rerun, DataLoader workers still alive after the kill, reruns that failed.

    python bench/crash.py --kills 20 --json out.json [--writers map-build,extract] [--seed 0] [--threads 1]

Target: 0 corrupt, 0 mixed, 0 lost, 0 leftover, 0 orphan workers, 0 failed reruns.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

WRITERS = ("index-build", "index-add", "extract", "map-build", "train")
BAD_OUTCOMES = ("corrupt", "mixed", "lost")
COMMIT_SECONDS = 2.0  # hierloc.extraction.pipeline.PeriodicCommit's minimum interval
TORN_WORDS = ("torn", "incomplete", "mixed", "checksum", "manifest", "truncated")


def hierloc_command(*args: str, threads: int) -> list[str]:
    """argv of a hierloc CLI call in a fresh interpreter."""
    return [sys.executable, "-m", "hierloc.cli.main", *args, *(["--threads", str(threads)] if threads else [])]


def child_pids(pid: int) -> list[int]:
    """Pids of the live processes whose parent is `pid` (Linux /proc)."""
    found = []
    for entry in os.listdir("/proc") if os.path.isdir("/proc") else []:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(entry))
    return found


def alive(pid: int) -> bool:
    """Whether a process exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def normalized_listing(folder: Path) -> collections.Counter:
    """Files under `folder` with random tokens (hex side-file names, event-file stamps) made generic."""
    names: collections.Counter = collections.Counter()
    if not folder.exists():
        return names
    for path in sorted(folder.rglob("*")):
        if path.is_dir():
            continue
        name = path.relative_to(folder).as_posix()
        name = re.sub(r"\.[0-9a-f]{8}\.", ".<token>.", name)
        if "events.out.tfevents." in name:
            continue  # TensorBoard writes one event file per (resumed) run by design
        names[name] += 1
    return names


class Progress:
    """Reads a child's stderr; remembers (time, n) of every tqdm 'n/total' it prints."""

    def __init__(self, stream) -> None:
        self.points: list[tuple[float, int]] = []
        self.text: list[str] = []
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream) -> None:
        buffer = b""
        while chunk := stream.read1(4096) if hasattr(stream, "read1") else stream.read(4096):
            buffer += chunk
            *parts, buffer = re.split(rb"[\r\n]", buffer)
            for part in parts:
                line = part.decode("utf-8", "replace")
                self.text.append(line)
                match = re.search(r"(\d+)/(\d+) \[", line)
                if match:
                    self.points.append((time.monotonic(), int(match.group(1))))

    def done_before(self, moment: float) -> int:
        """Largest progress count printed before `moment` (monotonic)."""
        return max([n for t, n in self.points if t <= moment], default=0)

    def join(self) -> None:
        """Wait for the stream to close."""
        self._thread.join(timeout=10)


@dataclass
class Writer:
    """One hierloc writer under test."""

    name: str
    output: Path  # the file or folder the command writes
    command: list[str]
    reset: Callable[[], None]  # put the output back into its old state
    classify: Callable[["Writer", dict], str]
    rerun: Callable[[], list[str]] | None = None  # command that completes the work after a kill (default: same)
    old: Any = None
    new: Any = None
    fingerprint: Callable[[], Any] | None = None
    watch_workers: bool = False
    rerun_when_new: bool = True  # False: the command is not idempotent (index add refuses keyframes it has)
    extra: dict = field(default_factory=dict)


def run_to_completion(command: list[str], env: dict) -> subprocess.CompletedProcess:
    """Run a command; its output is kept for the report."""
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)


def load_error_outcome(message: str) -> str:
    """refused-torn when a load error says so, corrupt otherwise."""
    return "refused-torn" if any(word in message.lower() for word in TORN_WORDS) else "corrupt"


# ---------------------------------------------------------------------------------------------- inputs


def prepare_inputs(root: Path) -> dict[str, Path]:
    """The synthetic inputs every writer starts from (a few small images)."""
    import cv2
    import numpy as np

    from hierloc.maps import make_synthetic_map, write_synthetic_dataset

    world = make_synthetic_map(num_missions=2, frames_per_mission=8, image_size=(192, 144), seed=5)
    write_synthetic_dataset(world, root / "world")
    missions = sorted(p for p in (root / "world").iterdir() if p.is_dir())
    # Extraction input: larger noise images, so that the run lasts a few commit intervals.
    rng = np.random.default_rng(0)
    (root / "images").mkdir()
    for i in range(30):
        image = cv2.GaussianBlur(rng.integers(0, 256, (240, 320, 3), dtype=np.uint8), (5, 5), 0)
        cv2.imwrite(str(root / "images" / f"{i:03d}.jpg"), image)
    # Training input (tests/test_training_trainer.py's distillation set).
    (root / "train" / "images").mkdir(parents=True)
    (root / "train" / "teacher").mkdir()
    projection = rng.normal(size=(3, 8)).astype(np.float32)
    for i in range(16):
        image = np.zeros((24, 32, 3), np.uint8)
        image[:] = rng.integers(0, 256, 3)
        cv2.imwrite(str(root / "train" / "images" / f"{i:03d}.png"), image)
        target = image.reshape(-1, 3).mean(0) / 255 @ projection
        np.save(root / "train" / "teacher" / f"{i:03d}.npy", (target / np.linalg.norm(target)).astype(np.float32))
    return {"world": root / "world", "mission0": missions[0], "missions": missions, "images": root / "images",
            "train": root / "train"}


# ---------------------------------------------------------------------------------------------- writers


def index_fingerprint(path: Path) -> tuple:
    """(names, descriptor bytes hash, search kind) of an index, loaded with its search structure."""
    import hashlib

    from hierloc.index.io import load_index
    from hierloc.index.stored_search import load_retriever

    index = load_index(path)
    retriever = load_retriever(path)
    retriever.search(index.descriptors[:1], 1)
    return (tuple(index.names), hashlib.sha256(index.descriptors.tobytes()).hexdigest())


def classify_by_fingerprint(writer: Writer, info: dict) -> str:
    """intact-old / intact-new / mixed from the writer's fingerprint; refused-torn / corrupt on a load error."""
    if writer.old is None and not writer.output.exists():
        return "intact-old"
    try:
        found = writer.fingerprint()
    except Exception as exc:  # noqa: BLE001 - any load error is an outcome to count
        info["error"] = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
        return load_error_outcome(str(exc))
    if found == writer.old:
        return "intact-old"
    if found == writer.new:
        return "intact-new"
    return "mixed"


def make_index_writers(work: Path, inputs: dict, threads: int) -> list[Writer]:
    """index-build over an existing index, and index-add."""
    model = ["--model", "mobilenetvlad", "--weights", "none", "--resize", "160x120"]
    out_build = work / "index-build" / "index.h5"
    template_build = work / "index-build-old"
    out_add = work / "index-add" / "index.h5"
    template_add = work / "index-add-old"
    env = bench_env(threads)
    for template in (template_build, template_add):
        template.mkdir(parents=True)
        done = run_to_completion(hierloc_command("index", "build", str(inputs["mission0"]), "--out",
                                                 str(template / "index.h5"), *model, "--index", "hnsw",
                                                 threads=threads), env)
        if done.returncode:
            raise RuntimeError(done.stderr[-2000:])

    def reset(out: Path, template: Path) -> Callable[[], None]:
        def go() -> None:
            shutil.rmtree(out.parent, ignore_errors=True)
            shutil.copytree(template, out.parent)
        return go

    build = Writer("index-build", out_build,
                   hierloc_command("index", "build", str(inputs["world"]), "--out", str(out_build), *model,
                                   "--index", "hnsw", "--workers", "2", threads=threads),
                   reset(out_build, template_build), classify_by_fingerprint,
                   fingerprint=lambda: index_fingerprint(out_build), watch_workers=True)
    add = Writer("index-add", out_add,
                 hierloc_command("index", "add", str(out_add), str(inputs["missions"][1]),
                                 "--model", "mobilenetvlad", "--weights", "none", "--resize", "160x120",
                                 threads=threads),
                 reset(out_add, template_add), classify_by_fingerprint,
                 fingerprint=lambda: index_fingerprint(out_add), rerun_when_new=False)
    return [build, add]


def make_extract_writer(work: Path, inputs: dict, threads: int) -> Writer:
    """extract into a file that already holds the first 10 images."""
    from hierloc.extraction import read_global_descriptors

    out = work / "extract" / "descriptors.h5"
    template = work / "extract-old"
    template.mkdir(parents=True)
    first = work / "extract-first"
    first.mkdir()
    for path in sorted(inputs["images"].iterdir())[:10]:
        shutil.copy(path, first / path.name)
    model = ["--model", "mobilenetvlad", "--weights", "none"]
    done = run_to_completion(hierloc_command("extract", str(first), "--out", str(template / out.name), *model,
                                             threads=threads), bench_env(threads))
    if done.returncode:
        raise RuntimeError(done.stderr[-2000:])
    all_names = tuple(sorted(p.name for p in inputs["images"].iterdir()))
    old_names = tuple(sorted(p.name for p in first.iterdir()))

    def reset() -> None:
        shutil.rmtree(out.parent, ignore_errors=True)
        shutil.copytree(template, out.parent)

    def classify(writer: Writer, info: dict) -> str:
        try:
            names, descriptors = read_global_descriptors(out)
        except Exception as exc:  # noqa: BLE001
            info["error"] = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
            return load_error_outcome(str(exc))
        names = tuple(sorted(names))
        if not set(old_names) <= set(names) <= set(all_names) or not (descriptors == descriptors).all():
            return "mixed"
        committed = len(names) - len(old_names)
        # Described before (kill - commit interval - 1 s of slack) must be committed: at most the last batch lost.
        must_have = info["progress"].done_before(info["killed_at"] - COMMIT_SECONDS - 1.0)
        info.update(committed=committed, described=info["progress"].done_before(info["killed_at"]))
        if committed < must_have:
            info["must_have"] = must_have
            return "lost"
        if names == old_names:
            return "intact-old"
        return "intact-new" if names == all_names else "intact-partial"

    return Writer("extract", out, hierloc_command("extract", str(inputs["images"]), "--out", str(out), *model,
                                                  threads=threads), reset, classify)


def map_fingerprint(folder: Path) -> tuple:
    """(names, number of points, rounded point sum, global index names) of a map folder, as loaded."""
    import numpy as np

    from hierloc.localization.scene_map import SceneMap

    scene = SceneMap.load(folder)
    return (tuple(scene.names), scene.num_points, round(float(np.abs(scene.points_xyz).sum()), 3),
            None if scene.global_index is None else tuple(scene.global_index.names))


def make_map_writer(work: Path, inputs: dict, threads: int) -> Writer:
    """map build --out EXISTING: the old map leaves one image out."""
    out = work / "map-build" / "map"
    template = work / "map-build-old"
    common = ["--global-model", "mobilenetvlad", "--global-weights", "none", "--pairs", "sequential",
              "--num-neighbors", "3", "--max-keypoints", "512"]
    source = str(inputs["world"])  # cameras.txt is at its root
    common += ["--mission", inputs["mission0"].name]
    first_image = sorted(p.name for p in inputs["mission0"].iterdir() if p.suffix == ".png")[0]
    done = run_to_completion(hierloc_command("map", "build", source, "--out", str(template / "map"), *common,
                                             "--exclude", first_image, threads=threads), bench_env(threads))
    if done.returncode:
        raise RuntimeError(done.stderr[-2000:])

    def reset() -> None:
        shutil.rmtree(out.parent, ignore_errors=True)
        shutil.copytree(template, out.parent)

    return Writer("map-build", out, hierloc_command("map", "build", source, "--out", str(out), *common,
                                                    threads=threads),
                  reset, classify_by_fingerprint, fingerprint=lambda: map_fingerprint(out))


def make_train_writer(work: Path, inputs: dict, threads: int) -> Writer:
    """A few iterations of a tiny distillation training with 2 DataLoader workers; checkpoints must load."""
    import yaml

    from hierloc.training.config import complete_config

    config = complete_config({
        "data": {"name": "distillation", "image_folders": ["images"], "descriptor_folders": ["teacher"],
                 "validation_size": 4, "preprocessing": {"resize": [24, 32], "grayscale": True}, "num_workers": 2},
        "model": {"name": "mobilenetvlad", "endpoint": "layer_4", "num_clusters": 4, "reduction_dim": "auto",
                  "batch_size": 4, "eval_batch_size": 4, "learning_rate": 0.01},
        "train_iter": 24, "validation_interval": 12, "save_interval": 4, "keep_checkpoints": 2, "log_interval": 5,
        "seed": 0,
    })
    config_path = work / "train-config.yaml"
    config_path.write_text(yaml.safe_dump(config))
    exp = work / "train" / "exp"
    base = ["train", str(config_path), str(exp), "--data-root", str(inputs["train"]), "--no-progress"]

    def reset() -> None:
        shutil.rmtree(exp.parent, ignore_errors=True)
        exp.parent.mkdir(parents=True)

    def classify(writer: Writer, info: dict) -> str:
        from hierloc.models import load_model
        from hierloc.training.checkpoints import list_checkpoints, read_training_checkpoint

        try:
            checkpoints = list_checkpoints(exp)
            for _, path in checkpoints:
                read_training_checkpoint(path)
            if (exp / "model.pt").is_file():
                load_model("mobilenetvlad", weights=exp / "model.pt")
        except Exception as exc:  # noqa: BLE001
            info["error"] = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
            return load_error_outcome(str(exc))
        info["checkpoints"] = [i for i, _ in checkpoints]
        if not checkpoints:
            return "intact-old"
        return "intact-new" if checkpoints[-1][0] == config["train_iter"] else "intact-partial"

    def rerun() -> list[str]:
        resume = ["--resume"] if exp.exists() else []
        return hierloc_command(*base, *resume, threads=threads)

    return Writer("train", exp, hierloc_command(*base, threads=threads), reset, classify, rerun=rerun,
                  watch_workers=True)


# ---------------------------------------------------------------------------------------------- the harness


def bench_env(threads: int) -> dict:
    """Environment of every hierloc subprocess: explicit thread counts."""
    return dict(os.environ, HIERLOC_NUM_THREADS=str(threads), OMP_NUM_THREADS=str(threads),
                MKL_NUM_THREADS=str(threads), OPENBLAS_NUM_THREADS=str(threads), PYTHONUNBUFFERED="1")


def output_folder(writer: Writer) -> Path:
    """The folder whose listing is compared after the rerun."""
    return writer.output.parent


def import_seconds(env: dict) -> float:
    """How long a fresh interpreter takes to import what every hierloc command imports (nothing is written then)."""
    start = time.monotonic()
    subprocess.run([sys.executable, "-c", "import torch, cv2, h5py, pycolmap, hierloc.cli.main"], env=env,
                   check=True, timeout=300)
    return time.monotonic() - start


def measure(writer: Writer, env: dict, startup: float) -> dict:
    """One uninterrupted run from the old state: duration, clean listing, and the old/new fingerprints."""
    writer.reset()
    if writer.fingerprint is not None:
        writer.old = writer.fingerprint() if writer.output.exists() else None
    start = time.monotonic()
    done = run_to_completion(writer.command, env)
    seconds = time.monotonic() - start
    if done.returncode:
        raise RuntimeError(f"{writer.name}: the uninterrupted run failed: {done.stderr[-2000:]}")
    if writer.fingerprint is not None:
        writer.new = writer.fingerprint()
    return {"seconds": seconds, "startup": min(startup, 0.5 * seconds),
            "listing": normalized_listing(output_folder(writer))}


def one_kill(writer: Writer, moment: float, clean: collections.Counter, env: dict) -> dict:
    """Reset, start, SIGKILL after `moment` seconds, classify, rerun, compare listings."""
    writer.reset()
    process = subprocess.Popen(writer.command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    progress = Progress(process.stderr)
    deadline = time.monotonic() + moment
    workers: set[int] = set()
    while time.monotonic() < deadline and process.poll() is None:
        if writer.watch_workers:
            workers.update(child_pids(process.pid))
        time.sleep(min(0.05, max(0.0, deadline - time.monotonic())))
    finished_first = process.poll() is not None
    if writer.watch_workers and not finished_first:
        workers.update(child_pids(process.pid))
    killed_at = time.monotonic()
    if not finished_first:
        process.send_signal(signal.SIGKILL)
    process.wait()
    progress.join()
    time.sleep(0.5 if workers else 0.0)  # give the kernel time to deliver the parent-death signal
    orphans = [pid for pid in workers if alive(pid)]
    for pid in orphans:  # do not leave them running
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    info: dict[str, Any] = {"moment": round(moment, 2), "finished_before_kill": finished_first,
                            "progress": progress, "killed_at": killed_at, "orphan_workers": len(orphans)}
    info["outcome"] = writer.classify(writer, info)
    command = writer.rerun() if writer.rerun is not None else writer.command
    if info["outcome"] == "intact-new" and not writer.rerun_when_new:
        done = subprocess.CompletedProcess(command, 0, "", "")  # the work is done; a rerun would be refused
    else:
        done = run_to_completion(command, env)
    info["rerun_ok"] = done.returncode == 0
    if done.returncode:
        info["rerun_error"] = (done.stderr.strip().splitlines() or ["?"])[-1][:300]
    after = normalized_listing(output_folder(writer))
    leftover = sorted((after - clean).elements())
    info["leftover"] = leftover
    if writer.fingerprint is not None and info["rerun_ok"]:
        try:
            info["rerun_is_new"] = writer.fingerprint() == writer.new
        except Exception as exc:  # noqa: BLE001
            info["rerun_is_new"] = False
            info["rerun_error"] = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
    del info["progress"], info["killed_at"]
    return info


def run_writer(writer: Writer, kills: int, rng: random.Random, env: dict, startup: float) -> dict:
    """The measurement run and `kills` kills of one writer (`startup`: interpreter start-up seconds)."""
    clean = measure(writer, env, startup)
    trials = []
    for k in range(kills):
        # Moments spread evenly (stratified, jittered by the seeded generator) over the run after most of the
        # interpreter start-up, during which nothing is written and every kill would find the old state.
        floor = 0.8 * clean["startup"]
        moment = floor + (k + rng.random()) / kills * (clean["seconds"] - floor)
        trials.append(one_kill(writer, moment, clean["listing"], env))
        trial = trials[-1]
        print(f"  {writer.name} kill {k + 1}/{kills} at {trial['moment']:.2f} s: {trial['outcome']}"
              f"{' (leftover ' + str(trial['leftover']) + ')' if trial['leftover'] else ''}"
              f"{' (' + trial['error'] + ')' if trial.get('error') else ''}", flush=True)
    outcomes = collections.Counter(t["outcome"] for t in trials)
    return {"writer": writer.name, "clean_seconds": round(clean["seconds"], 2),
            "startup_seconds": round(clean["startup"], 2), "kills": kills,
            "outcomes": dict(outcomes),
            "leftover_after_rerun": sum(1 for t in trials if t["leftover"]),
            "orphan_workers": sum(t["orphan_workers"] for t in trials),
            "failed_reruns": sum(1 for t in trials if not t["rerun_ok"] or t.get("rerun_is_new") is False),
            "trials": trials}


def make_writers(names: list[str], work: Path, threads: int) -> list[Writer]:
    """Inputs and old states for the requested writers."""
    inputs = prepare_inputs(work / "inputs")
    writers: list[Writer] = []
    if "index-build" in names or "index-add" in names:
        writers += [w for w in make_index_writers(work, inputs, threads) if w.name in names]
    if "extract" in names:
        writers.append(make_extract_writer(work, inputs, threads))
    if "map-build" in names:
        writers.append(make_map_writer(work, inputs, threads))
    if "train" in names:
        writers.append(make_train_writer(work, inputs, threads))
    return sorted(writers, key=lambda w: names.index(w.name))


def run_crash_bench(names: list[str], kills: int, seed: int = 0, threads: int = 1,
                    work_dir: str | os.PathLike | None = None, jobs: int = 1) -> list[dict]:
    """Every requested writer killed `kills` times (`jobs` writers at a time); one result dict per writer."""
    from concurrent.futures import ThreadPoolExecutor

    with tempfile.TemporaryDirectory(prefix="hierloc-crash-", dir=work_dir) as tmp:
        work = Path(tmp)
        env = bench_env(threads)
        writers = make_writers(names, work, threads)
        # Each writer has its own seeded generator: the moments do not depend on which writers run.
        seeds = {w.name: random.Random(f"{seed}-{w.name}") for w in writers}
        startup = import_seconds(env)
        with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
            return list(pool.map(lambda w: run_writer(w, kills, seeds[w.name], env, startup), writers))


def print_table(results: list[dict]) -> None:
    """One row per writer."""
    columns = ("intact-old", "intact-new", "intact-partial", "refused-torn", "corrupt", "mixed", "lost")
    header = f"{'writer':<12} {'run s':>6} {'kills':>5} " + " ".join(f"{c:>14}" for c in columns) + \
        f" {'leftover':>8} {'orphans':>7} {'rerun-fail':>10}"
    print(header)
    print("-" * len(header))
    for r in results:
        print(f"{r['writer']:<12} {r['clean_seconds']:>6.1f} {r['kills']:>5} "
              + " ".join(f"{r['outcomes'].get(c, 0):>14}" for c in columns)
              + f" {r['leftover_after_rerun']:>8} {r['orphan_workers']:>7} {r['failed_reruns']:>10}")


def main(argv: list[str] | None = None) -> int:
    """Parse, run, print the table, write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=20, help="kills per writer (default 20)")
    parser.add_argument("--writers", default=",".join(WRITERS), help=f"comma-separated, of {', '.join(WRITERS)}")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="threads of every hierloc subprocess (default 1)")
    parser.add_argument("--jobs", type=int, default=2,
                        help="writers run side by side (each subprocess uses --threads threads; default 2)")
    parser.add_argument("--work-dir", default=None, help="where the temporary inputs and outputs go")
    parser.add_argument("--json", default=None, help="write the results here")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.writers.split(",") if n.strip()]
    unknown = sorted(set(names) - set(WRITERS))
    if unknown or args.kills < 1:
        parser.error(f"unknown writers {unknown}" if unknown else "--kills must be at least 1")
    start = time.monotonic()
    results = run_crash_bench(names, args.kills, args.seed, args.threads, args.work_dir, args.jobs)
    print_table(results)
    bad = {k: sum(r["outcomes"].get(k, 0) for r in results) for k in BAD_OUTCOMES}
    bad.update(leftover=sum(r["leftover_after_rerun"] for r in results),
               orphans=sum(r["orphan_workers"] for r in results),
               failed_reruns=sum(r["failed_reruns"] for r in results))
    print(f"total: {sum(r['kills'] for r in results)} kills in {time.monotonic() - start:.0f} s; "
          + ", ".join(f"{k} {v}" for k, v in bad.items()))
    if args.json:
        summary = {"command": " ".join(sys.argv), "seed": args.seed, "threads": args.threads, "jobs": args.jobs,
                   "results": results, "bad": bad}
        Path(args.json).write_text(json.dumps(summary, indent=1, default=str))
    return 1 if any(bad.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
