"""The service's geometric re-ranking (`/v1/retrieve?rerank=K`) and prior poses (`/v1/localize?prior=...`)."""

from __future__ import annotations

import warnings

import cv2
import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

with warnings.catch_warnings():  # recent Starlette prefers httpx2 for its TestClient and warns on httpx
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient  # noqa: E402

from hierloc.localization import LocalizerConfig  # noqa: E402
from hierloc.localization.tracking import keyframes_near_pose, localize_with_prior  # noqa: E402
from hierloc.maps.poses import invert_pose, rotmat_to_qvec  # noqa: E402
from hierloc.reranking import RerankConfig, reranker_for_index  # noqa: E402
from hierloc.service import ServiceConfig, ServiceLimits, app_for  # noqa: E402

PNG = {"Content-Type": "image/png"}


@pytest.fixture(scope="module")
def world_map(service_world_map):
    return service_world_map


@pytest.fixture()
def client(world_map):
    folder, localizer, _ = world_map
    config = ServiceConfig(folder, limits=ServiceLimits(workers=2, queue_size=2, max_rerank=8),
                           localizer=LocalizerConfig(num_retrieved=3, trace_global_network=False), warm_up=False)
    with TestClient(app_for(config, localizer)) as test_client:
        yield test_client


def png_bytes(image: np.ndarray) -> bytes:
    ok, data = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    assert ok
    return data.tobytes()


def prior_text(T_cam_world: np.ndarray) -> str:
    """hloc's 'qw qx qy qz tx ty tz' of a world-to-camera pose."""
    return " ".join(repr(float(v)) for v in (*rotmat_to_qvec(T_cam_world[:3, :3]), *T_cam_world[:3, 3]))


def centre(T_cam_world) -> np.ndarray:
    T = np.asarray(T_cam_world)
    return -T[:3, :3].T @ T[:3, 3]


def test_retrieve_with_rerank_equals_the_in_process_reranker(world_map, client):
    folder, localizer, queries = world_map
    reference = reranker_for_index(folder / "global_index.h5", RerankConfig(k=6, features="sift"))
    try:
        for query in queries[2:6]:
            image = query.load_image()
            response = client.post("/v1/retrieve", content=png_bytes(image), headers=PNG,
                                   params={"k": "4", "rerank": "6"})
            assert response.status_code == 200, response.text
            answer = response.json()
            names = localizer.retrieve(image, 6)
            expected = reference.rerank(image, names)
            expected_order = [c.name for c in expected.candidates]
            assert answer["retrieved"] == expected_order[:4] and answer["k"] == 4
            assert answer["rerank"]["k"] == 6 and answer["rerank"]["conclusive"] == expected.conclusive
            assert {"query_features", "matching", "geometry", "total"} <= set(answer["rerank"]["timings_ms"])
            assert answer["timings_s"]["rerank"] > 0
            results = answer["results"]
            assert [r["rank"] for r in results] == [0, 1, 2, 3]
            assert [r["name"] for r in results] == answer["retrieved"]
            assert [(r["inliers"], r["global_rank"]) for r in results] == \
                [(c.inliers, c.global_rank) for c in expected.candidates[:4]]
            assert all(names[r["global_rank"]] == r["name"] and r["distance"] is not None for r in results)
            if expected.conclusive:  # verified keyframes come first, most inliers first
                verified = [r["inliers"] for r in results if r["inliers"] >= reference.config.min_inliers]
                assert verified == sorted(verified, reverse=True) and results[0]["inliers"] == verified[0]
    finally:
        reference.close()
    service = client.app.service
    reranker = service.reranker()
    assert reranker is service.reranker()  # built once, on first use
    assert reranker.references.path == folder / "features.h5"  # the map's own features are the references
    # Without rerank (or rerank=0) the answer is the global order, as before.
    image = queries[3].load_image()
    for params in ({"k": "2"}, {"k": "2", "rerank": "0"}):
        answer = client.post("/v1/retrieve", content=png_bytes(image), headers=PNG, params=params).json()
        assert answer["retrieved"] == localizer.retrieve(image, 2) and "results" not in answer


@pytest.mark.parametrize("value", ["-1", "9", "1000000000000", "1.5", "2.0", "abc", "", "1e3", "+3", "\u0663"])
def test_bad_rerank_values_answer_400_with_one_line(world_map, client, value):
    _, _, queries = world_map
    response = client.post("/v1/retrieve", content=png_bytes(queries[3].load_image()), headers=PNG,
                           params={"rerank": value})
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["status"] == 400 and "\n" not in body["error"] and "'rerank'" in body["error"], body
    assert "from 0 to 8" in body["error"]


