"""Hostile and odd input on every endpoint: served correctly or refused with a clean 4xx."""

from __future__ import annotations

import json

import pytest

from tests.integration.conftest import graft_client, registry_snapshot

EXAMPLES = [
    {"text": "my card has not arrived", "label": "card"},
    {"text": "where is my new card", "label": "card"},
    {"text": "what is the exchange rate", "label": "fx"},
    {"text": "how much is a euro in dollars", "label": "fx"},
]
#: A valid body for every endpoint; each case below breaks one field of one of them.
VALID = {
    "/v1/heads/train": {"head": "hostile", "examples": EXAMPLES, "kind": "linear"},
    "/v1/predict": {"head": "target", "inputs": ["where is my card"], "version": None, "top_k": 2},
    "/v1/classify": {"examples": EXAMPLES, "inputs": ["card?"], "kind": "prototype", "top_k": 2},
    "/v1/embed": {"inputs": ["card?"]},
    "/v1/heads/list": {},
    "/v1/heads/get": {"head": "target"},
    "/v1/heads/delete": {"head": "target", "version": 99},
    "/v1/aliases/set": {"head": "target", "alias": "prod", "version": 1},
    "/v1/aliases/delete": {"head": "target", "alias": "nope"},
}
WRONG_VALUES = {
    "string": [5, None, [], {}, True, 1.5],
    "list": ["text", 5, None, {}, [[["deep"]]]],
    "int": ["3", 3.5, None, True, -1, 2**63, [], "NaN"],
}
FIELD_TYPES = {
    "head": "string",
    "alias": "string",
    "kind": "string",
    "examples": "list",
    "inputs": "list",
    "top_k": "int",
    "version": "int",
}


def wrong_field_cases():
    for route, body in VALID.items():
        for field in body:
            for value in WRONG_VALUES[FIELD_TYPES[field]]:
                if field == "version" and value is None:
                    continue  # null is a valid version: the newest
                if route == "/v1/predict" and field == "version" and value == "NaN":
                    continue  # a letter-first string is an alias name there (404 if unknown)
                yield pytest.param(
                    route, {**body, field: value}, field, id=f"{route}-{field}-{value!r}"[:80]
                )


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    home = tmp_path_factory.mktemp("hostile")
    with graft_client(home, max_text_chars="6000") as client:
        trained = client.post("/v1/heads/train", json={"head": "target", "examples": EXAMPLES})
        assert trained.status_code == 200
        yield client, home


def assert_clean_refusal(response, status: int, code: str | None = None) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and body["error"]["message"]
    assert "Traceback" not in response.text
    if code is not None:
        assert body["error"]["code"] == code
    return body["error"]


@pytest.mark.parametrize(("route", "body", "field"), list(wrong_field_cases()))
def test_wrong_types_and_ranges_are_refused(app, route, body, field):
    client, home = app
    before = registry_snapshot(home)
    error = assert_clean_refusal(client.post(route, json=body), 400)
    assert error["code"] in {"invalid_request", "unknown_kind", "invalid_json"}
    assert str(error.get("field", "")).startswith(field), error
    assert registry_snapshot(home) == before


TEXTS = {
    "cjk": "我的新卡还没有到",
    "rtl": "أين بطاقتي الجديدة؟",
    "emoji": "💳 where is it?? 😡😡",
    "combining": "cafe\u0301 ca\u0300rd n\u0303",
    "zero_width": "card\u200b\u200carrived\u200d👩\u200d👩\u200d👧",
    "nul": "card\u0000arrived",
    "controls": "\u0007\u001b[31mred\u001b[0m \u0008\u007f",
    "bidi_override": "\u202eevil\u202c card",
    "astral": "𝔠𝔞𝔯𝔡 𓀀",
    "long_word": "x" * 5000,
}


