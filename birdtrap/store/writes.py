"""What the daemon writes: photos registered, results and failures recorded, models, the
web's classify cache. Functions take a Session and never commit: the caller owns the transaction.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from birdtrap.errors import StoreError
from birdtrap.identify.health import FrameMeasure
from birdtrap.identify.privacy import boxes_to_text
from birdtrap.store.tables import DONE, DUPLICATE, FAILED, PENDING, ClassifyCacheRecord, ImageRecord, ModelRecord, PredictionRecord, utcnow

# A file name is bytes; Python shows a name that is not valid UTF-8 (Latin-1 from a FAT card or
# an old FTP tool: b"M\xf6we.jpg") with lone surrogates, which no database text column accepts.
# Such a name is stored with each undecodable byte written as a \xNN escape (readable; Python's
# "backslashreplace"); every valid name is stored unchanged, so rows written before this stay
# right, and the daemon compares a scanned name in this form, so a rescan finds it on record.
# `path_from_text` turns the text back into the name on disk.
_ESCAPED_BYTE = re.compile(r"\\x([89a-f][0-9a-f])")


def path_as_text(path: str) -> str:
    """The form of a file name (or any text holding one) that is stored and printed."""
    try:
        raw = path.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a surrogate that no file name decoded to
        return path.encode("utf-8", "backslashreplace").decode("utf-8")
    return raw.decode("utf-8", "backslashreplace")


def path_from_text(text: str) -> str:
    """The file name on disk of a stored path (the inverse of `path_as_text`).

    Only escapes that stand for bytes invalid in UTF-8 are undone, so a valid name that happens
    to hold the characters "\\xf6" comes back as it is unless those bytes could not be a name's.
    """
    if "\\x" not in text:
        return text
    raw = _ESCAPED_BYTE.sub(lambda m: chr(0xDC00 + int(m.group(1), 16)), text)
    name = os.fsencode(raw)
    try:
        name.decode("utf-8")
    except UnicodeDecodeError:
        return os.fsdecode(name)
    return text


@dataclass(frozen=True)
class Registration:
    image_id: int
    outcome: str  # "new", "pending" (left by a crash), "duplicate" or "seen"


def register_photo(
    session: Session,
    path: str,
    sha256: str,
    size_bytes: int,
    file_mtime: float,
    camera_id: str,
    deployment_id: str | None = None,
) -> Registration:
    """Record a photo as pending, or as a duplicate of an earlier one with the same content.

    The same path with the same content is "seen": a photo is counted once. Its size and mtime
    are refreshed then, so the rescan knows the file as it is now (content rewritten and then
    restored, or only touched) and stops offering it.
    """
    path = path_as_text(path)
    existing = session.scalar(
        select(ImageRecord).where(ImageRecord.path == path, ImageRecord.sha256 == sha256, ImageRecord.status != FAILED)
    )
    if existing is not None:
        # Pending: registered by a run that died before finishing it; process it now.
        if existing.status == PENDING:
            return Registration(existing.id, "pending")
        if (existing.size_bytes, existing.file_mtime) != (size_bytes, file_mtime):
            existing.size_bytes, existing.file_mtime = size_bytes, file_mtime
            session.flush()
        return Registration(existing.id, "seen")
    original = session.scalar(
        select(ImageRecord).where(ImageRecord.sha256 == sha256, ImageRecord.duplicate_of.is_(None), ImageRecord.status.in_((PENDING, DONE)))
    )
    # A failed attempt at this path is replaced, never counted twice; a pending row whose file
    # was rewritten before it was processed can never finish, so it ends as failed.
    session.execute(ImageRecord.__table__.delete().where(ImageRecord.path == path, ImageRecord.status == FAILED))
    session.execute(
        ImageRecord.__table__.update()
        .where(ImageRecord.path == path, ImageRecord.status == PENDING, ImageRecord.sha256 != sha256)
        .values(status=FAILED, error="the file was replaced before it was processed; the new content is recorded instead")
    )
    image = ImageRecord(
        path=path,
        sha256=sha256,
        size_bytes=size_bytes,
        file_mtime=file_mtime,
        camera_id=camera_id,
        deployment_id=deployment_id,
        status=PENDING if original is None else DUPLICATE,
        duplicate_of=None if original is None else original.id,
        processed_at=None if original is None else utcnow(),
    )
    session.add(image)
    session.flush()
    return Registration(image.id, "new" if original is None else "duplicate")


def record_failure(
    session: Session,
    path: str,
    error: str,
    camera_id: str,
    image_id: int | None = None,
    sha256: str | None = None,
    size_bytes: int | None = None,
    file_mtime: float | None = None,
) -> int:
    """Mark a photo failed with its reason (creating its row if it never got one).

    Copies registered as duplicates of it are not settled here: see `fail_copies` and
    `release_copies`.
    """
    path, error = path_as_text(path), path_as_text(error)
    image = session.get(ImageRecord, image_id) if image_id is not None else None
    if image is None:
        # A pending row for this path (left by a crash) or an earlier failure is updated, not repeated.
        image = session.scalar(
            select(ImageRecord).where(ImageRecord.path == path, ImageRecord.status.in_((PENDING, FAILED))).order_by(ImageRecord.id.desc())
        )
    if image is None:
        image = ImageRecord(path=path, sha256=sha256, size_bytes=size_bytes, file_mtime=file_mtime, camera_id=camera_id)
        session.add(image)
    image.status = FAILED
    image.error = error
    if size_bytes is not None:
        image.size_bytes, image.file_mtime = size_bytes, file_mtime
    image.processed_at = utcnow()
    session.flush()
    return image.id


def fail_copies(session: Session, image_id: int, reason: str) -> list[str]:
    """Its identical copies fail with the photo `image_id`, each as its own failed row.

    For a failure the bytes themselves cause (they are no photo): every copy would fail the same
    way, so each is recorded failed (still pointing at the original), and a user listing the
    failures sees every file to copy again. Returns the copies' stored paths.
    """
    original = session.get(ImageRecord, image_id)
    copies = list(session.scalars(select(ImageRecord).where(ImageRecord.duplicate_of == image_id, ImageRecord.status == DUPLICATE)))
    for copy in copies:
        copy.status = FAILED
        where = original.path if original is not None else f"photo {image_id}"
        copy.error = f"{copy.path} has the same content as {where}, which failed: {path_as_text(reason)}"
        copy.processed_at = utcnow()
    session.flush()
    return [copy.path for copy in copies]


def release_copies(session: Session, image_id: int) -> str | None:
    """The first identical copy of the failed photo `image_id` becomes the original, pending again.

    For a failure that is about the file or the moment (it vanished, a passing error), not its
    bytes: a good copy must still be processed. The others point at the new original. Returns
    the new original's stored path (to be processed), or None when there are no copies.
    """
    copies = list(
        session.scalars(
            select(ImageRecord).where(ImageRecord.duplicate_of == image_id, ImageRecord.status == DUPLICATE).order_by(ImageRecord.id)
        )
    )
    if not copies:
        return None
    heir, rest = copies[0], copies[1:]
    heir.status, heir.duplicate_of, heir.processed_at = PENDING, None, None
    session.flush()  # the heir is an original before the others point at it
    for copy in rest:
        copy.duplicate_of = heir.id
    session.flush()
    return heir.path


def record_model(session: Session, sha256: str, name: str, version: str, path: str) -> int:
    """The id of this model's row, created on first use; last_used is refreshed."""
    model = session.scalar(select(ModelRecord).where(ModelRecord.sha256 == sha256))
    if model is None:
        model = ModelRecord(sha256=sha256, name=name, version=version, path=path)
        session.add(model)
    model.last_used = utcnow()
    session.flush()
    return model.id


