"""Camtrap DP 1.0 export: the database as a data package that camera-trap tools and GBIF read.

A package is datapackage.json plus three CSV tables (deployments, media, observations), laid out
as the standard's example package (https://camtrap-dp.tdwg.org/example/). Observations come at two
levels, because ecologists count both ways: one per event (the burst, decided from all its frames)
and one per photo. Every decision is a machine's, so each row says which model made it and how sure
it was.

The database knows the photos but not where the camera stood: that is `DeploymentInfo`, passed in
(and, later, read from the configuration). Timestamps in the database are the camera's naive local
clock; the package writes them in ISO 8601 with the deployment's UTC offset, because Camtrap DP
requires an offset and camera traps do not record one.
"""

from __future__ import annotations

import csv
import json
import logging
import mimetypes
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session, selectinload

from birdtrap import __version__
from birdtrap.errors import ExportError
from birdtrap.identify import taxonomy
from birdtrap.identify.kinds import Kind
from birdtrap.identify.privacy import boxes_from_text, write_redacted
from birdtrap.store import DONE, CorrectionRecord, EventRecord, ImageRecord, latest_reviews

log = logging.getLogger(__name__)

# The example package in ../shared/data/camtrap-dp/ and the profile's version pattern use 1.0.2.
VERSION = "1.0.2"
BASE_URL = f"https://raw.githubusercontent.com/tdwg/camtrap-dp/{VERSION}"
PROFILE_URL = f"{BASE_URL}/camtrap-dp-profile.json"
TABLES = ("deployments", "media", "observations")
MEDIA_FOLDER = "media"  # copies with people hidden, inside the package
PACKAGE_FILES = ("datapackage.json", *(f"{table}.csv" for table in TABLES))

SAMPLING_DESIGNS = ("simpleRandom", "systematicRandom", "clusteredRandom", "experimental", "targeted", "opportunistic")
FEATURE_TYPES = (
    "roadPaved", "roadDirt", "trailHiking", "trailGame", "roadUnderpass", "roadOverpass", "roadBridge",
    "culvert", "burrow", "nestSite", "carcass", "waterSource", "fruitingTree",
)  # fmt: skip
CONTRIBUTOR_ROLES = ("contact", "principalInvestigator", "rightsHolder", "publisher", "contributor")

# What the daemon decided -> Camtrap DP 1.0's observationType. "animal" is the detector's non-bird
# animal: the package says an animal was there without naming it. Camtrap DP's `blank` is only
# ever our `blank` (nothing there, on evidence); `unsure` is its `unknown` ("neither humans nor AI
# can say what was recorded"); a photo not classified yet is `unclassified`.
OBSERVATION_TYPES = {
    Kind.BIRD: "animal",
    Kind.ANIMAL: "animal",
    Kind.PERSON: "human",
    Kind.VEHICLE: "vehicle",
    Kind.BLANK: "blank",
    Kind.UNSURE: "unknown",
}
PERSON = Kind.PERSON

DEPLOYMENT_COLUMNS = (
    "deploymentID", "locationID", "locationName", "latitude", "longitude", "coordinateUncertainty",
    "deploymentStart", "deploymentEnd", "setupBy", "cameraID", "cameraModel", "cameraDelay", "cameraHeight",
    "cameraDepth", "cameraTilt", "cameraHeading", "detectionDistance", "timestampIssues", "baitUse",
    "featureType", "habitat", "deploymentGroups", "deploymentTags", "deploymentComments",
)  # fmt: skip
MEDIA_COLUMNS = (
    "mediaID", "deploymentID", "captureMethod", "timestamp", "filePath", "filePublic", "fileName",
    "fileMediatype", "exifData", "favorite", "mediaComments",
)  # fmt: skip
OBSERVATION_COLUMNS = (
    "observationID", "deploymentID", "mediaID", "eventID", "eventStart", "eventEnd", "observationLevel",
    "observationType", "cameraSetupType", "scientificName", "count", "lifeStage", "sex", "behavior",
    "individualID", "individualPositionRadius", "individualPositionAngle", "individualSpeed", "bboxX", "bboxY",
    "bboxWidth", "bboxHeight", "classificationMethod", "classifiedBy", "classificationTimestamp",
    "classificationProbability", "observationTags", "observationComments",
)  # fmt: skip
COLUMNS = {"deployments": DEPLOYMENT_COLUMNS, "media": MEDIA_COLUMNS, "observations": OBSERVATION_COLUMNS}