@pytest.mark.parametrize("name", sorted(TEXTS))
def test_every_kind_of_unicode_is_served(app, name):
    client, _home = app
    text = TEXTS[name]
    predicted = client.post("/v1/predict", json={"head": "target", "inputs": [text, "card"]})
    assert predicted.status_code == 200, predicted.text
    assert [p["label"] in {"card", "fx"} for p in predicted.json()["predictions"]] == [True, True]
    embedded = client.post("/v1/embed", json={"inputs": [text]})
    assert embedded.status_code == 200 and len(embedded.json()["embeddings"][0]) == 384
    examples = [*EXAMPLES, {"text": text, "label": f"odd-{name}"}]
    trained = client.post("/v1/heads/train", json={"head": f"unicode-{name}", "examples": examples})
    assert trained.status_code == 200, trained.text
    assert f"odd-{name}" in trained.json()["labels"]
    classified = client.post("/v1/classify", json={"examples": examples, "inputs": [text]})
    assert classified.status_code == 200


@pytest.mark.parametrize(
    "text", ["\u0000\u0001\u0002", "\u200b\u200c\u200d", " \ufeff\u202e\t", "\u2060"]
)
def test_texts_of_only_invisible_characters_are_refused_like_blank_ones(app, text):
    """The backbone would see no words in them, and every such text would look alike."""
    client, home = app
    before = registry_snapshot(home)
    for route, body, field in (
        ("/v1/predict", {"head": "target", "inputs": ["card", text]}, "inputs.1"),
        ("/v1/embed", {"inputs": [text]}, "inputs.0"),
        (
            "/v1/heads/train",
            {"head": "t", "examples": [*EXAMPLES, {"text": text, "label": "x"}]},
            f"examples.{len(EXAMPLES)}.text",
        ),
    ):
        error = assert_clean_refusal(client.post(route, json=body), 400)
        assert (error["code"], error["field"]) == ("invalid_request", field)
        assert "only whitespace and invisible characters" in error["message"]
    assert registry_snapshot(home) == before


@pytest.mark.parametrize(
    "raw",
    [
        b'{"head": "target", "inputs": ["\\ud800"]}',  # lone high surrogate
        b'{"head": "target", "inputs": ["\\udfff x"]}',  # lone low surrogate
        b'{"head": "target", "inputs": ["a\\ud800\\u0041"]}',
    ],
)
def test_lone_surrogates_are_refused(app, raw):
    client, home = app
    before = registry_snapshot(home)
    response = client.post("/v1/predict", content=raw, headers={"Content-Type": "application/json"})
    assert_clean_refusal(response, 400, "invalid_json")
    assert registry_snapshot(home) == before


def test_paired_surrogate_escapes_are_one_character(app):
    client, _home = app
    raw = b'{"head": "target", "inputs": ["\\ud83d\\ude00 card"]}'
    response = client.post("/v1/predict", content=raw, headers={"Content-Type": "application/json"})
    assert response.status_code == 200


@pytest.mark.parametrize("route", sorted(VALID))
@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (b"[]", "invalid_request"),
        (b'"just a string"', "invalid_request"),
        (b"42", "invalid_request"),
        (b"null", "invalid_request"),
        (b"{", "invalid_json"),
        (b'{"head": "target",}', "invalid_json"),
        (b"\xff\xfe{}", "invalid_json"),
        (b'{"inputs": ' + b"[" * 3000 + b"]" * 3000 + b"}", "invalid_json"),
        (b'{"top_k": NaN, "head": "target", "inputs": ["x"]}', None),
        (b'{"top_k": Infinity, "head": "target", "inputs": ["x"]}', None),
    ],
)
def test_malformed_bodies_on_every_route(app, route, raw, code):
    client, home = app
    before = registry_snapshot(home)
    response = client.post(route, content=raw, headers={"Content-Type": "application/json"})
    assert_clean_refusal(response, 400, code)
    assert registry_snapshot(home) == before


def test_duplicates_and_conflicts_train_with_warnings(app):
    client, _home = app
    examples = [*EXAMPLES, EXAMPLES[0], EXAMPLES[0], {"text": EXAMPLES[2]["text"], "label": "card"}]
    response = client.post("/v1/heads/train", json={"head": "messy", "examples": examples})
    assert response.status_code == 200
    warnings = response.json()["report"]["warnings"]
    assert "2 duplicated example(s) (same input, same label)" in warnings
    assert "1 input(s) appear under more than one label" in warnings


