"""Each version keeps its training set's features, so later versions can build on it.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("head_versions") as batch:
        batch.add_column(sa.Column("training_data", sa.LargeBinary, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("head_versions") as batch:
        batch.drop_column("training_data")
