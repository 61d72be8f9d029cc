"""Whether a query's retrieval network and local features run one after the other or at the same time.

Run concurrently, the local features (OpenCV SIFT, which hardly gains from a second core) take one
core and the network the rest. What that gains depends on the sizes and the machine: one Strecha
query localized again and again on 2 cores (bench/stage_contention.py) took 49 instead of 62 ms with
the retrieval network at 320 px and the same 78 ms at 640 px (where the network on one thread is as
slow as SIFT), while across different queries the difference was within the spread. No rule of thumb
covers every machine, network and extractor, so the choice is measured: a `StageModeChooser` times
both modes on the first warm queries and keeps the faster one. Results are the same in both modes;
only the timings differ.
"""

from __future__ import annotations

import statistics
import threading
from typing import Hashable

SEQUENTIAL, CONCURRENT = "sequential", "concurrent"
MEASURED = "measured"  # neither fixed: a chooser times both


class StageModeChooser:
    """Alternates the two modes for `trials` queries each, then keeps the one with the smaller median time.

    Thread-safe. `next_mode()` gives the mode of the next query; `record(mode, seconds)` takes the
    wall clock of its network stages. Until both modes have `trials` timings they alternate.
    """

    def __init__(self, trials: int = 4) -> None:
        if trials < 1:
            raise ValueError(f"trials must be positive, got {trials}")
        self.trials = trials
        self._seconds: dict[str, list[float]] = {SEQUENTIAL: [], CONCURRENT: []}
        self._chosen: str | None = None
        self._turn = 0
        self._lock = threading.Lock()

    @property
    def chosen(self) -> str | None:
        """The mode kept, or None while the trials run."""
        return self._chosen

    def next_mode(self) -> str:
        """The mode of the next query: the chosen one, or during the trials the two in turn."""
        with self._lock:
            if self._chosen is not None:
                return self._chosen
            self._turn += 1
            return CONCURRENT if self._turn % 2 else SEQUENTIAL

    def record(self, mode: str, seconds: float) -> None:
        """Wall clock of one query's network stages in `mode`; decides once both modes have their trials."""
        with self._lock:
            if self._chosen is not None:
                return
            self._seconds[mode].append(seconds)
            if all(len(times) >= self.trials for times in self._seconds.values()):
                medians = {m: statistics.median(times) for m, times in self._seconds.items()}
                self._chosen = CONCURRENT if medians[CONCURRENT] < medians[SEQUENTIAL] else SEQUENTIAL

    def summary(self) -> dict:
        """The choice and the trial timings (seconds), for reports."""
        with self._lock:
            return {"chosen": self._chosen, "trial_seconds": {m: list(t) for m, t in self._seconds.items()}}


_CHOOSERS: dict[Hashable, StageModeChooser] = {}
_CHOOSERS_LOCK = threading.Lock()


def stage_mode_chooser(setup: Hashable) -> StageModeChooser:
    """The process's chooser for one set-up (network and its preprocessing, extractor, device, threads).

    Shared by every localizer of the process with that set-up: the costs do not depend on the map,
    and a program that builds many localizers (one per map) decides once.
    """
    with _CHOOSERS_LOCK:
        chooser = _CHOOSERS.get(setup)
        if chooser is None:
            chooser = _CHOOSERS[setup] = StageModeChooser()
        return chooser
