"""Ground-truth .npy files are read without running anything they contain."""

from __future__ import annotations

import os

import numpy as np
import pytest

from hierloc.datasets.ground_truth import read_ground_truth_file
from hierloc.utils.safe_npy import UnsafeNpyError, load_npy


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("touch PWNED_BY_NPY",))


def test_vprbench_object_array_loads(tmp_path):
    rows = np.empty((2, 2), dtype=object)
    rows[0] = [0, np.array([1, 2])]
    rows[1] = [1, [0]]
    np.save(tmp_path / "gt.npy", rows)
    loaded = load_npy(tmp_path / "gt.npy")
    assert loaded.shape == (2, 2) and list(loaded[0][1]) == [1, 2] and loaded[1][1] == [0]
    np.save(tmp_path / "plain.npy", np.arange(6).reshape(2, 3))
    assert load_npy(tmp_path / "plain.npy").tolist() == [[0, 1, 2], [3, 4, 5]]


def test_a_pickle_that_runs_code_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rows = np.empty(1, dtype=object)
    rows[0] = _RunsCode()
    with open(tmp_path / "evil.npy", "wb") as f:
        np.lib.format.write_array(f, rows, allow_pickle=True)
    with pytest.raises(UnsafeNpyError, match="evil.npy.*refusing to load .*system"):
        load_npy(tmp_path / "evil.npy")
    with pytest.raises(ValueError, match="evil.npy"):
        read_ground_truth_file(tmp_path / "evil.npy", ["q0"], ["r0"])
    assert not (tmp_path / "PWNED_BY_NPY").exists()


def test_damaged_and_oversized_files_are_one_line_errors(tmp_path):
    np.save(tmp_path / "big.npy", np.zeros(1000))
    data = (tmp_path / "big.npy").read_bytes()
    (tmp_path / "truncated.npy").write_bytes(data[:200])
    with pytest.raises(UnsafeNpyError, match="truncated.npy: the header declares 8000 bytes"):
        load_npy(tmp_path / "truncated.npy")
    (tmp_path / "junk.npy").write_bytes(b"not numpy at all")
    with pytest.raises(UnsafeNpyError, match="junk.npy: not a readable .npy"):
        load_npy(tmp_path / "junk.npy")
    rows = np.empty(1, dtype=object)
    rows[0] = [1, 2]
    with open(tmp_path / "cut.npy", "wb") as f:
        np.lib.format.write_array(f, rows, allow_pickle=True)
    (tmp_path / "cut.npy").write_bytes((tmp_path / "cut.npy").read_bytes()[:-5])
    with pytest.raises(UnsafeNpyError, match="cut.npy: damaged object array"):
        load_npy(tmp_path / "cut.npy")
