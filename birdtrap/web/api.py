"""The versioned REST API, `/api/v1`: health, queries, photos and thumbnails, classify, review.

Routes parse and check parameters, call `queries`, `ClassifyService` or `store`, and shape the
answer; any error leaves as problem details (see `problems`).
"""

from __future__ import annotations

import re
import shutil
import time
from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from birdtrap import __version__, store
from birdtrap.errors import DatabaseFileError, StoreError, first_line
from birdtrap.identify.regions import Box
from birdtrap.store import examples as examples_store
from birdtrap.store import reviews as review_store
from birdtrap.web import queries, schemas
from birdtrap.web.classify import READY, TOP_LABELS, Upload
from birdtrap.web.context import Context, WebContext
from birdtrap.web.names import Name as KnownName
from birdtrap.web.names import NameIndex, configured_labels, name_index
from birdtrap.web.problems import MEDIA_TYPE, Problem, ProblemDetails, problem_body, problem_response
from birdtrap.web.thumbnails import MAX_SIZE, MIN_SIZE

bearer = HTTPBearer(auto_error=False, description="serve.token; needed by review and by classify with record=true")

PROBLEM = {"model": ProblemDetails, "content": {MEDIA_TYPE: {}}}


_DESCRIPTIONS = {
    400: "Malformed request body (not UTF-8, or a multipart body that cannot be read)",
    401: "Bearer token missing",
    403: "Bearer token wrong, writes disabled, or a path outside the configured folders",
    404: "No such record (event, photo, review), or its photo file is gone",
    409: "The verdict does not fit the event as it is now (no bird to confirm, or undoing a review that is not the newest)",
    413: "Body too large: over serve.upload_limit_mb or more than serve.max_files files for classify, over 256 KB elsewhere",
    415: "Not multipart/form-data, or no file is an image",
    422: "Bad parameters, an image that cannot be decoded, or a species nothing knows",
    503: "The model is loading or failed to load",
}


def _problems(*codes: int) -> dict[int | str, dict[str, Any]]:
    return {code: {**PROBLEM, "description": _DESCRIPTIONS[code]} for code in codes}


router = APIRouter(prefix="/api/v1", responses=_problems(422))

# A capture-time filter: a calendar date, or a date and time, on the camera's clock (no offset:
# capture times are stored as the camera wrote them). The pattern is exact, leap years included,
# so the OpenAPI document promises no value the route then refuses; numbers such as 0.5 (which
# pydantic would take as a Unix time) are refused, naming the parameter.
_YEAR = "[1-9][0-9]{3}"
_LEAP_YEAR = "(?:[1-9][0-9](?:0[48]|[2468][048]|[13579][26])|(?:[2468][048]|[13579][26])00)"
_MONTH_DAY = "(?:(?:0[13578]|1[02])-(?:0[1-9]|[12][0-9]|3[01])|(?:0[469]|11)-(?:0[1-9]|[12][0-9]|30)|02-(?:0[1-9]|1[0-9]|2[0-8]))"
_TIME = "(?:[T ](?:[01][0-9]|2[0-3]):[0-5][0-9](?::[0-5][0-9](?:[.][0-9]{1,6})?)?)?"
CAMERA_TIME = f"^(?:{_YEAR}-{_MONTH_DAY}|{_LEAP_YEAR}-02-29){_TIME}$"
CAMERA_TIME_FORMAT = "YYYY-MM-DD or YYYY-MM-DDTHH:MM[:SS[.ffffff]], the camera's clock, without a UTC offset"
_camera_time = re.compile(CAMERA_TIME)


def _time_filter(description: str) -> Any:
    return Query(description=f"{description} ({CAMERA_TIME_FORMAT})", json_schema_extra={"pattern": CAMERA_TIME})


Since = Annotated[str | None, _time_filter("Only from this capture time on")]
Until = Annotated[str | None, _time_filter("Only before this capture time")]
Species = Annotated[str | None, Query(max_length=200, description="Scientific or common name, case-insensitive; a prefix is enough")]
Camera = Annotated[str | None, Query(max_length=100, description="Only this camera id")]
MinConfidence = Annotated[float | None, Query(ge=0, le=1, description="Only decisions at least this sure (reviewed rows always pass)")]


