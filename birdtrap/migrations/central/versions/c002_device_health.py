"""central: each trap's camera health in its fleet row

Revision ID: c002
Revises: c001
Create Date: 2026-12-05 03:00:00

`birdtrap fleet status` and /fleet show, per trap, the camera-health problems open on it at its
last sync (lens blocked, camera moved, clock drift, ...), or "ok". NULL for a row last written by
a trap older than this revision (such traps keep syncing: COMPATIBLE_VERSIONS).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "c002"
down_revision = "c001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("devices", sa.Column("health", sa.Text(), nullable=True))


def downgrade() -> None:
    op.drop_column("devices", "health")
