"""fleet sync: device identity, a sync sequence, sync_state and review origins (issue 21)

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04 23:55:00

- `images.sync_seq`: a number from the device's own sequence, taken each time a processed photo
  (status done) is written or changed (a result, a re-processing, a new event). Sync resumes after
  the highest number pushed, so a photo stamped by a clock that was behind, or committed late,
  still travels; wall-clock time plays no part.
- `sync_state` (made at run time by sync.py before this revision): progress per central
  database, keyed by that database's own id, not by the URL that reached it.
- `meta.device_id`: this device's identity in every central database. A device that synced
  before adopts the source id its first central rows were written under, so nothing is duplicated;
  the other source ids (one per URL spelling, the bug) are kept in `meta.sync_legacy_sources` for
  sync to fold into the device's identity centrally.
- `corrections.origin`/`origin_id`: where a review was made (a device id, or "central"), so reviews
  travel both ways without coming back as copies.
"""

from __future__ import annotations

import uuid

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    bind = op.get_bind()
    inspector = sa.inspect(bind)
    with op.batch_alter_table("images", schema=None) as batch_op:
        batch_op.add_column(sa.Column("sync_seq", sa.Integer(), nullable=True))
    # Every processed photo gets a number; progress restarts from 0 (a full, idempotent push).
    op.execute("UPDATE images SET sync_seq = id WHERE status = 'done'")
    if "ix_images_processed_at" in {i["name"] for i in inspector.get_indexes("images")}:
        op.drop_index("ix_images_processed_at", table_name="images")
    op.create_index("ix_images_sync_seq", "images", ["sync_seq"], unique=False)

    device, legacy = str(uuid.uuid4()), []
    if inspector.has_table("sync_state"):
        old = bind.execute(sa.text("SELECT source FROM sync_state ORDER BY pushed DESC, updated_at")).scalars().all()
        if old:
            device, legacy = old[0], list(dict.fromkeys(old[1:]))
        op.drop_table("sync_state")
    meta = sa.table("meta", sa.column("key", sa.String), sa.column("value", sa.String))
    op.execute(meta.delete().where(meta.c.key.in_(["device_id", "sync_legacy_sources"])))
    rows = [{"key": "device_id", "value": device}]
    if legacy:
        rows.append({"key": "sync_legacy_sources", "value": " ".join(legacy)[:256]})
    op.bulk_insert(meta, rows)

    op.create_table(
        "sync_state",
        sa.Column("central_id", sa.String(length=36), nullable=False),
        sa.Column("url", sa.String(length=300), nullable=False),
        sa.Column("image_seq", sa.Integer(), nullable=False),
        sa.Column("image_id", sa.Integer(), nullable=False),
        sa.Column("corrections_pushed", sa.Integer(), nullable=False),
        sa.Column("corrections_pulled", sa.Integer(), nullable=False),
        sa.Column("pushed", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("central_id"),
    )
    with op.batch_alter_table("corrections", schema=None) as batch_op:
        batch_op.add_column(sa.Column("origin", sa.String(length=36), nullable=True))
        batch_op.add_column(sa.Column("origin_id", sa.Integer(), nullable=True))
        batch_op.create_index("uq_corrections_origin", ["origin", "origin_id"], unique=True)


def downgrade() -> None:
    with op.batch_alter_table("corrections", schema=None) as batch_op:
        batch_op.drop_index("uq_corrections_origin")
        batch_op.drop_column("origin_id")
        batch_op.drop_column("origin")
    op.drop_table("sync_state")
    op.execute("DELETE FROM meta WHERE key IN ('device_id', 'sync_legacy_sources')")
    op.drop_index("ix_images_sync_seq", table_name="images")
    with op.batch_alter_table("images", schema=None) as batch_op:
        batch_op.drop_column("sync_seq")
