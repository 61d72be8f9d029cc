"""Fuzz hierloc's readers: mutated files through the commands that read them; a table of outcomes and a JSON report.

    python bench/fuzz.py --cases 5000 --seed 0 --json fuzz.json [--targets a,b] [--jobs 2] [--timeout 10]
    python bench/fuzz.py --replay colmap-binary:123456789

Each case copies a target's valid seed input, damages one file (byte-level or structure-aware mutation chosen
by the case's seed) and runs the target's hierloc command in a child forked from this process (which imported
hierloc once), with a time and an address-space cap. See bench/fuzzing/runner.py for the outcome classes.
The goal is 0 of every class but clean-error and accepted.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

# One thread per case, set before numpy/torch are imported (their pools read these once).
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "HIERLOC_NUM_THREADS"):
    os.environ[_var] = "1"
os.environ["HIERLOC_OFFLINE"] = "1"
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.fuzzing.registry import select_targets  # noqa: E402
from bench.fuzzing.runner import CLASSES, NON_CLEAN, prepare_zygote, replay, run_fuzz  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", type=int, default=200, help="cases in all, spread round-robin over the targets")
    parser.add_argument("--seed", type=int, default=0, help="seed of the run (each case gets its own from it)")
    parser.add_argument("--targets", default=None, help="comma-separated target or module names (default: all)")
    parser.add_argument("--jobs", type=int, default=2, help="cases run at a time (default 2)")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds before a case counts as a hang")
    parser.add_argument("--memory-mb", type=int, default=2048,
                        help="address space a case may add to the zygote's before it fails (default 2048)")
    parser.add_argument("--json", default=None, help="write the report here")
    parser.add_argument("--replay", default=None, metavar="TARGET:CASE_SEED",
                        help="run one case again and keep its folder")
    parser.add_argument("--list", action="store_true", help="list the targets and exit")
    return parser.parse_args(argv)


def print_table(counts: dict[str, dict[str, int]], without_file: dict[str, int]) -> None:
    columns = [*CLASSES, "error-without-file"]
    width = max([len("target"), *(len(name) for name in counts)])
    print(f"{'target':<{width}} " + " ".join(f"{c:>{max(len(c), 5)}}" for c in columns))
    totals = dict.fromkeys(columns, 0)
    for name, row in counts.items():
        row = {**row, "error-without-file": without_file.get(name, 0)}
        for column in columns:
            totals[column] += row[column]
        print(f"{name:<{width}} " + " ".join(f"{row[c]:>{max(len(c), 5)}}" for c in columns))
    print(f"{'total':<{width}} " + " ".join(f"{totals[c]:>{max(len(c), 5)}}" for c in columns))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.list:
        for target in select_targets(args.targets):
            print(target.name)
        return 0
    prepare_zygote(threads=1)
    if args.replay:
        name, _, seed_text = args.replay.rpartition(":")
        (target,) = select_targets(name)
        outcome = replay(target, int(seed_text), timeout=args.timeout, memory_mb=args.memory_mb)
        case = outcome.case
        print(f"{target.name}:{case.case_seed}: {outcome.outcome} (exit {outcome.returncode}, "
              f"{outcome.seconds:.2f} s); {case.mutator} damaged {case.file}; folder kept: {case.folder}")
        print(f"argv: hierloc {' '.join(target.argv(case.folder))}")
        print("--- stdout\n" + outcome.stdout[-3000:] + "--- stderr\n" + outcome.stderr[-6000:])
        return 0
    targets = select_targets(args.targets)
    started = time.time()
    report = run_fuzz(targets, args.cases, args.seed, jobs=args.jobs, timeout=args.timeout,
                      memory_mb=args.memory_mb)
    print(f"{args.cases} cases over {len(targets)} targets in {report.seconds:.0f} s "
          f"({args.jobs} jobs, seed {args.seed}, timeout {args.timeout:g} s, +{args.memory_mb} MiB)")
    print_table(report.counts, report.without_file)
    bad = [s for s in report.seed_outcomes.items() if s[1] != "accepted"]
    if bad:
        print("seeds not accepted (their counts mean little): " + ", ".join(f"{n} ({o})" for n, o in bad))
    for finding in report.findings[:20]:
        last_line = finding["reason"] or (finding["stderr"] or [""])[-1]
        print(f"  {finding['outcome']:<20} --replay {finding['replay']} ({finding['mutator']} on {finding['file']}): "
              f"{last_line[:150]}")
    if args.json:
        payload = {"cases": args.cases, "seed": args.seed, "jobs": args.jobs, "timeout_s": args.timeout,
                   "memory_mb": args.memory_mb, "threads_per_case": 1, "seconds": round(report.seconds, 1),
                   "started": started, "targets": report.counts, "error_without_file": report.without_file,
                   "seed_outcomes": report.seed_outcomes, "classes": list(CLASSES), "non_clean": list(NON_CLEAN),
                   "findings": report.findings, "errors_without_file": report.unnamed,
                   "error_samples": report.error_samples}
        Path(args.json).write_text(json.dumps(payload, indent=1) + "\n")
        print(f"report written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
