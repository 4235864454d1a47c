"""The database: what has been processed, and what was seen.

SQLAlchemy 2.x, SQLite by default. Functions here take a `Session` and never commit: the caller
owns the transaction (the daemon writes one batch per transaction), so a crash leaves either the
whole batch or none of it.

One module per concern: `tables` (the models), `schema` (engine, migrations, a damaged file),
`writes`, `corrections` (a person's verdicts and the review-aware view), `queries`; beside them
`backup`, `lock`, `examples` (the camera's head), `reviews` (the review queue), `daily`, `fleet`
and `central` (sync). `store.x` call sites keep working through the re-exports below.
"""

from sqlalchemy.exc import SQLAlchemyError  # noqa: F401 - callers catch store.SQLAlchemyError

# Fleet sync's device-side tables and the sync sequence (issue 21); imported last: it uses the models above.
from birdtrap.store import fleet  # noqa: E402,F401
from birdtrap.store.corrections import (  # noqa: F401
    Reviewed,
    ReviewJoin,
    add_correction,
    as_reviewed,
    join_review,
    latest_reviews,
    review_history,
    review_of,
    taxon_rank_of,
)
from birdtrap.store.queries import (  # noqa: F401
    SpeciesStats,
    _events_query,
    _filtered,
    _sightings_query,
    activity,
    change_token,
    count_events,
    count_sightings,
    counts_by_status,
    event_photos,
    find_events,
    find_failed,
    find_sightings,
    hidden_boxes,
    hidden_boxes_at,
    images_by_path,
    known_files,
    last_photo,
    pending_count,
    pending_photos,
    redacted_count,
    species_stats,
    stats_rows,
)
from birdtrap.store.schema import (  # noqa: F401
    DAMAGE_SIGNS,
    HEAD_REVISION,
    MIGRATIONS,
    RevisionState,
    _alembic,
    _check_revision,
    _check_writable,
    _create_at_head,
    _damage_explained,
    _known,
    _require_existing_sqlite,
    _require_initial_schema,
    _scripts,
    _sqlite_pragmas,
    check_integrity,
    current_revision,
    damaged_database_error,
    database_file_error,
    display_url,
    head_revision,
    make_engine,
    migrate,
    migrations_head,
    open_store,
    revision_state,
    sqlite_path,
)
from birdtrap.store.tables import (  # noqa: F401
    CONFIRMED,
    CORRECTED,
    DONE,
    DUPLICATE,
    FAILED,
    KIND_BIRD,
    KIND_BLANK,
    KIND_UNSURE,
    MARKED_EMPTY,
    PENDING,
    VERDICTS,
    Base,
    CameraExampleRecord,
    CameraHeadRecord,
    CameraProblemRecord,
    ClassifyCacheRecord,
    CorrectionRecord,
    EventRecord,
    ImageRecord,
    Meta,
    ModelRecord,
    OutboxRecord,
    PredictionRecord,
    utcnow,
)
from birdtrap.store.writes import (  # noqa: F401
    _ESCAPED_BYTE,
    RankedLabel,
    Registration,
    Result,
    cached_classification,
    fail_copies,
    path_as_text,
    path_from_text,
    record_failure,
    record_model,
    record_result,
    register_photo,
    release_copies,
    save_classification,
)
