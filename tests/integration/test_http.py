"""Every endpoint and every caller mistake over HTTP, with exact statuses and error codes."""

from __future__ import annotations

import pytest

from bench.datasets import banking77, few_shot
from tests.integration.conftest import registry_snapshot

SENTIMENT = [
    {"text": "I love this, it works perfectly", "label": "positive"},
    {"text": "Absolutely wonderful service, thank you", "label": "positive"},
    {"text": "Great app, very happy with it", "label": "positive"},
    {"text": "This is terrible and broken", "label": "negative"},
    {"text": "Awful experience, I want my money back", "label": "negative"},
    {"text": "Worst support I have ever had", "label": "negative"},
]


def train(client, head="sentiment", examples=SENTIMENT, tenant="default", **extra):
    body = {"head": head, "examples": examples, **extra}
    return client.post("/v1/heads/train", json=body, headers={"X-Tenant-ID": tenant})


def predict(client, head="sentiment", inputs=("what a great day",), tenant="default", **extra):
    body = {"head": head, "inputs": list(inputs), **extra}
    return client.post("/v1/predict", json=body, headers={"X-Tenant-ID": tenant})


def error_of(response) -> dict:
    body = response.json()
    assert set(body) == {"error"}, body
    return body["error"]


@pytest.fixture(scope="module")
def intents(client):
    """A 77-label banking77 head (5 per label) trained once for the module."""
    rows = few_shot(banking77("train"), per_label=5, seed=1)
    response = train(
        client, "intents", [{"text": r.text, "label": r.label} for r in rows], tenant="bank"
    )
    assert response.status_code == 200, response.text
    return response.json()


def test_train_answers_version_labels_and_report(client):
    response = train(client, "report-check")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["head"] == "report-check"
    assert body["version"] == 1
    assert body["kind"] == "linear"
    assert body["labels"] == ["negative", "positive"]
    assert body["n_examples"] == 6
    assert body["train_ms"] > 0
    assert body["backbone"]["name"] == "all-MiniLM-L6-v2"
    assert body["backbone"]["fingerprint"].startswith("sha256:")
    assert body["backbone"]["dim"] == 384
    assert body["report"]["examples_per_label"] == {"negative": 3, "positive": 3}
    assert body["report"]["train_accuracy"] == 1.0
    assert body["report"]["warnings"] == []


def test_predict_labels_real_sentences(client):
    assert train(client, "sentiment-predict").status_code == 200
    response = predict(
        client,
        "sentiment-predict",
        ["I am so happy with this", "this is broken and useless"],
        top_k=5,
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["head"], body["version"]) == ("sentiment-predict", 1)
    first, second = body["predictions"]
    assert first["label"] == "positive"
    assert second["label"] == "negative"
    for prediction in body["predictions"]:
        assert prediction["abstained"] is False
        assert len(prediction["top"]) == 2  # top_k is capped at the number of labels
        assert sum(t["score"] for t in prediction["top"]) == pytest.approx(1.0, abs=1e-5)
        assert prediction["score"] == prediction["top"][0]["score"]


def test_banking77_head_gets_held_out_intents(client, intents):
    response = predict(
        client,
        "intents",
        ["My card still hasn't arrived, it's been two weeks", "How do I top up using Apple Pay?"],
        tenant="bank",
        top_k=3,
    )
    assert response.status_code == 200, response.text
    labels = [p["label"] for p in response.json()["predictions"]]
    assert labels == ["card_arrival", "apple_pay_or_google_pay"]
    scores = [t["score"] for t in response.json()["predictions"][0]["top"]]
    assert scores == sorted(scores, reverse=True)


def test_retraining_makes_version_two_and_old_stays_readable(client):
    assert train(client, "versions").json()["version"] == 1
    assert train(client, "versions", kind="prototype").json()["version"] == 2
    assert predict(client, "versions").json()["version"] == 2
    assert predict(client, "versions", version=1).json()["version"] == 1
    listed = client.post("/v1/heads/get", json={"head": "versions"}).json()
    assert [v["kind"] for v in listed["versions"]] == ["linear", "prototype"]
    assert listed["latest_version"] == 2


def test_prototype_head_learns_from_one_example_per_label(client):
    examples = [
        {"text": "my card has not arrived yet", "label": "card_arrival"},
        {"text": "what is the exchange rate for euros", "label": "exchange_rate"},
    ]
    response = train(client, "one-shot", examples, kind="prototype")
    assert response.status_code == 200, response.text
    got = predict(client, "one-shot", ["when will my new card be delivered?"]).json()
    assert got["predictions"][0]["label"] == "card_arrival"


