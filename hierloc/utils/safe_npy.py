"""Read `.npy` files without running what they contain.

numpy's loader, when told to allow pickles, unpickles object arrays, and a pickle can call any function: a hostile
ground-truth file would run a shell command. Real files in the field (VPR-Bench's
`ground_truth_new.npy`) are object arrays of numbers and integer arrays, so `load_npy` unpickles
object arrays with an unpickler that knows only numpy arrays, dtypes and scalars (plus the lists,
tuples and numbers pickle needs no lookup for) and refuses every other global. Even numpy's own
reconstruction functions are not called: given damaged state (flags, sizes), `ndarray.__setstate__`
and `dtype.__setstate__` can crash the interpreter. Stand-ins take their place and build each array
from checked parts with plain numpy calls: simple dtypes only (bool, integers, floats, objects),
element counts equal to the data present. Plain arrays are read with `allow_pickle=False` after their
declared size is checked against the file size.
"""

from __future__ import annotations

import gc
import io
import math
import os
import pickle
import pickletools
import re
import sys
from pathlib import Path
from typing import Any

import numpy as np

# Largest element count of one unpickled array (the data must be present in the file anyway).
_MAX_ELEMENTS = 2**31
_SIMPLE_DTYPE = re.compile(r"[biuf]\d{1,2}|O\d?")


class UnsafeNpyError(ValueError):
    """A `.npy` file that is damaged, too large, or would run code when loaded."""


class _DtypeStandIn:
    """Stands for `numpy.dtype(spec, align, copy)` plus its pickled state; only the byte order is used."""

    def __init__(self, spec: Any = None, align: Any = False, copy: Any = False) -> None:
        if not isinstance(spec, str) or not _SIMPLE_DTYPE.fullmatch(spec):
            raise UnsafeNpyError(f"refusing the dtype {spec!r} (only booleans, integers, floats and objects)")
        self.spec = spec
        self.byteorder = "="

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, tuple) or len(state) < 2 or state[1] not in ("<", ">", "|", "="):
            raise UnsafeNpyError("damaged dtype state")
        if len(state) >= 5 and any(part is not None for part in state[2:5]):
            raise UnsafeNpyError("refusing a dtype with sub-arrays or fields")
        self.byteorder = state[1]

    def build(self) -> np.dtype:
        dtype = np.dtype(self.spec)
        return dtype.newbyteorder(self.byteorder) if self.byteorder in "<>" else dtype


class _ArrayStandIn:
    """Stands for `_reconstruct(ndarray, ...)`; `__setstate__` builds the array from checked parts."""

    def __init__(self) -> None:
        self.array: np.ndarray | None = None

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, tuple) or len(state) not in (4, 5):
            raise UnsafeNpyError("damaged array state")
        shape, dtype, fortran, data = state[-4:]
        if not isinstance(shape, tuple) or not all(isinstance(v, int) and 0 <= v <= _MAX_ELEMENTS for v in shape):
            raise UnsafeNpyError(f"damaged array shape {shape!r}")
        count = math.prod(shape)
        if count > _MAX_ELEMENTS or not isinstance(dtype, _DtypeStandIn):
            raise UnsafeNpyError("damaged array state")
        dtype = dtype.build()
        order = "F" if fortran is True else "C"
        if dtype.hasobject:
            if not isinstance(data, list) or len(data) != count:
                raise UnsafeNpyError(f"an object array of {count} elements holds {type(data).__name__} data")
            flat = np.empty(count, dtype=object)
            for i, item in enumerate(data):  # one by one: assigning a list would broadcast nested sequences
                flat[i] = _materialized(item)
        else:
            if not isinstance(data, bytes) or len(data) != count * dtype.itemsize:
                raise UnsafeNpyError(f"an array of {count} {dtype} elements holds a data of the wrong size")
            flat = np.frombuffer(data, dtype=dtype).copy()
        self.array = flat.reshape(shape, order=order)


def _reconstruct(cls: Any, shape: Any = None, typecode: Any = None) -> _ArrayStandIn:
    if cls is not np.ndarray:
        raise UnsafeNpyError("refusing to reconstruct anything but a numpy array")
    return _ArrayStandIn()


def _scalar(dtype: Any, data: Any = None) -> Any:
    if not isinstance(dtype, _DtypeStandIn):
        raise UnsafeNpyError("damaged scalar")
    built = dtype.build()
    if built.hasobject or not isinstance(data, bytes) or len(data) != built.itemsize:
        raise UnsafeNpyError("damaged scalar")
    return np.frombuffer(data, dtype=built)[0]