@pytest.mark.parametrize(
    "head",
    ["x'; DROP TABLE heads;--", "../../etc/passwd", "a b", "ünïcode", "", "a" * 65, "name\u0000"],
)
def test_names_that_could_be_syntax_are_refused(app, head):
    client, home = app
    before = registry_snapshot(home)
    for route in ("/v1/heads/train", "/v1/predict", "/v1/heads/get"):
        body = {**VALID[route], "head": head}
        error = assert_clean_refusal(client.post(route, json=body), 400, "invalid_request")
        assert error["field"] == "head"
    assert registry_snapshot(home) == before


def test_content_type_with_parameters_is_json(app):
    client, _home = app
    body = json.dumps({"head": "target", "inputs": ["card"]}).encode()
    response = client.post(
        "/v1/predict", content=body, headers={"Content-Type": "application/json; charset=utf-8"}
    )
    assert response.status_code == 200


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "PATCH"])
def test_other_methods_are_refused_with_allow(app, method):
    client, home = app
    before = registry_snapshot(home)
    response = client.request(method, "/v1/heads/train", json=VALID["/v1/heads/train"])
    assert_clean_refusal(response, 405, "method_not_allowed")
    assert response.headers["allow"] == "POST"
    assert registry_snapshot(home) == before


PNG = "iVBORw0KGgo="  # an image input's shape is enough: the modality is refused before decoding


@pytest.mark.parametrize(
    ("route", "body", "field"),
    [
        ("/v1/predict", {"head": "target", "inputs": ["card?", {"image": PNG}]}, "inputs.1"),
        ("/v1/embed", {"inputs": [{"image": PNG}]}, "inputs.0"),
        ("/v1/classify", {"examples": EXAMPLES, "inputs": [{"image": PNG}]}, "inputs.0"),
        (
            "/v1/heads/train",
            {"head": "hostile", "examples": [*EXAMPLES, {"image": PNG, "label": "card"}]},
            "examples.4.image",
        ),
    ],
)
def test_an_image_sent_to_the_text_backbone_is_refused(app, route, body, field):
    client, home = app
    before = registry_snapshot(home)
    error = assert_clean_refusal(client.post(route, json=body), 400, "invalid_input")
    assert error["field"] == field
    assert "GRAFT_BACKBONE_KIND=text" in error["message"]
    assert registry_snapshot(home) == before


def test_an_example_shaped_input_is_told_what_an_input_is(app):
    client, home = app
    before = registry_snapshot(home)
    response = client.post("/v1/predict", json={"head": "target", "inputs": [{"text": "card?"}]})
    error = assert_clean_refusal(response, 400, "invalid_request")
    assert error["field"] == "inputs.0"
    assert "plain text string" in error["message"] and "'text'" in error["message"]
    assert registry_snapshot(home) == before


@pytest.mark.parametrize(
    ("route", "body", "field", "hint"),
    [
        (
            "/v1/predict",
            {"head": "target", "inputs": ["card?"], "abstain": 0.5},
            "abstain",
            "did you mean 'abstain_threshold'?",
        ),
        (
            "/v1/heads/train",
            {"head": "hostile", "examples": [*EXAMPLES, {"text": "card?", "intent": "card"}]},
            "examples.4.intent",
            "(this object takes text, image, label, labels, out_of_scope)",
        ),
        (
            "/v1/heads/train",
            {"head": "hostile", "examples": EXAMPLES, "descriptions": {"card": "my card"}},
            "descriptions",
            "did you mean 'label_descriptions'?",
        ),
        (
            "/v1/heads/train",
            {"head": "hostile", "examples": EXAMPLES, "abstain_threshold": 0.5},
            "abstain_threshold",
            "did you mean 'abstain'?",
        ),
        (
            "/v1/heads/train",
            {"head": "hostile", "examples": EXAMPLES, "": 1},
            "",
            "(this object takes head, examples, kind, abstain, base_version, label_descriptions)",
        ),
        ("/v1/heads/list", {"heads": []}, "heads", "(this object takes no fields: send {})"),
    ],
)
def test_an_unknown_field_is_told_what_its_object_takes(app, route, body, field, hint):
    client, home = app
    before = registry_snapshot(home)
    error = assert_clean_refusal(client.post(route, json=body), 400, "invalid_request")
    assert error["field"] == field
    assert "Extra inputs are not permitted" in error["message"] and hint in error["message"]
    assert field or "did you mean" not in error["message"]  # "" is part of every name
    assert registry_snapshot(home) == before
