"""Initial schema: api keys, items, tasks of both kinds, leases, site states, files.

Revision ID: 0001
Revises:
Create Date: 2026-11-21
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
When = sa.DateTime(timezone=True)


def _queued(condition: str) -> dict:
    return {"sqlite_where": sa.text(condition), "postgresql_where": sa.text(condition)}


def upgrade():
    op.create_table(
        "api_keys",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("name", sa.String(100), nullable=False, unique=True),
        sa.Column("key_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("created_at", When, nullable=False),
        sa.Column("last_seen_at", When),
        sa.Column("client_version", sa.String(32)),
        sa.Column("revoked_at", When),
    )
    op.create_table(
        "items",
        sa.Column("id", BigId, primary_key=True),
        sa.Column("key", sa.String(500), nullable=False, unique=True),
        sa.Column("url", sa.Text()),
        sa.Column("query", sa.Text()),
        sa.Column("title", sa.Text()),
        sa.Column("sites", sa.JSON()),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("extra", sa.JSON(), nullable=False),
        sa.Column("content_hash", sa.String(64), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("import_id", sa.String(36)),
        sa.Column("import_line", sa.BigInteger()),
        sa.Column("created_at", When, nullable=False),
        sa.Column("updated_at", When, nullable=False),
    )
    op.create_index("ix_items_state", "items", ["state"])
    op.create_table(
        "site_states",
        sa.Column("name", sa.String(100), primary_key=True),
        sa.Column("cooldown_until", When),
        sa.Column("cooldown_reason", sa.Text()),
        sa.Column("updated_at", When, nullable=False),
    )
    op.create_table(
        "leases",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("site", sa.String(100)),
        sa.Column("client_id", sa.Integer(), sa.ForeignKey("api_keys.id"), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("task_count", sa.Integer(), nullable=False),
        sa.Column("created_at", When, nullable=False),
        sa.Column("expires_at", When, nullable=False),
        sa.Column("ended_at", When),
    )
    op.create_index("ix_leases_state_expires", "leases", ["state", "expires_at"])
    op.create_table(
        "tasks",
        sa.Column("id", BigId, primary_key=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("site", sa.String(100), nullable=False),
        sa.Column("item_id", BigId, sa.ForeignKey("items.id", ondelete="SET NULL")),
        sa.Column("remote_id", sa.String(255)),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("payload", sa.JSON()),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("available_at", When, nullable=False),
        sa.Column("lease_id", sa.String(64)),
        sa.Column("result_lease_id", sa.String(64)),
        sa.Column("leased_at", When),
        sa.Column("error_class", sa.String(16)),
        sa.Column("last_error", sa.Text()),
        sa.Column("last_error_at", When),
        sa.Column("found_count", sa.Integer()),
        sa.Column("bytes", sa.BigInteger()),
        sa.Column("done_by", sa.Integer(), sa.ForeignKey("api_keys.id")),
        sa.Column("done_at", When),
        sa.Column("created_at", When, nullable=False),
        sa.Column("updated_at", When, nullable=False),
    )
    # Lease order is priority, then age, over queued tasks only: per site and across sites.
    op.create_index(
        "ix_tasks_queue_all", "tasks", ["kind", sa.text("priority DESC"), "id"], **_queued("state = 'queued'")
    )
    op.create_index(
        "ix_tasks_queue", "tasks", ["kind", "site", sa.text("priority DESC"), "id"], **_queued("state = 'queued'")
    )
    op.create_index("uq_tasks_download", "tasks", ["site", "remote_id"], unique=True, **_queued("kind = 'download'"))
    op.create_index("uq_tasks_metadata", "tasks", ["item_id", "site"], unique=True, **_queued("kind = 'metadata'"))
    op.create_index("ix_tasks_lease", "tasks", ["lease_id"])
    op.create_index("ix_tasks_counts", "tasks", ["kind", "site", "state"])
    op.create_index("ix_tasks_item", "tasks", ["item_id"])
    op.create_index("ix_tasks_done_at", "tasks", ["done_at"])
    op.create_index("ix_tasks_error_at", "tasks", ["last_error_at"])
    op.create_table(
        "files",
        sa.Column("id", BigId, primary_key=True),
        sa.Column("task_id", BigId, sa.ForeignKey("tasks.id", ondelete="CASCADE"), nullable=False),
        sa.Column("client_id", sa.Integer(), sa.ForeignKey("api_keys.id"), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("mime", sa.String(100)),
        sa.Column("phash", sa.String(16)),
        sa.Column("dhash", sa.String(16)),
        sa.Column("created_at", When, nullable=False),
    )
    op.create_index("ix_files_sha256", "files", ["sha256"])
    op.create_index("uq_files_task_path", "files", ["task_id", "client_id", "path"], unique=True)


def downgrade():
    op.drop_table("files")
    op.drop_table("tasks")
    op.drop_table("leases")
    op.drop_table("site_states")
    op.drop_table("items")
    op.drop_table("api_keys")
