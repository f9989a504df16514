"""The head registry on a real SQLite file and a real PostgreSQL database."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import inspect

from service.database import create_registry_engine, upgrade_schema
from service.errors import (
    AliasNotFound,
    HeadNotFound,
    QuotaExceeded,
    VersionInUse,
    VersionNotFound,
)
from service.registry import NewVersion, Registry

FINGERPRINT = "sha256:test"


def version_payload(tag: str = "a", labels: tuple[str, ...] = ("neg", "pos")) -> NewVersion:
    return NewVersion(
        kind="linear",
        labels=list(labels),
        n_examples=4,
        backbone="test-backbone",
        fingerprint=FINGERPRINT,
        config_json=f'{{"kind":"linear","tag":"{tag}"}}',
        weights=f"weights-{tag}".encode(),
        report={"train_accuracy": 1.0},
        train_ms=12.5,
    )


@pytest.fixture
def registry(database_url):
    engine = create_registry_engine(database_url)
    upgrade_schema(engine)
    yield Registry(engine)
    engine.dispose()


def register(registry: Registry, tenant: str, head: str, tag: str = "a", **limits):
    return registry.register_version(
        tenant,
        head,
        version_payload(tag),
        max_heads=limits.get("max_heads", 100),
        keep_versions=limits.get("keep_versions", 50),
    )


def test_versions_count_up_and_newest_is_resolved(registry):
    assert register(registry, "acme", "sentiment", "a").version == 1
    assert register(registry, "acme", "sentiment", "b").version == 2
    ref = registry.resolve("acme", "sentiment", None)
    assert ref.version == 2
    assert registry.load_weights(ref.id) == ('{"kind":"linear","tag":"b"}', b"weights-b")
    older = registry.resolve("acme", "sentiment", 1)
    assert registry.load_weights(older.id)[1] == b"weights-a"


def test_unknown_head_and_version(registry):
    register(registry, "acme", "sentiment")
    with pytest.raises(HeadNotFound, match="no head named 'other'"):
        registry.resolve("acme", "other", None)
    with pytest.raises(VersionNotFound, match="has no version 5"):
        registry.resolve("acme", "sentiment", 5)
    with pytest.raises(AliasNotFound, match="no alias 'production'"):
        registry.resolve("acme", "sentiment", "production")


def test_tenants_are_isolated(registry):
    register(registry, "acme", "sentiment", "acme")
    register(registry, "globex", "sentiment", "globex")
    register(registry, "globex", "sentiment", "globex2")
    acme = registry.resolve("acme", "sentiment", None)
    assert acme.version == 1
    assert registry.load_weights(acme.id)[1] == b"weights-acme"
    with pytest.raises(HeadNotFound):
        registry.resolve("initech", "sentiment", None)
    assert [h.name for h in registry.list_heads("acme")] == ["sentiment"]
    assert registry.list_heads("initech") == []
    assert registry.delete("globex", "sentiment", None) == [1, 2]
    assert registry.resolve("acme", "sentiment", None).version == 1


def test_delete_one_version_keeps_the_others(registry):
    for tag in "abc":
        register(registry, "acme", "h", tag)
    assert registry.delete("acme", "h", 2) == [2]
    assert [v.version for v in registry.get_head("acme", "h").versions] == [1, 3]
    with pytest.raises(VersionNotFound):
        registry.resolve("acme", "h", 2)
    with pytest.raises(VersionNotFound):
        registry.delete("acme", "h", 2)


def test_version_numbers_are_never_reused(registry):
    register(registry, "acme", "h", "a")
    register(registry, "acme", "h", "b")
    assert registry.delete("acme", "h", None) == [1, 2]
    with pytest.raises(HeadNotFound):
        registry.resolve("acme", "h", None)
    with pytest.raises(HeadNotFound):
        registry.get_head("acme", "h")
    assert registry.list_heads("acme") == []
    assert register(registry, "acme", "h", "c").version == 3


def test_get_and_list_report_versions_and_aliases(registry):
    register(registry, "acme", "h", "a")
    register(registry, "acme", "h", "b")
    registry.set_alias("acme", "h", "production", 1)
    head = registry.get_head("acme", "h")
    assert head.latest == 2
    assert head.aliases == {"production": 1}
    first = head.versions[0]
    assert (first.version, first.kind, first.labels, first.aliases) == (
        1,
        "linear",
        ["neg", "pos"],
        ("production",),
    )
    assert first.report == {"train_accuracy": 1.0}
    assert first.created_at.tzinfo is not None


def test_aliases_move_atomically_and_pin_versions(registry):
    for tag in "ab":
        register(registry, "acme", "h", tag)
    assert registry.set_alias("acme", "h", "production", 1) is None
    assert registry.resolve("acme", "h", "production").version == 1
    assert registry.set_alias("acme", "h", "production", 2) == 1
    assert registry.resolve("acme", "h", "production").version == 2
    with pytest.raises(VersionInUse, match="alias production"):
        registry.delete("acme", "h", 2)
    with pytest.raises(VersionNotFound):
        registry.set_alias("acme", "h", "production", 9)
    assert registry.delete_alias("acme", "h", "production") == 2
    with pytest.raises(AliasNotFound):
        registry.delete_alias("acme", "h", "production")
    with pytest.raises(HeadNotFound):
        registry.set_alias("globex", "h", "production", 1)


def test_old_versions_are_pruned_but_aliased_ones_stay(registry):
    register(registry, "acme", "h", "v1", keep_versions=2)
    registry.set_alias("acme", "h", "stable", 1)
    for tag in ("v2", "v3", "v4"):
        register(registry, "acme", "h", tag, keep_versions=2)
    assert [v.version for v in registry.get_head("acme", "h").versions] == [1, 3, 4]


def test_heads_per_tenant_quota(registry):
    register(registry, "acme", "one", max_heads=2)
    register(registry, "acme", "two", max_heads=2)
    register(registry, "acme", "two", max_heads=2)  # a new version is not a new head
    with pytest.raises(QuotaExceeded) as caught:
        register(registry, "acme", "three", max_heads=2)
    assert caught.value.details == {"limit": "GRAFT_MAX_HEADS_PER_TENANT", "value": 2}
    assert [h.name for h in registry.list_heads("acme")] == ["one", "two"]
    register(registry, "globex", "three", max_heads=2)  # quotas are per tenant


def test_concurrent_writers_get_distinct_consecutive_versions(registry):
    errors: list[BaseException] = []
    versions: list[int] = []
    lock = threading.Lock()

    def train(i: int) -> None:
        try:
            info = register(registry, "acme", "busy", f"t{i}")
        except BaseException as exc:  # collected, asserted below
            errors.append(exc)
        else:
            with lock:
                versions.append(info.version)

    threads = [threading.Thread(target=train, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert sorted(versions) == list(range(1, 9))
    stored = [v.version for v in registry.get_head("acme", "busy").versions]
    assert stored == list(range(1, 9))


def test_schema_upgrade_is_idempotent_and_matches_the_tables(database_url):
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from service.tables import metadata

    engine = create_registry_engine(database_url)
    upgrade_schema(engine)
    upgrade_schema(engine)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), metadata)
        assert diff == []
        assert {"heads", "head_versions", "aliases", "api_keys", "tenants"} <= set(
            inspect(conn).get_table_names()
        )
    engine.dispose()


def registered_id(registry: Registry, tenant: str, head: str, tag: str) -> int:
    register(registry, tenant, head, tag)
    return registry.resolve(tenant, head, None).id


def test_a_deleted_versions_id_is_never_given_to_another_version(registry):
    """Caches key on version ids: reusing the newest deleted one served its weights for the
    next version trained, another tenant's included (SQLite without AUTOINCREMENT did)."""
    kept = registered_id(registry, "alice", "kept", "k")
    deleted = registered_id(registry, "alice", "secret", "s")
    assert deleted > kept  # the newest row, whose id SQLite would hand out again
    registry.delete("alice", "secret", None)
    new = registered_id(registry, "bob", "mine", "b")
    assert new > deleted
    assert registry.load_weights(new) == ('{"kind":"linear","tag":"b"}', b"weights-b")


def test_upgrading_an_sqlite_registry_keeps_its_versions_and_stops_reusing_ids(tmp_path):
    """A registry made at the schema before ids were kept apart (revision 0003) upgrades in
    place: the same rows under the same ids, and then ids that only grow."""
    from alembic import command
    from alembic.config import Config

    from service.database import MIGRATIONS, writer

    engine = create_registry_engine(f"sqlite:///{tmp_path / 'old.db'}")
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with writer(engine).begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "0003")
    registry = Registry(engine)
    kept = registered_id(registry, "acme", "kept", "k")
    gone = registered_id(registry, "acme", "gone", "g")
    registry.delete("acme", "gone", None)
    again = registered_id(registry, "acme", "again", "x")
    assert again == gone  # the old schema's fault, reproduced
    upgrade_schema(engine)
    assert registry.load_weights(kept) == ('{"kind":"linear","tag":"k"}', b"weights-k")
    assert registry.load_weights(again) == ('{"kind":"linear","tag":"x"}', b"weights-x")
    assert registry.resolve("acme", "again", None).version == 1
    registry.delete("acme", "again", None)
    assert registered_id(registry, "acme", "later", "l") > again
    engine.dispose()
