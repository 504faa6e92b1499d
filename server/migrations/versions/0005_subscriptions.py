"""Subscriptions and pause: items checked again and again, each check recorded; items
and sites paused by an operator.

- items.check_every, tasks.check_every (the metadata task's copy) and tasks.check_count;
- the ``scheduled`` state (a subscription waiting for its next check) has its own partial
  index, outside the queue indexes; ``paused`` tasks are indexed by item;
- items.paused_at, site_states.paused_at;
- site_states.test_*: the last health test of a site a node ran;
- tasks.gone_at / gone_check_id: a downloaded post a full check no longer found;
- checks: one row per check of a metadata task.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
When = sa.DateTime(timezone=True)


def _where(condition: str) -> dict:
    return {"sqlite_where": sa.text(condition), "postgresql_where": sa.text(condition)}


def upgrade():
    op.add_column("items", sa.Column("check_every", sa.Integer()))
    op.add_column("items", sa.Column("paused_at", When))
    op.add_column("tasks", sa.Column("check_every", sa.Integer()))
    op.add_column("tasks", sa.Column("check_count", sa.Integer()))
    op.add_column("tasks", sa.Column("gone_at", When))
    op.add_column("tasks", sa.Column("gone_check_id", BigId))
    op.add_column("site_states", sa.Column("paused_at", When))
    op.add_column("site_states", sa.Column("test_at", When))
    op.add_column("site_states", sa.Column("test_client_id", sa.Integer()))
    op.add_column("site_states", sa.Column("test_passed", sa.Boolean()))
    op.add_column("site_states", sa.Column("test_checks", sa.JSON()))
    op.create_index("ix_tasks_scheduled", "tasks", ["available_at"], **_where("state = 'scheduled'"))
    op.create_index("ix_tasks_paused", "tasks", ["item_id"], **_where("state = 'paused'"))
    op.create_index("ix_tasks_gone", "tasks", ["gone_at"], **_where("gone_at IS NOT NULL"))
    op.create_table(
        "checks",
        sa.Column("id", BigId, primary_key=True),
        sa.Column("task_id", BigId, nullable=False),
        sa.Column("item_id", BigId),
        sa.Column("site", sa.String(100), nullable=False),
        sa.Column("client_id", sa.Integer(), nullable=False),
        sa.Column("checked_at", When, nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("posts_seen", sa.Integer(), nullable=False),
        sa.Column("new_posts", sa.Integer(), nullable=False),
        sa.Column("known_posts", sa.Integer(), nullable=False),
        sa.Column("stopped_at_known", sa.Boolean(), nullable=False),
        sa.Column("full", sa.Boolean(), nullable=False),
        sa.Column("head", sa.JSON()),
        sa.Column("error", sa.Text()),
    )
    op.create_index("ix_checks_task", "checks", ["task_id", "id"])
    op.create_index("ix_checks_item", "checks", ["item_id", "id"])


def downgrade():
    op.drop_table("checks")
    op.drop_index("ix_tasks_gone", table_name="tasks")
    op.drop_index("ix_tasks_paused", table_name="tasks")
    op.drop_index("ix_tasks_scheduled", table_name="tasks")
    for column in ("test_checks", "test_passed", "test_client_id", "test_at", "paused_at"):
        op.drop_column("site_states", column)
    op.drop_column("tasks", "gone_check_id")
    op.drop_column("tasks", "gone_at")
    op.drop_column("tasks", "check_count")
    op.drop_column("tasks", "check_every")
    op.drop_column("items", "paused_at")
    op.drop_column("items", "check_every")
