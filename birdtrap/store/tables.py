"""The database's tables (SQLAlchemy models) and the words stored in them.

The schema itself is made only by the migrations in birdtrap/migrations (store.schema runs them);
these classes describe it for queries and writes.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import Boolean, DateTime, Float, ForeignKey, Index, Integer, LargeBinary, String, Text, UniqueConstraint, text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from birdtrap.identify.kinds import Kind, Status

PENDING, DONE, FAILED, DUPLICATE = Status.PENDING, Status.DONE, Status.FAILED, Status.DUPLICATE

KIND_BIRD, KIND_BLANK, KIND_UNSURE = Kind.BIRD, Kind.BLANK, Kind.UNSURE


def utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


class Base(DeclarativeBase):
    pass


class Meta(Base):
    __tablename__ = "meta"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(String(256))


class ModelRecord(Base):
    __tablename__ = "models"
    id: Mapped[int] = mapped_column(primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    version: Mapped[str] = mapped_column(String(100), default="")
    path: Mapped[str] = mapped_column(Text)
    first_used: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    last_used: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class ImageRecord(Base):
    """One photo file as found: its identity (sha256), status, capture time and the decision."""

    __tablename__ = "images"
    __table_args__ = (
        UniqueConstraint("path", "sha256", name="uq_images_path_sha256"),
        # Exactly one original per content; copies under other names point at it.
        Index(
            "uq_images_original_sha256",
            "sha256",
            unique=True,
            sqlite_where=text("duplicate_of IS NULL AND status IN ('pending', 'done')"),
            postgresql_where=text("duplicate_of IS NULL AND status IN ('pending', 'done')"),
        ),
        Index("ix_images_status", "status"),
        Index("ix_images_captured_at", "captured_at"),
        Index("ix_images_kind_captured", "kind", "captured_at"),
        Index("ix_images_sync_seq", "sync_seq"),
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    path: Mapped[str] = mapped_column(Text)
    sha256: Mapped[str | None] = mapped_column(String(64))
    size_bytes: Mapped[int | None] = mapped_column(Integer)
    file_mtime: Mapped[float | None] = mapped_column(Float)
    camera_id: Mapped[str] = mapped_column(String(100))
    deployment_id: Mapped[str | None] = mapped_column(String(100))
    status: Mapped[str] = mapped_column(String(16), default=PENDING)
    error: Mapped[str | None] = mapped_column(Text)
    discovered_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    processed_at: Mapped[datetime | None] = mapped_column(DateTime)
    captured_at: Mapped[datetime | None] = mapped_column(DateTime)
    captured_at_source: Mapped[str | None] = mapped_column(String(16))
    captured_at_plausible: Mapped[bool | None] = mapped_column(Boolean)
    camera_make: Mapped[str | None] = mapped_column(String(100))
    camera_model: Mapped[str | None] = mapped_column(String(100))
    width: Mapped[int | None] = mapped_column(Integer)
    height: Mapped[int | None] = mapped_column(Integer)
    model_id: Mapped[int | None] = mapped_column(ForeignKey("models.id"))
    duplicate_of: Mapped[int | None] = mapped_column(ForeignKey("images.id"))
    archived_path: Mapped[str | None] = mapped_column(Text)
    # The decision: what the photo shows, at which taxon rank, how sure, and the region that decided.
    kind: Mapped[str | None] = mapped_column(String(16))
    label: Mapped[str | None] = mapped_column(Text)
    scientific_name: Mapped[str | None] = mapped_column(String(200))
    common_name: Mapped[str | None] = mapped_column(String(200))
    taxon_rank: Mapped[str | None] = mapped_column(String(16))
    confidence: Mapped[float | None] = mapped_column(Float)
    box_x0: Mapped[float | None] = mapped_column(Float)
    box_y0: Mapped[float | None] = mapped_column(Float)
    box_x1: Mapped[float | None] = mapped_column(Float)
    box_y1: Mapped[float | None] = mapped_column(Float)
    invokes: Mapped[int | None] = mapped_column(Integer)
    # People to hide in every image made from this photo (identify/privacy.py); null: none seen.
    person_boxes: Mapped[str | None] = mapped_column(Text)
    # What the frame looks like, for the camera's health checks (identify/health.py); null: not measured.
    brightness: Mapped[float | None] = mapped_column(Float)
    contrast: Mapped[float | None] = mapped_column(Float)
    sharpness: Mapped[float | None] = mapped_column(Float)
    colour: Mapped[float | None] = mapped_column(Float)
    scene: Mapped[bytes | None] = mapped_column(LargeBinary)
    event_id: Mapped[int | None] = mapped_column(ForeignKey("events.id", ondelete="SET NULL"), index=True)
    # The device's own order of changes to processed photos; sync resumes after it (see fleet.py).
    sync_seq: Mapped[int | None] = mapped_column(Integer)

    predictions: Mapped[list[PredictionRecord]] = relationship(
        back_populates="image", cascade="all, delete-orphan", order_by="PredictionRecord.rank"
    )
    model: Mapped[ModelRecord | None] = relationship()


class EventRecord(Base):
    """A burst: the photos of one camera taken within the configured gap of each other.

    Its decision combines the probabilities of all its bird frames, so a bird seen clearly in
    two frames of ten decides the event.
    """

    __tablename__ = "events"
    __table_args__ = (Index("ix_events_camera_start", "camera_id", "start"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    camera_id: Mapped[str] = mapped_column(String(100))
    deployment_id: Mapped[str | None] = mapped_column(String(100))
    start: Mapped[datetime] = mapped_column(DateTime)
    end: Mapped[datetime] = mapped_column(DateTime)
    photo_count: Mapped[int] = mapped_column(Integer)
    bird_photo_count: Mapped[int] = mapped_column(Integer, default=0)
    kind: Mapped[str] = mapped_column(String(16))
    label: Mapped[str | None] = mapped_column(Text)
    scientific_name: Mapped[str | None] = mapped_column(String(200))
    common_name: Mapped[str | None] = mapped_column(String(200))
    taxon_rank: Mapped[str | None] = mapped_column(String(16))
    confidence: Mapped[float | None] = mapped_column(Float)


class OutboxRecord(Base):
    """A notification waiting to be sent (MQTT, webhook).

    Written in the same transaction as the event it announces, so a restart never loses one;
    a sender thread delivers it with retries and marks it sent.
    """

    __tablename__ = "outbox"
    __table_args__ = (
        UniqueConstraint("event_id", "channel", name="uq_outbox_event_channel"),
        Index("ix_outbox_due", "sent_at", "next_attempt_at"),
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    event_id: Mapped[int] = mapped_column(Integer)
    channel: Mapped[str] = mapped_column(String(16))
    payload: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(DateTime)
    last_error: Mapped[str | None] = mapped_column(Text)


class PredictionRecord(Base):
    __tablename__ = "predictions"
    __table_args__ = (Index("ix_predictions_image", "image_id"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    image_id: Mapped[int] = mapped_column(ForeignKey("images.id", ondelete="CASCADE"))
    rank: Mapped[int] = mapped_column(Integer)
    label_index: Mapped[int] = mapped_column(Integer)
    label: Mapped[str] = mapped_column(Text)
    scientific_name: Mapped[str | None] = mapped_column(String(200))
    common_name: Mapped[str | None] = mapped_column(String(200))
    confidence: Mapped[float] = mapped_column(Float)
    image: Mapped[ImageRecord] = relationship(back_populates="predictions")


CONFIRMED, CORRECTED, MARKED_EMPTY = "confirmed", "corrected", "empty"

VERDICTS = (CONFIRMED, CORRECTED, MARKED_EMPTY)


class CorrectionRecord(Base):
    """A person's verdict on an event, stored beside the machine's answer (copied in at review time).

    Keyed by event id without a foreign key on purpose: regrouping may merge or delete an event,
    and a person's work must never be cascaded away. The newest row of an event decides; the
    older rows are its history.
    """

    __tablename__ = "corrections"
    __table_args__ = (
        Index("ix_corrections_event", "event_id", "id"),
        Index("uq_corrections_origin", "origin", "origin_id", unique=True),
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    event_id: Mapped[int] = mapped_column(Integer)
    verdict: Mapped[str] = mapped_column(String(16))  # confirmed, corrected or empty
    kind: Mapped[str] = mapped_column(String(16))  # bird or blank (a person saw no bird)
    label: Mapped[str | None] = mapped_column(Text)
    scientific_name: Mapped[str | None] = mapped_column(String(200))
    common_name: Mapped[str | None] = mapped_column(String(200))
    taxon_rank: Mapped[str | None] = mapped_column(String(16))
    machine_kind: Mapped[str | None] = mapped_column(String(16))
    machine_label: Mapped[str | None] = mapped_column(Text)
    machine_scientific_name: Mapped[str | None] = mapped_column(String(200))
    machine_common_name: Mapped[str | None] = mapped_column(String(200))
    machine_confidence: Mapped[float | None] = mapped_column(Float)
    reviewer: Mapped[str | None] = mapped_column(String(100))
    note: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    # Where the review was made when it came by sync: a device id (central side) or "central"
    # (device side), with its id there. None: made in this database.
    origin: Mapped[str | None] = mapped_column(String(36))
    origin_id: Mapped[int | None] = mapped_column(Integer)


class ClassifyCacheRecord(Base):
    """A `POST /classify` answer by photo content and pipeline, so a photo is never invoked twice.

    `pipeline` fingerprints the models and the settings that shape the answer: a new model or a
    new threshold starts a fresh cache instead of serving stale answers.
    """

    __tablename__ = "classify_cache"
    __table_args__ = (UniqueConstraint("sha256", "pipeline", name="uq_classify_cache_sha256_pipeline"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64))
    pipeline: Mapped[str] = mapped_column(String(64))
    result: Mapped[str] = mapped_column(Text)  # JSON, as the API returns it (less `cached`)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class CameraExampleRecord(Base):
    """A labelled frame of one camera: a review or a labelled folder teaches the camera's head.

    One row per camera and photo content (sha256): a later review of the same frame replaces its
    label. `box` is the bird's region when a person or the finder chose it. `vectors` caches the
    frame's region embeddings (by `embedder`) so relearning does not run the model again.
    """

    __tablename__ = "camera_examples"
    __table_args__ = (UniqueConstraint("camera_id", "sha256", name="uq_camera_examples_camera_sha256"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    camera_id: Mapped[str] = mapped_column(String(100))
    sha256: Mapped[str] = mapped_column(String(64))
    path: Mapped[str] = mapped_column(Text)
    label: Mapped[str] = mapped_column(String(200))
    x0: Mapped[float | None] = mapped_column(Float)
    y0: Mapped[float | None] = mapped_column(Float)
    x1: Mapped[float | None] = mapped_column(Float)
    y1: Mapped[float | None] = mapped_column(Float)
    source: Mapped[str] = mapped_column(String(16))  # review or labels
    embedder: Mapped[str | None] = mapped_column(String(200))
    vectors: Mapped[bytes | None] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class CameraHeadRecord(Base):
    """A head learnt for one camera, its cross-validated figures, and whether it is in use."""

    __tablename__ = "camera_heads"
    __table_args__ = (Index("ix_camera_heads_camera", "camera_id", "id"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    camera_id: Mapped[str] = mapped_column(String(100))
    embedder: Mapped[str] = mapped_column(String(200))
    head: Mapped[bytes] = mapped_column(LargeBinary)
    figures: Mapped[str] = mapped_column(Text)  # JSON of camera_head.Figures and counts per class
    in_use: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class CameraProblemRecord(Base):
    """A health problem of one camera (identify/health.py), from when it was seen until resolved."""

    __tablename__ = "camera_problems"
    __table_args__ = (Index("ix_camera_problems_open", "camera_id", "resolved_at"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    camera_id: Mapped[str] = mapped_column(String(100))
    check: Mapped[str] = mapped_column(String(32))
    detail: Mapped[str] = mapped_column(Text)
    opened_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    resolved_at: Mapped[datetime | None] = mapped_column(DateTime)