def _capture_window(since: str | None, until: str | None) -> tuple[datetime | None, datetime | None]:
    """`since` and `until` as camera-clock times; 422 naming each one that is not a date."""
    parsed: dict[str, datetime | None] = {}
    errors = []
    for name, value in (("since", since), ("until", until)):
        parsed[name] = None
        if value is None:
            continue
        if _camera_time.fullmatch(value) is None:
            message = f"{value!r} is not a date; expected {CAMERA_TIME_FORMAT}"
            errors.append({"loc": ("query", name), "msg": message, "type": "camera_time", "input": value})
            continue
        parsed[name] = datetime.fromisoformat(value)
    if errors:
        raise RequestValidationError(errors)
    return parsed["since"], parsed["until"]


def _filters(
    since: Since = None, until: Until = None, species: Species = None, camera: Camera = None, min_confidence: MinConfidence = None
) -> queries.Filters:
    return queries.Filters(*_capture_window(since, until), species, camera, min_confidence)


# The query parameters shared by sightings and events (the CLI's filters).
Filtering = Annotated[queries.Filters, Depends(_filters)]
Limit = Annotated[int, Query(ge=1, le=500, description="Rows per page")]
# SQLite integers are 64-bit: a larger id is a bad parameter, not a database error.
EventId = Annotated[int, Path(ge=1, le=2**63 - 1, description="An event's id")]
PhotoId = Annotated[int, Path(ge=1, le=2**63 - 1, description="A photo's id")]
Offset = Annotated[int, Query(ge=0, le=queries.MAX_OFFSET, description="Rows to skip")]


def _next_url(request: Request, limit: int, offset: int, more: bool) -> str | None:
    if not more or offset + limit > queries.MAX_OFFSET:
        return None
    url = request.url.include_query_params(offset=offset + limit, limit=limit)
    return f"{url.path}?{url.query}"


# --- health, changes -----------------------------------------------------------------------


@router.get("/health", response_model=schemas.Health, summary="Model, runtime, queue depth, last photo, disk free")
def health(context: Context) -> dict[str, Any]:
    info = context.classifier.info()
    database, counts, last, queue = "ok", {}, None, None
    try:
        with context.sessions() as session:
            counts = store.counts_by_status(session)
            queue = store.pending_count(session)
            photo = store.last_photo(session)
            if photo is not None:
                last = {
                    "id": photo.id,
                    "path": photo.path,
                    "status": photo.status,
                    "discovered_at": queries.utc(photo.discovered_at),
                    "captured_at": photo.captured_at,
                }
    except (SQLAlchemyError, DatabaseFileError) as e:
        database = f"cannot be read: {first_line(e)}"
    disk = []
    for key, folder in context.thumbnails.folders.items():
        try:
            usage = shutil.disk_usage(folder)
            disk.append({"key": key, "path": str(folder), "free_bytes": usage.free, "total_bytes": usage.total})
        except OSError:
            disk.append({"key": key, "path": str(folder), "free_bytes": None, "total_bytes": None})
    state = info["state"]
    status = "ok" if state == READY and database == "ok" else "loading" if state == "loading" else "degraded"
    model = {k: info.get(k) for k in ("state", "error", "path", "name", "version", "sha256", "labels", "pipeline")}
    return {
        "status": status,
        "version": __version__,
        "model": model,
        "runtime": {"name": info.get("runtime"), "delegate": info.get("delegate")},
        "queue_depth": queue,
        "photos_by_status": counts,
        "last_photo": last,
        "disk": disk,
        "database": database,
    }


@router.get("/changes", response_model=schemas.Changes, summary="A token that changes when photos or reviews are added")
def changes(context: Context) -> dict[str, str]:
    return {"token": context.read(store.change_token)}


