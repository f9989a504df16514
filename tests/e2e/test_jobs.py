"""Training jobs on real servers: kill -9 mid-job and restart, train then predict, cancel."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from bench.datasets import banking77
from bench.server import Server

SENTIMENT = [
    {"text": "I love this, it works perfectly", "label": "positive"},
    {"text": "Absolutely wonderful service", "label": "positive"},
    {"text": "Great app, very happy", "label": "positive"},
    {"text": "This is terrible and broken", "label": "negative"},
    {"text": "Awful, I want my money back", "label": "negative"},
    {"text": "Worst support ever", "label": "negative"},
]
#: Fast heartbeats, so a job of a killed server is stale (3 s) before the restart is ready.
SETTINGS = {"job_heartbeat_seconds": "0.5"}


def call(server: Server, path: str, body: dict[str, Any]) -> dict[str, Any]:
    response = server.post(path, body, headers={"X-Tenant-ID": "acme"})
    assert response.status_code == 200, response.text
    return dict(response.json())


def wait_for(
    server: Server, job: str, until: Callable[[dict[str, Any]], bool], timeout: float = 120
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        state = call(server, "/v1/jobs/get", {"job": job})
        if until(state):
            return state
        assert time.monotonic() < deadline, state
        time.sleep(0.1)


def finished(state: dict[str, Any]) -> bool:
    return state["status"] in {"succeeded", "failed", "cancelled"}


def embedding(state: dict[str, Any]) -> bool:
    return state["progress"]["phase"] == "embedding" and state["progress"]["fraction"] > 0


def long_job(head: str) -> dict[str, Any]:
    rows = banking77("train")[:2000]
    return {"head": head, "examples": [{"text": r.text, "label": r.label} for r in rows]}


def metric(server: Server, sample: str) -> float:
    text = httpx.get(f"{server.url}/metrics").text
    match = re.search(rf"^{re.escape(sample)} ([0-9.e+]+)$", text, re.M)
    return float(match.group(1)) if match else 0.0


@pytest.fixture(scope="module")
def restarted(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, str]]:
    """A server killed with SIGKILL while a job embeds, then a new one on the same registry."""
    home: Path = tmp_path_factory.mktemp("jobs-home")
    first = Server(home, **SETTINGS).start()
    try:
        job = call(first, "/v1/jobs/train", long_job("interrupted"))["job"]
        wait_for(first, job, embedding)
        first.kill()
    finally:
        first.stop()
    second = Server(home, **SETTINGS).start()
    try:
        yield second, job
    finally:
        second.stop()


def test_a_job_killed_with_its_server_is_failed_with_a_reason(restarted):
    server, job = restarted
    state = wait_for(server, job, finished, timeout=30)
    assert state["status"] == "failed"
    assert state["error"]["code"] == "job_interrupted"
    assert "stopped (no heartbeat for 3 s)" in state["error"]["message"]
    assert state["progress"]["phase"] == "embedding"  # where it was when the server died
    missing = server.post("/v1/heads/get", {"head": "interrupted"}, headers={"X-Tenant-ID": "acme"})
    assert missing.json()["error"]["code"] == "head_not_found"


def test_a_job_trains_a_version_that_predicts(restarted):
    server, _ = restarted
    job = call(server, "/v1/jobs/train", {"head": "mood", "examples": SENTIMENT})["job"]
    state = wait_for(server, job, finished)
    assert (state["status"], state["version"]) == ("succeeded", 1), state
    assert state["result"]["labels"] == ["negative", "positive"]
    predicted = call(server, "/v1/predict", {"head": "mood", "inputs": ["what a lovely day"]})
    assert predicted["version"] == 1
    assert predicted["predictions"][0]["label"] == "positive"


def test_cancel_stops_a_running_job(restarted):
    server, _ = restarted
    job = call(server, "/v1/jobs/train", long_job("cancelled"))["job"]
    wait_for(server, job, embedding)
    assert call(server, "/v1/jobs/cancel", {"job": job})["status"] == "cancelled"
    deadline = time.monotonic() + 30  # the runner stops at its next checkpoint
    while metric(server, 'graft_trainings_total{kind="linear",outcome="cancelled"}') < 1:
        assert time.monotonic() < deadline, "the cancelled training did not stop"
        time.sleep(0.2)
    state = call(server, "/v1/jobs/get", {"job": job})
    assert state["status"] == "cancelled"
    assert state["progress"]["fraction"] < 1.0
    assert metric(server, 'graft_jobs_total{status="cancelled"}') == 1
    again = server.post("/v1/jobs/cancel", {"job": job}, headers={"X-Tenant-ID": "acme"})
    assert (again.status_code, again.json()["error"]["code"]) == (409, "job_finished")
    missing = server.post("/v1/heads/get", {"head": "cancelled"}, headers={"X-Tenant-ID": "acme"})
    assert missing.json()["error"]["code"] == "head_not_found"
