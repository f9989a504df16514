"""Versioned head storage, scoped by tenant: register, resolve, list, delete, alias.

Every query names the tenant, so one tenant's heads are invisible to another: asking for someone
else's head is indistinguishable from asking for a head that does not exist. A registration is one
transaction (claim the next version number, insert the immutable version row, prune old versions),
so a crash leaves either the whole version or nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NoReturn, TypeVar

from sqlalchemy import (
    Connection,
    Engine,
    and_,
    bindparam,
    delete,
    exists,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError, OperationalError

from service.database import writer
from service.errors import (
    AliasNotFound,
    HeadNotFound,
    QuotaExceeded,
    Unavailable,
    VersionInUse,
    VersionNotFound,
)
from service.tables import aliases, head_versions, heads, tenants

T = TypeVar("T")
#: Attempts at a write transaction that lost a race (two first registrations of one head name).
_WRITE_ATTEMPTS = 8


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(moment: datetime) -> datetime:
    """SQLite hands datetimes back naive; they were written in UTC."""
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@dataclass(frozen=True)
class NewVersion:
    """Everything a trained head contributes to its registry row."""

    kind: str
    labels: list[str]
    n_examples: int
    backbone: str
    fingerprint: str
    config_json: str
    weights: bytes
    report: dict[str, Any]
    train_ms: float
    training_data: bytes | None = None


@dataclass(frozen=True)
class VersionRef:
    """The cheap per-request answer to "which version does this call use?"."""

    id: int
    head: str
    version: int
    kind: str
    fingerprint: str


@dataclass(frozen=True)
class VersionInfo:
    head: str
    version: int
    kind: str
    labels: list[str]
    n_examples: int
    backbone: str
    fingerprint: str
    size_bytes: int
    report: dict[str, Any]
    train_ms: float
    created_at: datetime
    aliases: tuple[str, ...] = ()


@dataclass(frozen=True)
class HeadInfo:
    name: str
    versions: list[VersionInfo]
    aliases: dict[str, int]

    @property
    def latest(self) -> int:
        return self.versions[-1].version


_VERSION_COLUMNS = (
    heads.c.name,
    head_versions.c.version,
    head_versions.c.kind,
    head_versions.c.labels,
    head_versions.c.n_examples,
    head_versions.c.backbone,
    head_versions.c.fingerprint,
    head_versions.c.size_bytes,
    head_versions.c.report,
    head_versions.c.train_ms,
    head_versions.c.created_at,
)


class Registry:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._writer = writer(engine)
        #: Reads from a local SQLite file take microseconds and never wait for a writer (WAL),
        #: so callers may run them inline; a networked database's reads belong in a thread.
        self.reads_are_local = engine.dialect.name == "sqlite"

    # -- writing ---------------------------------------------------------------------------

    def register_version(
        self, tenant: str, head: str, new: NewVersion, *, max_heads: int, keep_versions: int
    ) -> VersionInfo:
        """Store ``new`` as the next version of ``head``; one transaction, retried on races."""

        def register(conn: Connection) -> VersionInfo:
            head_id, version, is_new = self._claim_version(conn, tenant, head)
            if is_new:
                self._check_head_quota(conn, tenant, head_id, max_heads)
            now = utcnow()
            conn.execute(
                insert(head_versions).values(
                    head_id=head_id,
                    version=version,
                    kind=new.kind,
                    labels=new.labels,
                    n_examples=new.n_examples,
                    backbone=new.backbone,
                    fingerprint=new.fingerprint,
                    config=new.config_json,
                    weights=new.weights,
                    training_data=new.training_data,
                    size_bytes=len(new.weights) + len(new.config_json),
                    report=new.report,
                    train_ms=new.train_ms,
                    created_at=now,
                )
            )
            self._prune(conn, head_id, keep_versions)
            return VersionInfo(
                head=head,
                version=version,
                kind=new.kind,
                labels=new.labels,
                n_examples=new.n_examples,
                backbone=new.backbone,
                fingerprint=new.fingerprint,
                size_bytes=len(new.weights) + len(new.config_json),
                report=new.report,
                train_ms=new.train_ms,
                created_at=now,
            )

        return self._write(register)

    def _claim_version(self, conn: Connection, tenant: str, head: str) -> tuple[int, int, bool]:
        """Take the next version number under the head row's lock: (head id, version, is_new).

        The UPDATE comes first so that it is the statement that takes the lock: concurrent
        trainers of one head queue on it and get consecutive numbers.
        """
        row = conn.execute(
            update(heads)
            .where(heads.c.tenant == tenant, heads.c.name == head)
            .values(next_version=heads.c.next_version + 1)
            .returning(heads.c.id, heads.c.next_version)
        ).first()
        if row is not None:
            head_id, version = row.id, row.next_version - 1
            has_versions = conn.execute(
                select(exists().where(head_versions.c.head_id == head_id))
            ).scalar()
            return head_id, version, not has_versions
        head_id = conn.execute(
            insert(heads)
            .values(tenant=tenant, name=head, next_version=2, created_at=utcnow())
            .returning(heads.c.id)
        ).scalar_one()
        return head_id, 1, True

    def _ensure_tenant(self, conn: Connection, tenant: str) -> None:
        touched = conn.execute(
            update(tenants).where(tenants.c.name == tenant).values(name=tenant)
        ).rowcount
        if not touched:
            conn.execute(insert(tenants).values(name=tenant, created_at=utcnow()))

    def _check_head_quota(
        self, conn: Connection, tenant: str, head_id: int, max_heads: int
    ) -> None:
        # Locking the tenant row serialises head creation per tenant, so two concurrent new
        # heads cannot both squeeze under the limit.
        self._ensure_tenant(conn, tenant)
        owned = conn.execute(
            select(func.count())
            .select_from(heads)
            .where(
                heads.c.tenant == tenant,
                heads.c.id != head_id,
                exists().where(head_versions.c.head_id == heads.c.id),
            )
        ).scalar_one()
        if owned >= max_heads:
            raise QuotaExceeded(
                f"tenant {tenant!r} already has {owned} heads; the limit is {max_heads}",
                limit="GRAFT_MAX_HEADS_PER_TENANT",
                value=max_heads,
            )

    def _prune(self, conn: Connection, head_id: int, keep: int) -> None:
        """Drop versions beyond the newest ``keep``, except those an alias points at."""
        aliased = select(aliases.c.version).where(aliases.c.head_id == head_id)
        newest = (
            select(head_versions.c.version)
            .where(head_versions.c.head_id == head_id)
            .order_by(head_versions.c.version.desc())
            .limit(keep)
        )
        kept = {*conn.execute(newest).scalars(), *conn.execute(aliased).scalars()}
        conn.execute(
            delete(head_versions).where(
                head_versions.c.head_id == head_id, head_versions.c.version.not_in(kept)
            )
        )

    def delete(self, tenant: str, head: str, version: int | None) -> list[int]:
        """Delete one version, or every version and alias of the head; the deleted numbers."""

        def remove(conn: Connection) -> list[int]:
            head_id = self._head_id(conn, tenant, head)
            versions = head_versions.c.head_id == head_id
            if version is not None:
                versions = and_(versions, head_versions.c.version == version)
                if not conn.execute(select(exists().where(versions))).scalar():
                    raise VersionNotFound(
                        f"head {head!r} has no version {version}", field="version"
                    )
                pinned = (
                    conn.execute(
                        select(aliases.c.name).where(
                            aliases.c.head_id == head_id, aliases.c.version == version
                        )
                    )
                    .scalars()
                    .all()
                )
                if pinned:
                    raise VersionInUse(
                        f"version {version} of head {head!r} is the target of alias "
                        f"{', '.join(sorted(pinned))}; move or delete the alias first",
                        field="version",
                    )
            else:
                conn.execute(delete(aliases).where(aliases.c.head_id == head_id))
            deleted = (
                conn.execute(
                    select(head_versions.c.version)
                    .where(versions)
                    .order_by(head_versions.c.version)
                )
                .scalars()
                .all()
            )
            conn.execute(delete(head_versions).where(versions))
            return list(deleted)

        return self._write(remove)

    def set_alias(self, tenant: str, head: str, alias: str, version: int) -> int | None:
        """Point ``alias`` at ``version`` atomically; the version it pointed at before, if any."""

        def move(conn: Connection) -> int | None:
            head_id = self._head_id(conn, tenant, head)
            present = select(
                exists().where(
                    head_versions.c.head_id == head_id, head_versions.c.version == version
                )
            )
            if not conn.execute(present).scalar():
                raise VersionNotFound(f"head {head!r} has no version {version}", field="version")
            where = (aliases.c.head_id == head_id, aliases.c.name == alias)
            previous = conn.execute(select(aliases.c.version).where(*where)).scalar()
            if previous is None:
                conn.execute(
                    insert(aliases).values(
                        head_id=head_id, name=alias, version=version, updated_at=utcnow()
                    )
                )
            else:
                conn.execute(
                    update(aliases).where(*where).values(version=version, updated_at=utcnow())
                )
            return previous

        return self._write(move)

    def delete_alias(self, tenant: str, head: str, alias: str) -> int:
        def remove(conn: Connection) -> int:
            head_id = self._head_id(conn, tenant, head)
            where = (aliases.c.head_id == head_id, aliases.c.name == alias)
            version = conn.execute(select(aliases.c.version).where(*where)).scalar()
            if version is None:
                raise AliasNotFound(f"head {head!r} has no alias {alias!r}", field="alias")
            conn.execute(delete(aliases).where(*where))
            return int(version)

        return self._write(remove)

    def _write(self, work: Callable[[Connection], T]) -> T:
        for _attempt in range(_WRITE_ATTEMPTS):
            try:
                with self._writer.begin() as conn:
                    return work(conn)
            except IntegrityError:
                continue  # lost a race to create the same head or tenant row: retry afresh
            except OperationalError as exc:
                if "locked" in str(exc).lower():
                    raise Unavailable("the registry is busy; retry the request") from exc
                raise
        raise Unavailable("the registry is busy; retry the request")

    # -- reading ---------------------------------------------------------------------------

    def resolve(self, tenant: str, head: str, ref: int | str | None) -> VersionRef:
        """The version a call means: the newest, a number, or an alias's target.

        This runs on every predict, so its three statements are built once (below the class)
        and only their parameters change: building a statement costs more than running it.
        """
        params: dict[str, Any] = {"tenant": tenant, "head": head}
        if ref is None:
            query = _RESOLVE_NEWEST
        elif isinstance(ref, int):
            query, params["version"] = _RESOLVE_NUMBER, ref
        else:
            query, params["alias"] = _RESOLVE_ALIAS, ref
        with self.engine.connect() as conn:
            row = conn.execute(query, params).first()
            if row is None:
                self._explain_missing(conn, tenant, head, ref)
        return VersionRef(row.id, head, row.version, row.kind, row.fingerprint)

    def _explain_missing(
        self, conn: Connection, tenant: str, head: str, ref: int | str | None
    ) -> NoReturn:
        self._head_id(conn, tenant, head)  # raises HeadNotFound, tombstones included
        if isinstance(ref, str):
            raise AliasNotFound(f"head {head!r} has no alias {ref!r}", field="version")
        raise VersionNotFound(f"head {head!r} has no version {ref}", field="version")

    def load_weights(self, version_id: int) -> tuple[str, bytes]:
        """The stored config JSON and safetensors bytes of one version."""
        with self.engine.connect() as conn:
            row = conn.execute(_LOAD_WEIGHTS, {"id": version_id}).first()
        if row is None:
            raise VersionNotFound("that version was deleted while it was being loaded")
        return row.config, bytes(row.weights)

    def load_training_data(self, version_id: int) -> bytes | None:
        """The stored training set of one version (None for versions from before it was kept)."""
        with self.engine.connect() as conn:
            row = conn.execute(
                select(head_versions.c.training_data).where(head_versions.c.id == version_id)
            ).first()
        if row is None:
            raise VersionNotFound("that version was deleted while it was being read")
        return None if row.training_data is None else bytes(row.training_data)

    def list_heads(self, tenant: str) -> list[HeadInfo]:
        with self.engine.connect() as conn:
            return list(self._head_infos(conn, tenant, None))

    def get_head(self, tenant: str, head: str) -> HeadInfo:
        with self.engine.connect() as conn:
            found = list(self._head_infos(conn, tenant, head))
        if not found:
            self._raise_head_not_found(head)
        return found[0]

    def count_heads(self) -> int:
        """Heads with at least one version, over all tenants (for the metrics gauge)."""
        with self.engine.connect() as conn:
            return int(
                conn.execute(
                    select(func.count(func.distinct(head_versions.c.head_id)))
                ).scalar_one()
            )

    def _head_infos(self, conn: Connection, tenant: str, head: str | None) -> Iterator[HeadInfo]:
        where = [heads.c.tenant == tenant] + ([heads.c.name == head] if head is not None else [])
        alias_rows = conn.execute(
            select(heads.c.name, aliases.c.name.label("alias"), aliases.c.version)
            .join(heads, heads.c.id == aliases.c.head_id)
            .where(*where)
        ).all()
        by_head: dict[str, dict[str, int]] = {}
        for alias_row in alias_rows:
            by_head.setdefault(alias_row.name, {})[alias_row.alias] = alias_row.version
        rows = conn.execute(
            select(*_VERSION_COLUMNS)
            .join(heads, heads.c.id == head_versions.c.head_id)
            .where(*where)
            .order_by(heads.c.name, head_versions.c.version)
        ).all()
        current: list[VersionInfo] = []
        for row in rows:
            if current and current[-1].head != row.name:
                yield HeadInfo(current[-1].head, current, by_head.get(current[-1].head, {}))
                current = []
            head_aliases = by_head.get(row.name, {})
            current.append(
                VersionInfo(
                    head=row.name,
                    version=row.version,
                    kind=row.kind,
                    labels=list(row.labels),
                    n_examples=row.n_examples,
                    backbone=row.backbone,
                    fingerprint=row.fingerprint,
                    size_bytes=row.size_bytes,
                    report=dict(row.report),
                    train_ms=row.train_ms,
                    created_at=as_utc(row.created_at),
                    aliases=tuple(sorted(a for a, v in head_aliases.items() if v == row.version)),
                )
            )
        if current:
            yield HeadInfo(current[-1].head, current, by_head.get(current[-1].head, {}))

    def _head_id(self, conn: Connection, tenant: str, head: str) -> int:
        head_id = conn.execute(
            select(heads.c.id).where(
                heads.c.tenant == tenant,
                heads.c.name == head,
                exists().where(head_versions.c.head_id == heads.c.id),
            )
        ).scalar()
        if head_id is None:
            self._raise_head_not_found(head)
        return int(head_id)

    @staticmethod
    def _raise_head_not_found(head: str) -> NoReturn:
        raise HeadNotFound(f"no head named {head!r}", field="head")


_RESOLVE_BASE = (
    select(
        head_versions.c.id,
        head_versions.c.version,
        head_versions.c.kind,
        head_versions.c.fingerprint,
    )
    .join(heads, heads.c.id == head_versions.c.head_id)
    .where(heads.c.tenant == bindparam("tenant"), heads.c.name == bindparam("head"))
)
_RESOLVE_NEWEST = _RESOLVE_BASE.order_by(head_versions.c.version.desc()).limit(1)
_RESOLVE_NUMBER = _RESOLVE_BASE.where(head_versions.c.version == bindparam("version"))
_RESOLVE_ALIAS = _RESOLVE_BASE.join(
    aliases, and_(aliases.c.head_id == heads.c.id, aliases.c.version == head_versions.c.version)
).where(aliases.c.name == bindparam("alias"))
_LOAD_WEIGHTS = select(head_versions.c.config, head_versions.c.weights).where(
    head_versions.c.id == bindparam("id")
)
