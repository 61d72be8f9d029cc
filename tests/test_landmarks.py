"""The Google Landmarks downloader against a local HTTP server: good, missing, slow, non-image, truncated."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import cv2
import numpy as np
import pytest

from hierloc.cli.main import main
from hierloc.training.landmarks import download_landmarks, read_index

_rng = np.random.default_rng(0)
BIG_JPEG = cv2.imencode(".jpg", _rng.integers(0, 256, (300, 400, 3), dtype=np.uint8))[1].tobytes()
PNG = cv2.imencode(".png", _rng.integers(0, 256, (20, 30, 3), dtype=np.uint8))[1].tobytes()


class Handler(BaseHTTPRequestHandler):
    flaky_calls = 0

    def log_message(self, *args) -> None:  # keep the test output quiet
        pass

    def _send(self, body: bytes, content_type: str = "image/jpeg", length: int | None = None) -> None:
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body) if length is None else length))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
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
        else:
            self.send_error(404)


class QuietServer(ThreadingHTTPServer):
    daemon_threads = True

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


def write_index(path, base):
    rows = [("good", "good.jpg"), ("goodpng", "good.png"), ("missing", "missing.jpg"), ("slow", "slow.jpg"),
            ("page", "page.html"), ("truncated", "truncated.jpg"), ("cut", "cut.jpg"), ("flaky", "flaky.jpg")]
    lines = ["id,url,landmark_id"] + [f"{i},{base}/{u},{n}" for n, (i, u) in enumerate(rows)]
    lines.append("badurl,ftp://example.invalid/x.jpg,9")
    path.write_text("\n".join(lines) + "\n")


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


def test_rerun_skips_what_exists(server, tmp_path):
    index = tmp_path / "index.csv"
    index.write_text(f"id,url,landmark_id\ngood,{server}/good.jpg,1\nother,{server}/good.png,2\n")
    out = tmp_path / "images"
    out.mkdir()
    (out / "good.jpg").write_bytes(BIG_JPEG)
    summary = download_landmarks(index, out, workers=2, timeout=2, retries=0, progress=False)
    assert (summary.skipped_existing, summary.downloaded, summary.failed) == (1, 1, 0)
    assert (out / "good.jpg").read_bytes() == BIG_JPEG  # untouched


def test_index_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("name,link\nx,y\n")
    with pytest.raises(ValueError, match="bad.csv: the header"):
        read_index(bad)
    bad.write_text("id,url\n../x,http://a/b.jpg\n")
    with pytest.raises(ValueError, match="invalid image id"):
        read_index(bad)


def test_cli_prints_the_summary(server, tmp_path, capsys):
    index = tmp_path / "index.csv"
    index.write_text(f"id,url,landmark_id\ngood,{server}/good.jpg,1\nmissing,{server}/missing.jpg,2\n")
    assert main(["download-landmarks", str(index), str(tmp_path / "out"), "--workers", "2", "--retries", "0"]) == 0
    printed = capsys.readouterr().out
    assert "1 downloaded, 0 already present, 1 failed (http 404: 1) of 2" in printed
