"""Kept counts: what ``/stats``, ``/metrics`` and the dashboard report, maintained as
tasks, items and files change instead of counted at every look.

- task_counts: tasks per (kind, site, state);
- node_counts: per node, the tasks it has done (still done) and the files and bytes it
  recorded;
- minute_counts: per minute, kind and node, tasks completed and bytes recorded (the last
  hour of ``/stats``, the dashboard's day);
- counters: items per state and the archive's totals (distinct content, anchors'
  skips, posts gone upstream, anchors by what they name).

Each has a ``shard`` column: on PostgreSQL concurrent transactions add to different rows
(``server.counts``). The upgrade fills them by counting the tables once.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-05
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

When = sa.DateTime(timezone=True)


def upgrade():
    op.create_table(
        "task_counts",
        sa.Column("kind", sa.String(16), primary_key=True),
        sa.Column("site", sa.String(100), primary_key=True),
        sa.Column("state", sa.String(16), primary_key=True),
        sa.Column("shard", sa.SmallInteger(), primary_key=True),
        sa.Column("n", sa.BigInteger(), nullable=False),
    )
    op.create_table(
        "node_counts",
        sa.Column("client_id", sa.Integer(), primary_key=True),
        sa.Column("shard", sa.SmallInteger(), primary_key=True),
        sa.Column("tasks_done", sa.BigInteger(), nullable=False),
        sa.Column("files", sa.BigInteger(), nullable=False),
        sa.Column("bytes", sa.BigInteger(), nullable=False),
    )
    op.create_table(
        "minute_counts",
        sa.Column("minute", When, primary_key=True),
        sa.Column("kind", sa.String(16), primary_key=True),
        sa.Column("client_id", sa.Integer(), primary_key=True),
        sa.Column("shard", sa.SmallInteger(), primary_key=True),
        sa.Column("done", sa.BigInteger(), nullable=False),
        sa.Column("bytes", sa.BigInteger(), nullable=False),
    )
    op.create_table(
        "counters",
        sa.Column("name", sa.String(40), primary_key=True),
        sa.Column("shard", sa.SmallInteger(), primary_key=True),
        sa.Column("n", sa.BigInteger(), nullable=False),
    )
    # Counted once here, by the same code as ``flask stats rebuild``.
    from server.counts import recount_into

    recount_into(op.get_bind(), videos=False)  # the files' probe columns come in 0009


def downgrade():
    for table in ("counters", "minute_counts", "node_counts", "task_counts"):
        op.drop_table(table)
