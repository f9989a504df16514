"""Who is calling: API keys (stored only as hashes) and the tenant or admin they stand for.

A tenant key looks like ``gk_<prefix>_<secret>``. Only its prefix (to list and revoke it by) and
the SHA-256 of the whole key are stored; the key itself is shown once, when it is created. Keys
carry 256 random bits, so a plain hash is enough: there is nothing to brute-force.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, Row, insert, select, update

from service.database import writer
from service.errors import BadRequest, Forbidden, KeyNotFound, Unauthenticated
from service.registry import as_utc, utcnow
from service.schemas import NAME_PATTERN
from service.settings import Settings
from service.tables import api_keys

log = logging.getLogger("graft.auth")

DEFAULT_TENANT = "default"
TENANT_HEADER = "x-tenant-id"
_KEY_SHAPE = re.compile(r"^gk_([0-9a-f]{12})_[A-Za-z0-9_-]{43}$")
_TENANT_SHAPE = re.compile(NAME_PATTERN)


@dataclass(frozen=True)
class Caller:
    """The identity a request acts as: one tenant, or the administrator (no tenant)."""

    tenant: str
    admin: bool = False


@dataclass(frozen=True)
class KeyInfo:
    prefix: str
    tenant: str
    created: datetime
    revoked: datetime | None


@dataclass(frozen=True)
class IssuedKey:
    tenant: str
    key: str
    prefix: str
    created: datetime


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class KeyStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._writer = writer(engine)

    def create(self, tenant: str) -> IssuedKey:
        prefix = secrets.token_hex(6)
        key = f"gk_{prefix}_{secrets.token_urlsafe(32)}"
        created = utcnow()
        with self._writer.begin() as conn:
            conn.execute(
                insert(api_keys).values(
                    prefix=prefix, tenant=tenant, key_hash=hash_key(key), created_at=created
                )
            )
        log.info("api key created", extra={"tenant": tenant, "key_prefix": prefix})
        return IssuedKey(tenant=tenant, key=key, prefix=prefix, created=created)

    def list(self, tenant: str | None = None) -> list[KeyInfo]:
        query = select(api_keys).order_by(api_keys.c.created_at)
        if tenant is not None:
            query = query.where(api_keys.c.tenant == tenant)
        with self.engine.connect() as conn:
            return [_key_info(row) for row in conn.execute(query)]

    def revoke(self, prefix: str) -> KeyInfo:
        with self._writer.begin() as conn:
            row = conn.execute(select(api_keys).where(api_keys.c.prefix == prefix)).first()
            if row is None:
                raise KeyNotFound(f"no API key with prefix {prefix!r}", field="prefix")
            if row.revoked_at is None:
                conn.execute(
                    update(api_keys).where(api_keys.c.prefix == prefix).values(revoked_at=utcnow())
                )
            row = conn.execute(select(api_keys).where(api_keys.c.prefix == prefix)).one()
        log.info("api key revoked", extra={"tenant": row.tenant, "key_prefix": prefix})
        return _key_info(row)

    def tenant_for(self, key: str) -> str | None:
        """The tenant of a live key, or None for a malformed, unknown or revoked one."""
        shape = _KEY_SHAPE.match(key)
        if shape is None:
            return None
        with self.engine.connect() as conn:
            row = conn.execute(
                select(api_keys.c.tenant, api_keys.c.key_hash, api_keys.c.revoked_at).where(
                    api_keys.c.prefix == shape.group(1)
                )
            ).first()
        if row is None or row.revoked_at is not None:
            return None
        return row.tenant if hmac.compare_digest(row.key_hash, hash_key(key)) else None


def _key_info(row: Row[Any]) -> KeyInfo:
    return KeyInfo(
        prefix=row.prefix,
        tenant=row.tenant,
        created=as_utc(row.created_at),
        revoked=as_utc(row.revoked_at) if row.revoked_at is not None else None,
    )


class Authenticator:
    """Maps request headers to a :class:`Caller`, following ``GRAFT_AUTH``."""

    def __init__(self, settings: Settings, keys: KeyStore) -> None:
        self.required = settings.auth == "required"
        self.admin_key = settings.admin_key.get_secret_value() if settings.admin_key else None
        self.keys = keys

    def caller(self, headers: Mapping[str, str], *, admin_route: bool) -> Caller:
        """Blocking (one indexed query for a tenant key): call it from a worker thread."""
        token = _bearer(headers)
        if admin_route:
            return self._admin(token)
        if token is not None:
            if self.admin_key is not None and hmac.compare_digest(token, self.admin_key):
                raise Forbidden("the admin key manages keys; head routes need a tenant key")
            tenant = self.keys.tenant_for(token)
            if tenant is None:
                raise Unauthenticated("the API key is not valid (unknown, malformed or revoked)")
            return Caller(tenant)
        if self.required:
            raise Unauthenticated("this route needs an API key: send Authorization: Bearer <key>")
        return Caller(_header_tenant(headers))

    def _admin(self, token: str | None) -> Caller:
        if self.admin_key is None:
            raise Forbidden("the admin API is disabled: set GRAFT_ADMIN_KEY to enable it")
        if token is None:
            raise Unauthenticated("admin routes need the admin key: Authorization: Bearer <key>")
        if hmac.compare_digest(token, self.admin_key):
            return Caller(tenant="", admin=True)
        if self.keys.tenant_for(token) is not None:
            raise Forbidden("a tenant key cannot use admin routes")
        raise Unauthenticated("the API key is not valid (unknown, malformed or revoked)")


def _bearer(headers: Mapping[str, str]) -> str | None:
    value = headers.get("authorization")
    if value is None:
        return None
    scheme, _, token = value.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated("the Authorization header must be 'Bearer <key>'")
    return token.strip()


def _header_tenant(headers: Mapping[str, str]) -> str:
    tenant = headers.get(TENANT_HEADER, DEFAULT_TENANT)
    if not _TENANT_SHAPE.match(tenant):
        raise BadRequest(
            "X-Tenant-ID must be 1 to 64 of letters, digits, '-', '_', '.'", field="X-Tenant-ID"
        )
    return tenant
