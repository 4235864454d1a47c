"""This camera's examples and learnt heads travel with `birdtrap sync` (issue 23).

A trap's examples (every review, every labelled folder) and the heads learnt from them are part
of what the owner taught it: they are pushed to the central database beside the photos, so they
survive the trap (a new Pi for the same camera starts from them) and the fleet can see what each
camera learnt. Examples are upserted by (camera, photo content): a relabelled frame replaces its
central row; a head is a new central row the first time it is seen (by camera and creation time),
and each head's `in_use` follows the trap's. Only rows that differ from the centre are written.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.orm import Session

from birdtrap.store.tables import CameraExampleRecord, CameraHeadRecord

EXAMPLE_COLUMNS = ("camera_id", "sha256", "path", "label", "x0", "y0", "x1", "y1", "source", "embedder", "vectors", "created_at")
# What makes a central example out of date (the vectors follow the label and box: add_example).
EXAMPLE_IDENTITY = ("label", "x0", "y0", "x1", "y1", "embedder")
HEAD_COLUMNS = ("camera_id", "embedder", "head", "figures", "in_use", "created_at")


def read_local(session: Session) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Every example and head of the device's database, as plain rows."""
    examples = [{c: getattr(r, c) for c in EXAMPLE_COLUMNS} for r in session.scalars(select(CameraExampleRecord))]
    heads = [{c: getattr(r, c) for c in HEAD_COLUMNS} for r in session.scalars(select(CameraHeadRecord).order_by(CameraHeadRecord.id))]
    return examples, heads


def _identity(row: dict[str, Any]) -> tuple:
    return (*(row[c] for c in EXAMPLE_IDENTITY), row["vectors"] is not None)


def write_central(session: Session, examples: list[dict[str, Any]], heads: list[dict[str, Any]]) -> tuple[int, int]:
    """Write the examples and heads the centre lacks or holds differently; returns (examples, heads) written."""
    cameras = {row["camera_id"] for row in examples} | {row["camera_id"] for row in heads}
    if not cameras:
        return 0, 0
    central_examples = {
        (r.camera_id, r.sha256): _identity({c: getattr(r, c) for c in (*EXAMPLE_IDENTITY, "vectors")})
        for r in session.scalars(select(CameraExampleRecord).where(CameraExampleRecord.camera_id.in_(cameras)))
    }
    changed = [row for row in examples if central_examples.get((row["camera_id"], row["sha256"])) != _identity(row)]
    table = CameraExampleRecord.__table__
    for row in changed:
        statement = pg_insert(table).values(row)
        session.execute(
            statement.on_conflict_do_update(
                constraint="uq_camera_examples_camera_sha256",
                set_={c: statement.excluded[c] for c in EXAMPLE_COLUMNS if c not in ("camera_id", "sha256")},
            )
        )
    central_heads = {
        (r.camera_id, r.created_at): r for r in session.scalars(select(CameraHeadRecord).where(CameraHeadRecord.camera_id.in_(cameras)))
    }
    written = 0
    for row in heads:
        found = central_heads.get((row["camera_id"], row["created_at"]))
        if found is None:
            session.add(CameraHeadRecord(**row))
            written += 1
        elif found.in_use != row["in_use"]:
            found.in_use = row["in_use"]
            written += 1
    session.flush()
    return len(changed), written