# --- queries -------------------------------------------------------------------------------


@router.get("/sightings", response_model=schemas.SightingPage, summary="Bird photos, newest first (as `birdtrap sightings`)")
def sightings(request: Request, context: Context, filters: Filtering, limit: Limit = 50, offset: Offset = 0) -> dict[str, Any]:
    items, more = context.read(lambda s: queries.sightings_page(s, filters, limit, offset))
    return {"items": items, "limit": limit, "offset": offset, "next": _next_url(request, limit, offset, more)}


@router.get("/events", response_model=schemas.EventPage, summary="Events (bursts), newest first (as `birdtrap events`)")
def list_events(
    request: Request,
    context: Context,
    filters: Filtering,
    limit: Limit = 50,
    offset: Offset = 0,
    all: Annotated[bool, Query(description="Also events without a bird (animal, person, vehicle, unsure, blank)")] = False,  # noqa: A002
) -> dict[str, Any]:
    items, more = context.read(lambda s: queries.events_page(s, filters, limit, offset, birds_only=not all))
    return {"items": items, "limit": limit, "offset": offset, "next": _next_url(request, limit, offset, more)}


@router.get("/events/{event_id}", response_model=schemas.EventDetail, responses=_problems(404), summary="One event, its photos and reviews")
def get_event(event_id: EventId, context: Context) -> dict[str, Any]:
    detail = context.read(lambda s: queries.event_detail(s, event_id))
    if detail is None:
        raise Problem(404, "no-such-event", f"there is no event {event_id}; events are regrouped as photos arrive, so list them again.")
    return detail


@router.get("/stats", response_model=schemas.Stats, summary="Per species totals, or activity by day or hour (as `birdtrap stats`)")
def stats(
    context: Context,
    since: Since = None,
    until: Until = None,
    camera: Camera = None,
    by: Annotated[Literal["species", "day", "hour"], Query(description="species totals, or photos per species by day or hour")] = "species",
) -> dict[str, Any]:
    start, end = _capture_window(since, until)
    return context.read(lambda s: queries.stats(s, by, start, end, camera))


# --- photos --------------------------------------------------------------------------------


@router.get("/photos/{image_id}", response_model=schemas.Photo, responses=_problems(404), summary="One photo's record and predictions")
def get_photo(image_id: PhotoId, context: Context) -> dict[str, Any]:
    detail = context.read(lambda s: queries.photo_detail(s, image_id))
    if detail is None:
        raise Problem(404, "no-such-photo", f"there is no photo {image_id}.")
    return detail


JPEG = {200: {"content": {"image/jpeg": {}}, "description": "A JPEG thumbnail"}}
PHOTO_VIEW_SIZE = 2048  # the longest side of the photo view served instead of an original
Size = Annotated[int, Query(ge=MIN_SIZE, le=MAX_SIZE, description="Longest side in pixels")]


