"""Several servers, one registry: coherence across replicas, concurrent trainers, kill -9."""

from __future__ import annotations

import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

SENTIMENT = [
    {"text": "I love this, it works perfectly", "label": "positive"},
    {"text": "Absolutely wonderful service", "label": "positive"},
    {"text": "Great app, very happy", "label": "positive"},
    {"text": "This is terrible and broken", "label": "negative"},
    {"text": "Awful, I want my money back", "label": "negative"},
    {"text": "Worst support ever", "label": "negative"},
]


def train(server, head="mood", tenant="acme", examples=SENTIMENT):
    return server.post(
        "/v1/heads/train", {"head": head, "examples": examples}, headers={"X-Tenant-ID": tenant}
    )


def predict(server, head="mood", tenant="acme", **extra):
    body = {"head": head, "inputs": ["what a lovely day"], **extra}
    return server.post("/v1/predict", body, headers={"X-Tenant-ID": tenant})


def call(server, path, body, tenant="acme"):
    return server.post(path, body, headers={"X-Tenant-ID": tenant})


def both(serve, tmp_path, **settings):
    """Two replicas of one registry, started side by side."""
    launched = [serve(tmp_path / home, ready=False, **settings) for home in ("a", "b")]
    return [server.wait_ready() for server in launched]


def test_two_replicas_share_one_postgresql_registry(serve, postgres_url, tmp_path):
    a, b = both(serve, tmp_path, database_url=postgres_url)

    assert train(a).json()["version"] == 1
    on_b = predict(b)  # trained through A, served by B on its very next request
    assert (on_b.status_code, on_b.json()["version"]) == (200, 1)
    assert on_b.json()["predictions"][0]["label"] == "positive"

    assert train(b).json()["version"] == 2
    assert predict(a).json()["version"] == 2  # A's cache holds v1; it still serves v2

    assert (
        call(
            a, "/v1/aliases/set", {"head": "mood", "alias": "production", "version": 1}
        ).status_code
        == 200
    )
    assert predict(b, version="production").json()["version"] == 1
    assert (
        call(b, "/v1/aliases/set", {"head": "mood", "alias": "production", "version": 2}).json()[
            "previous"
        ]
        == 1
    )
    assert predict(a, version="production").json()["version"] == 2

    assert call(b, "/v1/aliases/delete", {"head": "mood", "alias": "production"}).status_code == 200
    assert call(b, "/v1/heads/delete", {"head": "mood", "version": 2}).json()[
        "deleted_versions"
    ] == [2]
    gone = predict(a, version=2)  # deleted through B: A must not serve it from its cache
    assert (gone.status_code, gone.json()["error"]["code"]) == (404, "version_not_found")
    assert predict(a).json()["version"] == 1
    assert call(b, "/v1/heads/delete", {"head": "mood"}).json()["deleted_versions"] == [1]
    whole = predict(a)
    assert (whole.status_code, whole.json()["error"]["code"]) == (404, "head_not_found")


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_concurrent_trainers_and_predictors(serve, tmp_path, request, backend):
    if backend == "postgresql":
        url = request.getfixturevalue("postgres_url")
        servers = both(serve, tmp_path, database_url=url)
    else:  # two worker processes writing one SQLite file
        servers = [serve(tmp_path / "home", workers=2)]
    statuses: list[int] = []
    lock = threading.Lock()
    stop = threading.Event()

    def trainer(i: int) -> int:
        response = train(servers[i % len(servers)])
        with lock:
            statuses.append(response.status_code)
        return int(response.json()["version"]) if response.status_code == 200 else -1

    def predictor(i: int) -> None:
        with httpx.Client(base_url=servers[i % len(servers)].url, timeout=120) as client:
            while not stop.is_set():
                response = client.post(
                    "/v1/predict",
                    json={"head": "mood", "inputs": ["so happy"]},
                    headers={"X-Tenant-ID": "acme"},
                )
                with lock:
                    statuses.append(response.status_code)

    with ThreadPoolExecutor(max_workers=40) as pool:
        predictors = [pool.submit(predictor, i) for i in range(32)]
        versions = list(pool.map(trainer, range(8)))
        stop.set()
        for done in predictors:
            done.result()
    assert sorted(versions) == list(range(1, 9))
    assert not [s for s in statuses if s >= 500], sorted(set(statuses))
    assert set(statuses) <= {200, 404}  # 404 only before version 1 existed
    head = call(servers[-1], "/v1/heads/get", {"head": "mood"}).json()
    assert [v["version"] for v in head["versions"]] == list(range(1, 9))


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_kill_9_during_training_loses_nothing_acknowledged(serve, tmp_path, request, backend):
    settings = (
        {"database_url": request.getfixturevalue("postgres_url")} if backend == "postgresql" else {}
    )
    home = tmp_path / "home"
    server = serve(home, **settings)
    acknowledged: list[int] = []
    rng = random.Random(5)

    def keep_training() -> None:
        while True:
            try:
                response = httpx.post(
                    f"{server.url}/v1/heads/train",
                    json={"head": "mood", "examples": SENTIMENT},
                    headers={"X-Tenant-ID": "acme"},
                    timeout=60,
                )
            except httpx.HTTPError:
                return  # the server was killed under us
            if response.status_code == 200:
                acknowledged.append(int(response.json()["version"]))

    trainers = [threading.Thread(target=keep_training) for _ in range(3)]
    for thread in trainers:
        thread.start()
    deadline = time.monotonic() + 60
    while len(acknowledged) < 5 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(rng.uniform(0.0, 0.3))  # somewhere inside the next trainings
    server.kill()
    for thread in trainers:
        thread.join()
    assert len(acknowledged) >= 5

    restarted = serve(home, **settings)
    stored = [
        v["version"] for v in call(restarted, "/v1/heads/get", {"head": "mood"}).json()["versions"]
    ]
    assert set(acknowledged) <= set(stored), (acknowledged, stored)
    assert stored == list(range(1, len(stored) + 1))  # no gap, no duplicate
    for version in stored:  # every stored version is whole: it loads and predicts
        response = predict(restarted, version=version)
        assert response.status_code == 200, (version, response.text)
    assert train(restarted).json()["version"] == stored[-1] + 1
