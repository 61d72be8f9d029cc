"""The fuzz runner: seeds made once, one forked child per case from a zygote that imported hierloc, outcomes classified.

Starting Python and importing torch costs about two seconds; a case on a tiny seed costs a few milliseconds to
a few hundred. So this process (the zygote) imports `hierloc.cli.main` and the heavy libraries once, pins every
thread pool to one thread, and forks one child per case. The child caps its address space (RLIMIT_AS), sends
stdout/stderr to files, runs `hierloc.cli.main.main(argv)` and leaves with os._exit; the parent waits with a
time cap and kills the child's process group when it hangs. `jobs` children run at a time.

Outcome classes:
    clean-error           exit status != 0, stderr ends with one `hierloc CMD: error: ...` line, no traceback
    unclear-error         exit status != 0 without a traceback but without that line either
    accepted              exit status 0
    accepted-implausible  exit status 0 and the target's `implausible` check says why the result is wrong
    traceback             a Python traceback on stderr
    hang                  still running at the time cap (killed)
    crash                 killed by a signal, or MemoryError beyond the memory cap
    code-executed         the canary file exists: unpickling the input ran a command
A clean error that names neither the damaged file nor its folder is also counted under `error-without-file`.
"""

from __future__ import annotations

import hashlib
import os
import random
import re
import resource
import shutil
import signal
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from .mutators import BYTE_MUTATORS, CANARY_ENV, CANARY_MUTATORS, mutator_name
from .target import FuzzTarget, Mutator

CLASSES = ("clean-error", "accepted", "accepted-implausible", "unclear-error", "traceback", "hang", "crash",
           "code-executed")
NON_CLEAN = ("accepted-implausible", "unclear-error", "traceback", "hang", "crash", "code-executed")
# Heavy modules the commands import lazily: imported once in the zygote, not in every child.
PRELOAD = ("torch", "torchvision", "cv2", "numpy", "scipy.spatial.transform", "h5py", "faiss", "pycolmap",
           "hierloc.cli.main", "hierloc.pipelines.indexing", "hierloc.pipelines.mapping",
           "hierloc.pipelines.localizing", "hierloc.localization", "hierloc.describers", "hierloc.index.io",
           "hierloc.features", "hierloc.evaluation", "hierloc.datasets", "hierloc.maps")
_ERROR_LINE = re.compile(r"^hierloc [\w -]+: error: ")
# Lines allowed before the error line: logging, argparse usage, continuation lines, tqdm progress bars.
# Native libraries' own messages (libpng, OpenCV) are tolerated too: hierloc cannot word them.
_LOG_LINE = re.compile(r"^(DEBUG|INFO|WARNING|ERROR|CRITICAL): |^usage: |^\s|\d+%\||^libpng (error|warning)|"
                       r"^\[ WARN:|^Corrupt JPEG data|^Premature end of JPEG")


@dataclass
class Case:
    """One fuzz case: which target, its seed, and (once prepared) what was damaged and how."""

    target: FuzzTarget
    case_seed: int
    folder: Path | None = None
    file: str = ""
    mutator: str = ""


@dataclass
class Outcome:
    """What one case did."""

    case: Case
    outcome: str
    returncode: int | None
    seconds: float
    stderr: str
    stdout: str
    names_file: bool = True
    reason: str | None = None


@dataclass
class FuzzReport:
    """Counts per target and class, and the non-clean cases with what is needed to replay them."""

    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    without_file: dict[str, int] = field(default_factory=dict)
    findings: list[dict] = field(default_factory=list)
    unnamed: list[dict] = field(default_factory=list)
    seed_outcomes: dict[str, str] = field(default_factory=dict)
    error_samples: dict[str, list[str]] = field(default_factory=dict)  # distinct clean errors, case paths cut
    seconds: float = 0.0


