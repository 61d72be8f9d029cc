"""Byte-level mutators (any file) and helpers for structure-aware ones, all driven by a seeded random.Random.

Every mutator takes the bytes of one valid file and a generator and returns the damaged bytes; the same
generator state gives the same bytes, so a case replays from its seed. The canary mutators replace the file
by a pickle (raw, or inside an object-dtype .npy) whose unpickling runs a shell command that creates the file
named by $HIERLOC_FUZZ_CANARY: if that file exists after a case, the reader executed code from its input.
"""

from __future__ import annotations

import io
import math
import pickle
import random
import struct
from typing import Callable

import numpy as np

from .target import Mutator

CANARY_ENV = "HIERLOC_FUZZ_CANARY"

# Values that break readers: counts and sizes at the edges of their types, negative values, non-finite floats.
_HUGE_INTS_4 = (0xFFFFFFFF, 0x7FFFFFFF, 0x80000000, 0x40000000, 0xFFFFFFFE, 0, 1)
_HUGE_INTS_8 = ((1 << 64) - 1, (1 << 63) - 1, 1 << 63, 1 << 40, 1 << 32, 0, 1)
HOSTILE_FLOATS = (math.nan, math.inf, -math.inf, 1e308, -1e308, 5e-324, 0.0, -0.0, 1e30)


def bit_flips(data: bytes, rng: random.Random) -> bytes:
    """Flip 1 to 8 random bits."""
    if not data:
        return b"\x00"
    buffer = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        position = rng.randrange(len(buffer) * 8)
        buffer[position // 8] ^= 1 << (position % 8)
    return bytes(buffer)


def truncate(data: bytes, rng: random.Random) -> bytes:
    """Cut the file at a random point (possibly at 0: an empty file)."""
    return data[:rng.randint(0, max(0, len(data) - 1))]


def empty(data: bytes, rng: random.Random) -> bytes:
    """An empty file."""
    return b""


def insert_run(data: bytes, rng: random.Random) -> bytes:
    """Insert 1 to 4096 random or repeated bytes at a random point."""
    length = rng.choice((1, 2, 3, 4, 7, 8, 16, 100, 4096))
    run = rng.randbytes(length) if rng.random() < 0.5 else bytes([rng.randrange(256)]) * length
    position = rng.randint(0, len(data))
    return data[:position] + run + data[position:]


def delete_run(data: bytes, rng: random.Random) -> bytes:
    """Delete 1 to 64 bytes (or a quarter of the file) at a random point."""
    if not data:
        return data
    length = min(len(data), rng.choice((1, 2, 4, 8, 16, 64, max(1, len(data) // 4))))
    position = rng.randint(0, len(data) - length)
    return data[:position] + data[position + length:]


def zero_fill(data: bytes, rng: random.Random) -> bytes:
    """Overwrite a run of 1 to 256 bytes with zeros."""
    if not data:
        return data
    length = min(len(data), rng.choice((1, 4, 8, 16, 64, 256)))
    position = rng.randint(0, len(data) - length)
    return data[:position] + bytes(length) + data[position + length:]


def overwrite_field(data: bytes, rng: random.Random) -> bytes:
    """Overwrite a 4- or 8-byte field (often aligned) with a huge, negative, or non-finite value."""
    width = rng.choice((4, 8))
    if len(data) < width:
        return data + b"\xff" * width
    position = rng.randrange(0, len(data) - width + 1)
    if rng.random() < 0.5:
        position -= position % width
    endian = rng.choice("<>")
    kind = rng.random()
    if kind < 0.4:
        field_bytes = struct.pack(endian + ("I" if width == 4 else "Q"),
                                  rng.choice(_HUGE_INTS_4 if width == 4 else _HUGE_INTS_8))
    elif kind < 0.6:
        field_bytes = struct.pack(endian + ("i" if width == 4 else "q"), -rng.choice((1, 2, 1 << 20, 1 << 30)))
    else:
        value = rng.choice(HOSTILE_FLOATS)
        if width == 4 and math.isfinite(value) and abs(value) > 3e38:
            value = math.copysign(3e38, value)
        field_bytes = struct.pack(endian + ("f" if width == 4 else "d"), value)
    return data[:position] + field_bytes + data[position + width:]


class _Canary:
    """Unpickling this runs `sh -c 'touch "$HIERLOC_FUZZ_CANARY"'`."""

    def __reduce__(self):
        import os

        return (os.system, (f'touch "${CANARY_ENV}"',))


def pickle_payload(data: bytes, rng: random.Random) -> bytes:
    """Replace the file by a raw pickle whose loading runs a command (see the module)."""
    return pickle.dumps({"payload": _Canary(), "data": [1, 2, 3]}, protocol=rng.choice((2, 4)))


def npy_pickle_payload(data: bytes, rng: random.Random) -> bytes:
    """Replace the file by an object-dtype .npy holding the canary pickle (numpy's unpickling loader would run it)."""
    array = np.empty(2, dtype=object)
    array[0], array[1] = _Canary(), np.arange(3)
    buffer = io.BytesIO()
    np.save(buffer, array)  # object dtype: written as a pickle (np.save's default)
    return buffer.getvalue()


BYTE_MUTATORS: tuple[Mutator, ...] = (bit_flips, truncate, empty, insert_run, delete_run, zero_fill,
                                      overwrite_field, overwrite_field, bit_flips, truncate)
CANARY_MUTATORS: tuple[Mutator, ...] = (pickle_payload, npy_pickle_payload)


# --------------------------------------------------------------------------- helpers for structured mutators


def text_lines_mutator(edit: Callable[[list[str], random.Random], list[str]], name: str) -> Mutator:
    """A mutator editing a text file as a list of lines (decoded leniently), named `name` in reports."""

    def mutate(data: bytes, rng: random.Random) -> bytes:
        lines = data.decode("utf-8", "replace").splitlines()
        return ("\n".join(edit(lines, rng)) + "\n").encode("utf-8", "surrogatepass")

    mutate.__name__ = name
    return mutate


def data_line_indices(lines: list[str]) -> list[int]:
    """Indices of non-blank lines that are not '#' comments."""
    return [i for i, line in enumerate(lines) if line.strip() and not line.lstrip().startswith("#")]


def replace_token(line: str, rng: random.Random, values: tuple[str, ...], separators: str = " ,;\t") -> str:
    """`line` with one of its tokens (split on any of `separators`) replaced by one of `values`."""
    separator = next((s for s in separators if s in line), " ")
    tokens = line.split(separator)
    if tokens:
        tokens[rng.randrange(len(tokens))] = rng.choice(values)
    return separator.join(tokens)


def huge_field(lines: list[str], rng: random.Random) -> list[str]:
    """One field of a data line (of the first line if none) replaced by a 200 KiB one, quoted or not, or by a run of
    100,000 separators: csv's 128 KiB field limit, long-line handling, rows of many fields."""
    rows = data_line_indices(lines) or [0]
    if not lines:
        lines = [""]
    i = rng.choice(rows)
    field = rng.choice(('"' + "x" * 200_000 + '"', "1" * 200_000, "x" * 200_000, '"' + "1," * 100_000,
                        "," * 100_000))
    lines[i] = replace_token(lines[i], rng, (field,))
    return lines


HOSTILE_NUMBER_TOKENS = ("nan", "NaN", "inf", "-inf", "1e308", "-1e308", "1e999", "0", "-1", "4294967296",
                         "18446744073709551616", "99999999999999999999999", "0x10", "", "1,5", "one")


def mutator_name(mutator: Mutator) -> str:
    """The name a report gives a mutator."""
    return getattr(mutator, "__name__", type(mutator).__name__)
