"""people hidden at the source and camera health (issue 19): each photo's person boxes and frame
measures, and the cameras' problems

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("images") as batch:
        batch.add_column(sa.Column("person_boxes", sa.Text(), nullable=True))
        for name in ("brightness", "contrast", "sharpness", "colour"):
            batch.add_column(sa.Column(name, sa.Float(), nullable=True))
        batch.add_column(sa.Column("scene", sa.LargeBinary(), nullable=True))
    op.create_table(
        "camera_problems",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("camera_id", sa.String(length=100), nullable=False),
        sa.Column("check", sa.String(length=32), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("opened_at", sa.DateTime(), nullable=False),
        sa.Column("resolved_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_camera_problems_open", "camera_problems", ["camera_id", "resolved_at"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_camera_problems_open", table_name="camera_problems")
    op.drop_table("camera_problems")
    with op.batch_alter_table("images") as batch:
        for name in ("scene", "colour", "sharpness", "contrast", "brightness", "person_boxes"):
            batch.drop_column(name)
