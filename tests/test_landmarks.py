"""The Google Landmarks downloader against a local HTTP server (127.0.0.1, a thread of this test): good, missing,
slow, non-image, truncated, and hostile answers (decompression bomb, oversized and endless bodies, trickling
servers); and an index with bad lines, each rejected on its own into failures.csv."""

from __future__ import annotations

import csv
import json
import struct
import threading
import time
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import cv2
import numpy as np
import pytest

from hierloc.cli import download_landmarks as cli_module
from hierloc.cli.main import main
from hierloc.training import landmarks
from hierloc.training.landmarks import (
    PermanentFailure,
    TransientFailure,
    check_image_id,
    check_url,
    decode_image,
    download_landmarks,
    fetch,
    read_index,
)

_rng = np.random.default_rng(0)
BIG_JPEG = cv2.imencode(".jpg", _rng.integers(0, 256, (300, 400, 3), dtype=np.uint8))[1].tobytes()
PNG = cv2.imencode(".png", _rng.integers(0, 256, (20, 30, 3), dtype=np.uint8))[1].tobytes()
TINY_PNG = cv2.imencode(".png", np.zeros((2, 2, 3), np.uint8))[1].tobytes()  # trickled: ~70 bytes, 14 s at 5 B/s


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def bomb_png(width: int = 30000, height: int = 30000) -> bytes:
    """A complete, valid-looking PNG of a few dozen bytes declaring width x height RGB pixels (2.7 GB decoded)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", zlib.compress(b"\x00" * 64))
            + _png_chunk(b"IEND", b""))


BOMB_PNG = bomb_png()


class Handler(BaseHTTPRequestHandler):
    flaky_calls = 0
    requests = 0

    def log_message(self, *args) -> None:  # keep the test output quiet
        pass

    def _send(self, body: bytes, content_type: str = "image/jpeg", length: int | None = None) -> None:
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body) if length is None else length))
        self.end_headers()
        self.wfile.write(body)

    def _trickle(self, data: bytes) -> None:
        """One byte every 0.2 s until done or the client hangs up."""
        try:
            for i in range(len(data)):
                self.wfile.write(data[i:i + 1])
                self.wfile.flush()
                time.sleep(0.2)
        except OSError:
            pass
        self.close_connection = True

    def _stream(self, head: bytes, total: int) -> None:
        """`head`, then zeros up to `total` bytes, without Content-Length, until the client hangs up."""
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.end_headers()
        try:
            self.wfile.write(head)
            for _ in range((total - len(head)) // 65536):
                self.wfile.write(bytes(65536))
        except OSError:
            pass
        self.close_connection = True

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        Handler.requests += 1
        if self.path == "/good.jpg":
            self._send(BIG_JPEG)
        elif self.path == "/good.png":
            self._send(PNG, "image/png")
        elif self.path == "/missing.jpg":
            self.send_error(404)
        elif self.path == "/slow.jpg":
            time.sleep(1.5)
            self._send(BIG_JPEG)
        elif self.path == "/page.html":
            self._send(b"<html><body>not an image</body></html>", "text/html")
        elif self.path == "/truncated.jpg":
            # announces the whole file, sends half of it, then closes the connection
            self._send(BIG_JPEG[: len(BIG_JPEG) // 2], length=len(BIG_JPEG))
            self.close_connection = True
        elif self.path == "/cut.jpg":
            # no Content-Length to compare with: the JPEG end marker is missing
            self.send_response(200)
            self.send_header("Content-Type", "image/jpeg")
            self.end_headers()
            self.wfile.write(BIG_JPEG[: len(BIG_JPEG) * 2 // 3])
            self.close_connection = True
        elif self.path == "/flaky.jpg":
            Handler.flaky_calls += 1
            if Handler.flaky_calls == 1:
                self.send_error(503)
            else:
                self._send(BIG_JPEG)
        elif self.path == "/bomb.png":  # a small, complete file declaring 30000x30000 pixels
            self._send(BOMB_PNG, "image/png")
        elif self.path == "/bomb-stream.png":  # the bomb's header, then megabytes: refused once the header is in
            self._stream(BOMB_PNG[:33], 8_000_000)
        elif self.path == "/declared-huge.jpg":  # Content-Length of 300 MB, a few bytes sent
            self._send(BIG_JPEG[:100], length=300_000_000)
            self.close_connection = True
        elif self.path == "/endless.png":  # a valid header of a small image, then megabytes without Content-Length
            self._stream(PNG[:64], 8_000_000)
        elif self.path == "/trickle.png":  # headers at once, then the body a byte every 0.2 s
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(len(TINY_PNG)))
            self.end_headers()
            self.wfile.flush()
            self._trickle(TINY_PNG)
        elif self.path == "/trickle-headers.png":  # the status line and headers themselves trickle
            head = f"HTTP/1.0 200 OK\r\nContent-Length: {len(TINY_PNG)}\r\nX-Padding: {'x' * 80}\r\n\r\n"
            self._trickle(head.encode() + TINY_PNG)
        elif self.path == "/redirect.png":
            self.send_response(302)
            self.send_header("Location", "/good.png")
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif self.path == "/redirect-ftp.png":
            self.send_response(302)
            self.send_header("Location", "ftp://127.0.0.1/x.png")
            self.send_header("Content-Length", "0")
            self.end_headers()
        else:
            self.send_error(404)


class QuietServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 64  # the default 5 drops connections when 8 workers connect at once (a 1 s SYN retry)

    def handle_error(self, request, client_address) -> None:
        pass  # clients that time out close the connection: expected here


@pytest.fixture(scope="module")
def server():
    httpd = QuietServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=5)


def write_index(path, base):
    rows = [("good", "good.jpg"), ("goodpng", "good.png"), ("missing", "missing.jpg"), ("slow", "slow.jpg"),
            ("page", "page.html"), ("truncated", "truncated.jpg"), ("cut", "cut.jpg"), ("flaky", "flaky.jpg")]
    lines = ["id,url,landmark_id"] + [f"{i},{base}/{u},{n}" for n, (i, u) in enumerate(rows)]
    lines.append("badurl,ftp://example.invalid/x.jpg,9")
    path.write_text("\n".join(lines) + "\n")


def read_failure_rows(out) -> list[list[str]]:
    with open(out / "failures.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["id", "url", "reason"]
    return rows[1:]


def read_failures(out) -> dict[str, str]:
    """id -> reason of failures.csv (rows without an id left out)."""
    return {row[0]: row[2] for row in read_failure_rows(out) if row[0]}


def test_downloader_keeps_good_images_and_logs_every_failure(server, tmp_path):
    index = tmp_path / "index.csv"
    write_index(index, server)
    out = tmp_path / "images"
    summary = download_landmarks(index, out, workers=4, max_size=200, timeout=0.5, retries=2, backoff=0.01,
                                 progress=False)
    assert sorted(p.name for p in out.glob("*.jpg")) == ["flaky.jpg", "good.jpg", "goodpng.jpg"]
    good = cv2.imread(str(out / "good.jpg"))
    assert max(good.shape[:2]) == 200 and good.shape[:2] == (150, 200)  # resized on save, aspect kept
    assert (summary.total, summary.downloaded, summary.failed) == (9, 3, 6)
    assert summary.failures_by_reason == {"http 404": 1, "timeout": 1, "not an image": 1, "truncated": 2,
                                          "bad url": 1}
    failures = (out / "failures.csv").read_text().splitlines()
    assert failures[0] == "id,url,reason" and len(failures) == 7
    assert json.loads((out / "summary.json").read_text())["downloaded"] == 3
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no partial files


def test_hostile_servers_are_cut_off_and_bad_lines_rejected_one_by_one(server, tmp_path):
    index = tmp_path / "index.csv"
    lines = [
        "id,url,landmark_id",
        f"good,{server}/good.jpg,1",
        f"bomb,{server}/bomb.png,2",
        f"bombstream,{server}/bomb-stream.png,3",
        f"declaredhuge,{server}/declared-huge.jpg,4",
        f"endless,{server}/endless.png,5",
        f"trickle,{server}/trickle.png,6",
        f"tricklehead,{server}/trickle-headers.png,7",
        f"redirect,{server}/redirect.png,8",
        f"redirectftp,{server}/redirect-ftp.png,9",
        f"{'a' * 300},{server}/good.png,10",  # id too long for a file name
        f"nul\x00id,{server}/good.png,11",
        f"../escape,{server}/good.png,12",
        "script,javascript:alert(1),13",
        f"long,{server}/{'x' * 3000}.jpg,14",
        f'quote,"{server}/good.png,15',  # unbalanced quote
        "onlyid",
        f"good,{server}/good.png,16",  # duplicate id
        f"huge,{server}/good.png,{'9' * 200_000}",  # a field over csv's 128 KiB limit
    ]
    data = ("\n".join(lines) + "\n").encode() + b"latin,\xe9\xe9,17\n" + f"last,{server}/good.png,18\n".encode()
    index.write_bytes(data)
    out = tmp_path / "images"
    summary = download_landmarks(index, out, workers=8, timeout=1.0, retries=1, backoff=0.01, progress=False,
                                 max_bytes=1_000_000, max_pixels=10_000_000)
    failures = read_failures(out)
    assert sorted(p.name for p in out.glob("*.jpg")) == ["good.jpg", "last.jpg", "redirect.jpg"], failures
    reasons = {key: reason.split(":")[0] for key, reason in failures.items() if key}
    assert reasons == {
        "bomb": "too many pixels", "bombstream": "too many pixels",  # the stream was cut at its header
        "declaredhuge": "too large", "endless": "too large",
        "trickle": "timeout", "tricklehead": "timeout",  # a per-read timeout would have let both finish
        "redirectftp": "bad redirect",
        "a" * 200 + "...": "bad id", "nul\\x00id": "bad id", "../escape": "bad id",
        "script": "bad url", "long": "bad url", "onlyid": "bad line", "good": "duplicate id",
    }
    assert "Content-Length 300000000" in failures["declaredhuge"]
    assert "30000x30000" in failures["bomb"]
    assert "(line 11)" in failures["a" * 200 + "..."]
    unnamed = [reason for key, _, reason in read_failure_rows(out) if not key]  # lines whose fields did not parse
    assert len(unnamed) == 3
    assert any("malformed CSV" in r and "(line 16)" in r for r in unnamed)
    assert any(f"longer than {landmarks.MAX_LINE_BYTES} bytes" in r and "(line 19)" in r for r in unnamed)
    assert any("not UTF-8" in r and "(line 20)" in r for r in unnamed)
    assert (summary.total, summary.downloaded, summary.failed) == (20, 3, 17)
    assert json.loads((out / "summary.json").read_text())["failed"] == 17
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


def test_read_index_rejects_lines_not_the_file(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("name,link\nx,y\n")
    with pytest.raises(ValueError, match="bad.csv: the header"):
        read_index(bad)
    bad.write_text("")
    with pytest.raises(ValueError, match="bad.csv: empty index file"):
        read_index(bad)
    bad.write_bytes(b"id,url\n" + b"a" * 20_000 + b"," + b"b" * 200_000 + b"\nok,http://h/x.jpg\n")
    index = read_index(bad)
    assert index.rows == [("ok", "http://h/x.jpg")] and "line 2" in index.rejected[0][2]
    bad.write_bytes(b"\xef\xbb\xbfURL,Id\r\nhttps://h/a.jpg,a\r\n\r\nhttp://h/b.jpg,b\r\n")  # BOM, CRLF, blank line
    assert read_index(bad).rows == [("a", "https://h/a.jpg"), ("b", "http://h/b.jpg")]
    bad.write_text("id,url\n" + "".join(f"i{n},http://h/{n}.jpg\n" for n in range(10)))
    assert len(read_index(bad, limit=4).rows) == 4


@pytest.mark.parametrize("image_id, ok", [("0123abcdef", True), ("a.b_c-d", True), ("-x", False), ("_x", True),
                                          ("", False), (".hidden", False), ("a/b", False), ("a\\b", False),
                                          ("..", False), ("x" * 128, True), ("x" * 129, False), ("caf\u00e9", False),
                                          ("a b", False), ("a\x00", False)])
def test_image_ids_are_plain_file_names(image_id, ok):
    assert (check_image_id(image_id) is None) == ok


@pytest.mark.parametrize("url, ok", [("http://h/x.jpg", True), ("HTTPS://h.org:8443/x?y=1", True),
                                     ("http://[::1]:8/x", True), ("ftp://h/x", False), ("file:///etc/passwd", False),
                                     ("http:///x", False), ("http://h:99999/x", False), ("http://h/a b", False),
                                     ("http://h\u00e9.org/x", False), (f"http://{'a' * 64}.org/", False),
                                     ("http://h/" + "x" * 2048, False), ("http://h/\x00", False)])
def test_urls_are_http_of_bounded_length(url, ok):
    assert (check_url(url) is None) == ok


def test_decode_checks_the_declared_size_first(monkeypatch):
    def no_decoding(*args, **kwargs):
        raise AssertionError("a bomb must be refused before decoding")

    monkeypatch.setattr(landmarks.cv2, "imdecode", no_decoding)
    with pytest.raises(PermanentFailure, match="too many pixels"):
        decode_image(BOMB_PNG, max_pixels=50_000_000)
    with pytest.raises(PermanentFailure, match="unsupported format"):
        decode_image(b"GIF89a" + bytes(100))
    with pytest.raises(TransientFailure, match="truncated"):
        decode_image(BIG_JPEG[:1000])


def test_fetch_limits(server):
    assert fetch(f"{server}/good.png", timeout=2) == PNG
    assert fetch(f"{server}/redirect.png", timeout=2) == PNG
    with pytest.raises(PermanentFailure, match=r"too large: Content-Length \d+ over 1000 bytes"):
        fetch(f"{server}/good.jpg", timeout=2, max_bytes=1000)
    with pytest.raises(PermanentFailure, match="too large: body over 100000 bytes"):
        fetch(f"{server}/endless.png", timeout=2, max_bytes=100_000)
    with pytest.raises(PermanentFailure, match="too many pixels"):
        fetch(f"{server}/good.png", timeout=2, max_pixels=599)  # 30x20 declared
    with pytest.raises(TransientFailure, match="timeout"):
        fetch(f"{server}/trickle.png", timeout=0.5)


def test_rerun_skips_what_exists(server, tmp_path):
    index = tmp_path / "index.csv"
    index.write_text(f"id,url,landmark_id\ngood,{server}/good.jpg,1\nother,{server}/good.png,2\n")
    out = tmp_path / "images"
    out.mkdir()
    (out / "good.jpg").write_bytes(BIG_JPEG)
    leftover = out / ".other.jpg.hierloc-tmp-999999999-abc.jpg"  # what a killed run left (no such process)
    leftover.write_bytes(b"partial")
    summary = download_landmarks(index, out, workers=2, timeout=2, retries=0, progress=False)
    assert (summary.skipped_existing, summary.downloaded, summary.failed) == (1, 1, 0)
    assert (out / "good.jpg").read_bytes() == BIG_JPEG  # untouched
    assert not leftover.exists()


def test_dry_run_touches_no_network(server, tmp_path):
    index = tmp_path / "index.csv"
    index.write_text(f"id,url,landmark_id\ngood,{server}/good.jpg,1\nbad id,{server}/good.png,2\n")
    before = Handler.requests
    summary = download_landmarks(index, tmp_path / "out", dry_run=True, progress=False)
    assert Handler.requests == before
    assert (summary.would_download, summary.downloaded, summary.failed, summary.total) == (1, 0, 1, 2)
    assert read_failures(tmp_path / "out")["bad id"].startswith("bad id:")


def test_cli_prints_the_summary(server, tmp_path, capsys):
    index = tmp_path / "index.csv"
    index.write_text(f"id,url,landmark_id\ngood,{server}/good.jpg,1\nmissing,{server}/missing.jpg,2\n")
    assert main(["download-landmarks", str(index), str(tmp_path / "out"), "--workers", "2", "--retries", "0",
                 "--max-bytes", "1000000", "--max-pixels", "1000000", "--timeout", "2"]) == 0
    printed = capsys.readouterr().out
    assert "1 downloaded, 0 already present, 1 failed (http 404: 1) of 2" in printed
    assert main(["download-landmarks", str(index), str(tmp_path / "dry"), "--dry-run"]) == 0
    assert "dry run: 2 to download, 0 already present, 0 rejected (none) of 2" in capsys.readouterr().out


def test_cli_defaults_match_the_library():
    assert cli_module.DEFAULT_MAX_BYTES == landmarks.DEFAULT_MAX_BYTES
    assert cli_module.DEFAULT_MAX_PIXELS == landmarks.DEFAULT_MAX_PIXELS
