"""Remember each lease's length: a heartbeat extends a lease by its own length.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-21
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade():
    # Plain ALTER TABLE on both backends: a SQLite batch rebuild would recreate indexes from
    # reflection, which loses what reflection cannot see (e.g. DESC in an index).
    op.add_column("leases", sa.Column("seconds", sa.Integer(), nullable=False, server_default="3600"))


def downgrade():
    op.drop_column("leases", "seconds")
