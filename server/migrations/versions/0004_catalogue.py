"""The archive catalogue: md5 on file records, which items found which posts, anchors
(known files) and duplicates.

- files.md5 (nodes report it from now on), and indexes for the catalogue's filters;
- item_posts: a post found by several items is one download task listed under each;
  filled from tasks.item_id for what existing databases already hold;
- known_files: anchors imported by ``import-known``;
- tasks.known_count (metadata: found posts skipped as known) and tasks.duplicate_of
  (downloads that end ``duplicate``: the file that has their content).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _where(condition: str) -> dict:
    return {"sqlite_where": sa.text(condition), "postgresql_where": sa.text(condition)}


def upgrade():
    # Plain ALTER TABLE ADD COLUMN on both backends (no SQLite batch rebuild: it would
    # lose the DESC of the queue index).
    op.add_column("files", sa.Column("md5", sa.String(32)))
    op.add_column("tasks", sa.Column("known_count", sa.Integer()))
    op.add_column("tasks", sa.Column("duplicate_of", BigId))
    op.create_index("ix_files_md5", "files", ["md5"], **_where("md5 IS NOT NULL"))
    op.create_index("ix_files_client", "files", ["client_id", "id"])
    op.create_index("ix_files_created", "files", ["created_at"])

    op.create_table(
        "item_posts",
        sa.Column("item_id", BigId, primary_key=True),
        sa.Column("task_id", BigId, primary_key=True),
        sa.Column("found_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_item_posts_task", "item_posts", ["task_id"])
    op.execute(
        "INSERT INTO item_posts (item_id, task_id, found_at) "
        "SELECT item_id, id, created_at FROM tasks WHERE kind = 'download' AND item_id IS NOT NULL"
    )

    op.create_table(
        "known_files",
        sa.Column("id", BigId, primary_key=True),
        sa.Column("site", sa.String(100)),
        sa.Column("remote_id", sa.String(255)),
        sa.Column("url_key", sa.String(64)),
        sa.Column("url", sa.Text()),
        sa.Column("sha256", sa.String(64)),
        sa.Column("md5", sa.String(32)),
        sa.Column("source", sa.Text()),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index(
        "uq_known_post", "known_files", ["site", "remote_id"], unique=True, **_where("remote_id IS NOT NULL")
    )
    op.create_index("uq_known_url", "known_files", ["url_key"], unique=True, **_where("url_key IS NOT NULL"))
    op.create_index("uq_known_sha256", "known_files", ["sha256"], unique=True, **_where("sha256 IS NOT NULL"))
    op.create_index("uq_known_md5", "known_files", ["md5"], unique=True, **_where("md5 IS NOT NULL"))


def downgrade():
    op.drop_table("known_files")
    op.drop_table("item_posts")
    op.drop_index("ix_files_created", table_name="files")
    op.drop_index("ix_files_client", table_name="files")
    op.drop_index("ix_files_md5", table_name="files")
    op.drop_column("tasks", "duplicate_of")
    op.drop_column("tasks", "known_count")
    op.drop_column("files", "md5")
