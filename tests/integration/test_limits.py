"""Every configurable limit: refused with its name and value, nothing stored."""

from __future__ import annotations

import pytest

from tests.integration.conftest import graft_client, registry_snapshot

LIMITS = {
    "max_inputs": "3",
    "max_examples": "12",
    "max_labels": "3",
    "max_text_chars": "40",
    "max_heads_per_tenant": "2",
    "max_versions_per_head": "2",
    "max_body_bytes": "4096",
}


def examples(labels: int, per_label: int = 2) -> list[dict[str, str]]:
    return [
        {"text": f"example {i} of label {label}", "label": f"label-{label}"}
        for label in range(labels)
        for i in range(per_label)
    ]


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    home = tmp_path_factory.mktemp("limits")
    with graft_client(home, **LIMITS) as client:
        yield client, home


@pytest.mark.parametrize(
    ("route", "body", "limit", "value", "field"),
    [
        ("/v1/embed", {"inputs": ["a"] * 4}, "GRAFT_MAX_INPUTS", 3, "inputs"),
        (
            "/v1/classify",
            {"examples": examples(2), "inputs": ["a"] * 4},
            "GRAFT_MAX_INPUTS",
            3,
            "inputs",
        ),
        (
            "/v1/heads/train",
            {"head": "h", "examples": examples(2, 7)},
            "GRAFT_MAX_EXAMPLES",
            12,
            "examples",
        ),
        (
            "/v1/heads/train",
            {"head": "h", "examples": examples(4)},
            "GRAFT_MAX_LABELS",
            3,
            "examples",
        ),
        (
            "/v1/classify",
            {"examples": examples(4), "inputs": ["a"]},
            "GRAFT_MAX_LABELS",
            3,
            "examples",
        ),
        ("/v1/embed", {"inputs": ["x" * 41]}, "GRAFT_MAX_TEXT_CHARS", 40, "inputs.0"),
        (
            "/v1/heads/train",
            {"head": "h", "examples": [{"text": "y" * 41, "label": "a"}, *examples(2)]},
            "GRAFT_MAX_TEXT_CHARS",
            40,
            "examples.0.text",
        ),
        (
            "/v1/heads/train",
            {"head": "h", "examples": examples(2), "label_descriptions": {"label-1": "z" * 41}},
            "GRAFT_MAX_TEXT_CHARS",
            40,
            "label_descriptions.label-1",
        ),
    ],
)
def test_request_limits(small, route, body, limit, value, field):
    client, home = small
    before = registry_snapshot(home)
    response = client.post(route, json=body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert (error["code"], error["limit"], error["value"], error["field"]) == (
        "limit_exceeded",
        limit,
        value,
        field,
    )
    assert limit in error["message"]
    assert registry_snapshot(home) == before


def test_body_size_limit(small):
    client, home = small
    before = registry_snapshot(home)
    response = client.post("/v1/heads/train", json={"head": "h", "examples": examples(2, 60)})
    assert response.status_code == 413
    assert response.json()["error"]["limit"] == "GRAFT_MAX_BODY_BYTES"
    assert response.json()["error"]["value"] == 4096
    assert registry_snapshot(home) == before


def test_heads_per_tenant_quota(small):
    client, home = small
    tenant = {"X-Tenant-ID": "quota"}
    for head in ("one", "two"):
        assert (
            client.post(
                "/v1/heads/train", json={"head": head, "examples": examples(2)}, headers=tenant
            ).status_code
            == 200
        )
    again = client.post(
        "/v1/heads/train", json={"head": "two", "examples": examples(2)}, headers=tenant
    )
    assert again.status_code == 200  # a new version of an existing head is not a new head
    before = registry_snapshot(home)
    third = client.post(
        "/v1/heads/train", json={"head": "three", "examples": examples(2)}, headers=tenant
    )
    assert third.status_code == 409
    assert third.json()["error"] == {
        "code": "quota_exceeded",
        "message": "tenant 'quota' already has 2 heads; the limit is 2",
        "limit": "GRAFT_MAX_HEADS_PER_TENANT",
        "value": 2,
    }
    assert registry_snapshot(home) == before
    client.post("/v1/heads/delete", json={"head": "one"}, headers=tenant)
    assert (
        client.post(
            "/v1/heads/train", json={"head": "three", "examples": examples(2)}, headers=tenant
        ).status_code
        == 200
    )


def test_versions_kept_per_head(small):
    client, _home = small
    tenant = {"X-Tenant-ID": "versions"}
    for _ in range(4):
        client.post("/v1/heads/train", json={"head": "h", "examples": examples(2)}, headers=tenant)
    head = client.post("/v1/heads/get", json={"head": "h"}, headers=tenant).json()
    assert [v["version"] for v in head["versions"]] == [3, 4]
    client.post(
        "/v1/aliases/set", json={"head": "h", "alias": "keep", "version": 3}, headers=tenant
    )
    for _ in range(2):
        client.post("/v1/heads/train", json={"head": "h", "examples": examples(2)}, headers=tenant)
    head = client.post("/v1/heads/get", json={"head": "h"}, headers=tenant).json()
    assert [v["version"] for v in head["versions"]] == [3, 5, 6]  # aliased versions are kept


def test_a_base_version_counts_towards_the_examples_limit(small):
    client, home = small
    tenant = {"X-Tenant-ID": "grower"}
    first = client.post(
        "/v1/heads/train", json={"head": "grows", "examples": examples(3, 4)}, headers=tenant
    )
    assert first.status_code == 200, first.text  # 12 examples: at the limit
    before = registry_snapshot(home)
    grown = client.post(
        "/v1/heads/train",
        json={"head": "grows", "examples": examples(3, 2), "base_version": 1},
        headers=tenant,
    )
    assert grown.status_code == 400
    error = grown.json()["error"]
    assert (error["code"], error["limit"], error["value"]) == (
        "limit_exceeded",
        "GRAFT_MAX_EXAMPLES",
        12,
    )
    assert error["message"] == (
        "18 examples, the base version's and these, in one call; the limit (GRAFT_MAX_EXAMPLES) "
        "is 12"
    )
    assert registry_snapshot(home) == before


def test_out_of_scope_examples_are_no_label_to_the_labels_limit(small):
    client, _home = small
    away = {"text": "weather in Oslo?", "out_of_scope": True}
    fenced = [*examples(3, 2), away, {**away, "text": "a cake recipe?"}]
    response = client.post(
        "/v1/heads/train", json={"head": "fenced", "examples": fenced}, headers={"X-Tenant-ID": "f"}
    )
    assert response.status_code == 200, response.text  # 3 labels, and the class is none
    assert response.json()["labels"] == ["label-0", "label-1", "label-2"]
    assert response.json()["report"]["out_of_scope_examples"] == 2
