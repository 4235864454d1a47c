"""learn this camera: labelled examples and the camera's head (issue 23)

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "camera_examples",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("camera_id", sa.String(length=100), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("label", sa.String(length=200), nullable=False),
        sa.Column("x0", sa.Float(), nullable=True),
        sa.Column("y0", sa.Float(), nullable=True),
        sa.Column("x1", sa.Float(), nullable=True),
        sa.Column("y1", sa.Float(), nullable=True),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("embedder", sa.String(length=200), nullable=True),
        sa.Column("vectors", sa.LargeBinary(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("camera_id", "sha256", name="uq_camera_examples_camera_sha256"),
    )
    op.create_table(
        "camera_heads",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("camera_id", sa.String(length=100), nullable=False),
        sa.Column("embedder", sa.String(length=200), nullable=False),
        sa.Column("head", sa.LargeBinary(), nullable=False),
        sa.Column("figures", sa.Text(), nullable=False),
        sa.Column("in_use", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_camera_heads_camera", "camera_heads", ["camera_id", "id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_camera_heads_camera", table_name="camera_heads")
    op.drop_table("camera_heads")
    op.drop_table("camera_examples")
