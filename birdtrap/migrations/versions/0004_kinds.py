"""kinds that tell the truth: 'empty' becomes 'blank', 'unknown' becomes 'unsure'

Issue 22: a frame is `blank` only on evidence that nothing is there, and a frame no model is sure
of is `unsure`. Rows written before say "empty" and "unknown"; they are renamed in every column
that holds a kind, so queries, exports and the web see one vocabulary. What the old rows meant
is not re-judged here (that needs the photos): an old "empty" stays a claim of nothing there.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-04 23:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

# (table, column) pairs that hold a photo's or an event's kind.
KIND_COLUMNS = (("images", "kind"), ("events", "kind"), ("corrections", "kind"), ("corrections", "machine_kind"))
RENAMES = (("empty", "blank"), ("unknown", "unsure"))


def _rename(pairs: tuple[tuple[str, str], ...]) -> None:
    for table, column in KIND_COLUMNS:
        for old, new in pairs:
            op.execute(sa.text(f"UPDATE {table} SET {column} = :new WHERE {column} = :old").bindparams(old=old, new=new))


def upgrade() -> None:
    _rename(RENAMES)


def downgrade() -> None:
    # Older birdtrap had no "vehicle": such a frame goes back as "unknown" (a person should look).
    _rename(tuple((new, old) for old, new in RENAMES))
    for table, column in KIND_COLUMNS:
        op.execute(sa.text(f"UPDATE {table} SET {column} = 'unknown' WHERE {column} = 'vehicle'"))
