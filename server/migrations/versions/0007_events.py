"""Events: the outbox the event sender delivers from, and where each destination stands.

- events: one row per event (file.downloaded, item.synchronized, task.dead...), written
  in the transaction of the change it reports; AUTOINCREMENT on SQLite so that a pruned
  id is never reused (consumers deduplicate by id);
- event_deliveries: which destination has which event;
- event_destinations: per destination, the id up to which everything is delivered, and
  its failures (backoff, ``events status``);
- items.synchronized_at: when every post the item found was last done or dead.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-05
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
When = sa.DateTime(timezone=True)


def upgrade():
    op.create_table(
        "events",
        sa.Column("id", BigId, primary_key=True),
        sa.Column("type", sa.String(32), nullable=False),
        sa.Column("created_at", When, nullable=False),
        sa.Column("body", sa.JSON(), nullable=False),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_events_created", "events", ["created_at"])
    op.create_table(
        "event_deliveries",
        sa.Column("destination", sa.String(200), primary_key=True),
        sa.Column("event_id", BigId, primary_key=True),
        sa.Column("delivered_at", When, nullable=False),
    )
    op.create_table(
        "event_destinations",
        sa.Column("name", sa.String(200), primary_key=True),
        sa.Column("floor", BigId, nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", When),
        sa.Column("last_error", sa.Text()),
        sa.Column("last_error_at", When),
        sa.Column("last_delivered_at", When),
    )
    op.add_column("items", sa.Column("synchronized_at", When))


def downgrade():
    with op.batch_alter_table("items") as batch:
        batch.drop_column("synchronized_at")
    op.drop_table("event_destinations")
    op.drop_table("event_deliveries")
    op.drop_index("ix_events_created", table_name="events")
    op.drop_table("events")