def test_rerank_is_not_a_localize_parameter(world_map, client):
    _, _, queries = world_map
    response = client.post("/v1/localize", content=png_bytes(queries[3].load_image()), headers=PNG,
                           params={"rerank": "3"})
    assert response.status_code == 400 and "unknown parameter 'rerank'" in response.json()["error"]


def test_openapi_documents_rerank_and_prior(client):
    paths = client.get("/openapi.json").json()["paths"]
    retrieve = {p["name"]: p for p in paths["/v1/retrieve"]["post"]["parameters"]}
    localize = {p["name"]: p for p in paths["/v1/localize"]["post"]["parameters"]}
    assert retrieve["rerank"]["schema"]["type"] == "integer" and "inliers" in retrieve["rerank"]["description"]
    assert "nearest" in localize["prior"]["description"]
    assert client.get("/v1/map").json()["limits"]["max_rerank"] == 8


def test_keyframes_near_pose_are_nearest_first_and_look_the_same_way(world_map):
    _, localizer, queries = world_map
    scene = localizer.scene
    T_cam_world = invert_pose(queries[4].pose)
    near = keyframes_near_pose(scene, T_cam_world, count=3)
    distances = [np.linalg.norm(scene.image(n).pose[:3, 3] - queries[4].pose[:3, 3]) for n in near]
    assert len(near) == 3 and distances == sorted(distances)
    turned = T_cam_world.copy()
    turned[:3, :3] = np.diag([-1.0, 1.0, -1.0]) @ T_cam_world[:3, :3]  # the same place, looking backwards
    assert all(np.dot(scene.image(n).pose[:3, 2], invert_pose(turned)[:3, 2]) >= 0
               for n in keyframes_near_pose(scene, turned, count=10))


def test_a_prior_near_the_true_pose_serves_the_request_like_global_retrieval(world_map, client):
    _, localizer, queries = world_map
    rng = np.random.default_rng(0)
    for query in queries[3:6]:
        image = query.load_image()
        T_cam_world = invert_pose(query.pose)
        T_cam_world[:3, 3] += rng.normal(0.0, 0.05, 3)  # a prior a few centimetres off
        response = client.post("/v1/localize", content=png_bytes(image), headers=PNG,
                               params={"prior": prior_text(T_cam_world), "camera": camera_text(query.camera)})
        assert response.status_code == 200, response.text
        answer = response.json()
        assert answer["retrieval_path"] == "prior" and answer["success"], answer["message"]
        assert answer["timings_s"]["retrieval"] < 1e-3  # no global describer, no search
        assert len(answer["prior"]) == 7
        in_process = localize_with_prior(localizer, image, query.camera, query.name, T_cam_world)
        np.testing.assert_allclose(np.array(answer["T_cam_world"]), in_process.T_cam_world, atol=1e-9)
        # The global path's pose, up to this coarse 10-frame map's own accuracy (centimetres: other keyframes
        # give other 2D-3D matches); and as close to the truth, within 2 cm.
        expected = localizer.localize(image, query.camera, query.name)
        assert expected.success and answer["num_inliers"] >= localizer.config.min_inliers
        assert np.linalg.norm(centre(answer["T_cam_world"]) - centre(expected.T_cam_world)) < 0.05
        rotation = np.array(answer["T_cam_world"])[:3, :3] @ expected.T_cam_world[:3, :3].T
        assert np.degrees(np.arccos(np.clip((np.trace(rotation) - 1) / 2, -1, 1))) < 1.0
        truth = query.pose[:3, 3]
        assert np.linalg.norm(centre(answer["T_cam_world"]) - truth) <= \
            np.linalg.norm(centre(expected.T_cam_world) - truth) + 0.02