def _materialized(value: Any) -> Any:
    """`value` with every stand-in replaced by what it stands for (lists and tuples looked into)."""
    if isinstance(value, _ArrayStandIn):
        if value.array is None:
            raise UnsafeNpyError("an array without its data")
        return value.array
    if isinstance(value, _DtypeStandIn):
        return value.build()
    if isinstance(value, list):
        return [_materialized(item) for item in value]
    if isinstance(value, tuple):
        return tuple(_materialized(item) for item in value)
    return value


# The only globals a pickled numpy object array needs, each mapped to its checked stand-in.
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct, ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy.core.multiarray", "scalar"): _scalar, ("numpy._core.multiarray", "scalar"): _scalar,
    ("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): _DtypeStandIn,
}


# Opcodes no numpy pickle uses; BYTEARRAY8 makes the C unpickler allocate the declared size up front.
_REFUSED_OPCODES = {"BYTEARRAY8", "NEXT_BUFFER", "READONLY_BUFFER", "PERSID", "BINPERSID", "EXT1", "EXT2", "EXT4"}


def _scan_opcodes(data: bytes) -> str | None:
    """Why the pickle must not be run (an opcode refused, or an argument longer than the data), or None.

    pickletools reads each argument from the data present, so a declared length is checked before
    the unpickler could allocate it.
    """
    try:
        for opcode, _, position in pickletools.genops(data):
            if opcode.name in _REFUSED_OPCODES:
                return f"refusing the pickle opcode {opcode.name} at byte {position}"
    except Exception as exc:  # pickletools raises ValueError and others for damaged data
        return f"damaged object array ({type(exc).__name__}: {exc})"
    return None


class _NumpyOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) not in _ALLOWED_GLOBALS:
            raise UnsafeNpyError(f"refusing to load {module}.{name} (only numpy arrays and numbers are allowed)")
        return _ALLOWED_GLOBALS[(module, name)]


def _read_header(f, path: Path) -> tuple[tuple[int, ...], bool, np.dtype]:
    try:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            return np.lib.format.read_array_header_1_0(f)
        if version == (2, 0):
            return np.lib.format.read_array_header_2_0(f)
    except Exception as exc:  # numpy's header parser raises many types (TokenError, SyntaxError...)
        raise UnsafeNpyError(f"{path}: not a readable .npy file ({type(exc).__name__}: {exc})") from None
    raise UnsafeNpyError(f"{path}: .npy format version {version} is not supported (1.0 or 2.0)")


def _ignore_unraisable(_: object) -> None:
    pass


def _unpickle_numpy_only(data: bytes) -> tuple[object, str | None]:
    """(object, None), or (None, why) for a refused or damaged pickle.

    numpy reports errors while freeing the half-built arrays of a damaged pickle as "unraisable"
    exceptions, printed as a traceback when they are freed; they are freed here, with that report
    silenced, so that a damaged file gives one error line only.
    """
    problem = _scan_opcodes(data)
    if problem is not None:
        return None, problem
    previous_hook = sys.unraisablehook
    sys.unraisablehook = _ignore_unraisable
    try:
        unpickler = _NumpyOnlyUnpickler(io.BytesIO(data))
        try:
            return _materialized(unpickler.load()), None
        except UnsafeNpyError as exc:
            problem = str(exc)
        except Exception as exc:  # a damaged pickle raises many types
            problem = f"damaged object array ({type(exc).__name__}: {exc})"
        del unpickler
        gc.collect()
        return None, problem
    finally:
        sys.unraisablehook = previous_hook


def load_npy(path: str | os.PathLike) -> np.ndarray:
    """The array in `path`; object arrays may hold only numpy arrays and numbers. One-line errors name the file."""
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as f:
        shape, fortran_order, dtype = _read_header(f, path)
        if dtype.hasobject:
            array, problem = _unpickle_numpy_only(f.read())
            if problem is not None:
                raise UnsafeNpyError(f"{path}: {problem}")
            if not isinstance(array, np.ndarray) or array.shape != tuple(shape):
                raise UnsafeNpyError(f"{path}: the stored object is not the {tuple(shape)} array its header declares")
            return array
        declared = math.prod(shape) * dtype.itemsize  # Python integers: no int64 wrap-around
        if declared > size - f.tell():
            raise UnsafeNpyError(f"{path}: the header declares {declared} bytes of data but the file holds "
                                 f"{size - f.tell()}")
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise UnsafeNpyError(f"{path}: not a readable .npy file ({exc})") from None
