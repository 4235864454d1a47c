"""This camera's examples and head in the database (issue 23): they survive restarts, are backed
up with the database and travel with it. Functions take a Session and never commit.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass

import numpy as np
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from birdtrap.identify.camera_head import CameraHead, FrameExample
from birdtrap.identify.regions import Box
from birdtrap.store.queries import event_photos
from birdtrap.store.tables import KIND_BIRD, CameraExampleRecord, CameraHeadRecord, CorrectionRecord

REVIEW, LABELS = "review", "labels"


def add_example(
    session: Session, camera_id: str, sha256: str, path: str, label: str, box: Box | None = None, source: str = REVIEW
) -> CameraExampleRecord:
    """Store (or relabel) one labelled frame of `camera_id`; a frame has one label, the newest."""
    record = session.scalar(
        select(CameraExampleRecord).where(CameraExampleRecord.camera_id == camera_id, CameraExampleRecord.sha256 == sha256)
    )
    if record is None:
        record = CameraExampleRecord(camera_id=camera_id, sha256=sha256, path=path, label=label, source=source)
        session.add(record)
    elif record.label != label or _box(record) != box:
        record.vectors = record.embedder = None  # the bird's region may have moved: embed again
    record.path, record.label, record.source = path, label, source
    record.x0, record.y0, record.x1, record.y1 = box if box is not None else (None, None, None, None)
    session.flush()
    return record


def add_review_examples(session: Session, event_id: int, correction: CorrectionRecord, site_class: str | None = None) -> int:
    """Every photo of a reviewed event becomes an example of its camera; returns how many.

    The label is the reviewed taxon, else `site_class` ("fence post", "animal", "person") or
    `blank`. The region is the box stored with the photo's result where the machine found
    something there (the reviewer named it, not moved it); otherwise the head's learning chooses.
    """
    label = correction.scientific_name if correction.kind == KIND_BIRD and correction.scientific_name else (site_class or "blank")
    photos = event_photos(session, [event_id]).get(event_id, [])
    for image in photos:
        if not image.sha256:
            continue
        box = (image.box_x0, image.box_y0, image.box_x1, image.box_y1)
        found = image.kind in (KIND_BIRD, "animal") and None not in box and box != (0.0, 0.0, 1.0, 1.0)
        add_example(session, image.camera_id, image.sha256, image.path, label, box if found else None, REVIEW)  # type: ignore[arg-type]
    return len(photos)


def _box(record: CameraExampleRecord) -> Box | None:
    if record.x0 is None or record.y0 is None or record.x1 is None or record.y1 is None:
        return None
    return (record.x0, record.y0, record.x1, record.y1)


def example_box(record: CameraExampleRecord) -> Box | None:
    return _box(record)


def examples_of(session: Session, camera_id: str) -> list[CameraExampleRecord]:
    return list(
        session.scalars(select(CameraExampleRecord).where(CameraExampleRecord.camera_id == camera_id).order_by(CameraExampleRecord.id))
    )


def example_counts(session: Session, camera_id: str) -> dict[str, int]:
    query = (
        select(CameraExampleRecord.label, func.count())
        .where(CameraExampleRecord.camera_id == camera_id)
        .group_by(CameraExampleRecord.label)
        .order_by(CameraExampleRecord.label)
    )
    return {label: int(count) for label, count in session.execute(query)}


def cache_vectors(record: CameraExampleRecord, example: FrameExample, embedder: str) -> None:
    """Keep a frame's region embeddings with its example so relearning runs no model."""
    buffer = io.BytesIO()
    meta = json.dumps(
        {
            "boxes": example.boxes,
            "positive": example.positive,
            "gates": example.gates,
            "general_kind": example.general_kind,
            "general_taxon": example.general_taxon,
        }
    )
    np.savez_compressed(buffer, vectors=example.vectors.astype(np.float16), meta=np.array(meta))
    record.vectors, record.embedder = buffer.getvalue(), embedder


def cached_example(record: CameraExampleRecord, embedder: str) -> FrameExample | None:
    """The frame's example from its cached vectors, if they were made by `embedder`."""
    if record.vectors is None or record.embedder != embedder:
        return None
    with np.load(io.BytesIO(record.vectors)) as arrays:
        meta = json.loads(str(arrays["meta"]))
        vectors = arrays["vectors"].astype(np.float32)
    return FrameExample(
        record.sha256,
        record.label,
        vectors,
        tuple(tuple(b) for b in meta["boxes"]),
        meta["positive"],
        tuple(meta["gates"]),
        meta["general_kind"],
        meta["general_taxon"],
    )


@dataclass(frozen=True)
class HeadState:
    id: int
    in_use: bool
    figures: dict
    created_at: str


def save_head(session: Session, camera_id: str, head: CameraHead, figures: dict, in_use: bool) -> CameraHeadRecord:
    """Record a learnt head; one that is put in use retires the camera's previous one."""
    if in_use:
        session.execute(update(CameraHeadRecord).where(CameraHeadRecord.camera_id == camera_id).values(in_use=False))
    record = CameraHeadRecord(camera_id=camera_id, embedder=head.embedder, head=head.to_bytes(), figures=json.dumps(figures), in_use=in_use)
    session.add(record)
    session.flush()
    return record


def head_in_use(session: Session, camera_id: str) -> CameraHead | None:
    record = session.scalar(
        select(CameraHeadRecord)
        .where(CameraHeadRecord.camera_id == camera_id, CameraHeadRecord.in_use.is_(True))
        .order_by(CameraHeadRecord.id.desc())
    )
    return CameraHead.from_bytes(record.head) if record is not None else None


def latest_head(session: Session, camera_id: str) -> HeadState | None:
    """The newest head learnt for the camera (in use or refused), for `learn --status` and the web."""
    record = session.scalar(select(CameraHeadRecord).where(CameraHeadRecord.camera_id == camera_id).order_by(CameraHeadRecord.id.desc()))
    if record is None:
        return None
    in_use = session.scalar(select(func.count()).where(CameraHeadRecord.camera_id == camera_id, CameraHeadRecord.in_use.is_(True)))
    return HeadState(
        record.id,
        bool(record.in_use) or False,
        json.loads(record.figures) | {"a_head_in_use": bool(in_use)},
        record.created_at.isoformat(timespec="seconds"),
    )
