"""argparse `type=` functions for counts and sizes, so that a bad value stops the command while its arguments are
parsed (exit status 2, argparse's one-line message) and never after a map or a network has been loaded."""

from __future__ import annotations

import argparse
import math
from typing import Callable, TypeVar

Number = TypeVar("Number", int, float)


def _parse_int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid integer: {text!r}") from None


def _parse_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid number: {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


def _bounded(parse: Callable[[str], Number], accept: Callable[[Number], bool], requirement: str, name: str,
             doc: str) -> Callable[[str], Number]:
    """An argparse type: `parse`, then refuse values `accept` rejects with 'must be <requirement>, got <text>'."""
    def check(text: str) -> Number:
        value = parse(text)
        if not accept(value):
            raise argparse.ArgumentTypeError(f"must be {requirement}, got {text.strip()}")
        return value

    check.__name__, check.__doc__ = name, doc
    return check


positive_int = _bounded(_parse_int, lambda v: v >= 1, "a positive integer (1 or more)", "positive_int",
                        "An integer >= 1 (a count or size for which 0 means nothing sensible).")
non_negative_int = _bounded(_parse_int, lambda v: v >= 0, "0 or a positive integer", "non_negative_int",
                            "An integer >= 0 (for options whose help says what 0 means, e.g. 'none' or 'all').")
positive_float = _bounded(_parse_float, lambda v: v > 0, "a positive number (more than 0)", "positive_float",
                          "A finite number > 0 (a threshold, a distance, a time).")
non_negative_float = _bounded(_parse_float, lambda v: v >= 0, "0 or a positive number", "non_negative_float",
                              "A finite number >= 0.")
field_of_view = _bounded(_parse_float, lambda v: 0 < v < 180, "a field of view in degrees between 0 and 180",
                         "field_of_view", "A horizontal field of view in degrees, strictly between 0 and 180.")
port_number = _bounded(_parse_int, lambda v: 0 <= v <= 65535, "a TCP port from 0 to 65535", "port_number",
                      "A TCP port, 0 to 65535 (0: a free one chosen by the system).")