def prepare_zygote(threads: int = 1) -> None:
    """Set the environment and import hierloc and the heavy libraries once, with one thread everywhere."""
    os.environ["HIERLOC_OFFLINE"] = "1"
    os.environ["HIERLOC_NUM_THREADS"] = str(threads)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(threads)
    import importlib

    for module in PRELOAD:
        try:
            importlib.import_module(module)
        except Exception:  # an optional library missing only costs its import in each child
            pass
    from hierloc.utils.threads import configure_threads

    configure_threads(threads)


def case_seeds(seed: int, cases: int) -> list[int]:
    """`cases` case seeds derived from the run's seed (32-bit, so `--replay TARGET:SEED` is short)."""
    rng = random.Random(seed)
    return [rng.getrandbits(32) for _ in range(cases)]


def make_seeds(targets: list[FuzzTarget], root: Path) -> dict[str, list[str]]:
    """Write every target's valid input once under root/<name>; the files cases may damage, per target."""
    files = {}
    for target in targets:
        folder = root / target.name
        folder.mkdir(parents=True)
        files[target.name] = list(target.make_seed(folder))
        if not files[target.name]:
            raise ValueError(f"fuzz target {target.name}: make_seed returned no files")
    return files


def mutators_of(target: FuzzTarget) -> list[Mutator]:
    """Byte-level mutators, the canaries, and the target's structured mutators (weighted like all bytes ones)."""
    structured = list(target.structured)
    weight = max(1, len(BYTE_MUTATORS) // max(1, len(structured))) if structured else 0
    return [*BYTE_MUTATORS, *CANARY_MUTATORS, *(structured * weight)]


def prepare_case(case: Case, seed_folder: Path, files: list[str], work: Path) -> None:
    """Copy the seed folder and damage one of its files with a mutator chosen by the case's seed."""
    rng = random.Random(case.case_seed)
    case.folder = work / f"{case.target.name}-{case.case_seed}"
    if case.folder.exists():
        shutil.rmtree(case.folder)
    shutil.copytree(seed_folder, case.folder, symlinks=True)
    case.file = rng.choice(files)
    mutator = rng.choice(mutators_of(case.target))
    case.mutator = mutator_name(mutator)
    path = case.folder / case.file
    data = path.read_bytes() if path.is_file() else b""
    try:
        damaged = mutator(data, rng)
    except Exception as error:  # a harness bug: say which case, so that it can be replayed
        raise RuntimeError(f"mutator {case.mutator} failed on {case.target.name}:{case.case_seed} "
                           f"({case.file})") from error
    path.write_bytes(damaged)


def _run_child(case: Case, memory_mb: int) -> None:
    """In the forked child: cap memory, redirect output, run the command, leave without cleanup."""
    code = 1
    try:
        os.setpgrp()
        assert case.folder is not None
        os.environ[CANARY_ENV] = str(case.folder / ".canary")
        current = _address_space_bytes()
        limit = current + memory_mb * (1 << 20)
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        for fd, name in ((1, ".stdout"), (2, ".stderr")):
            handle = os.open(case.folder / name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.dup2(handle, fd)
            os.close(handle)
        os.chdir(case.folder)
        import logging

        # Handlers the zygote set up (making seeds runs hierloc) may write to a captured stream: the command
        # must log to this child's stderr, as a fresh process would.
        logging.root.handlers.clear()
        from hierloc.cli.main import main

        code = int(main(case.target.argv(case.folder)) or 0)
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 1
    except BaseException:  # noqa: BLE001 - everything must be reported as a traceback, then the child exits
        traceback.print_exc()
        code = 70
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def _address_space_bytes() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    return 0


def _read(path: Path, limit: int = 200_000) -> str:
    try:
        with open(path, "rb") as handle:
            return handle.read(limit).decode("utf-8", "replace")
    except FileNotFoundError:
        return ""


def classify(case: Case, status: int | None, hung: bool, seconds: float) -> Outcome:
    """The outcome class of a finished (or killed) case; see the module."""
    assert case.folder is not None
    stderr, stdout = _read(case.folder / ".stderr"), _read(case.folder / ".stdout")
    returncode = None if status is None or os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
    reason = None
    names_file = True
    if (case.folder / ".canary").exists():
        outcome = "code-executed"
    elif hung:
        outcome = "hang"
    elif status is not None and os.WIFSIGNALED(status):
        outcome = "crash"
        reason = f"signal {signal.Signals(os.WTERMSIG(status)).name}"
    elif "MemoryError" in stderr:
        outcome = "crash"
        reason = "MemoryError"
    elif "Traceback (most recent call last)" in stderr:
        outcome = "traceback"
    elif returncode == 0:
        outcome = "accepted"
        if case.target.implausible is not None:
            try:
                reason = case.target.implausible(case.folder, stdout)
            except Exception as error:  # a checker that breaks on the output: the output is implausible
                reason = f"implausible() failed: {type(error).__name__}: {error}"
            if reason:
                outcome = "accepted-implausible"
    else:
        lines = [line for line in stderr.splitlines() if line.strip()]
        if lines and _ERROR_LINE.match(lines[-1]) and all(_LOG_LINE.search(line) for line in lines[:-1]):
            outcome = "clean-error"
            names_file = _names_file(lines[-1], case)
        else:
            outcome = "unclear-error"
    return Outcome(case, outcome, returncode, seconds, stderr, stdout, names_file, reason)


def _names_file(line: str, case: Case) -> bool:
    """Whether an error line names the damaged file (or, for a file inside a model folder, that folder)."""
    parts = Path(case.file).parts
    candidates = {parts[-1]}
    if len(parts) > 1:
        candidates.add(parts[-2])
    return any(candidate in line for candidate in candidates)


def run_cases(cases: list[Case], seed_root: Path, files: dict[str, list[str]], work: Path, *, jobs: int,
              timeout: float, memory_mb: int, keep: bool = False, on_outcome=None) -> list[Outcome]:
    """Run the cases, `jobs` forked children at a time; each killed with its process group after `timeout` s."""
    pending = list(reversed(cases))
    running: dict[int, tuple[Case, float]] = {}
    outcomes: list[Outcome] = []
    while pending or running:
        while pending and len(running) < jobs:
            case = pending.pop()
            prepare_case(case, seed_root / case.target.name, files[case.target.name], work)
            sys.stdout.flush()
            sys.stderr.flush()
            pid = os.fork()
            if pid == 0:
                _run_child(case, memory_mb)
            running[pid] = (case, time.monotonic())
        finished: list[Outcome] = []
        pid, status = os.waitpid(-1, os.WNOHANG)
        if pid:
            case, started = running.pop(pid)
            _kill_group(pid)  # helpers a command left behind (workers) go with it
            finished.append(classify(case, status, False, time.monotonic() - started))
        now = time.monotonic()
        for pid, (case, started) in list(running.items()):
            if now - started > timeout:
                _kill_group(pid)
                os.waitpid(pid, 0)
                running.pop(pid)
                finished.append(classify(case, None, True, now - started))
        for outcome in finished:
            outcomes.append(outcome)
            if on_outcome is not None:
                on_outcome(outcome)
            if not keep and outcome.case.folder is not None:
                shutil.rmtree(outcome.case.folder, ignore_errors=True)
        if not finished:
            time.sleep(0.002)
    return outcomes


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def stderr_head(text: str, lines: int = 6) -> list[str]:
    """The first lines of stderr that say something (a traceback's last line comes last)."""
    kept = [line for line in text.splitlines() if line.strip()]
    if len(kept) > lines:
        return kept[:lines - 1] + ["...", kept[-1]]
    return kept


def run_fuzz(targets: list[FuzzTarget], cases: int, seed: int, *, jobs: int = 2, timeout: float = 10.0,
             memory_mb: int = 2048, work_dir: Path | None = None, progress=None) -> FuzzReport:
    """Fuzz `targets` with `cases` cases in all (round-robin), from the run's `seed`; see the module."""
    started = time.monotonic()
    report = FuzzReport()
    with tempfile.TemporaryDirectory(prefix="hierloc-fuzz-", dir=work_dir) as temporary:
        root = Path(temporary)
        seed_root, work = root / "seeds", root / "cases"
        work.mkdir()
        files = make_seeds(targets, seed_root)
        report.seed_outcomes = check_seeds(targets, seed_root, files, work, timeout, memory_mb)
        seeds = case_seeds(seed, cases)
        all_cases = [Case(targets[i % len(targets)], seeds[i]) for i in range(cases)]
        for target in targets:
            report.counts[target.name] = {name: 0 for name in CLASSES}
            report.without_file[target.name] = 0

        def record(outcome: Outcome) -> None:
            name = outcome.case.target.name
            report.counts[name][outcome.outcome] += 1
            entry = {"target": name, "case_seed": outcome.case.case_seed, "replay": f"{name}:{outcome.case.case_seed}",
                     "file": outcome.case.file, "mutator": outcome.case.mutator, "outcome": outcome.outcome,
                     "returncode": outcome.returncode, "seconds": round(outcome.seconds, 3),
                     "reason": outcome.reason, "stderr": stderr_head(outcome.stderr)}
            if outcome.outcome in NON_CLEAN:
                report.findings.append(entry)
            elif outcome.outcome == "clean-error":
                line = stderr_head(outcome.stderr, 1)[-1].replace(str(outcome.case.folder), "CASE")
                samples = report.error_samples.setdefault(name, [])
                if len(samples) < 40 and line[:300] not in samples:
                    samples.append(line[:300])
                if not outcome.names_file:
                    report.without_file[name] += 1
                    if len(report.unnamed) < 200:
                        report.unnamed.append(entry)
            if progress is not None:
                progress(outcome)

        run_cases(all_cases, seed_root, files, work, jobs=jobs, timeout=timeout, memory_mb=memory_mb,
                  on_outcome=record)
    report.seconds = time.monotonic() - started
    return report


def check_seeds(targets: list[FuzzTarget], seed_root: Path, files: dict[str, list[str]], work: Path,
                timeout: float, memory_mb: int) -> dict[str, str]:
    """Run every target once on its undamaged seed: anything but `accepted` makes the target's counts meaningless."""
    results = {}
    for target in targets:
        case = Case(target, 0)
        case.folder = work / f"{target.name}-seed"
        shutil.copytree(seed_root / target.name, case.folder, symlinks=True)
        case.file, case.mutator = files[target.name][0], "none"
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            _run_child(case, memory_mb)
        started = time.monotonic()
        status = None
        while time.monotonic() - started < max(timeout, 60.0):
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            time.sleep(0.005)
        else:
            _kill_group(pid)
            os.waitpid(pid, 0)
        outcome = classify(case, status, status is None, time.monotonic() - started)
        results[target.name] = outcome.outcome
        if outcome.outcome != "accepted":
            print(f"WARNING: fuzz target {target.name}: its undamaged seed gives {outcome.outcome}: "
                  f"{' | '.join(stderr_head(outcome.stderr, 3))}", file=sys.stderr)
        shutil.rmtree(case.folder, ignore_errors=True)
    return results


def replay(target: FuzzTarget, case_seed: int, *, timeout: float = 10.0, memory_mb: int = 2048,
           keep_dir: Path | None = None) -> Outcome:
    """Run one case again from its seed, keeping its folder (under `keep_dir` or a new temporary folder)."""
    root = Path(keep_dir) if keep_dir is not None else Path(tempfile.mkdtemp(prefix="hierloc-replay-"))
    seed_root, work = root / "seeds", root / "cases"
    work.mkdir(parents=True, exist_ok=True)
    if (seed_root / target.name).exists():
        shutil.rmtree(seed_root / target.name)
    files = make_seeds([target], seed_root)
    case = Case(target, case_seed)
    return run_cases([case], seed_root, files, work, jobs=1, timeout=timeout, memory_mb=memory_mb, keep=True)[0]


def stable_seed(text: str) -> int:
    """A 32-bit seed from a text (for targets that derive sub-seeds from their names)."""
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "little")
