"""The HTTP localization service (`hierloc serve`): round trips, limits, bad requests, the token, the full queue."""

from __future__ import annotations

import os
import signal
import struct
import subprocess
import sys
import threading
import time
import warnings
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
pytest.importorskip("httpx")

with warnings.catch_warnings():  # recent Starlette prefers httpx2 for its TestClient and warns on httpx
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient  # noqa: E402

from hierloc.client import HierlocClient, ServiceError  # noqa: E402
from hierloc.localization import Localizer, LocalizerConfig  # noqa: E402
from hierloc.service import ServiceConfig, ServiceLimits, app_for  # noqa: E402
from hierloc.utils.encoded_images import decode_image_bytes, read_image_header  # noqa: E402

TOKEN = "s3cret-token-of-the-tests-0123456789"


@pytest.fixture(scope="module")
def world_map(service_world_map):
    return service_world_map


def png_bytes(image: np.ndarray) -> bytes:
    ok, data = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    assert ok
    return data.tobytes()


def bomb_png(width: int = 30000, height: int = 30000) -> bytes:
    """A few hundred bytes of PNG declaring width x height RGB pixels (a decompression bomb)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = zlib.compress(b"\x00" * (3 * width + 1) * 4)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", rows) + chunk(b"IEND", b""))


def bomb_jpeg() -> bytes:
    """A JPEG whose frame header declares 65000x65000 pixels."""
    ok, data = cv2.imencode(".jpg", np.zeros((8, 8, 3), np.uint8))
    data = bytearray(data.tobytes())
    sof = data.index(b"\xff\xc0")
    data[sof + 5:sof + 9] = struct.pack(">HH", 65000, 65000)
    return bytes(data)


def make_config(folder: Path, **limits) -> ServiceConfig:
    return ServiceConfig(folder, limits=ServiceLimits(**{"workers": 2, "queue_size": 2, **limits}),
                         localizer=LocalizerConfig(num_retrieved=3, trace_global_network=False), warm_up=False)


@pytest.fixture()
def client(world_map):
    folder, localizer, _ = world_map
    app = app_for(make_config(folder, max_body_bytes=512 * 1024, max_pixels=1_000_000), localizer)
    with TestClient(app) as test_client:
        yield test_client


def assert_one_line_error(response, status: int, fragment: str = "") -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["status"] == status and "\n" not in body["error"] and fragment in body["error"], body


def assert_still_serving(test_client, query) -> None:
    response = test_client.post("/v1/localize", content=png_bytes(query.load_image()),
                                headers={"Content-Type": "image/png"})
    assert response.status_code == 200 and response.json()["success"]


def test_header_sizes_and_bombs_refused_before_decoding():
    image = np.zeros((24, 40, 3), np.uint8)
    assert read_image_header(png_bytes(image)).pixels == 24 * 40
    jpeg = cv2.imencode(".jpg", image)[1].tobytes()
    header = read_image_header(jpeg)
    assert (header.format, header.width, header.height) == ("jpeg", 40, 24)
    for bomb in (bomb_png(), bomb_jpeg()):
        with pytest.raises(Exception, match="exceeds the limit"):
            decode_image_bytes(bomb, max_pixels=10_000_000)
    assert decode_image_bytes(png_bytes(image), max_pixels=24 * 40).shape == (24, 40, 3)


def test_localize_round_trip_equals_the_in_process_pose(world_map, client):
    _, localizer, queries = world_map
    for query in queries[3:6]:  # the frames this small map localizes
        image = query.load_image()
        expected = localizer.localize(image, query.camera, query.name)
        camera = " ".join([query.camera.model, str(query.camera.width), str(query.camera.height),
                           *(repr(float(p)) for p in query.camera.params)])
        response = client.post("/v1/localize", content=png_bytes(image), headers={"Content-Type": "image/png"},
                               params={"camera": camera, "name": query.name, "timestamp": "12.5"})
        assert response.status_code == 200, response.text
        answer = response.json()
        assert answer["success"] == expected.success and answer["num_inliers"] == expected.num_inliers
        assert answer["success"]
        np.testing.assert_array_equal(np.array(answer["T_cam_world"]), expected.T_cam_world)
        assert len(answer["qvec_tvec"]) == 7 and answer["qvec_tvec"][4:] == expected.T_cam_world[:3, 3].tolist()
        assert answer["place"] == expected.place and answer["retrieved"] == expected.retrieved
        assert (answer["session_id"], answer["timestamp"], answer["name"]) == (None, 12.5, query.name)
        assert answer["retrieval_path"] == "global" and answer["prior"] is None  # a prior: test_service_rerank_prior
        assert {"retrieval", "local_features", "matching", "pose", "total", "decode", "queue",
                "service"} <= set(answer["timings_s"])
    # The same image as a multipart form with the intrinsics as fields.
    query = queries[3]
    expected = localizer.localize(query.load_image(), query.camera, query.name)
    fields = dict(zip(("fx", "fy", "cx", "cy"), (repr(float(p)) for p in query.camera.params)))
    response = client.post("/v1/localize", files={"image": ("q.png", png_bytes(query.load_image()), "image/png")},
                           data=fields)
    assert response.status_code == 200, response.text
    np.testing.assert_array_equal(np.array(response.json()["T_cam_world"]), expected.T_cam_world)
    response = client.post("/v1/retrieve", params={"k": "2"}, content=png_bytes(query.load_image()),
                           headers={"Content-Type": "application/octet-stream"})
    assert response.status_code == 200 and response.json()["retrieved"] == localizer.retrieve(query.load_image(), 2)


def test_a_session_is_tracked_around_its_previous_pose(world_map, client):
    _, localizer, queries = world_map
    paths = []
    for query in queries[3:6]:
        image = query.load_image()
        expected = localizer.localize(image, query.camera, query.name)
        response = client.post("/v1/localize", content=png_bytes(image), headers={"Content-Type": "image/png"},
                               params={"name": query.name, "session_id": "robot-1", "camera": " ".join(
                                   [query.camera.model, str(query.camera.width), str(query.camera.height),
                                    *(repr(float(p)) for p in query.camera.params)])})
        assert response.status_code == 200, response.text
        answer = response.json()
        assert answer["session_id"] == "robot-1" and answer["success"]
        paths.append(answer["retrieval_path"])
        # Tracked or not, about as accurate as the independent pose (this 10-frame map is coarse: centimetres).
        centre = -np.array(answer["T_cam_world"])[:3, :3].T @ np.array(answer["T_cam_world"])[:3, 3]
        expected_centre = -expected.T_cam_world[:3, :3].T @ expected.T_cam_world[:3, 3]
        true_centre = query.pose[:3, 3]
        assert np.linalg.norm(centre - true_centre) <= np.linalg.norm(expected_centre - true_centre) + 0.02
    assert paths[0] == "global" and "tracking" in paths[1:]


def test_health_map_metrics_and_openapi(client):
    assert client.get("/health").json()["status"] == "ok"
    info = client.get("/v1/map").json()
    assert info["images"] == 10 and info["retrieval"] and info["limits"]["max_pixels"] == 1_000_000
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/v1/localize", "/v1/retrieve", "/health", "/v1/map", "/metrics"} <= set(paths)
    client.post("/v1/localize", content=b"junk", headers={"Content-Type": "image/png"})
    metrics = client.get("/metrics").text
    assert 'hierloc_requests_total{endpoint="/v1/localize",status="400"}' in metrics
    assert 'hierloc_failures_total{reason="bad_request"} 1.0' in metrics
    assert "hierloc_queue_depth" in metrics and "hierloc_request_seconds_bucket" in metrics


def test_bad_requests_answer_a_one_line_4xx_and_the_server_keeps_serving(world_map, client):
    _, _, queries = world_map
    good = png_bytes(queries[3].load_image())
    png = {"Content-Type": "image/png"}
    cases = [
        (client.post("/v1/localize", content=b"\x00" * 100, headers=png), 400, "not a JPEG or PNG"),
        (client.post("/v1/localize", content=good[:200], headers=png), 400, "corrupt or truncated"),
        (client.post("/v1/localize", content=b"\x89PNG\r\n\x1a\n", headers=png), 400, "IHDR"),
        (client.post("/v1/localize", content=b"\xff\xd8\xff\xe0\x00\x10JFIF", headers=png), 400, "JPEG"),
        (client.post("/v1/localize", content=b"", headers=png), 400, "empty image"),
        (client.post("/v1/localize", content=bomb_png(), headers=png), 413, "30000x30000"),
        (client.post("/v1/localize", content=bomb_jpeg(), headers=png), 413, "65000x65000"),
        (client.post("/v1/localize", content=b"\x00" * (600 * 1024), headers=png), 413, "exceeds the limit"),
        (client.post("/v1/localize", content=iter([b"\x00" * 65536] * 10), headers=png), 413, "exceeds the limit"),
        (client.post("/v1/localize", content=good, headers={"Content-Type": "text/plain"}), 415, "text/plain"),
        (client.post("/v1/localize", content=good, headers={"Content-Type": ""}), 415, "Content-Type missing"),
        (client.post("/v1/localize", content=b"--x\r\nnot a form", headers={
            "Content-Type": "multipart/form-data; boundary=x"}), 400, "multipart"),
        (client.post("/v1/localize", data={"fx": "100"}, files={"other": ("a", b"b")}), 400, "field 'image'"),
        (client.post("/v1/localize", content=good, headers=png, params={"fx": "nan"}), 400, "'fx'"),
        (client.post("/v1/localize", content=good, headers=png, params={"camera": "PINHOLE 320 240 1"}), 400,
         "camera"),
        (client.post("/v1/localize", content=good, headers=png, params={"camera": "/etc/passwd"}), 400, "camera"),
        (client.post("/v1/localize", content=good, headers=png, params={"camera": "PINHOLE 64 48 1 1 1 1"}), 400,
         "64x48"),
        (client.post("/v1/localize", content=good, headers=png, params={"prior": "1 2 3"}), 400, "prior"),
        (client.post("/v1/localize", content=good, headers=png, params={"session_id": "a b"}), 400, "session_id"),
        (client.post("/v1/localize", content=good, headers=png, params={"bogus": "1"}), 400, "unknown parameter"),
        (client.post("/v1/retrieve", content=good, headers=png, params={"k": "1000"}), 400, "'k'"),
        (client.get("/v1/localize"), 405, ""),
        (client.get("/nowhere"), 404, ""),
    ]
    for response, status, fragment in cases:
        assert_one_line_error(response, status, fragment)
    assert_still_serving(client, queries[3])
    assert client.get("/health").json()["running"] == 0


def test_token_missing_or_wrong_is_401(world_map):
    folder, localizer, queries = world_map
    app = app_for(make_config(folder), localizer, token=TOKEN)
    with TestClient(app) as test_client:
        good = png_bytes(queries[3].load_image())
        png = {"Content-Type": "image/png"}
        assert_one_line_error(test_client.post("/v1/localize", content=good, headers=png), 401, "missing")
        response = test_client.post("/v1/localize", content=good, headers={**png, "Authorization": "Bearer nope"})
        assert_one_line_error(response, 401, "wrong bearer token")
        assert response.headers["www-authenticate"].startswith("Bearer")
        assert_one_line_error(test_client.get("/v1/map", headers={"Authorization": "Basic abc"}), 401, "malformed")
        assert_one_line_error(test_client.get("/metrics"), 401)
        assert test_client.get("/health").status_code == 200  # liveness stays open
        response = test_client.post("/v1/localize", content=good, headers={**png, "Authorization": f"Bearer {TOKEN}"})
        assert response.status_code == 200 and response.json()["success"]


class GatedLocalizer:
    """The localizer, but each localize waits for `gate` (to hold workers busy on purpose)."""

    def __init__(self, localizer: Localizer) -> None:
        self.localizer = localizer
        self.gate = threading.Event()
        self.entered = threading.Semaphore(0)

    def localize(self, *args, **kwargs):
        self.entered.release()
        assert self.gate.wait(30)
        return self.localizer.localize(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self.localizer, name)


class ThreadedServer:
    """A real uvicorn on 127.0.0.1 (a free port) in a thread; `stop()` is a graceful shutdown."""

    def __init__(self, app) -> None:
        import uvicorn

        from hierloc.service.server import bind_socket

        self.socket = bind_socket("127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self.socket.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on",
                                                    timeout_graceful_shutdown=30))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.socket]}, daemon=True)
        self.thread.start()
        deadline = time.time() + 20
        while not self.server.started:
            assert time.time() < deadline, "the server did not start"
            time.sleep(0.02)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(30)
        assert not self.thread.is_alive()


def test_full_queue_answers_503_at_once_and_shutdown_finishes_requests_in_flight(world_map):
    folder, localizer, queries = world_map
    app = app_for(make_config(folder, workers=1, queue_size=1, timeout_s=60), localizer)
    gated = GatedLocalizer(localizer)
    app.service.localizer = gated
    server = ThreadedServer(app)
    image = queries[3].load_image()
    answers: list = []

    def ask() -> None:
        try:
            answers.append(HierlocClient(server.url).localize(image, queries[3].camera))
        except Exception as exc:  # noqa: BLE001 - recorded for the assertions
            answers.append(exc)

    try:
        running = threading.Thread(target=ask)
        running.start()
        assert gated.entered.acquire(timeout=20)  # one request runs on the only worker ...
        waiting = threading.Thread(target=ask)
        waiting.start()
        client = HierlocClient(server.url)
        deadline = time.time() + 10
        while client.health()["waiting"] < 1:  # ... and one waits in the queue of 1
            assert time.time() < deadline
            time.sleep(0.02)
        t0 = time.perf_counter()
        with pytest.raises(ServiceError) as refused:
            client.localize(image)
        assert time.perf_counter() - t0 < 2.0  # at once, not after the running request
        assert refused.value.status == 503 and refused.value.retry_after == 1.0 and "queue" in refused.value.reason
        assert 'hierloc_failures_total{reason="overloaded"} 1.0' in client.metrics()
        # A graceful shutdown begun now still answers both requests admitted before it.
        stopper = threading.Thread(target=server.stop)
        stopper.start()
        time.sleep(0.3)
        gated.gate.set()
        running.join(30)
        waiting.join(30)
        stopper.join(30)
    finally:
        gated.gate.set()
        if server.thread.is_alive():
            server.stop()
    assert len(answers) == 2 and all(isinstance(a, dict) and a["success"] for a in answers), answers


def test_time_limit_answers_504_and_keeps_the_slot_until_the_job_ends(world_map):
    folder, localizer, queries = world_map
    app = app_for(make_config(folder, workers=1, queue_size=0, timeout_s=0.5), localizer)
    gated = GatedLocalizer(localizer)
    app.service.localizer = gated
    with TestClient(app) as test_client:
        good = png_bytes(queries[3].load_image())
        response = test_client.post("/v1/localize", content=good, headers={"Content-Type": "image/png"})
        assert_one_line_error(response, 504, "time limit")
        response = test_client.post("/v1/localize", content=good, headers={"Content-Type": "image/png"})
        assert_one_line_error(response, 503, "busy")  # the timed-out job still runs on the only worker
        gated.gate.set()
        deadline = time.time() + 20
        while test_client.get("/health").json()["running"]:
            assert time.time() < deadline
            time.sleep(0.02)
        app.service.localizer = localizer
        assert_still_serving(test_client, queries[3])


def test_hierloc_serve_listens_on_loopback_and_stops_on_sigterm(world_map, tmp_path):
    folder, _, queries = world_map
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)
    env = {**os.environ, "HIERLOC_NUM_THREADS": "1"}
    process = subprocess.Popen([sys.executable, "-m", "hierloc.cli.main", "serve", str(folder), "--port", "0",
                                "--workers", "1", "--no-warm-up", "--token-file", str(token_file)],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        url = None
        deadline = time.time() + 120
        while url is None:
            line = process.stdout.readline()
            assert line or process.poll() is None, "hierloc serve exited early"
            if line.startswith("serving on "):
                url = line.split()[2]
            assert time.time() < deadline
        assert url.startswith("http://127.0.0.1:")
        client = HierlocClient(url, token=TOKEN)
        assert client.health()["status"] == "ok"
        answer = client.localize(queries[3].load_image(), queries[3].camera, session_id="s-1")
        assert answer["success"] and answer["session_id"] == "s-1"
        with pytest.raises(ServiceError, match="401"):
            HierlocClient(url).map_info()
    finally:
        process.send_signal(signal.SIGTERM)
        code = process.wait(60)
    assert code in (0, -signal.SIGTERM)  # uvicorn re-raises the signal after its graceful shutdown