@dataclass(frozen=True)
class RankedLabel:
    label_index: int
    label: str
    scientific_name: str | None
    common_name: str | None
    confidence: float


@dataclass(frozen=True)
class Result:
    """Everything stored for one processed photo (built by the daemon from the pipeline's output)."""

    kind: str
    label: str | None
    scientific_name: str | None
    common_name: str | None
    taxon_rank: str | None
    confidence: float | None
    ranked: tuple[RankedLabel, ...]
    captured_at: datetime | None
    captured_at_source: str | None
    captured_at_plausible: bool | None
    camera_make: str | None = None
    camera_model: str | None = None
    width: int | None = None
    height: int | None = None
    box: tuple[float, float, float, float] | None = None
    invokes: int | None = None
    archived_path: str | None = None
    person_boxes: tuple[tuple[float, float, float, float], ...] = ()
    measure: FrameMeasure | None = None


def record_result(session: Session, image_id: int, result: Result, model_id: int) -> None:
    # No flush per photo: a batch's updates and inserts go out together at the next query
    # (bench: 3.05 -> 1.75 ms a photo in a batch of four).
    with session.no_autoflush:
        image = session.get(ImageRecord, image_id)
    if image is None:
        raise StoreError(f"image row {image_id} vanished while it was being processed")
    for name in (
        "kind",
        "label",
        "scientific_name",
        "common_name",
        "taxon_rank",
        "confidence",
        "captured_at",
        "captured_at_source",
        "captured_at_plausible",
        "camera_make",
        "camera_model",
        "width",
        "height",
        "invokes",
        "archived_path",
    ):
        setattr(image, name, getattr(result, name))
    if result.archived_path is not None:
        image.archived_path = path_as_text(result.archived_path)
    if result.box is not None:
        image.box_x0, image.box_y0, image.box_x1, image.box_y1 = result.box
    image.person_boxes = boxes_to_text(result.person_boxes)
    if result.measure is not None:
        for name in ("brightness", "contrast", "sharpness", "colour", "scene"):
            setattr(image, name, getattr(result.measure, name))
    earlier_result = image.status != PENDING
    image.status = DONE
    image.error = None
    image.model_id = model_id
    image.processed_at = utcnow()
    if earlier_result:  # a pending photo has none: predictions are stored with its result
        session.execute(PredictionRecord.__table__.delete().where(PredictionRecord.image_id == image_id))
    session.add_all(
        PredictionRecord(
            image_id=image_id,
            rank=rank,
            label_index=ranked.label_index,
            label=ranked.label,
            scientific_name=ranked.scientific_name,
            common_name=ranked.common_name,
            confidence=ranked.confidence,
        )
        for rank, ranked in enumerate(result.ranked, start=1)
    )


def cached_classification(session: Session, sha256: str, pipeline: str) -> str | None:
    """The stored `/classify` answer (JSON text) for this content and pipeline, or None."""
    query = select(ClassifyCacheRecord.result).where(ClassifyCacheRecord.sha256 == sha256, ClassifyCacheRecord.pipeline == pipeline)
    return session.scalar(query)


def save_classification(session: Session, sha256: str, pipeline: str, result: str) -> None:
    """Remember a `/classify` answer; an answer already stored (another request won) is kept."""
    if cached_classification(session, sha256, pipeline) is None:
        session.add(ClassifyCacheRecord(sha256=sha256, pipeline=pipeline, result=result))
        session.flush()