def test_list_get_delete(client):
    train(client, "listed", tenant="lister")
    train(client, "listed", tenant="lister")
    train(client, "other", tenant="lister")
    heads = client.post("/v1/heads/list", json={}, headers={"X-Tenant-ID": "lister"}).json()[
        "heads"
    ]
    assert [(h["head"], h["latest_version"]) for h in heads] == [("listed", 2), ("other", 1)]
    version = heads[0]["versions"][0]
    assert set(version) >= {"version", "kind", "labels", "created", "report", "n_examples"}
    deleted = client.post(
        "/v1/heads/delete", json={"head": "listed", "version": 1}, headers={"X-Tenant-ID": "lister"}
    )
    assert deleted.json() == {"head": "listed", "deleted_versions": [1]}
    assert predict(client, "listed", tenant="lister").json()["version"] == 2
    gone = predict(client, "listed", tenant="lister", version=1)
    assert (gone.status_code, error_of(gone)["code"]) == (404, "version_not_found")
    whole = client.post(
        "/v1/heads/delete", json={"head": "listed"}, headers={"X-Tenant-ID": "lister"}
    )
    assert whole.json()["deleted_versions"] == [2]
    assert error_of(predict(client, "listed", tenant="lister"))["code"] == "head_not_found"


def test_tenants_cannot_see_each_others_heads(client):
    assert train(client, "shared-name", tenant="alice").status_code == 200
    for response in (
        predict(client, "shared-name", tenant="bob"),
        client.post("/v1/heads/get", json={"head": "shared-name"}, headers={"X-Tenant-ID": "bob"}),
        client.post(
            "/v1/heads/delete", json={"head": "shared-name"}, headers={"X-Tenant-ID": "bob"}
        ),
    ):
        assert response.status_code == 404
        assert error_of(response) == {
            "code": "head_not_found",
            "message": "no head named 'shared-name'",
            "field": "head",
        }
    listed = client.post("/v1/heads/list", json={}, headers={"X-Tenant-ID": "bob"}).json()
    assert listed == {"heads": []}
    # Both may own a head of the same name; each sees only its own.
    assert train(client, "shared-name", tenant="bob", kind="prototype").json()["version"] == 1
    assert predict(client, "shared-name", tenant="alice").json()["version"] == 1
    alice = client.post(
        "/v1/heads/get", json={"head": "shared-name"}, headers={"X-Tenant-ID": "alice"}
    )
    assert alice.json()["versions"][0]["kind"] == "linear"


