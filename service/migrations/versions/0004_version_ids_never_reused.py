"""A deleted version's id is never handed out again (SQLite: AUTOINCREMENT).

Per-process head caches key on a version's id. Without AUTOINCREMENT, SQLite gives a new row
the largest id in use plus one, so deleting the newest version and training another head gave
the new version the deleted one's id, and a process that had cached the deleted version served
its weights for the new one, another tenant's included. PostgreSQL's sequences never hand an id
out twice, so there is nothing to change there.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-04
"""

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    # Nothing references head_versions, so rebuilding it (copy, drop, rename) loses nothing;
    # SQLite's sequence for the new table starts at the largest id copied into it.
    with op.batch_alter_table(
        "head_versions", recreate="always", table_kwargs={"sqlite_autoincrement": True}
    ):
        pass


def downgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    with op.batch_alter_table("head_versions", recreate="always"):
        pass
