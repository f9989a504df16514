"""/metrics and the logs of a real two-worker server, after known requests; the CLI against it."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from adapters import HeadState, head_from_state
from bench.server import GRAFT, Server

ADMIN_KEY = "admin-secret-for-the-observability-test"
SENTIMENT = [
    {"text": "Observability: I love this, it works perfectly", "label": "positive"},
    {"text": "Observability: absolutely wonderful service", "label": "positive"},
    {"text": "Observability: great app, very happy", "label": "positive"},
    {"text": "Observability: this is terrible and broken", "label": "negative"},
    {"text": "Observability: awful, I want my money back", "label": "negative"},
    {"text": "Observability: worst support ever", "label": "negative"},
]
ACME_CALLS, GLOBEX_CALLS = 24, 8
KINDS = {"acme": "linear", "globex": "matching"}
ACME_INPUTS = ["a secret sentence about sunshine", "another secret sentence about rain"]
GLOBEX_INPUTS = ["globex keeps this sentence to itself"]


def samples(server: Server) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of /metrics by (name, labels)."""
    text = httpx.get(f"{server.url}/metrics").text
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return found


def value(found: dict[Any, float], name: str, **labels: str) -> float:
    return found.get((name, frozenset(labels.items())), 0.0)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = Server(
        tmp_path_factory.mktemp("observability"),
        workers=2,
        auth="required",
        admin_key=ADMIN_KEY,
        metrics_tenants="acme",
    ).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def traffic(server: Server) -> dict[str, str]:
    """Known requests: two keys, two trainings (a linear and a matching head), 24 + 8
    predictions and one failed one."""
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    keys = {}
    for tenant in ("acme", "globex"):
        created = server.post("/v1/admin/keys/create", {"tenant": tenant}, headers=admin)
        assert created.status_code == 200, created.text
        keys[tenant] = created.json()["key"]
    for tenant in ("acme", "globex"):
        trained = server.post(
            "/v1/heads/train",
            # globex's head matches tokens: it holds its bank as float32, twice what it stores.
            {"head": "mood", "examples": SENTIMENT, "kind": KINDS[tenant]},
            headers={"Authorization": f"Bearer {keys[tenant]}"},
        )
        assert trained.status_code == 200, trained.text

    def predict(call: tuple[str, list[str], str]) -> int:
        tenant, inputs, head = call
        # A fresh connection each time, so the kernel spreads the calls over both workers.
        with httpx.Client(base_url=server.url, timeout=120) as client:
            response = client.post(
                "/v1/predict",
                json={"head": head, "inputs": inputs},
                headers={"Authorization": f"Bearer {keys[tenant]}"},
            )
        return response.status_code

    calls = [("acme", ACME_INPUTS, "mood")] * ACME_CALLS + [("globex", GLOBEX_INPUTS, "mood")] * (
        GLOBEX_CALLS
    )
    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = list(pool.map(predict, [*calls, ("acme", ["nothing"], "no-such-head")]))
        # The kernel hands each connection to a worker that is waiting to accept one; on a loaded
        # machine one worker can take a whole round, or five (seen once in CI). More rounds of
        # the same calls until both have answered.
        rounds, deadline = 1, time.monotonic() + 120
        while len(predict_workers(server)) < 2 and time.monotonic() < deadline:
            time.sleep(1)
            statuses += list(pool.map(predict, calls))[: len(calls)]
            rounds += 1
    assert statuses == [200] * len(calls) + [404] + [200] * len(calls) * (rounds - 1)
    return {**keys, "rounds": str(rounds)}


def head_bytes(home: Path) -> dict[str, int]:
    """Per tenant, the bytes its one head holds once loaded, from the registry's SQLite file."""
    with sqlite3.connect(home / "graft.db") as db:
        rows = db.execute(
            "SELECT h.tenant, v.config, v.weights FROM head_versions v "
            "JOIN heads h ON v.head_id = h.id"
        ).fetchall()
    found = {}
    for tenant, config, weights in rows:
        state = HeadState.from_serialized(config, weights)
        found[tenant] = head_from_state(state).resident_bytes(state.nbytes)
    return found


def predict_workers(server: Server) -> set[int]:
    return {r["pid"] for r in server.access_log() if r["route"] == "/v1/predict"}


