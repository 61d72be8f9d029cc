"""Shared test set-up: few threads, quiet logs, no downloads, paths to the optional shared data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HIERLOC_NUM_THREADS", "2")

from hierloc.utils.threads import configure_threads  # noqa: E402

configure_threads(2)

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


@pytest.fixture(autouse=True)
def isolated_weights_cache(tmp_path_factory, monkeypatch):
    """Tests never see (or write) the user's weight cache."""
    monkeypatch.setenv("HIERLOC_WEIGHTS_DIR", str(tmp_path_factory.mktemp("weights")))


@pytest.fixture(autouse=True)
def no_weight_downloads(monkeypatch):
    """No test downloads weights: missing named weights raise WeightsNotFoundError instead of reaching a network.

    Tests that exercise downloads (against a local server) remove the variable themselves.
    """
    monkeypatch.setenv("HIERLOC_OFFLINE", "1")


def shared_path(*parts: str) -> Path:
    """A path under ../shared, or skip the test when that material is absent."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} not available")
    return path