@dataclass(frozen=True)
class DeploymentInfo:
    """Where and when the camera stood: what Camtrap DP needs and the database does not know.

    `start` and `end` are the camera's local time, like the photos' capture times; left out, they are
    the first and last exported photo's. When given, only photos between them are exported, which
    picks one season out of a database that holds several.
    """

    deployment_id: str
    camera_id: str
    latitude: float
    longitude: float
    utc_offset: timedelta  # of the camera's clock; camera traps ignore daylight saving time
    start: datetime | None = None
    end: datetime | None = None
    location_name: str | None = None
    location_id: str | None = None
    coordinate_uncertainty: int | None = None  # metres
    camera_model: str | None = None  # default: the photos' EXIF make and model
    camera_height: float | None = None  # metres
    camera_tilt: int | None = None  # degrees, -90 (down) to 90 (up)
    camera_heading: int | None = None  # degrees from north, 0 to 360
    setup_by: str | None = None
    habitat: str | None = None
    feature_type: str | None = None
    bait_use: bool | None = None

    def __post_init__(self) -> None:
        problems = []
        if not self.deployment_id.strip():
            problems.append("deployment_id is empty")
        if not -90 <= self.latitude <= 90:
            problems.append(f"latitude {self.latitude} is outside -90..90")
        if not -180 <= self.longitude <= 180:
            problems.append(f"longitude {self.longitude} is outside -180..180")
        if abs(self.utc_offset) > timedelta(hours=14) or self.utc_offset % timedelta(minutes=1):
            problems.append(f"utc_offset {self.utc_offset} is not a whole-minute offset within +-14:00")
        if self.start is not None and self.end is not None and self.start > self.end:
            problems.append(f"start {self.start} is after end {self.end}")
        if self.coordinate_uncertainty is not None and self.coordinate_uncertainty < 1:
            problems.append(f"coordinate_uncertainty {self.coordinate_uncertainty} must be at least 1 metre")
        if self.camera_tilt is not None and not -90 <= self.camera_tilt <= 90:
            problems.append(f"camera_tilt {self.camera_tilt} is outside -90..90")
        if self.camera_heading is not None and not 0 <= self.camera_heading <= 360:
            problems.append(f"camera_heading {self.camera_heading} is outside 0..360")
        if self.feature_type is not None and self.feature_type not in FEATURE_TYPES:
            problems.append(f"feature_type {self.feature_type!r} is not one of {', '.join(FEATURE_TYPES)}")
        if problems:
            raise ExportError("deployment metadata is not valid: " + "; ".join(problems) + ".")


@dataclass(frozen=True)
class Contributor:
    title: str  # a person's or an organisation's name
    email: str | None = None
    role: str = "contributor"
    organization: str | None = None

    def __post_init__(self) -> None:
        if not self.title.strip():
            raise ExportError("a contributor needs a name.")
        if self.role not in CONTRIBUTOR_ROLES:
            raise ExportError(f"contributor role {self.role!r} is not one of {', '.join(CONTRIBUTOR_ROLES)}.")


