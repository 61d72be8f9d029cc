"""Read `.npy` files without running what they contain.

`np.load(allow_pickle=True)` unpickles object arrays, and a pickle can call any function: a hostile
ground-truth file would run a shell command. Real files in the field (VPR-Bench's
`ground_truth_new.npy`) are object arrays of numbers and integer arrays, so `load_npy` unpickles
object arrays with an unpickler that can build only numpy arrays, dtypes and scalars (plus the
lists, tuples and numbers pickle needs no lookup for) and refuses every other global. Plain arrays
are read with `allow_pickle=False` after their declared size is checked against the file size.
"""

from __future__ import annotations

import io
import os
import pickle
from pathlib import Path

import numpy as np

# The only globals a pickled numpy object array needs: array reconstruction, dtypes and scalars.
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"), ("numpy", "dtype"),
}


class UnsafeNpyError(ValueError):
    """A `.npy` file that is damaged, too large, or would run code when loaded."""


class _NumpyOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) not in _ALLOWED_GLOBALS:
            raise UnsafeNpyError(f"refusing to load {module}.{name} (only numpy arrays and numbers are allowed)")
        return super().find_class(module, name)


def _read_header(f, path: Path) -> tuple[tuple[int, ...], bool, np.dtype]:
    try:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            return np.lib.format.read_array_header_1_0(f)
        if version == (2, 0):
            return np.lib.format.read_array_header_2_0(f)
    except (ValueError, OSError, SyntaxError, TypeError) as exc:
        raise UnsafeNpyError(f"{path}: not a readable .npy file ({exc})") from None
    raise UnsafeNpyError(f"{path}: .npy format version {version} is not supported (1.0 or 2.0)")


def load_npy(path: str | os.PathLike) -> np.ndarray:
    """The array in `path`; object arrays may hold only numpy arrays and numbers. One-line errors name the file."""
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as f:
        shape, fortran_order, dtype = _read_header(f, path)
        if dtype.hasobject:
            try:
                array = _NumpyOnlyUnpickler(io.BytesIO(f.read())).load()
            except UnsafeNpyError as exc:
                raise UnsafeNpyError(f"{path}: {exc}") from None
            except Exception as exc:  # a damaged pickle raises many types
                raise UnsafeNpyError(f"{path}: damaged object array ({type(exc).__name__}: {exc})") from None
            if not isinstance(array, np.ndarray) or array.shape != tuple(shape):
                raise UnsafeNpyError(f"{path}: the stored object is not the {tuple(shape)} array its header declares")
            return array
        declared = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        if declared > size - f.tell():
            raise UnsafeNpyError(f"{path}: the header declares {declared} bytes of data but the file holds "
                                 f"{size - f.tell()}")
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise UnsafeNpyError(f"{path}: not a readable .npy file ({exc})") from None