def _thumbnail_response(
    context: WebContext, path: str, size: int, hide: tuple[Box, ...] = (), box: Box | None = None
) -> FileResponse:
    thumbnail = context.thumbnails.thumbnail(path, size, hide, box)
    # The name is a hash of path, size, mtime and size on disk: a changed file gets a new one.
    return FileResponse(thumbnail, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=86400"})


@router.get(
    "/photos/{image_id}/thumbnail",
    response_class=FileResponse,
    responses={**JPEG, **_problems(403, 404)},
    summary="A small JPEG of the photo, made once and cached",
)
def photo_thumbnail(
    image_id: PhotoId,
    context: Context,
    size: Size = 320,
    crop: Annotated[bool, Query(description="Crop around the region that decided and draw its box (the whole photo if none)")] = False,
) -> FileResponse:
    found = context.read(lambda s: queries.photo_location_and_box(s, image_id))
    if found is None:
        raise Problem(404, "no-such-photo", f"there is no photo {image_id}.")
    location, box = found
    hide = _people(context, lambda s: store.hidden_boxes(s, image_id))
    return _thumbnail_response(context, location, size, hide, box if crop else None)


@router.get(
    "/photos/{image_id}/original",
    response_class=FileResponse,
    responses={200: {"content": {"image/*": {}}, "description": "The original file"}, **_problems(403, 404)},
    summary="The original photo file (large: ask only when you need it)",
)
def photo_original(image_id: PhotoId, context: Context) -> FileResponse:
    location = context.read(lambda s: queries.photo_location(s, image_id))
    if location is None:
        raise Problem(404, "no-such-photo", f"there is no photo {image_id}.")
    if not context.config.privacy.keep_originals_visible:
        # privacy.keep_originals_visible: false (issue 19): a re-encoded view with people hidden
        # (and no EXIF, so no GPS either), never the file itself.
        hide = _people(context, lambda s: store.hidden_boxes(s, image_id))
        return _thumbnail_response(context, location, PHOTO_VIEW_SIZE, hide)
    return FileResponse(context.thumbnails.check(location), headers={"Cache-Control": "private, max-age=3600"})


@router.get(
    "/thumbnail",
    response_class=FileResponse,
    responses={**JPEG, **_problems(403, 404)},
    summary="A thumbnail by file path; only inside the configured folders",
)
def path_thumbnail(
    context: Context,
    path: Annotated[
        str, Query(min_length=1, max_length=4096, description="A photo file inside watch, archive, empty, quarantine or upload folders")
    ],
    size: Size = 320,
) -> FileResponse:
    if "\0" in path:
        raise Problem(422, "bad-parameters", "path contains a NUL character.")
    names = {path, str(context.thumbnails.check(path))}  # as asked and as resolved: either may be on record
    return _thumbnail_response(context, path, size, _people(context, lambda s: store.hidden_boxes_at(s, names)))


def _people(context: WebContext, boxes: Callable[[Session], tuple[Box, ...]]) -> tuple[Box, ...]:
    """The person boxes to hide in an image of a photo (issue 19); none when privacy.redact_people is off."""
    return context.read(boxes) if context.config.privacy.redact_people else ()


# --- classify ------------------------------------------------------------------------------

CLASSIFY_BODY = {
    "required": True,
    "content": {
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "required": ["files"],
                "properties": {
                    "files": {
                        "type": "array",
                        "minItems": 1,  # maxItems is serve.max_files, set by `document_limits`
                        "items": {"type": "string", "format": "binary"},
                        "description": "JPEG, PNG, BMP, WebP or TIFF photos, known by their bytes (the part's content type is "
                        "ignored); a file that is none of them, or cannot be decoded, fails that item (415 or 422), and the "
                        "request too when no file could be classified",
                    }
                },
                "additionalProperties": False,
            }
        }
    },
}


@router.post(
    "/classify",
    response_model=schemas.ClassifyResponse,
    responses=_problems(400, 401, 403, 413, 415, 503),
    openapi_extra={"requestBody": CLASSIFY_BODY},
    summary="Name the birds in one or many photos (multipart 'files'); answers are cached by content",
)
async def classify(
    request: Request,
    context: Context,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    top_k: Annotated[int, Query(ge=1, le=TOP_LABELS, description="Labels returned per photo")] = 5,
    record: Annotated[
        bool, Query(description="Also store the photos and results like photos from the watch folder (needs the token)")
    ] = False,
    camera: Annotated[
        str, Query(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9._-]+$", description="Camera id to record under")
    ] = "upload",
) -> Any:
    if record:
        context.check_writer(credentials)
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media != "multipart/form-data":
        raise Problem(
            415, "unsupported-media-type", f"send the photos as multipart/form-data files named 'files', not {media or 'no content type'}."
        )
    context.classifier.require_ready()
    started = time.monotonic()
    uploads = await _uploads(request, context)
    try:
        items = await run_in_threadpool(context.classifier.classify, uploads, top_k, record, camera)
    except (SQLAlchemyError, StoreError) as e:
        # Only `record` writes rows; nothing of this request was stored.
        raise Problem(
            503, "database-unavailable", f"the photos could not be recorded ({first_line(e)}); try again.", {"Retry-After": "5"}
        ) from None
    context.metrics.request_seconds.observe(time.monotonic() - started)
    info = context.classifier.info()
    body = {"model": {k: info.get(k) for k in ("name", "version", "sha256", "pipeline")}, "items": items}
    failed = [item["error"]["status"] for item in items if item["error"] is not None]
    if failed and len(failed) == len(items):
        # Nothing usable: the request fails as a whole, with each file's reason.
        status = failed[0] if len(set(failed)) == 1 else 422
        detail = items[0]["error"]["detail"] if len(items) == 1 else f"none of the {len(items)} files could be classified; see items."
        return problem_response(problem_body(status, detail, "no-image-classified", request.url.path, items=items))
    return JSONResponse(body)


