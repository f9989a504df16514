"""Tenants never see or touch each other's heads: every endpoint, own / other's / missing head."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from tests.integration.conftest import graft_client, registry_snapshot

EXAMPLES = [
    {"text": "I love it", "label": "pos"},
    {"text": "great stuff", "label": "pos"},
    {"text": "I hate it", "label": "neg"},
    {"text": "awful stuff", "label": "neg"},
]
# Each endpoint that names a head, with the status it answers for the caller's own head.
HEAD_ROUTES = {
    "/v1/predict": (lambda head: {"head": head, "inputs": ["lovely"]}, 200),
    "/v1/heads/get": (lambda head: {"head": head}, 200),
    "/v1/aliases/set": (lambda head: {"head": head, "alias": "prod", "version": 1}, 200),
    "/v1/aliases/delete": (lambda head: {"head": head, "alias": "stable"}, 200),
    "/v1/heads/delete": (lambda head: {"head": head}, 200),
}


@pytest.fixture(scope="module", params=["header", "key"])
def world(request, tmp_path_factory) -> Iterator[tuple]:
    """Two tenants, alice and bob, each with a head; as X-Tenant-ID (auth off) or API keys."""
    home = tmp_path_factory.mktemp(f"isolation-{request.param}")
    settings = {"auth": "required", "admin_key": "adm"} if request.param == "key" else {}
    with graft_client(home, **settings) as client:
        if request.param == "key":
            keys = {
                tenant: client.post(
                    "/v1/admin/keys/create",
                    json={"tenant": tenant},
                    headers={"Authorization": "Bearer adm"},
                ).json()["key"]
                for tenant in ("alice", "bob")
            }

            def as_tenant(tenant: str) -> dict[str, str]:
                return {"Authorization": f"Bearer {keys[tenant]}"}
        else:

            def as_tenant(tenant: str) -> dict[str, str]:
                return {"X-Tenant-ID": tenant}

        yield client, home, as_tenant


def give_each_a_head(client, as_tenant: Callable, name: str) -> None:
    for tenant in ("alice", "bob"):
        trained = client.post(
            "/v1/heads/train", json={"head": name, "examples": EXAMPLES}, headers=as_tenant(tenant)
        )
        assert trained.status_code == 200
        set_alias = client.post(
            "/v1/aliases/set",
            json={"head": name, "alias": "stable", "version": 1},
            headers=as_tenant(tenant),
        )
        assert set_alias.status_code == 200


@pytest.mark.parametrize("route", sorted(HEAD_ROUTES))
@pytest.mark.parametrize("target", ["own", "other", "missing"])
def test_head_routes(world, route, target):
    client, home, as_tenant = world
    name = f"{route.strip('/').replace('/', '-')}-{target}"
    if target == "own":
        give_each_a_head(client, as_tenant, name)
    elif target == "other":  # only alice has it
        client.post(
            "/v1/heads/train", json={"head": name, "examples": EXAMPLES}, headers=as_tenant("alice")
        )
    body, own_status = HEAD_ROUTES[route]
    alice_before = client.post("/v1/heads/list", json={}, headers=as_tenant("alice")).json()
    before = registry_snapshot(home)

    response = client.post(route, json=body(name), headers=as_tenant("bob"))

    if target == "own":
        assert response.status_code == own_status, response.text
    else:  # another tenant's head answers exactly like a head that does not exist
        assert response.status_code == 404, response.text
        assert response.json() == {
            "error": {
                "code": "head_not_found",
                "message": f"no head named {name!r}",
                "field": "head",
            }
        }
        assert registry_snapshot(home) == before
    alice_after = client.post("/v1/heads/list", json={}, headers=as_tenant("alice")).json()
    assert alice_after == alice_before  # whatever bob did, alice's heads are as they were


def test_training_a_name_another_tenant_uses_makes_your_own_head(world):
    client, _home, as_tenant = world
    client.post(
        "/v1/heads/train", json={"head": "taken", "examples": EXAMPLES}, headers=as_tenant("alice")
    )
    client.post(
        "/v1/heads/train", json={"head": "taken", "examples": EXAMPLES}, headers=as_tenant("alice")
    )
    bob = client.post(
        "/v1/heads/train", json={"head": "taken", "examples": EXAMPLES}, headers=as_tenant("bob")
    )
    assert bob.json()["version"] == 1  # bob's own first version, not alice's third
    alice = client.post("/v1/heads/get", json={"head": "taken"}, headers=as_tenant("alice")).json()
    assert alice["latest_version"] == 2


@pytest.mark.parametrize(
    ("route", "body"),
    [
        ("/v1/heads/list", {}),
        ("/v1/classify", {"examples": EXAMPLES, "inputs": ["lovely"]}),
        ("/v1/embed", {"inputs": ["lovely"]}),
    ],
)
def test_routes_without_a_head_see_only_the_caller(world, route, body):
    client, home, as_tenant = world
    client.post(
        "/v1/heads/train",
        json={"head": "alice-only", "examples": EXAMPLES},
        headers=as_tenant("alice"),
    )
    before = registry_snapshot(home)
    response = client.post(route, json=body, headers=as_tenant("bob"))
    assert response.status_code == 200
    assert "alice-only" not in response.text
    assert registry_snapshot(home) == before


def test_a_deleted_head_cached_by_one_tenant_never_answers_for_another(world):
    """The head cache keys on version ids: a new version must never get a deleted one's id."""
    client, _home, as_tenant = world
    secret = [
        {"text": "secret alpha plan", "label": "ALICE_SECRET_1"},
        {"text": "secret beta plan", "label": "ALICE_SECRET_2"},
    ]
    body = {"head": "cached-secret", "examples": secret}
    assert client.post("/v1/heads/train", json=body, headers=as_tenant("alice")).status_code == 200
    asked = {"head": "cached-secret", "inputs": ["secret"]}
    assert client.post("/v1/predict", json=asked, headers=as_tenant("alice")).status_code == 200
    gone = client.post(
        "/v1/heads/delete", json={"head": "cached-secret"}, headers=as_tenant("alice")
    )
    assert gone.status_code == 200
    mine = {"head": "bobs-own", "examples": EXAMPLES}
    assert client.post("/v1/heads/train", json=mine, headers=as_tenant("bob")).status_code == 200
    answered = client.post(
        "/v1/predict", json={"head": "bobs-own", "inputs": ["I love it"]}, headers=as_tenant("bob")
    )
    assert answered.status_code == 200
    assert answered.json()["predictions"][0]["label"] == "pos"
    assert {t["label"] for t in answered.json()["predictions"][0]["top"]} == {"pos", "neg"}
