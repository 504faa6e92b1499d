"""The central file store: where each file's object lives, and whether its node kept a copy.

- files.store_key: the content-addressed object (``<prefix>/sha256/ab/cd/<sha256>``), or
  NULL for a file only its node holds;
- files.on_node: false once the node removed its copy after a verified upload.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade():
    op.add_column("files", sa.Column("store_key", sa.Text()))
    op.add_column("files", sa.Column("on_node", sa.Boolean(), nullable=False, server_default=sa.text("true")))


def downgrade():
    with op.batch_alter_table("files") as batch:
        batch.drop_column("on_node")
        batch.drop_column("store_key")
