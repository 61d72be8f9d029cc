"""CRC-32C (Castagnoli) and the "masked" form TensorFlow and LevelDB store next to their data.

The C implementation of the `google-crc32c` package is used when it is installed (hardware
accelerated, ~GB/s). Without it a table-driven pure-Python fallback gives the same values but
checks only about 2-3 MB/s, too slow for large checkpoints (VGG16 NetVLAD: 0.6 GB); callers can
skip data checksums with `verify=False` in that case.
"""

from __future__ import annotations

_POLYNOMIAL = 0x82F63B78  # reflected Castagnoli polynomial
_MASK_DELTA = 0xA282EAD8

try:  # pragma: no cover - which branch runs depends on the environment
    import google_crc32c as _google_crc32c

    def _extend(crc: int, data: bytes | memoryview) -> int:
        return _google_crc32c.extend(crc, bytes(data) if isinstance(data, memoryview) else data)

    IMPLEMENTATION = f"google-crc32c ({_google_crc32c.implementation})"
except ImportError:  # pragma: no cover
    _google_crc32c = None
    IMPLEMENTATION = "pure Python (pip install google-crc32c for speed)"

    def _extend(crc: int, data: bytes | memoryview) -> int:
        return crc32c_python(data, crc)


def _make_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ _POLYNOMIAL if crc & 1 else crc >> 1
        table.append(crc)
    return table


_TABLE = _make_table()


def crc32c_python(data: bytes | memoryview, crc: int = 0) -> int:
    """CRC-32C of `data` continuing from `crc`, in pure Python (reference and fallback)."""
    table = _TABLE
    crc ^= 0xFFFFFFFF
    for byte in bytes(data):
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def crc32c(data: bytes | memoryview, crc: int = 0) -> int:
    """CRC-32C of `data`, continuing from a previous value `crc`."""
    return _extend(crc, data)


def mask(crc: int) -> int:
    """The masked CRC that TF and LevelDB store (so that a CRC of CRCs is not trivially zero)."""
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + _MASK_DELTA) & 0xFFFFFFFF


def unmask(masked: int) -> int:
    """Inverse of `mask`."""
    rot = (masked - _MASK_DELTA) & 0xFFFFFFFF
    return ((rot >> 17) | (rot << 15)) & 0xFFFFFFFF
