"""Training jobs over HTTP in-process: run to a version, fail with a reason, cancel, stay scoped."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from prometheus_client import REGISTRY

from bench.datasets import banking77, few_shot

SENTIMENT = [
    {"text": "I love this, it works perfectly", "label": "positive"},
    {"text": "Absolutely wonderful service, thank you", "label": "positive"},
    {"text": "Great app, very happy with it", "label": "positive"},
    {"text": "This is terrible and broken", "label": "negative"},
    {"text": "Awful experience, I want my money back", "label": "negative"},
    {"text": "Worst support I have ever had", "label": "negative"},
]
FINISHED = {"succeeded", "failed", "cancelled"}


@pytest.fixture
def client(jobs_client):
    return jobs_client


def post(client, path: str, body: dict[str, Any], tenant: str = "acme"):
    return client.post(path, json=body, headers={"X-Tenant-ID": tenant})


def wait_for(
    client,
    job: str,
    until: Callable[[dict[str, Any]], bool] = lambda s: s["status"] in FINISHED,
    tenant: str = "acme",
    timeout: float = 120.0,
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        state = post(client, "/v1/jobs/get", {"job": job}, tenant)
        assert state.status_code == 200, state.text
        if until(state.json()):
            return state.json()
        assert time.monotonic() < deadline, state.json()
        time.sleep(0.1)


def jobs_total(status: str) -> float:
    """In this process's own registry: an in-process app's /metrics needs BentoML's
    multiprocess directory, which only a real server sets up (tests/e2e check /metrics)."""
    return REGISTRY.get_sample_value("graft_jobs_total", {"status": status}) or 0.0


def banking_examples(count: int) -> list[dict[str, str]]:
    return [{"text": r.text, "label": r.label} for r in banking77("train")[:count]]


def test_a_job_registers_a_version_that_serves(client):
    started = post(client, "/v1/jobs/train", {"head": "mood", "examples": SENTIMENT})
    assert started.status_code == 200, started.text
    assert started.json()["status"] in {"queued", "running"}
    assert started.json()["n_examples"] == 6
    done = wait_for(client, started.json()["job"])
    assert done["status"] == "succeeded", done
    assert (done["version"], done["progress"]) == (1, {"phase": "done", "fraction": 1.0})
    assert done["error"] is None
    result = done["result"]
    assert (result["head"], result["version"], result["labels"]) == (
        "mood",
        1,
        ["negative", "positive"],
    )
    assert result["report"]["train_accuracy"] == 1.0
    assert result["backbone"]["name"] == "all-MiniLM-L6-v2"
    predicted = post(client, "/v1/predict", {"head": "mood", "inputs": ["what a lovely day"]})
    assert predicted.json()["version"] == 1
    assert predicted.json()["predictions"][0]["label"] == "positive"

    again = post(client, "/v1/jobs/cancel", {"job": done["job"]})
    assert (again.status_code, again.json()["error"]["code"]) == (409, "job_finished")
    assert again.json()["error"]["message"] == f"job {done['job']} has finished (succeeded)"


@pytest.mark.parametrize("kind", ["tuned", "hybrid", "matching"])
def test_heads_that_read_more_than_features_train_as_jobs_and_serve(client, kind):
    """The job path embeds chunk by chunk; a tuned or matching head's chunks are token states,
    and a hybrid head learns from the texts as well."""
    intents = {"card_arrival", "exchange_rate", "change_pin", "top_up_failed", "age_limit"}
    drawn = few_shot([r for r in banking77("train") if r.label in intents], per_label=30, seed=0)
    examples = [{"text": r.text, "label": r.label} for r in drawn]  # 150: three embed chunks
    started = post(
        client, "/v1/jobs/train", {"head": f"{kind}-job", "examples": examples, "kind": kind}
    )
    assert started.status_code == 200, started.text
    done = wait_for(client, started.json()["job"])
    assert done["status"] == "succeeded", done
    assert done["result"]["kind"] == kind
    picked = examples[::6]  # 25, every intent
    texts = [e["text"] for e in picked]
    predicted = post(client, "/v1/predict", {"head": f"{kind}-job", "inputs": texts, "top_k": 1})
    labels = [p["label"] for p in predicted.json()["predictions"]]
    # Its own training sentences, back from a head that learnt them: all but a few right.
    assert sum(label == e["label"] for label, e in zip(labels, picked, strict=True)) >= 23


def test_bad_examples_are_refused_at_once_or_fail_the_job_with_the_error_code(client):
    one_label = [{"text": "hello there", "label": "greeting"}, {"text": "hi", "label": "greeting"}]
    for kind, named in (("linear", "a linear head"), ("auto", "an auto head")):
        body = {"head": "lonely", "examples": one_label, "kind": kind}
        refused = post(client, "/v1/jobs/train", body)
        assert (refused.status_code, refused.json()["error"]["code"]) == (400, "invalid_examples")
        assert f"{named} needs at least 2 distinct labels, got 1" in refused.text
    # What needs a base version is checked when the job runs: it fails, saying why.
    body = {"head": "lonely", "examples": SENTIMENT, "base_version": 5}
    done = wait_for(client, post(client, "/v1/jobs/train", body).json()["job"])
    assert (done["status"], done["error"]["code"]) == ("failed", "head_not_found")
    assert (done["version"], done["result"]) == (None, None)


def test_limits_and_schema_refuse_at_once(client):
    too_many = post(client, "/v1/jobs/train", {"head": "big", "examples": banking_examples(1001)})
    assert (too_many.status_code, too_many.json()["error"]["limit"]) == (400, "GRAFT_MAX_EXAMPLES")
    bad_id = post(client, "/v1/jobs/get", {"job": "../../etc"})
    assert (bad_id.status_code, bad_id.json()["error"]["field"]) == (400, "job")
    assert "a job id is the 32 hexadecimal characters" in bad_id.json()["error"]["message"]


def test_another_tenants_job_is_not_found(client):
    started = post(client, "/v1/jobs/train", {"head": "private", "examples": SENTIMENT})
    job = started.json()["job"]
    for path in ("/v1/jobs/get", "/v1/jobs/cancel"):
        response = post(client, path, {"job": job}, tenant="globex")
        assert (response.status_code, response.json()["error"]["code"]) == (404, "job_not_found")
    assert wait_for(client, job)["status"] == "succeeded"


def test_jobs_list_the_tenants_own_newest_first_and_filter(client):
    def listed(tenant: str = "lister", **body: Any) -> list[dict[str, Any]]:
        response = post(client, "/v1/jobs/list", body, tenant=tenant)
        assert response.status_code == 200, response.text
        return response.json()["jobs"]

    assert listed() == []
    started = []
    for head in ("first", "second", "first"):
        job = post(client, "/v1/jobs/train", {"head": head, "examples": SENTIMENT}, tenant="lister")
        started.append(job.json()["job"])
        wait_for(client, started[-1], tenant="lister")
    assert [j["job"] for j in listed()] == started[::-1]
    assert [(j["head"], j["version"]) for j in listed(head="first")] == [("first", 2), ("first", 1)]
    assert [j["job"] for j in listed(limit=1)] == [started[-1]]
    assert all(j["result"] is None for j in listed())  # /v1/jobs/get has it
    one = post(client, "/v1/jobs/get", {"job": started[0].upper()}, tenant="lister").json()
    assert one["result"]["version"] == 1  # hexadecimal in either case
    assert listed(status="failed") == []
    assert [j["status"] for j in listed(status="succeeded")] == ["succeeded"] * 3
    assert not {j["job"] for j in listed("globex")} & set(started)  # another tenant's: unseen
    bad = post(client, "/v1/jobs/list", {"status": "done"}, tenant="lister")
    assert (bad.status_code, bad.json()["error"]["field"]) == (400, "status")


def test_cancel_stops_running_and_queued_jobs_and_registers_nothing(client):
    cancelled_before = jobs_total("cancelled")
    body = {"head": "slow", "examples": banking_examples(600)}
    running = post(client, "/v1/jobs/train", body).json()["job"]
    queued = post(client, "/v1/jobs/train", {**body, "head": "slower"}).json()["job"]
    refused = post(client, "/v1/jobs/train", {**body, "head": "slowest"})
    assert (refused.status_code, refused.json()["error"]["code"]) == (503, "unavailable")
    assert "GRAFT_MAX_QUEUED_JOBS" in refused.json()["error"]["message"]

    assert post(client, "/v1/jobs/get", {"job": queued}).json()["status"] == "queued"
    assert post(client, "/v1/jobs/cancel", {"job": queued}).json()["status"] == "cancelled"
    # The cancelled job gave its place in the queue back: another is taken at once.
    again = post(client, "/v1/jobs/train", {**body, "head": "slowest"})
    assert again.status_code == 200, again.text
    assert post(client, "/v1/jobs/cancel", {"job": again.json()["job"]}).status_code == 200
    midway = wait_for(client, running, lambda s: s["progress"]["fraction"] > 0)
    assert (midway["status"], midway["progress"]["phase"]) == ("running", "embedding")
    stopped = post(client, "/v1/jobs/cancel", {"job": running})
    assert stopped.json()["status"] == "cancelled"

    deadline = time.monotonic() + 60  # all runner tasks end (the queued ones never start)
    while jobs_total("cancelled") < cancelled_before + 3:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    final = post(client, "/v1/jobs/get", {"job": running}).json()
    assert final["status"] == "cancelled"
    assert final["progress"]["fraction"] < 1.0  # it stopped embedding, did not finish
    for head in ("slow", "slower", "slowest"):
        missing = post(client, "/v1/heads/get", {"head": head})
        assert missing.json()["error"]["code"] == "head_not_found"


@contextlib.contextmanager
def logged(name: str) -> Iterator[list[logging.LogRecord]]:
    """The records logger ``name`` emits within the block."""
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    logging.getLogger(name).addHandler(handler)
    try:
        yield records
    finally:
        logging.getLogger(name).removeHandler(handler)


def test_cancel_during_fitting_stops_the_fit_itself(client):
    """The fit stops at its next step (a fold, an epoch), not when it would have ended."""
    with logged("graft.training") as records:
        body = {"head": "long-fit", "kind": "tuned", "examples": banking_examples(600)}
        job = post(client, "/v1/jobs/train", body).json()["job"]
        # The fit reports its share done after each fold (of 5, plus 4 epochs' final fit).
        fitting = wait_for(
            client, job, lambda s: s["progress"]["phase"] == "fitting" and s["progress"]["fraction"]
        )
        assert 0 < fitting["progress"]["fraction"] < 1
        assert post(client, "/v1/jobs/cancel", {"job": job}).json()["status"] == "cancelled"
        deadline = time.monotonic() + 60
        while not any(r.getMessage().startswith("training stopped part-way") for r in records):
            assert time.monotonic() < deadline, "the fit ran on after its job was cancelled"
            time.sleep(0.05)
    assert [getattr(r, "kind", None) for r in records] == ["tuned"]
    assert wait_for(client, job)["status"] == "cancelled"
    missing = post(client, "/v1/heads/get", {"head": "long-fit"})
    assert missing.json()["error"]["code"] == "head_not_found"


def test_payload_logging_puts_bodies_in_the_access_log_when_enabled(client):
    with logged("graft.access") as records:
        post(client, "/v1/predict", {"head": "mood", "inputs": ["a very particular sentence"]})
    (record,) = records
    assert "a very particular sentence" in record.body  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("body", "head"),
    [
        ({"head": "mood", "inputs": []}, "mood"),  # refused by validation: the head is still named
        ({"head": "no such/name", "inputs": ["x"]}, None),  # an invalid name is not echoed
        (["not", "an", "object"], None),
    ],
)
def test_the_access_log_names_the_head_of_a_refused_call(client, body, head):
    with logged("graft.access") as records:
        refused = post(client, "/v1/predict", body)
    assert refused.status_code == 400
    (record,) = records
    assert (record.head, record.error) == (head, refused.json()["error"]["code"])  # type: ignore[attr-defined]
