"""Inventory rows remembered as they were written: a hash of each item's row as last
imported, so re-importing an unchanged file compares hashes instead of parsing every row.
Items imported before have none: their next import parses them once and stores it.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-05
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("items") as batch:
        batch.add_column(sa.Column("row_hash", sa.String(64), nullable=True))


def downgrade():
    with op.batch_alter_table("items") as batch:
        batch.drop_column("row_hash")
