"""Initial registry: tenants, heads, immutable head versions, aliases, API keys.

Revision ID: 0001
Revises:
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

NAME = sa.String(64)
WHEN = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "tenants",
        sa.Column("name", NAME, primary_key=True),
        sa.Column("created_at", WHEN, nullable=False),
    )
    op.create_table(
        "heads",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("tenant", NAME, nullable=False),
        sa.Column("name", NAME, nullable=False),
        sa.Column("next_version", sa.Integer, nullable=False),
        sa.Column("created_at", WHEN, nullable=False),
        sa.UniqueConstraint("tenant", "name", name="uq_heads_tenant_name"),
    )
    op.create_table(
        "head_versions",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column(
            "head_id", sa.Integer, sa.ForeignKey("heads.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("labels", sa.JSON, nullable=False),
        sa.Column("n_examples", sa.Integer, nullable=False),
        sa.Column("backbone", sa.String(200), nullable=False),
        sa.Column("fingerprint", sa.String(80), nullable=False),
        sa.Column("config", sa.Text, nullable=False),
        sa.Column("weights", sa.LargeBinary, nullable=False),
        sa.Column("size_bytes", sa.BigInteger, nullable=False),
        sa.Column("report", sa.JSON, nullable=False),
        sa.Column("train_ms", sa.Float, nullable=False),
        sa.Column("created_at", WHEN, nullable=False),
        sa.UniqueConstraint("head_id", "version", name="uq_head_versions_head_version"),
    )
    op.create_table(
        "aliases",
        sa.Column(
            "head_id", sa.Integer, sa.ForeignKey("heads.id", ondelete="CASCADE"), primary_key=True
        ),
        sa.Column("name", NAME, primary_key=True),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("updated_at", WHEN, nullable=False),
    )
    op.create_table(
        "api_keys",
        sa.Column("prefix", sa.String(16), primary_key=True),
        sa.Column("tenant", NAME, nullable=False),
        sa.Column("key_hash", sa.String(64), nullable=False),
        sa.Column("created_at", WHEN, nullable=False),
        sa.Column("revoked_at", WHEN, nullable=True),
    )
    op.create_index("ix_api_keys_tenant", "api_keys", ["tenant"])


def downgrade() -> None:
    op.drop_table("api_keys")
    op.drop_table("aliases")
    op.drop_table("head_versions")
    op.drop_table("heads")
    op.drop_table("tenants")