def test_a_wrong_prior_falls_back_to_global_retrieval(world_map, client):
    _, localizer, queries = world_map
    query = queries[4]
    far = queries[(4 + len(queries) // 2) % len(queries)]  # the other side of the loop
    for wrong in (invert_pose(far.pose), invert_pose(query.pose) @ np.diag([-1.0, 1.0, -1.0, 1.0])):
        response = client.post("/v1/localize", content=png_bytes(query.load_image()), headers=PNG,
                               params={"prior": prior_text(wrong), "camera": camera_text(query.camera)})
        assert response.status_code == 200, response.text
        answer = response.json()
        assert answer["retrieval_path"] == "global" and answer["success"], answer
        expected = localizer.localize(query.load_image(), query.camera, query.name)
        np.testing.assert_allclose(np.array(answer["T_cam_world"]), expected.T_cam_world, atol=1e-9)


def test_a_session_starts_from_its_prior_then_tracks(world_map, client):
    _, _, queries = world_map
    paths = []
    for query in queries[3:6]:
        response = client.post("/v1/localize", content=png_bytes(query.load_image()), headers=PNG,
                               params={"prior": prior_text(invert_pose(query.pose)), "session_id": "rover",
                                       "camera": camera_text(query.camera)})
        assert response.status_code == 200 and response.json()["success"], response.text
        paths.append(response.json()["retrieval_path"])
    assert paths[0] == "prior" and "tracking" in paths[1:]


@pytest.mark.parametrize("prior", ["0 0 0 0 1 2 3", "1 0 0 0 1 2", "1 0 0 0 1 2 nan", "1 0 0 0 1 2 3 4"])
def test_bad_priors_answer_400(world_map, client, prior):
    _, _, queries = world_map
    response = client.post("/v1/localize", content=png_bytes(queries[3].load_image()), headers=PNG,
                           params={"prior": prior})
    assert response.status_code == 400 and "'prior'" in response.json()["error"], response.text


def camera_text(camera) -> str:
    return " ".join([camera.model, str(camera.width), str(camera.height), *(repr(float(p)) for p in camera.params)])


def test_one_reranker_serves_threads_at_once(world_map):
    """The service's workers share one reranker: concurrent calls give the answers of one call at a time."""
    from concurrent.futures import ThreadPoolExecutor

    folder, localizer, queries = world_map
    images = [q.load_image() for q in queries[2:8]]
    names = [localizer.retrieve(image, 6) for image in images]
    config = RerankConfig(k=6, features="sift")

    def scores(reranker, i):
        result = reranker.rerank(images[i], names[i])
        return [(c.name, c.inliers) for c in result.candidates]

    sequential = reranker_for_index(folder / "global_index.h5", config)
    shared = reranker_for_index(folder / "global_index.h5", config)  # its references load under concurrency
    try:
        expected = [scores(sequential, i) for i in range(len(images))]
        with ThreadPoolExecutor(max_workers=4) as pool:
            together = list(pool.map(lambda i: scores(shared, i), [*range(len(images))] * 2))
    finally:
        sequential.close()
        shared.close()
    assert together == expected * 2


def test_the_reranker_is_built_at_start_or_its_reason_is_a_409(world_map):
    folder, localizer, queries = world_map
    limits = ServiceLimits(workers=1, queue_size=1)
    eager = app_for(ServiceConfig(folder, limits=limits, warm_up=True), localizer)
    assert eager.service._reranker is not None  # built with the app when the service warms up
    info = eager.service.map_info()["rerank"]
    assert info["config"]["features"] == "sift" and info["reference_features"].endswith("features.h5")
    eager.service.close()
    broken = ServiceConfig(folder, limits=limits, warm_up=False, rerank=RerankConfig(geometry="affine"))
    with TestClient(app_for(broken, localizer)) as test_client:
        image = png_bytes(queries[3].load_image())
        response = test_client.post("/v1/retrieve", content=image, headers=PNG, params={"rerank": "3"})
        assert response.status_code == 409 and "geometry 'affine'" in response.json()["error"], response.text
        assert 'hierloc_failures_total{reason="no_rerank"} 1.0' in test_client.get("/metrics").text
        assert test_client.post("/v1/retrieve", content=image, headers=PNG).status_code == 200  # still serving


def test_the_python_client_sends_rerank_and_prior(world_map):
    pytest.importorskip("uvicorn")
    from test_service import ThreadedServer

    from hierloc.client import HierlocClient

    folder, localizer, queries = world_map
    config = ServiceConfig(folder, limits=ServiceLimits(workers=1, queue_size=2), warm_up=False,
                           localizer=LocalizerConfig(num_retrieved=3, trace_global_network=False))
    server = ThreadedServer(app_for(config, localizer))
    try:
        client = HierlocClient(server.url)
        query = queries[4]
        answer = client.retrieve(query.load_image(), k=3, rerank=5)
        assert len(answer["results"]) == 3 and all("inliers" in r for r in answer["results"])
        answer = client.localize(query.load_image(), query.camera, prior=prior_text(invert_pose(query.pose)).split())
        assert answer["success"] and answer["retrieval_path"] == "prior"
        client.close()
    finally:
        server.stop()