@dataclass(frozen=True)
class PackageInfo:
    """The package's own metadata. Licenses are optional, but Camtrap DP wants both or neither:
    one for the data (an SPDX id such as CC0-1.0, or a URL) and one for the photos."""

    contributors: tuple[Contributor, ...]
    title: str | None = None
    project_title: str | None = None
    sampling_design: str = "opportunistic"  # a few cameras put where the birds are
    data_license: str | None = None
    media_license: str | None = None
    coordinate_precision: float | None = None

    def __post_init__(self) -> None:
        if not self.contributors:
            raise ExportError("Camtrap DP requires at least one contributor; give a name (and e-mail) with --contributor.")
        if self.sampling_design not in SAMPLING_DESIGNS:
            raise ExportError(f"sampling design {self.sampling_design!r} is not one of {', '.join(SAMPLING_DESIGNS)}.")
        if (self.data_license is None) != (self.media_license is None):
            raise ExportError(
                "Camtrap DP needs a license for the data and one for the media, or none: give both --data-license and --media-license."
            )


@dataclass(frozen=True)
class PackageSummary:
    out_dir: Path
    media: int
    event_observations: int
    media_observations: int
    taxa: tuple[str, ...]
    people_left_out: int = 0  # photos of people not exported (privacy)
    undated_left_out: int = 0  # photos without a capture time: Camtrap DP requires one
    files: tuple[Path, ...] = field(default=())
    people_hidden: int = 0  # media written as copies with people hidden (privacy.redact_people)


