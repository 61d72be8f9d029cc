"""The contract of one fuzz target: how to make a valid input, and the hierloc command that reads it."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

# A structure-aware mutator: takes the bytes of one valid file and a seeded generator, returns damaged bytes.
Mutator = Callable[[bytes, random.Random], bytes]


@dataclass(frozen=True)
class FuzzTarget:
    """One reader under fuzzing.

    make_seed(folder) writes a valid input under the empty `folder` (once per run; every case works on a
    fresh copy) and returns the files, relative to `folder`, that cases may damage. argv(folder) is the
    hierloc command line (without the program name) that reads that input from a copy of `folder`.
    structured holds mutators that know the format (field values, record counts, names); the runner adds
    byte-level mutations (flips, truncation, insertion, zero fill, empty file) to every target.
    implausible(folder, stdout), when given, inspects an accepted run (exit status 0) and returns why its
    result is implausible (for example NaN in a printed pose), or None when it is plausible.
    """

    name: str
    make_seed: Callable[[Path], list[str]]
    argv: Callable[[Path], list[str]]
    structured: tuple[Mutator, ...] = field(default=())
    implausible: Callable[[Path, str], str | None] | None = None
