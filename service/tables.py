"""The registry's schema as SQLAlchemy Core tables; Alembic migrations in ``migrations/`` create it.

Heads are addressed by (tenant, name); every version is an immutable row with its own id, never
reused (AUTOINCREMENT on SQLite, a sequence on PostgreSQL), which is what per-process caches key
on, so a deleted or superseded version can never be served from a cache. A head row outlives its
versions (a tombstone that keeps ``next_version``), so a version number is never reused for
another model.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

metadata = MetaData()

NAME = String(64)

tenants = Table(
    "tenants",
    metadata,
    Column("name", NAME, primary_key=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

heads = Table(
    "heads",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("tenant", NAME, nullable=False),
    Column("name", NAME, nullable=False),
    Column("next_version", Integer, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("tenant", "name", name="uq_heads_tenant_name"),
)

head_versions = Table(
    "head_versions",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("head_id", Integer, ForeignKey("heads.id", ondelete="CASCADE"), nullable=False),
    Column("version", Integer, nullable=False),
    Column("kind", String(32), nullable=False),
    Column("labels", JSON, nullable=False),
    Column("n_examples", Integer, nullable=False),
    Column("backbone", String(200), nullable=False),
    Column("fingerprint", String(80), nullable=False),
    Column("config", Text, nullable=False),
    Column("weights", LargeBinary, nullable=False),
    # The training set as features (service/training_data.py): what "base_version" builds on.
    Column("training_data", LargeBinary, nullable=True),
    Column("size_bytes", BigInteger, nullable=False),
    Column("report", JSON, nullable=False),
    Column("train_ms", Float, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("head_id", "version", name="uq_head_versions_head_version"),
    # Ids are what caches key on: SQLite must never hand a deleted version's id out again.
    sqlite_autoincrement=True,
)

aliases = Table(
    "aliases",
    metadata,
    Column("head_id", Integer, ForeignKey("heads.id", ondelete="CASCADE"), primary_key=True),
    Column("name", NAME, primary_key=True),
    Column("version", Integer, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("prefix", String(16), primary_key=True),
    Column("tenant", NAME, nullable=False),
    Column("key_hash", String(64), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("revoked_at", DateTime(timezone=True), nullable=True),
    Index("ix_api_keys_tenant", "tenant"),
)

#: Training jobs (/v1/jobs/*). A job's examples are never stored: only the process that accepted
#: the job runs it, from memory, so a job whose process dies is failed, not resumed (see
#: service/jobs.py). ``owner`` and ``heartbeat_at`` are how any process tells a live job from one
#: whose process died.
jobs = Table(
    "jobs",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("tenant", NAME, nullable=False),
    Column("head", NAME, nullable=False),
    Column("kind", String(32), nullable=False),
    Column("status", String(16), nullable=False),
    Column("phase", String(16), nullable=False),
    Column("fraction", Float, nullable=False),
    Column("request", JSON, nullable=False),
    Column("error_code", String(64), nullable=True),
    Column("error_message", Text, nullable=True),
    Column("version", Integer, nullable=True),
    Column("result", JSON, nullable=True),
    Column("owner", String(120), nullable=False),
    Column("heartbeat_at", DateTime(timezone=True), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("finished_at", DateTime(timezone=True), nullable=True),
    Index("ix_jobs_status_heartbeat", "status", "heartbeat_at"),
    Index("ix_jobs_finished_at", "finished_at"),
)
