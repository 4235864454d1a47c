"""central: deployments, thumbnails, sync_events, devices, central_meta, trap_roles and row-level security

Revision ID: c001
Revises:
Create Date: 2026-12-04 23:58:00

Before this revision `birdtrap sync` made the first three tables at run time (create_all); a central
database made that way is adopted: a table that exists is left as it is.
Row-level security: a role listed in `trap_roles` reads and writes only its camera's rows (a role
not listed, such as the owner or the web server's, is not restricted by it; table GRANTs still
apply). docs/SCALE.md gives the SQL that makes a trap's role.
"""

from __future__ import annotations

import uuid

import sqlalchemy as sa
from alembic import op

revision = "c001"
down_revision = None
branch_labels = None
depends_on = None

ORIGINAL = "duplicate_of IS NULL AND status IN ('pending', 'done')"
# A trap's role sees its own camera's rows; every other role is not restricted by these policies.
NOT_A_TRAP = "NOT EXISTS (SELECT 1 FROM trap_roles WHERE role_name = current_user)"
OWN_CAMERA = "camera_id IN (SELECT camera_id FROM trap_roles WHERE role_name = current_user)"
POLICIES = {
    "images": OWN_CAMERA,
    "events": OWN_CAMERA,
    "deployments": OWN_CAMERA,
    "thumbnails": OWN_CAMERA,
    "devices": OWN_CAMERA,
    "predictions": "image_id IN (SELECT id FROM images)",  # images as this role sees them
    "corrections": "event_id IN (SELECT id FROM events)",
    "sync_events": "event_id IN (SELECT id FROM events)",
}


def upgrade() -> None:
    inspector = sa.inspect(op.get_bind())
    have = set(inspector.get_table_names())
    if "deployments" not in have:
        op.create_table(
            "deployments",
            sa.Column("deployment_id", sa.String(length=100), nullable=False),
            sa.Column("camera_id", sa.String(length=100), nullable=False),
            sa.Column("location_name", sa.String(length=200), nullable=True),
            sa.Column("latitude", sa.Float(), nullable=True),
            sa.Column("longitude", sa.Float(), nullable=True),
            sa.Column("coordinate_uncertainty", sa.Integer(), nullable=True),
            sa.Column("utc_offset", sa.String(length=8), nullable=True),
            sa.Column("camera_model", sa.String(length=200), nullable=True),
            sa.Column("source", sa.String(length=36), nullable=False),
            sa.Column("updated_at", sa.DateTime(), nullable=False),
            sa.PrimaryKeyConstraint("deployment_id"),
        )
        op.create_index("ix_deployments_camera_id", "deployments", ["camera_id"])
    if "thumbnails" not in have:
        op.create_table(
            "thumbnails",
            sa.Column("camera_id", sa.String(length=100), nullable=False),
            sa.Column("sha256", sa.String(length=64), nullable=False),
            sa.Column("jpeg", sa.LargeBinary(), nullable=False),
            sa.Column("width", sa.Integer(), nullable=False),
            sa.Column("height", sa.Integer(), nullable=False),
            sa.Column("created_at", sa.DateTime(), nullable=False),
            sa.PrimaryKeyConstraint("camera_id", "sha256"),
        )
    if "sync_events" not in have:
        op.create_table(
            "sync_events",
            sa.Column("source", sa.String(length=36), nullable=False),
            sa.Column("source_event_id", sa.Integer(), nullable=False),
            sa.Column("event_id", sa.Integer(), nullable=False),
            sa.PrimaryKeyConstraint("source", "source_event_id"),
        )
        op.create_index("ix_sync_events_event_id", "sync_events", ["event_id"])
    op.create_table(
        "devices",
        sa.Column("device_id", sa.String(length=36), nullable=False),
        sa.Column("camera_id", sa.String(length=100), nullable=False),
        sa.Column("deployment_id", sa.String(length=100), nullable=True),
        sa.Column("host", sa.String(length=200), nullable=True),
        sa.Column("birdtrap_version", sa.String(length=32), nullable=True),
        sa.Column("schema_revision", sa.String(length=32), nullable=True),
        sa.Column("last_sync_at", sa.DateTime(), nullable=False),
        sa.Column("last_photo_at", sa.DateTime(), nullable=True),
        sa.Column("last_processed_at", sa.DateTime(), nullable=True),
        sa.Column("photos", sa.Integer(), nullable=False),
        sa.Column("failed", sa.Integer(), nullable=False),
        sa.Column("pending", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("device_id"),
    )
    op.create_table(
        "central_meta",
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("value", sa.String(length=256), nullable=False),
        sa.PrimaryKeyConstraint("key"),
    )
    op.bulk_insert(
        sa.table("central_meta", sa.column("key", sa.String), sa.column("value", sa.String)),
        [{"key": "central_id", "value": str(uuid.uuid4())}],
    )
    op.create_table(
        "trap_roles",
        sa.Column("role_name", sa.String(length=63), nullable=False),
        sa.Column("camera_id", sa.String(length=100), nullable=False),
        sa.PrimaryKeyConstraint("role_name", "camera_id"),
    )
    # Photo identity per camera: two traps may hold the same file, at the same path too.
    op.execute("DROP INDEX IF EXISTS uq_images_original_sha256")
    op.execute(f"CREATE UNIQUE INDEX IF NOT EXISTS uq_images_camera_sha256 ON images (camera_id, sha256) WHERE {ORIGINAL}")
    op.execute("ALTER TABLE images DROP CONSTRAINT IF EXISTS uq_images_path_sha256")
    op.execute("CREATE UNIQUE INDEX IF NOT EXISTS uq_images_camera_path_sha256 ON images (camera_id, path, sha256)")
    for table, own in POLICIES.items():
        op.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
        op.execute(f"CREATE POLICY trap_own_rows ON {table} USING ({NOT_A_TRAP} OR {own}) WITH CHECK ({NOT_A_TRAP} OR {own})")


def downgrade() -> None:
    for table in POLICIES:
        op.execute(f"DROP POLICY IF EXISTS trap_own_rows ON {table}")
        op.execute(f"ALTER TABLE {table} DISABLE ROW LEVEL SECURITY")
    op.drop_table("trap_roles")
    op.drop_table("central_meta")
    op.drop_table("devices")
