"""API keys and auth modes: who gets in, as which tenant, and what is stored."""

from __future__ import annotations

import logging

import pytest
from sqlalchemy import create_engine, select

from service.tables import api_keys
from tests.integration.conftest import graft_client, registry_snapshot

ADMIN = {"Authorization": "Bearer admin-secret-for-tests"}
EXAMPLES = [
    {"text": "I love it", "label": "pos"},
    {"text": "great stuff", "label": "pos"},
    {"text": "I hate it", "label": "neg"},
    {"text": "awful stuff", "label": "neg"},
]


@pytest.fixture(scope="module")
def secured(home):
    with graft_client(home, auth="required", admin_key="admin-secret-for-tests") as client:
        yield client


def new_key(client, tenant: str) -> dict:
    response = client.post("/v1/admin/keys/create", json={"tenant": tenant}, headers=ADMIN)
    assert response.status_code == 200, response.text
    return response.json()


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_key_life_cycle(secured, home):
    issued = new_key(secured, "acme")
    assert issued["tenant"] == "acme"
    assert issued["key"].startswith(f"gk_{issued['prefix']}_")
    used = secured.post("/v1/heads/list", json={}, headers=bearer(issued["key"]))
    assert (used.status_code, used.json()) == (200, {"heads": []})

    listed = secured.post("/v1/admin/keys/list", json={"tenant": "acme"}, headers=ADMIN).json()
    assert [k["prefix"] for k in listed["keys"]] == [issued["prefix"]]
    assert issued["key"] not in str(listed)  # listed by prefix, never shown again

    engine = create_engine(f"sqlite:///{home / 'graft.db'}")
    with engine.connect() as conn:
        row = conn.execute(select(api_keys).where(api_keys.c.prefix == issued["prefix"])).one()
    engine.dispose()
    assert issued["key"] not in repr(row)  # the stored form is a hash, not the key
    assert len(row.key_hash) == 64

    revoked = secured.post(
        "/v1/admin/keys/revoke", json={"prefix": issued["prefix"]}, headers=ADMIN
    )
    assert revoked.status_code == 200 and revoked.json()["revoked"] is not None
    again = secured.post("/v1/heads/list", json={}, headers=bearer(issued["key"]))
    assert (again.status_code, again.json()["error"]["code"]) == (401, "unauthenticated")


def test_the_key_decides_the_tenant_not_the_header(secured):
    key = new_key(secured, "keyed")["key"]
    headers = {**bearer(key), "X-Tenant-ID": "somebody-else"}
    trained = secured.post(
        "/v1/heads/train", json={"head": "mine", "examples": EXAMPLES}, headers=headers
    )
    assert trained.status_code == 200
    other = new_key(secured, "somebody-else")["key"]
    seen = secured.post("/v1/heads/list", json={}, headers=bearer(other)).json()
    assert seen == {"heads": []}
    own = secured.post("/v1/heads/list", json={}, headers=bearer(key)).json()
    assert [h["head"] for h in own["heads"]] == ["mine"]


TENANT_ROUTES = [
    ("/v1/predict", {"head": "h", "inputs": ["x"]}),
    ("/v1/heads/train", {"head": "h", "examples": EXAMPLES}),
    ("/v1/heads/list", {}),
    ("/v1/heads/get", {"head": "h"}),
    ("/v1/heads/delete", {"head": "h"}),
    ("/v1/classify", {"examples": EXAMPLES, "inputs": ["x"]}),
    ("/v1/embed", {"inputs": ["x"]}),
    ("/v1/aliases/set", {"head": "h", "alias": "prod", "version": 1}),
    ("/v1/aliases/delete", {"head": "h", "alias": "prod"}),
]
ADMIN_ROUTES = [
    ("/v1/admin/keys/create", {"tenant": "t"}),
    ("/v1/admin/keys/list", {}),
    ("/v1/admin/keys/revoke", {"prefix": "0123456789ab"}),
]


@pytest.mark.parametrize(("path", "body"), TENANT_ROUTES + ADMIN_ROUTES)
@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({}, 401),
        ({"Authorization": "Bearer gk_0123456789ab_" + "x" * 43}, 401),
        ({"Authorization": "Bearer not-even-key-shaped"}, 401),
        ({"Authorization": "Basic dXNlcjpwYXNz"}, 401),
        ({"Authorization": "Bearer "}, 401),
    ],
)
def test_no_valid_key_no_entry(secured, home, path, body, headers, status):
    before = registry_snapshot(home)
    response = secured.post(path, json=body, headers={**headers, "X-Tenant-ID": "acme"})
    assert response.status_code == status
    assert response.json()["error"]["code"] == "unauthenticated"
    assert response.json()["error"]["message"]  # 401s are not masked: they say what is wrong
    assert registry_snapshot(home) == before


@pytest.mark.parametrize(("path", "body"), ADMIN_ROUTES)
def test_tenant_keys_cannot_use_admin_routes(secured, home, path, body):
    key = new_key(secured, "climber")["key"]
    before = registry_snapshot(home)
    response = secured.post(path, json=body, headers=bearer(key))
    assert (response.status_code, response.json()["error"]["code"]) == (403, "forbidden")
    assert registry_snapshot(home) == before


@pytest.mark.parametrize(("path", "body"), TENANT_ROUTES)
def test_the_admin_key_is_not_a_tenant(secured, path, body):
    response = secured.post(path, json=body, headers=ADMIN)
    assert (response.status_code, response.json()["error"]["code"]) == (403, "forbidden")


def test_revoking_an_unknown_prefix(secured):
    response = secured.post("/v1/admin/keys/revoke", json={"prefix": "ffffffffffff"}, headers=ADMIN)
    assert (response.status_code, response.json()["error"]["code"]) == (404, "key_not_found")


def test_auth_off_takes_the_tenant_header_and_warns(tmp_path):
    records: list[logging.LogRecord] = []
    catcher = logging.Handler()
    catcher.emit = records.append  # type: ignore[method-assign]
    logging.getLogger("graft").addHandler(catcher)
    with graft_client(tmp_path) as client:
        listed = client.post("/v1/heads/list", json={}, headers={"X-Tenant-ID": "local"})
        assert listed.status_code == 200
        admin = client.post("/v1/admin/keys/list", json={})  # no GRAFT_ADMIN_KEY: disabled
        assert (admin.status_code, admin.json()["error"]["code"]) == (403, "forbidden")
    logging.getLogger("graft").removeHandler(catcher)
    warnings = [r.getMessage() for r in records if r.levelno == logging.WARNING]
    assert any("GRAFT_AUTH=off" in message for message in warnings), warnings