def test_classify_trains_in_memory_and_stores_nothing(client, home):
    before = registry_snapshot(home)
    response = client.post(
        "/v1/classify",
        json={"examples": SENTIMENT, "inputs": ["wonderful, I love it", "broken garbage"]},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["kind"] == "prototype"
    assert [p["label"] for p in body["predictions"]] == ["positive", "negative"]
    assert registry_snapshot(home) == before


def test_embed_returns_normalised_vectors(client):
    response = client.post("/v1/embed", json={"inputs": ["hello world", "another sentence"]})
    assert response.status_code == 200
    body = response.json()
    assert len(body["embeddings"]) == 2
    for vector in body["embeddings"]:
        assert len(vector) == 384
        assert sum(x * x for x in vector) == pytest.approx(1.0, abs=1e-4)


def test_long_texts_are_truncated_not_refused(client):
    long_text = "my card has not arrived " * 80  # about 480 tokens, within 2,000 characters
    assert (
        train(
            client, "long-text", [*SENTIMENT, {"text": long_text, "label": "negative"}]
        ).status_code
        == 200
    )
    assert predict(client, "long-text", [long_text]).status_code == 200


def test_warnings_for_duplicates_and_conflicts(client):
    examples = [*SENTIMENT, SENTIMENT[0], {"text": SENTIMENT[1]["text"], "label": "negative"}]
    response = train(client, "warned", examples)
    assert response.status_code == 200
    warnings = response.json()["report"]["warnings"]
    assert "1 duplicated example(s) (same input, same label)" in warnings
    assert "1 input(s) appear under more than one label" in warnings


def test_a_warning_for_labels_that_differ_only_in_case_or_spaces(client):
    """A stray space in a file splits a label in two, and every table shows the two alike."""
    examples = [*SENTIMENT, {"text": "not bad at all", "label": "positive "}]
    examples.append({"text": "quite good really", "label": "Positive"})
    response = train(client, "lookalikes", examples)
    assert response.status_code == 200
    assert sorted(response.json()["labels"]) == ["Positive", "negative", "positive", "positive "]
    warning = "labels that differ only in case or spaces: 'Positive' and 'positive' and 'positive '"
    assert warning in response.json()["report"]["warnings"]


# -- caller mistakes: exact status, code and field, and the registry untouched ----------------

BAD_TRAIN = [
    ({"head": "x"}, 400, "invalid_request", "examples"),
    ({"head": "x", "examples": []}, 400, "invalid_request", "examples"),
    (
        {"head": "x", "examples": [{"text": "a", "label": "one"}]},
        400,
        "invalid_examples",
        "examples",
    ),
    (
        {"head": "x", "examples": [{"text": " \t", "label": "a"}]},
        400,
        "invalid_request",
        "examples.0.text",
    ),
    (  # zero-width space, joiner and a direction mark: the backbone would see no words
        {"head": "x", "examples": [*SENTIMENT, {"text": "\u200b\u200d \u202e", "label": "a"}]},
        400,
        "invalid_request",
        f"examples.{len(SENTIMENT)}.text",
    ),
    (
        {"head": "x", "examples": [{"text": 7, "label": "a"}]},
        400,
        "invalid_request",
        "examples.0.text",
    ),
    (
        {"head": "x", "examples": [{"text": "a", "label": None}]},
        400,
        "invalid_request",
        "examples.0.label",
    ),
    ({"head": "x", "examples": SENTIMENT, "kind": "forest"}, 400, "unknown_kind", "kind"),
    ({"head": "../etc", "examples": SENTIMENT}, 400, "invalid_request", "head"),
    ({"head": "x" * 65, "examples": SENTIMENT}, 400, "invalid_request", "head"),
    ({"head": "x", "examples": SENTIMENT, "epochs": 3}, 400, "invalid_request", "epochs"),
    (
        {"head": "x", "examples": [{"text": "a" * 2001, "label": "a"}, *SENTIMENT]},
        400,
        "limit_exceeded",
        "examples.0.text",
    ),
]


@pytest.mark.parametrize(("body", "status", "code", "field"), BAD_TRAIN)
def test_bad_train_requests(client, home, body, status, code, field):
    before = registry_snapshot(home)
    response = client.post("/v1/heads/train", json=body)
    assert response.status_code == status, response.text
    error = error_of(response)
    assert (error["code"], error.get("field")) == (code, field)
    assert error["message"]
    assert registry_snapshot(home) == before


BAD_PREDICT = [
    ({"head": "sentiment", "inputs": []}, 400, "invalid_request", "inputs"),
    ({"head": "sentiment", "inputs": [""]}, 400, "invalid_request", "inputs.0"),
    ({"head": "sentiment", "inputs": ["ok", 3]}, 400, "invalid_request", "inputs.1"),
    ({"head": "sentiment", "inputs": ["ok", "\ufeff\u200c"]}, 400, "invalid_request", "inputs.1"),
    ({"head": "sentiment", "inputs": "not a list"}, 400, "invalid_request", "inputs"),
    ({"head": "sentiment", "inputs": ["ok"], "top_k": 0}, 400, "invalid_request", "top_k"),
    ({"head": "sentiment", "inputs": ["ok"], "top_k": "3"}, 400, "invalid_request", "top_k"),
    ({"head": "sentiment", "inputs": ["ok"], "version": 0}, 400, "invalid_request", "version"),
    ({"head": "sentiment", "inputs": ["ok"] * 17}, 400, "limit_exceeded", "inputs"),
    ({"head": "no-such-head", "inputs": ["ok"]}, 404, "head_not_found", "head"),
    ({"head": "sentiment", "inputs": ["ok"], "version": 99}, 404, "version_not_found", "version"),
    (
        {"head": "sentiment", "inputs": ["ok"], "version": "production"},
        404,
        "alias_not_found",
        "version",
    ),
]


@pytest.mark.parametrize(("body", "status", "code", "field"), BAD_PREDICT)
def test_bad_predict_requests(client, home, body, status, code, field):
    assert train(client, "sentiment").status_code == 200
    before = registry_snapshot(home)
    response = client.post("/v1/predict", json=body)
    assert response.status_code == status, response.text
    error = error_of(response)
    assert (error["code"], error.get("field")) == (code, field)
    assert registry_snapshot(home) == before


def test_limit_errors_name_the_limit(client):
    response = client.post("/v1/predict", json={"head": "sentiment", "inputs": ["ok"] * 17})
    assert error_of(response) == {
        "code": "limit_exceeded",
        "message": "17 inputs in one call; the limit (GRAFT_MAX_INPUTS) is 16",
        "field": "inputs",
        "limit": "GRAFT_MAX_INPUTS",
        "value": 16,
    }


@pytest.mark.parametrize(
    ("content", "content_type", "status", "code"),
    [
        (b"{not json", "application/json", 400, "invalid_json"),
        (b"[1, 2]", "application/json", 400, "invalid_request"),
        (b'{"head": "x", "inputs": ["\\ud800"]}', "application/json", 400, "invalid_json"),
        (b"[" * 5000 + b"]" * 5000, "application/json", 400, "invalid_json"),
        (b"head=x", "application/x-www-form-urlencoded", 415, "unsupported_media_type"),
        (b"head=x", "text/plain", 415, "unsupported_media_type"),
    ],
)
def test_malformed_bodies(client, home, content, content_type, status, code):
    before = registry_snapshot(home)
    response = client.post(
        "/v1/heads/train", content=content, headers={"Content-Type": content_type}
    )
    assert response.status_code == status, response.text
    assert error_of(response)["code"] == code
    assert registry_snapshot(home) == before


def test_oversized_body_is_refused_before_parsing(client, home):
    before = registry_snapshot(home)
    body = b'{"head": "x", "examples": [' + b'{"text": "abc", "label": "a"},' * 9000 + b"]}"
    response = client.post(
        "/v1/heads/train", content=body, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 413
    assert error_of(response) == {
        "code": "payload_too_large",
        "message": f"the request body has {len(body)} bytes or more; "
        "the limit (GRAFT_MAX_BODY_BYTES) is 200000",
        "limit": "GRAFT_MAX_BODY_BYTES",
        "value": 200000,
    }
    assert registry_snapshot(home) == before


def test_bad_tenant_header(client):
    response = predict(client, tenant="../../etc/passwd")
    assert response.status_code == 400
    assert error_of(response)["field"] == "X-Tenant-ID"


def test_every_response_has_a_request_id(client):
    echoed = client.post("/v1/heads/list", json={}, headers={"X-Request-ID": "trace-123"})
    assert echoed.headers["x-request-id"] == "trace-123"
    fresh = client.post("/v1/heads/list", json={})
    assert len(fresh.headers["x-request-id"]) == 32


def test_readyz_once_loaded(client):
    assert client.get("/readyz").status_code == 200


def test_aliases_pin_move_and_roll_back(client, home):
    tenant = {"X-Tenant-ID": "aliaser"}
    for kind in ("linear", "prototype", "linear"):
        assert train(client, "pinned", tenant="aliaser", kind=kind).status_code == 200

    def alias(version):
        body = {"head": "pinned", "alias": "production", "version": version}
        return client.post("/v1/aliases/set", json=body, headers=tenant)

    assert alias(1).json() == {
        "head": "pinned",
        "alias": "production",
        "version": 1,
        "previous": None,
    }
    assert predict(client, "pinned", tenant="aliaser", version="production").json()["version"] == 1
    assert alias(2).json()["previous"] == 1  # moved: the next predict follows it
    assert predict(client, "pinned", tenant="aliaser", version="production").json()["version"] == 2
    assert alias(1).json()["previous"] == 2  # rolling back is moving the alias
    assert predict(client, "pinned", tenant="aliaser", version="production").json()["version"] == 1
    assert predict(client, "pinned", tenant="aliaser").json()["version"] == 3  # newest, unaliased
    got = client.post("/v1/heads/get", json={"head": "pinned"}, headers=tenant).json()
    assert got["aliases"] == {"production": 1}
    assert got["versions"][0]["aliases"] == ["production"]

    before = registry_snapshot(home)
    pinned = client.post("/v1/heads/delete", json={"head": "pinned", "version": 1}, headers=tenant)
    assert (pinned.status_code, error_of(pinned)["code"]) == (409, "version_in_use")
    missing = alias(9)
    assert (missing.status_code, error_of(missing)["code"]) == (404, "version_not_found")
    other = client.post(
        "/v1/aliases/set",
        json={"head": "pinned", "alias": "production", "version": 1},
        headers={"X-Tenant-ID": "intruder"},
    )
    assert (other.status_code, error_of(other)["code"]) == (404, "head_not_found")
    bad = client.post(
        "/v1/aliases/set", json={"head": "pinned", "alias": "1st", "version": 1}, headers=tenant
    )
    assert (bad.status_code, error_of(bad)["field"]) == (400, "alias")
    assert registry_snapshot(home) == before

    removed = client.post(
        "/v1/aliases/delete", json={"head": "pinned", "alias": "production"}, headers=tenant
    )
    assert removed.json() == {
        "head": "pinned",
        "alias": "production",
        "version": None,
        "previous": 1,
    }
    gone = predict(client, "pinned", tenant="aliaser", version="production")
    assert (gone.status_code, error_of(gone)["code"]) == (404, "alias_not_found")
