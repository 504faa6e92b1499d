"""Which import last read each item moves from ``items`` to a narrow table of its own,
``item_imports``, half of each page left free on PostgreSQL: every import writes it for
every row it reads, and rewriting the narrow rows in place is cheaper than rewriting
every item with its indexes (and leaves ``items`` without a dead version per row).

Only a running import reads these marks, so the old values are not carried over. No
foreign key: its check on every new item cost more than writing the row.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-05
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer, "sqlite")


def upgrade():
    op.create_table(
        "item_imports",
        sa.Column("item_id", BigId, primary_key=True, autoincrement=False),
        sa.Column("import_id", sa.String(36), nullable=False),
        sa.Column("import_line", sa.BigInteger()),
        postgresql_with={"fillfactor": 50},
    )
    # A plain ALTER on both databases: SQLite's batch mode would copy and drop the items
    # table, which tasks refer to.
    op.execute("ALTER TABLE items DROP COLUMN import_id")
    op.execute("ALTER TABLE items DROP COLUMN import_line")


def downgrade():
    op.execute("ALTER TABLE items ADD COLUMN import_id VARCHAR(36)")
    op.execute("ALTER TABLE items ADD COLUMN import_line BIGINT")
    op.drop_table("item_imports")