def write_package(
    session: Session,
    out_dir: Path,
    deployment: DeploymentInfo,
    package: PackageInfo,
    *,
    exclude_people: bool = False,
    overwrite: bool = False,
    created: datetime | None = None,
    hide_people: bool = True,
) -> PackageSummary:
    """Write the done photos of one deployment as a Camtrap DP package into `out_dir`.

    Exported: photos of `deployment.camera_id` stored with `deployment.deployment_id` or with no
    deployment id (recorded before one was configured), between `deployment.start` and `.end` when
    given. `exclude_people` leaves out photos decided as a person and events decided as people
    (their privacy; the rest of an event with a person in one frame stays). With `hide_people`
    (privacy.redact_people, issue 19) a photo with person boxes is not linked: a copy with the
    people filled is written to `media/` in the package and its filePath points there; the
    count is in the descriptor's `birdtrap:peopleHidden`. Returns what was written.

    Raises ExportError when `out_dir` already holds a package and `overwrite` is false, or when no
    photo matches.
    """
    out_dir = Path(out_dir)
    existing = [name for name in PACKAGE_FILES if (out_dir / name).exists()]
    if existing and not overwrite:
        raise ExportError(f"{out_dir} already holds {', '.join(existing)}; choose another folder or pass --overwrite to replace them.")

    images, people, undated = _select_images(session, deployment, exclude_people)
    if not images:
        window = ""
        if deployment.start or deployment.end:
            window = f" between {deployment.start or 'the first photo'} and {deployment.end or 'the last photo'}"
        raise ExportError(
            f"no processed photos of camera {deployment.camera_id!r} in deployment {deployment.deployment_id!r}{window}; "
            "check camera.id, --deployment-id and --start/--end, or let `birdtrap run` process the photos first."
        )
    events = _select_events(session, images, exclude_people)
    # Undated photos were left out above, so the first and last have capture times.
    start: datetime = deployment.start or images[0].captured_at  # type: ignore[assignment]
    end: datetime = deployment.end or images[-1].captured_at  # type: ignore[assignment]
    tz = timezone(deployment.utc_offset)

    media_ids = _media_ids(images)
    media_rows = [_media_row(image, media_ids[image.id], deployment, tz) for image in images]
    hidden = _hide_people(out_dir, images, media_ids, media_rows) if hide_people else 0
    event_rows = [_event_observation(event, members, deployment, tz) for event, members in events]
    photo_rows = [_media_observation(image, media_ids[image.id], deployment, tz) for image in images]
    # A person's review (birdtrap serve) replaces the machine's answer for the event and its photos.
    reviews = latest_reviews(session, [event.id for event, _ in events])
    for row in event_rows + photo_rows:
        correction = reviews.get(int(row["eventID"].removeprefix("event-"))) if row["eventID"] else None
        if correction is not None:
            row.update(_reviewed(correction))
    taxa = _taxonomic(
        [(e.scientific_name, e.taxon_rank, e.common_name) for e, _ in events if e.id not in reviews]
        + [(i.scientific_name, i.taxon_rank, i.common_name) for i in images if i.kind == Kind.BIRD and i.event_id not in reviews]
        + [(c.scientific_name, c.taxon_rank, c.common_name) for c in reviews.values() if c.kind == Kind.BIRD]
    )
    deployment_row = _deployment_row(deployment, images, start, end, tz)

    out_dir.mkdir(parents=True, exist_ok=True)
    files = [
        _write_csv(out_dir / "deployments.csv", DEPLOYMENT_COLUMNS, [deployment_row]),
        _write_csv(out_dir / "media.csv", MEDIA_COLUMNS, media_rows),
        _write_csv(out_dir / "observations.csv", OBSERVATION_COLUMNS, event_rows + photo_rows),
    ]
    descriptor = _descriptor(deployment, package, start, end, taxa, created or datetime.now(UTC))
    descriptor["birdtrap:peopleHidden"] = hidden  # media whose people are filled in the copy under media/
    descriptor_path = out_dir / "datapackage.json"
    descriptor_path.write_text(json.dumps(descriptor, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    log.debug("wrote Camtrap DP package %s: %d photos, %d events", out_dir, len(images), len(events))
    return PackageSummary(
        out_dir=out_dir,
        media=len(media_rows),
        event_observations=len(event_rows),
        media_observations=len(photo_rows),
        taxa=tuple(t["scientificName"] for t in taxa),
        people_left_out=people,
        undated_left_out=undated,
        files=(descriptor_path, *files),
        people_hidden=hidden,
    )


def _hide_people(out_dir: Path, images: list[ImageRecord], media_ids: dict[int, str], rows: list[dict[str, str]]) -> int:
    """Write a copy with the people hidden of each photo that has person boxes, to media/ in the
    package, and point its media row there (a path inside the package, as Camtrap DP allows)."""
    hidden = 0
    for image, row in zip(images, rows, strict=True):
        boxes = boxes_from_text(image.person_boxes)
        if not boxes:
            continue
        source = Path(_photo_path(image))
        name = f"{media_ids[image.id]}.jpg"
        (out_dir / MEDIA_FOLDER).mkdir(parents=True, exist_ok=True)
        write_redacted(source, out_dir / MEDIA_FOLDER / name, boxes)
        row.update({"filePath": f"{MEDIA_FOLDER}/{name}", "fileName": name, "fileMediatype": "image/jpeg"})
        hidden += 1
    return hidden


def _select_images(session: Session, deployment: DeploymentInfo, exclude_people: bool) -> tuple[list[ImageRecord], int, int]:
    query = (
        select(ImageRecord)
        .where(
            ImageRecord.status == DONE,
            ImageRecord.camera_id == deployment.camera_id,
            or_(ImageRecord.deployment_id == deployment.deployment_id, ImageRecord.deployment_id.is_(None)),
        )
        .options(selectinload(ImageRecord.model))
        .order_by(ImageRecord.captured_at, ImageRecord.id)
    )
    if deployment.start is not None:
        query = query.where(ImageRecord.captured_at >= deployment.start)
    if deployment.end is not None:
        query = query.where(ImageRecord.captured_at <= deployment.end)
    kept, people, undated = [], 0, 0
    for image in session.scalars(query):
        if image.captured_at is None:
            undated += 1
        elif exclude_people and image.kind == PERSON:
            people += 1
        else:
            kept.append(image)
    return kept, people, undated


def _select_events(session: Session, images: list[ImageRecord], exclude_people: bool) -> list[tuple[EventRecord, list[ImageRecord]]]:
    members: dict[int, list[ImageRecord]] = {}
    for image in images:
        if image.event_id is not None:
            members.setdefault(image.event_id, []).append(image)
    if not members:
        return []
    query = select(EventRecord).where(EventRecord.id.in_(list(members))).order_by(EventRecord.start, EventRecord.id)
    return [(event, members[event.id]) for event in session.scalars(query) if not (exclude_people and event.kind == PERSON)]


def _media_ids(images: Iterable[ImageRecord]) -> dict[int, str]:
    """A photo's mediaID is the start of its sha256: the same photo gets the same id in every export
    (and from every database), so packages of one camera can be merged."""
    ids: dict[int, str] = {}
    taken: set[str] = set()
    for image in images:
        media_id = (image.sha256 or "")[:16] or f"image-{image.id}"
        if media_id in taken:
            media_id = f"{media_id}-{image.id}"
        taken.add(media_id)
        ids[image.id] = media_id
    return ids


def _stamp(local: datetime, tz: timezone) -> str:
    # The tables' format is %Y-%m-%dT%H:%M:%S%z: whole seconds only.
    return local.replace(microsecond=0, tzinfo=tz).isoformat()


def _utc_stamp(value: datetime | None) -> str:
    return value.replace(microsecond=0).isoformat() + "Z" if value is not None else ""


def _number(value: float | None, digits: int = 6) -> str:
    return "" if value is None else f"{round(value, digits):.{digits}f}".rstrip("0").rstrip(".")


def _boolean(value: bool | None) -> str:
    return "" if value is None else ("true" if value else "false")


def _camera_model(images: list[ImageRecord]) -> str:
    # As in the example package: "Make-Model" (Reconyx-HF2X), the most common among the photos.
    models = Counter(
        "-".join(part.strip() for part in (image.camera_make, image.camera_model) if part and part.strip())
        for image in images
        if image.camera_make or image.camera_model
    )
    return models.most_common(1)[0][0] if models else ""


def _timestamp_issue(image: ImageRecord) -> str | None:
    if image.captured_at_plausible is False:
        return "capture time is implausible (camera clock not set?)"
    if image.captured_at_source and not image.captured_at_source.startswith("exif"):
        return f"capture time from {image.captured_at_source.replace('_', ' ')}, not EXIF"
    return None


def _deployment_row(deployment: DeploymentInfo, images: list[ImageRecord], start: datetime, end: datetime, tz: timezone) -> dict[str, str]:
    return {
        "deploymentID": deployment.deployment_id,
        "locationID": deployment.location_id or "",
        "locationName": deployment.location_name or "",
        "latitude": _number(deployment.latitude),
        "longitude": _number(deployment.longitude),
        "coordinateUncertainty": str(deployment.coordinate_uncertainty or ""),
        "deploymentStart": _stamp(start, tz),
        "deploymentEnd": _stamp(end, tz),
        "setupBy": deployment.setup_by or "",
        "cameraID": deployment.camera_id,
        "cameraModel": deployment.camera_model or _camera_model(images),
        "cameraHeight": _number(deployment.camera_height, 2),
        "cameraTilt": "" if deployment.camera_tilt is None else str(deployment.camera_tilt),
        "cameraHeading": "" if deployment.camera_heading is None else str(deployment.camera_heading),
        "timestampIssues": _boolean(any(_timestamp_issue(image) for image in images)),
        "baitUse": _boolean(deployment.bait_use),
        "featureType": deployment.feature_type or "",
        "habitat": deployment.habitat or "",
    }


def _photo_path(image: ImageRecord) -> str:
    return image.archived_path or image.path


def _media_row(image: ImageRecord, media_id: str, deployment: DeploymentInfo, tz: timezone) -> dict[str, str]:
    path = Path(_photo_path(image))
    mediatype = mimetypes.guess_type(path.name)[0] or f"image/{path.suffix.lstrip('.').lower() or 'jpeg'}"
    return {
        "mediaID": media_id,
        "deploymentID": deployment.deployment_id,
        "captureMethod": "activityDetection",
        "timestamp": _stamp(image.captured_at, tz),  # type: ignore[arg-type]
        # Camtrap DP allows a URL or a path inside the package; the photos stay where the daemon
        # left them, so this is a file: URL on this machine (filePublic false).
        "filePath": path.absolute().as_uri(),
        "filePublic": "false",
        "fileName": path.name,
        "fileMediatype": mediatype,
        "mediaComments": _timestamp_issue(image) or "",
    }


def _classified_by(image: ImageRecord | None) -> str:
    if image is None or image.model is None:
        return ""
    return f"{image.model.name} {image.model.version}".strip()


def observation_type(kind: str | None) -> str:
    """Camtrap DP's observationType for a stored kind (old "empty"/"unknown" rows read as blank/unsure)."""
    try:
        return OBSERVATION_TYPES.get(Kind.parse(kind), "unclassified") if kind else "unclassified"
    except ValueError:
        return "unclassified"


def _bbox(image: ImageRecord) -> dict[str, str]:
    """Camtrap DP's box: top-left corner, width and height, each 0-1 of the frame.

    Only for an animal, a person or a vehicle, and not when the whole frame decided (the stored box is then
    the frame itself, which says nothing about where the animal is).
    """
    box = (image.box_x0, image.box_y0, image.box_x1, image.box_y1)
    if observation_type(image.kind) not in ("animal", "human", "vehicle") or any(v is None for v in box):
        return {}
    x0, y0, x1, y1 = (min(max(float(v), 0.0), 1.0) for v in box)  # type: ignore[arg-type]
    width, height = round(x1 - x0, 6), round(y1 - y0, 6)
    if width <= 0 or height <= 0 or (x0, y0, x1, y1) == (0.0, 0.0, 1.0, 1.0):
        return {}
    return {"bboxX": _number(x0), "bboxY": _number(y0), "bboxWidth": _number(width), "bboxHeight": _number(height)}


def _classification(confidence: float | None, model_of: ImageRecord | None, when: datetime | None) -> dict[str, str]:
    return {
        "classificationMethod": "machine",
        "classifiedBy": _classified_by(model_of),
        "classificationTimestamp": _utc_stamp(when),
        "classificationProbability": _number(confidence, 4),
    }


def _reviewed(correction: CorrectionRecord) -> dict[str, str]:
    """Camtrap DP fields for an observation a person confirmed or corrected."""
    return {
        "observationType": observation_type(correction.kind),
        "scientificName": (correction.scientific_name or "") if correction.kind == Kind.BIRD else "",
        "classificationMethod": "human",
        "classifiedBy": correction.reviewer or "birdtrap review",
        "classificationTimestamp": _utc_stamp(correction.created_at),
        "classificationProbability": "",
    }


def _event_observation(event: EventRecord, members: list[ImageRecord], deployment: DeploymentInfo, tz: timezone) -> dict[str, str]:
    latest = max(members, key=lambda m: m.processed_at or datetime.min)
    return {
        "observationID": f"event-{event.id}",
        "deploymentID": deployment.deployment_id,
        "eventID": f"event-{event.id}",
        "eventStart": _stamp(event.start, tz),
        "eventEnd": _stamp(event.end, tz),
        "observationLevel": "event",
        "observationType": observation_type(event.kind),
        "scientificName": (event.scientific_name or "") if event.kind == Kind.BIRD else "",
        **_classification(event.confidence, latest, latest.processed_at),
        "observationComments": f"{event.photo_count} photo{'s' if event.photo_count != 1 else ''}, {event.bird_photo_count} with a bird",
    }


def _media_observation(image: ImageRecord, media_id: str, deployment: DeploymentInfo, tz: timezone) -> dict[str, str]:
    stamp = _stamp(image.captured_at, tz)  # type: ignore[arg-type]
    return {
        "observationID": f"{media_id}-1",
        "deploymentID": deployment.deployment_id,
        "mediaID": media_id,
        "eventID": f"event-{image.event_id}" if image.event_id is not None else "",
        "eventStart": stamp,
        "eventEnd": stamp,
        "observationLevel": "media",
        "observationType": observation_type(image.kind),
        "scientificName": (image.scientific_name or "") if image.kind == Kind.BIRD else "",
        **_bbox(image),
        **_classification(image.confidence, image, image.processed_at),
    }


def _taxonomic(names: list[tuple[str | None, str | None, str | None]]) -> list[dict[str, Any]]:
    """The package's taxonomic list: every scientificName in the observations, with its rank."""
    taxa: dict[str, dict[str, Any]] = {}
    for name, rank, common in names:
        if not name or name in taxa:
            continue
        rank = rank or taxonomy.rank_of(name) or ("species" if len(name.split()) >= 2 else "genus")
        taxon: dict[str, Any] = {"scientificName": name, "taxonRank": rank}
        taxon.update(_higher_taxa(name, rank))
        if common:
            taxon["vernacularNames"] = {"eng": common}
        taxa[name] = taxon
    return [taxa[name] for name in sorted(taxa)]


def _higher_taxa(name: str, rank: str) -> dict[str, str]:
    """class, order, family and genus above a name, as far as the package's taxonomy knows them.

    The observations table has no rank column: a family roll-up is found by its name here, in
    the taxonomic list (Camtrap DP's taxonRank allows order and family).
    """
    higher: dict[str, str] = {"class": taxonomy.CLASS_NAME} if rank != "class" else {}
    if rank in ("order", "class"):
        return higher
    if rank == "family":
        order = taxonomy.order_of_family(name)
        return {**higher, "order": order} if order else higher
    genus = name.split()[0]
    lineage = taxonomy.lineage_of(genus)
    if lineage is not None:
        higher.update(order=lineage.order, family=lineage.family)
    if rank != "genus":
        higher["genus"] = genus
    return higher


def _license(value: str, scope: str) -> dict[str, str]:
    key = "path" if re.match(r"^[a-z]+://", value) else "name"
    return {key: value, "scope": scope}


def _package_name(deployment_id: str) -> str:
    # Data Package names are lower-case letters, digits and -._/ only.
    return re.sub(r"[^a-z0-9._-]+", "-", f"birdtrap-{deployment_id}".lower()).strip("-")


def _descriptor(
    deployment: DeploymentInfo, package: PackageInfo, start: datetime, end: datetime, taxa: list[dict[str, Any]], created: datetime
) -> dict[str, Any]:
    title = package.title or f"Birds at {deployment.location_name or deployment.camera_id} ({deployment.deployment_id})"
    descriptor: dict[str, Any] = {
        "resources": [
            {
                "name": table,
                "path": f"{table}.csv",
                "profile": "tabular-data-resource",
                "format": "csv",
                "mediatype": "text/csv",
                "encoding": "utf-8",
                "schema": f"{BASE_URL}/{table}-table-schema.json",
            }
            for table in TABLES
        ],
        "profile": PROFILE_URL,
        "name": _package_name(deployment.deployment_id),
        "created": created.astimezone(UTC).replace(microsecond=0, tzinfo=None).isoformat() + "Z",
        "title": title,
        "contributors": [
            {k: v for k, v in (("title", c.title), ("email", c.email), ("role", c.role), ("organization", c.organization)) if v}
            for c in package.contributors
        ],
        "sources": [{"title": "birdtrap", "version": __version__}],
        "project": {
            "title": package.project_title or title,
            "samplingDesign": package.sampling_design,
            "captureMethod": ["activityDetection"],
            "individualAnimals": False,
            "observationLevel": ["media", "event"],
        },
        "spatial": {"type": "Point", "coordinates": [deployment.longitude, deployment.latitude]},
        "temporal": {"start": start.date().isoformat(), "end": end.date().isoformat()},
        "taxonomic": taxa,
    }
    if package.data_license and package.media_license:
        descriptor["licenses"] = [_license(package.data_license, "data"), _license(package.media_license, "media")]
    if package.coordinate_precision is not None:
        descriptor["coordinatePrecision"] = package.coordinate_precision
    return descriptor


def _write_csv(path: Path, columns: tuple[str, ...], rows: list[dict[str, str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, restval="", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return path