def test_metrics_sum_over_both_workers(server, traffic):
    found = samples(server)
    assert len(predict_workers(server)) == 2, "both workers must answer, or sums prove nothing"
    rounds = int(traffic["rounds"])
    ok = (ACME_CALLS + GLOBEX_CALLS) * rounds
    assert value(found, "graft_predictions_total", outcome="ok") == ok
    assert value(found, "graft_predictions_total", outcome="client_error") == 1
    predict_seconds = value(found, "graft_request_seconds_count", route="/v1/predict")
    assert predict_seconds == ok + 1
    inputs = (ACME_CALLS * len(ACME_INPUTS) + GLOBEX_CALLS * len(GLOBEX_INPUTS)) * rounds
    assert value(found, "graft_predicted_inputs_total") == inputs
    assert value(found, "graft_trainings_total", kind="linear", outcome="ok") == 1
    assert value(found, "graft_trainings_total", kind="matching", outcome="ok") == 1
    assert value(found, "graft_training_seconds_count") == 2
    assert value(found, "graft_training_examples_count") == 2
    assert value(found, "graft_training_examples_sum") == 2 * len(SENTIMENT)

    # Every embedded text, training and predicting, waited once and sat in one forward pass.
    embedded = 2 * len(SENTIMENT) + inputs
    assert value(found, "graft_backbone_queue_wait_seconds_count") == embedded
    assert value(found, "graft_backbone_batch_size_sum") == embedded
    assert 1 <= value(found, "graft_backbone_batch_size_count") <= embedded

    hits = value(found, "graft_head_cache_hits_total")
    misses = value(found, "graft_head_cache_misses_total")
    assert hits + misses == ok
    assert 2 <= misses <= 4  # each of two heads loads once per worker at most
    assert value(found, "graft_head_load_seconds_count") == misses
    # Each worker holds each head it answered for once; the gauge adds up the live workers.
    answered = {
        (r["pid"], r["tenant"])
        for r in server.access_log()
        if r["route"] == "/v1/predict" and r["status"] == 200
    }
    assert len(answered) == misses
    held = head_bytes(server.home)
    assert value(found, "graft_head_cache_bytes") == sum(held[tenant] for _, tenant in answered)

    assert value(found, "graft_heads_registered") == 2  # counted in the registry at scrape
    assert value(found, "graft_jobs_active", status="running") == 0


def test_only_opted_in_tenants_get_a_label(server, traffic):
    found = samples(server)
    requests = "graft_requests_total"
    predict = "/v1/predict"
    rounds = int(traffic["rounds"])
    acme_ok = value(found, requests, route=predict, status="200", tenant="acme")
    assert acme_ok == ACME_CALLS * rounds
    assert value(found, requests, route=predict, status="404", tenant="acme") == 1
    assert value(found, requests, route=predict, status="200", tenant="other") == (
        GLOBEX_CALLS * rounds
    )
    assert value(found, requests, route="/v1/heads/train", status="200", tenant="other") == 1
    assert value(found, requests, route="/v1/admin/keys/create", status="200", tenant="other") == 2
    tenants = {dict(labels).get("tenant") for name, labels in found if name == requests}
    assert tenants == {"acme", "other"}


def test_access_log_lines_carry_ids_and_outcomes_but_no_texts_or_keys(server, traffic):
    records = [r for r in server.access_log() if r["route"] == "/v1/predict"]
    assert len(records) == (ACME_CALLS + GLOBEX_CALLS) * int(traffic["rounds"]) + 1
    for record in records:
        assert len(record["request_id"]) == 32
        assert record["tenant"] in {"acme", "globex"}
        assert isinstance(record["latency_ms"], float | int)
        assert "body" not in record
    served = [r for r in records if r["status"] == 200]
    assert {(r["head"], r["version"]) for r in served} == {("mood", 1)}
    (failed,) = [r for r in records if r["status"] == 404]
    assert (failed["tenant"], failed["head"], failed["error"]) == (
        "acme",
        "no-such-head",
        "head_not_found",
    )
    log = server.log_path.read_text()
    for secret in [ADMIN_KEY, traffic["acme"], traffic["globex"], *ACME_INPUTS, *GLOBEX_INPUTS]:
        assert secret not in log
    for example in SENTIMENT:
        assert example["text"] not in log


def test_the_cli_drives_the_real_server(server, traffic, tmp_path: Path):
    env = {**os.environ, "GRAFT_URL": server.url, "GRAFT_API_KEY": traffic["acme"]}
    text = "the command line asks about a lovely day"

    def graft(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(GRAFT), *args], env=env, capture_output=True, text=True, timeout=120
        )

    predicted = graft("predict", "--head", "mood", text, "--json")
    assert predicted.returncode == 0, predicted.stderr
    assert json.loads(predicted.stdout)["predictions"][0]["label"] == "positive"
    listed = graft("heads", "list")
    assert listed.returncode == 0 and "mood" in listed.stdout
    refused = graft("heads", "list", "--key", "gk_000000000000_" + "x" * 43)
    assert refused.returncode == 1 and "401 unauthenticated" in refused.stderr
    assert text not in server.log_path.read_text()


