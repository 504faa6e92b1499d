"""Video files: what a probe of each video or audio file found (duration, size in
pixels, codecs, container), and room in counter names for per-site video time
(``video_ms.<site>``, a site name being up to 63 characters).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-05
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("files") as batch:
        batch.add_column(sa.Column("duration", sa.Float(), nullable=True))
        batch.add_column(sa.Column("width", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("height", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("vcodec", sa.String(32), nullable=True))
        batch.add_column(sa.Column("acodec", sa.String(32), nullable=True))
        batch.add_column(sa.Column("container", sa.String(32), nullable=True))
    with op.batch_alter_table("counters") as batch:
        batch.alter_column("name", type_=sa.String(80), existing_type=sa.String(40), existing_nullable=False)


def downgrade():
    with op.batch_alter_table("counters") as batch:
        batch.alter_column("name", type_=sa.String(40), existing_type=sa.String(80), existing_nullable=False)
    with op.batch_alter_table("files") as batch:
        for column in ("container", "acodec", "vcodec", "height", "width", "duration"):
            batch.drop_column(column)
