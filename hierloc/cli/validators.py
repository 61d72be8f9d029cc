"""argparse `type=` functions for counts and sizes, so that a bad value stops the command while its arguments are
parsed (exit status 2, argparse's one-line message) and never after a map or a network has been loaded."""

from __future__ import annotations

import argparse
import math


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


def positive_int(text: str) -> int:
    """An integer >= 1 (a count or size for which 0 means nothing sensible)."""
    value = _parse_int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer (1 or more), got {value}")
    return value


def non_negative_int(text: str) -> int:
    """An integer >= 0 (for options whose help says what 0 means, e.g. 'none' or 'all')."""
    value = _parse_int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or a positive integer, got {value}")
    return value


def positive_float(text: str) -> float:
    """A finite number > 0 (a threshold, a distance, a time)."""
    value = _parse_float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive number (more than 0), got {text}")
    return value


def non_negative_float(text: str) -> float:
    """A finite number >= 0."""
    value = _parse_float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or a positive number, got {text}")
    return value


def field_of_view(text: str) -> float:
    """A horizontal field of view in degrees, strictly between 0 and 180."""
    value = _parse_float(text)
    if not 0 < value < 180:
        raise argparse.ArgumentTypeError(f"must be a field of view in degrees between 0 and 180, got {text}")
    return value
