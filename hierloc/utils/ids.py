"""128-bit identifiers as 32 hex characters, as maplab/aslam ids are written (two uint64 words)."""

from __future__ import annotations

import hashlib
import operator
import re

ID_HEX_CHARS = 32
_UINT64_MAX = (1 << 64) - 1
_HEX_ID = re.compile(r"[0-9a-f]{32}")


def is_valid_id(value: object) -> bool:
    """Return True if `value` is a string of exactly 32 hexadecimal characters."""
    return isinstance(value, str) and _HEX_ID.fullmatch(value.lower()) is not None


def normalize_id(value: object) -> str:
    """Return `value` as a lowercase 32-hex-character id, or raise ValueError saying why not."""
    if not isinstance(value, str):
        raise ValueError(f"an id must be a string of {ID_HEX_CHARS} hex characters, got {type(value).__name__}")
    lowered = value.lower()
    if _HEX_ID.fullmatch(lowered) is None:
        raise ValueError(f"an id must be {ID_HEX_CHARS} hex characters, got {value!r}")
    return lowered


def id_to_pair(hex_id: str) -> tuple[int, int]:
    """Split a 32-hex-char id into its two uint64 words; the first word is the first 16 hex chars."""
    normalized = normalize_id(hex_id)
    return int(normalized[:16], 16), int(normalized[16:], 16)


def pair_to_id(first: int, second: int) -> str:
    """Join two uint64 words into a 32-hex-char id (inverse of id_to_pair)."""
    words = []
    for word in (first, second):
        try:
            value = operator.index(word)  # accepts numpy integers, refuses floats
        except TypeError:
            value = -1
        if isinstance(word, bool) or not 0 <= value <= _UINT64_MAX:
            raise ValueError(f"id words must be integers in [0, 2**64), got {word!r}")
        words.append(value)
    return f"{words[0]:016x}{words[1]:016x}"


def stable_id(text: str) -> str:
    """Derive a deterministic 128-bit id from a string (BLAKE2b, 16-byte digest)."""
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16).hexdigest()
