"""hierloc.utils.io: written files get the mode open() gives; JSON is strict (no Infinity/NaN)."""

from __future__ import annotations

import json
import math
import os
import stat

import numpy as np
import pytest

from hierloc.utils.io import atomic_path, atomic_write_text, current_umask, default_file_mode, json_safe, to_json_text


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_current_umask_reads_without_changing(umask_022):
    assert current_umask() == 0o022
    assert current_umask() == 0o022


def test_written_file_follows_umask(tmp_path, umask_022):
    atomic_write_text(tmp_path / "a" / "out.txt", "x")
    assert _mode(tmp_path / "a" / "out.txt") == 0o644
    assert _mode(tmp_path / "a") == 0o755  # folders made on the way follow the umask too


def test_written_file_follows_a_stricter_umask(tmp_path):
    old = os.umask(0o077)
    try:
        atomic_write_text(tmp_path / "private.txt", "x")
    finally:
        os.umask(old)
    assert _mode(tmp_path / "private.txt") == 0o600


def test_writers_through_atomic_path_follow_umask(tmp_path, umask_022):
    """np.save / h5py / cv2 write into the temporary path; the renamed result is 0644, not mkstemp's 0600."""
    with atomic_path(tmp_path / "d.npy", suffix=".npy") as tmp:
        np.save(tmp, np.zeros(3))
    assert _mode(tmp_path / "d.npy") == 0o644


def test_rewriting_keeps_an_existing_files_mode(tmp_path, umask_022):
    path = tmp_path / "shared.txt"
    path.write_text("old")
    os.chmod(path, 0o664)
    atomic_write_text(path, "new")
    assert _mode(path) == 0o664 and path.read_text() == "new"
    assert default_file_mode(tmp_path / "missing") == 0o644


def test_to_json_text_writes_null_for_non_finite():
    data = {"a": math.inf, "b": [float("nan"), 1.5, -math.inf], "c": (np.float32(np.nan), np.float64(2.0)),
            "d": np.int64(3), "e": np.array([1.0, np.inf]), np.int32(4): {"nested": np.float16(np.inf)}}
    text = to_json_text(data, indent=1)
    assert "Infinity" not in text and "NaN" not in text
    assert json.loads(text) == {"a": None, "b": [None, 1.5, None], "c": [None, 2.0], "d": 3, "e": [1.0, None],
                                "4": {"nested": None}}


def test_to_json_text_cleans_what_default_returns():
    class Odd:
        pass

    assert json.loads(to_json_text({"x": Odd()}, default=lambda o: math.inf)) == {"x": None}
    assert to_json_text({"b": 1, "a": 2}, sort_keys=True) == json.dumps({"b": 1, "a": 2}, sort_keys=True)
    assert json_safe((1, 2.5)) == [1, 2.5]


def test_results_json_of_localization_is_strict(tmp_path):
    from hierloc.localization.results import write_results_json

    write_results_json(tmp_path / "results.json", [], {"evaluation": {"errors": {"q": {"translation_m": math.inf}}}})
    text = (tmp_path / "results.json").read_text()
    assert "Infinity" not in text
    assert json.loads(text)["evaluation"]["errors"]["q"]["translation_m"] is None
