"""central: a trap's camera examples and heads under row-level security

Revision ID: c003
Revises: c002
Create Date: 2026-12-05 04:05:00

`birdtrap sync` pushes each camera's examples and learnt heads (scale/camera_learning.py) into the
device schema's camera_examples and camera_heads tables. Like the photos, a trap's role reads and
writes only its own camera's rows there (c001's rule; docs/SCALE.md grants the tables).
"""

from __future__ import annotations

from alembic import op

revision = "c003"
down_revision = "c002"
branch_labels = None
depends_on = None

NOT_A_TRAP = "NOT EXISTS (SELECT 1 FROM trap_roles WHERE role_name = current_user)"
OWN_CAMERA = "camera_id IN (SELECT camera_id FROM trap_roles WHERE role_name = current_user)"
TABLES = ("camera_examples", "camera_heads")


def upgrade() -> None:
    for table in TABLES:
        op.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
        op.execute(f"CREATE POLICY trap_own_rows ON {table} USING ({NOT_A_TRAP} OR {OWN_CAMERA}) WITH CHECK ({NOT_A_TRAP} OR {OWN_CAMERA})")


def downgrade() -> None:
    for table in TABLES:
        op.execute(f"DROP POLICY IF EXISTS trap_own_rows ON {table}")
        op.execute(f"ALTER TABLE {table} DISABLE ROW LEVEL SECURITY")