def test_refused_predicts_and_trainings_are_counted_wherever_they_are_refused(server, traffic):
    acme = {"Authorization": f"Bearer {traffic['acme']}"}
    before = samples(server)
    refused = [
        server.post("/v1/predict", {"head": "mood", "inputs": ["hi"], "top_k": 0}, headers=acme),
        server.post("/v1/predict", {"head": "mood", "inputs": ["hi"]}),  # no key
        server.post("/v1/heads/train", {"head": "no spaces", "examples": SENTIMENT}, headers=acme),
        # Refused at submit, by the handler: one label cannot train a linear head.
        server.post("/v1/jobs/train", {"head": "mood", "examples": SENTIMENT[:3]}, headers=acme),
    ]
    assert [r.status_code for r in refused] == [400, 401, 400, 400]
    assert refused[3].json()["error"]["code"] == "invalid_examples"
    after = samples(server)

    def added(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert added("graft_predictions_total", outcome="client_error") == 2
    assert added("graft_trainings_total", kind="unknown", outcome="client_error") == 1
    assert added("graft_trainings_total", kind="linear", outcome="client_error") == 1


def test_a_path_that_is_no_route_is_a_json_404_counted_as_one_route(server, traffic):
    before = samples(server)
    asked = {"X-Request-ID": "typo-1", **{"Authorization": f"Bearer {traffic['acme']}"}}
    unknown = server.post("/v1/heads/tarin", {"head": "mood"}, headers=asked)
    assert (unknown.status_code, unknown.headers["x-request-id"]) == (404, "typo-1")
    assert unknown.json()["error"] == {
        "code": "route_not_found",
        "message": "/v1/heads/tarin is not a Graft route",
    }
    # However the /v1 is typed; a long path is not echoed whole.
    long = "/v1/" + "x" * 5000
    for path in ("/v1", "//v1/predict", "/V1/predict", long):
        answer = server.post(path, {})
        assert (answer.status_code, answer.json()["error"]["code"]) == (404, "route_not_found")
    assert len(answer.json()["error"]["message"]) < 300
    # Paths outside /v1 are BentoML's to answer, its refusals in Graft's JSON shape (they were
    # plain text); made up, they must not become series either.
    for path in ("/wp-login.php", "/static_content/scan-123", "/readyz/scan-456"):
        outside = httpx.get(f"{server.url}{path}")
        assert (outside.status_code, outside.json()["error"]["code"]) == (404, "route_not_found")
    probe = httpx.put(f"{server.url}/readyz")
    assert (probe.status_code, probe.headers["allow"]) == (405, "GET, HEAD")
    assert probe.json()["error"] == {
        "code": "method_not_allowed",
        "message": "/readyz takes GET, HEAD, not PUT",
    }
    after = samples(server)
    made_up = ("tarin", "x" * 100, "wp-login", "scan-123", "scan-456")
    labelled = {v for _, labels in after for _, v in labels}
    assert not [v for v in labelled if any(part in v for part in made_up)]
    bentoml_404 = {
        "endpoint": "(unknown)",
        "http_response_code": "404",
        "runner_name": "Graft",
        "service_name": "Graft",
        "service_version": "not available",
    }
    bentoml_total = "bentoml_service_request_total"
    counted = value(after, bentoml_total, **bentoml_404) - value(
        before, bentoml_total, **bentoml_404
    )
    # BentoML's own count, the made-up paths as one like Graft's: the 5 under /v1, and 2 of
    # the others (its static files count as "/static_content/").
    assert counted == 5 + 2
    seconds = "graft_request_seconds_count"
    unknown = value(after, seconds, route="(unknown)") - value(before, seconds, route="(unknown)")
    assert unknown == 5
    requests = "graft_requests_total"
    routes = {dict(labels).get("route") for name, labels in after if name == requests}
    assert "/v1/heads/tarin" not in routes and long not in routes
    unknown_404 = {"route": "(unknown)", "status": "404", "tenant": "other"}
    assert value(after, requests, **unknown_404) - value(before, requests, **unknown_404) == 5
    (logged,) = [r for r in server.access_log() if r["request_id"] == "typo-1"]
    assert (logged["route"], logged["status"], logged["error"]) == (
        "(unknown)",
        404,
        "route_not_found",
    )


def test_a_killed_workers_cache_drops_out_of_the_gauge(server, traffic):
    """Last in this module: it kills a worker, which BentoML replaces with an empty cache."""
    answered = {
        (r["pid"], r["tenant"])
        for r in server.access_log()
        if r["route"] == "/v1/predict" and r["status"] == 200
    }
    held = head_bytes(server.home)
    victim = min(pid for pid, _ in answered)
    before = value(samples(server), "graft_head_cache_bytes")
    assert before == sum(held[tenant] for _, tenant in answered)
    os.kill(victim, signal.SIGKILL)
    survivors = sum(held[tenant] for pid, tenant in answered if pid != victim)
    deadline = time.monotonic() + 180  # until the replacement worker has started
    while value(samples(server), "graft_head_cache_bytes") != survivors:
        assert time.monotonic() < deadline, "the killed worker's cache is still counted"
        time.sleep(1)