def document_limits(openapi: dict[str, Any], max_files: int) -> dict[str, Any]:
    """The served OpenAPI document with this server's serve.max_files as the upload's maxItems."""
    body = openapi["paths"]["/api/v1/classify"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    body["properties"]["files"]["maxItems"] = max_files
    return openapi


async def _uploads(request: Request, context: WebContext) -> list[Upload]:
    limit = context.settings.max_files
    try:
        form = await request.form(max_files=limit, max_fields=16)
    except StarletteHTTPException as e:
        if e.status_code == 413:
            raise
        if "Too many files" in str(e.detail):
            raise Problem(413, "too-many-files", f"send at most {limit} photos in one request (serve.max_files).") from None
        raise Problem(400, "bad-multipart", f"the multipart body cannot be read ({e.detail}).") from None
    try:
        # Only 'files', as the OpenAPI document says: a misspelt field is named, not ignored.
        others = sorted({name for name, _ in form.multi_items() if name != "files"})
        if others:
            named = ", ".join(repr(name) for name in others[:3]) + (" ..." if len(others) > 3 else "")
            detail = f"the form holds {named}; send the photos as multipart files named 'files' and nothing else."
            raise Problem(422, "unexpected-fields", detail)
        parts = form.getlist("files")
        if not parts:
            raise Problem(422, "no-files", "the request holds no files; send the photos as multipart files named 'files'.")
        # A part without a filename arrives as text; its bytes are judged like any other file's.
        uploads = []
        for i, part in enumerate(parts):
            if isinstance(part, UploadFile):
                uploads.append(Upload(part.filename or f"file {i + 1}", await part.read()))
            else:
                uploads.append(Upload(f"file {i + 1}", part.encode()))
        return uploads
    finally:
        await form.close()


# --- review --------------------------------------------------------------------------------

NO_SUCH_EVENT = "events are regrouped as photos arrive, so list them again."


@router.get("/names", response_model=list[schemas.KnownName], summary="Names a review may use, for an autocomplete")
def names(
    context: Context,
    q: Annotated[str, Query(min_length=1, max_length=200, description="What the person has typed so far")],
    limit: Annotated[int, Query(ge=1, le=100, description="Names returned")] = 20,
) -> list[dict[str, str | None]]:
    return [name.as_dict() for name in _name_index(context).suggest(q, limit)]


@router.post(
    "/events/{event_id}/review",
    response_model=schemas.Review,
    status_code=201,
    responses=_problems(400, 401, 403, 404, 409, 413, 503),
    summary="Confirm or correct an event's species, or mark it blank (needs the token)",
)
def review(
    event_id: EventId,
    verdict: schemas.ReviewIn,
    context: Context,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> dict[str, Any]:
    context.check_writer(credentials)
    name: KnownName | None = None
    if isinstance(verdict, schemas.Correct):  # the schema made sure it names something
        name = _known_name(context, verdict.species)
    kind = {"confirm": store.CONFIRMED, "correct": store.CORRECTED, "blank": store.MARKED_EMPTY, "empty": store.MARKED_EMPTY}[
        verdict.verdict
    ]
    names = {"label": name.label, "scientific_name": name.scientific_name, "common_name": name.common_name} if name else {}

    def write(session: Any) -> dict[str, Any]:
        if session.get(store.EventRecord, event_id) is None:
            raise Problem(404, "no-such-event", f"there is no event {event_id}; {NO_SUCH_EVENT}")
        correction = store.add_correction(session, event_id, kind, reviewer=verdict.reviewer, note=verdict.note, **names)
        if name is not None and name.rank == "other":
            correction.taxon_rank = None  # a site's own name has no rank in any taxonomy
        # Every review teaches the camera's head (issue 23); `birdtrap learn` relearns from them.
        examples_store.add_review_examples(session, event_id, correction, getattr(verdict, "site_class", None))
        return queries.review_dict(correction)

    return _write(context, write, "the review could not be stored")


@router.post(
    "/reviews",
    response_model=list[schemas.Review],
    status_code=201,
    responses=_problems(400, 401, 403, 409, 413, 503),
    summary="Confirm the machine's bird on several events at once, all or none (needs the token)",
)
def confirm_many(
    selection: schemas.BulkConfirm,
    context: Context,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> list[dict[str, Any]]:
    context.check_writer(credentials)
    return _write(
        context,
        lambda s: [queries.review_dict(c) for c in review_store.confirm_events(s, selection.event_ids, selection.reviewer, selection.note)],
        "the confirmations could not be stored",
    )


@router.delete(
    "/reviews/{review_id}",
    response_model=schemas.Undone,
    responses=_problems(401, 403, 404, 409, 503),
    summary="Undo a review: the event's verdict before it decides again (needs the token)",
)
def undo(
    review_id: Annotated[int, Path(ge=1, le=2**63 - 1, description="A review's id")],
    context: Context,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> dict[str, Any]:
    context.check_writer(credentials)

    def write(session: Any) -> dict[str, Any]:
        if session.get(store.CorrectionRecord, review_id) is None:
            raise Problem(404, "no-such-review", f"there is no review {review_id}; it may have been undone already. Reload the page.")
        event_id, now = review_store.undo_review(session, review_id)
        return {"undone": review_id, "event_id": event_id, "review": queries.review_dict(now) if now is not None else None}

    return _write(context, write, "the undo could not be stored")


def _write(context: WebContext, work: Any, what: str) -> Any:
    """Run `work` in one write transaction; a StoreError is a verdict that does not fit (409)."""
    try:
        with context.sessions.begin() as session:
            return work(session)
    except (SQLAlchemyError, DatabaseFileError) as e:
        raise Problem(503, "database-unavailable", f"{what} ({first_line(e)}); try again.", {"Retry-After": "5"}) from None
    except StoreError as e:
        # Well formed, but it does not fit the events as they are now (no bird to confirm, a newer review).
        raise Problem(409, "review-refused", str(e)) from None


def _name_index(context: WebContext) -> NameIndex:
    """The names of the species model and the taxonomy; while the model loads, from its labels file."""
    identifier = context.classifier.identifier
    if identifier is not None:
        labels = tuple(identifier.species.labels)
    else:
        labels = configured_labels(context.config.model.path, context.config.model.labels)
    return name_index(labels, tuple(context.config.decision.background_labels))


def _known_name(context: WebContext, species: str) -> KnownName:
    """The model label or taxon `species` names, or an explicit "other: ..."; else a 422 that says what to do."""
    index = _name_index(context)
    name = index.resolve(species)
    if name is not None:
        return name
    if not any(n.rank == "species" for n in index.names):
        raise Problem(
            503,
            "model-loading",
            f"{species!r} is not a genus, family or order, and the species model's labels cannot be read yet; try again shortly.",
            {"Retry-After": "5"},
        )
    close = index.close_to(species)
    hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    raise Problem(
        422,
        "unknown-species",
        f"{species.strip()!r} is not a species, genus, family or order that the models or the taxonomy know.{hint} "
        f"Pick a name from the list, or write 'other: {species.strip()}' to keep a name of your own.",
        suggestions=close,
    )
