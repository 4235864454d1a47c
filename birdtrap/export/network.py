"""Camtrap DP export of a whole network: every deployment in a central database, one package.

The central database (filled by `birdtrap sync`) knows each deployment's place from its
`deployments` table; this module turns each row into the `DeploymentInfo` that birdtrap.export.camtrapdp
needs and writes one package with one row per deployment, reusing that module's row builders so a
network package and a single-camera package can never disagree on a column.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from sqlalchemy import inspect, select
from sqlalchemy.orm import Session

from birdtrap.errors import ExportError
from birdtrap.export import camtrapdp
from birdtrap.export.camtrapdp import DeploymentInfo, PackageInfo
from birdtrap.identify.kinds import Kind
from birdtrap.store import EventRecord, ImageRecord, latest_reviews
from birdtrap.store.central import DeploymentRecord

log = logging.getLogger(__name__)

_OFFSET = re.compile(r"^(?:(?P<utc>Z)|(?P<sign>[+-])(?P<hours>\d{2}):?(?P<minutes>\d{2}))$")


@dataclass(frozen=True)
class NetworkSummary:
    out_dir: Path
    deployments: tuple[str, ...]
    media: int
    event_observations: int
    media_observations: int
    taxa: tuple[str, ...]
    empty_deployments: tuple[str, ...] = ()  # known centrally but with no processed photo yet
    people_left_out: int = 0
    undated_left_out: int = 0
    files: tuple[Path, ...] = field(default=())


def parse_offset(text: str) -> timedelta:
    """'+02:00', '-0530' or 'Z' (camera.utc_offset's forms) as a timedelta."""
    match = _OFFSET.match(text.strip())
    if match is None:
        raise ExportError(f"utc_offset {text!r} is not +HH:MM, -HHMM or Z.")
    if match["utc"]:
        return timedelta(0)
    offset = timedelta(hours=int(match["hours"]), minutes=int(match["minutes"]))
    return -offset if match["sign"] == "-" else offset


def deployment_infos(session: Session, only: Sequence[str] | None = None) -> list[DeploymentInfo]:
    """The central deployments as DeploymentInfo; raises ExportError naming each incomplete one and its fix."""
    query = select(DeploymentRecord).order_by(DeploymentRecord.deployment_id)
    if only:
        query = query.where(DeploymentRecord.deployment_id.in_(list(only)))
    rows = list(session.scalars(query))
    missing = sorted(set(only or ()) - {row.deployment_id for row in rows})
    if missing:
        raise ExportError(f"no deployment {', '.join(map(repr, missing))} in the central database; `birdtrap sync` from its device first.")
    if not rows:
        raise ExportError("the central database has no deployments yet; run `birdtrap sync --to URL` on each device first.")
    problems = []
    for row in rows:
        absent = [
            key
            for key, value in (("latitude", row.latitude), ("longitude", row.longitude), ("utc_offset", row.utc_offset))
            if value is None
        ]
        if absent:
            keys = ", ".join(f"camera.{key}" for key in absent)
            problems.append(f"deployment {row.deployment_id!r} (camera {row.camera_id!r}) has no {', '.join(absent)}: set {keys}")
    if problems:
        raise ExportError(
            "Camtrap DP needs every deployment's place and clock offset:\n  "
            + "\n  ".join(problems)
            + "\nin that device's config and run `birdtrap sync` there again, or leave it out with --deployment."
        )
    return [
        DeploymentInfo(
            deployment_id=row.deployment_id,
            camera_id=row.camera_id,
            latitude=row.latitude,  # type: ignore[arg-type]
            longitude=row.longitude,  # type: ignore[arg-type]
            utc_offset=parse_offset(row.utc_offset),  # type: ignore[arg-type]
            location_name=row.location_name,
            coordinate_uncertainty=row.coordinate_uncertainty,
            camera_model=row.camera_model,
        )
        for row in rows
    ]


def write_network_package(
    session: Session,
    out_dir: Path,
    package: PackageInfo,
    *,
    deployments: Sequence[str] | None = None,
    exclude_people: bool = False,
    overwrite: bool = False,
    created: datetime | None = None,
) -> NetworkSummary:
    """Write every deployment of the central database (or those named) as one Camtrap DP package.

    A photo recorded without a deployment id goes to the first deployment of its camera only, so a
    camera moved between deployments never exports a photo twice. Raises ExportError when
    `out_dir` holds a package and `overwrite` is false, a deployment lacks its place, or no
    deployment has a processed photo.
    """
    out_dir = Path(out_dir)
    existing = [name for name in camtrapdp.PACKAGE_FILES if (out_dir / name).exists()]
    if existing and not overwrite:
        raise ExportError(f"{out_dir} already holds {', '.join(existing)}; choose another folder or pass --overwrite to replace them.")
    if not inspect(session.get_bind()).has_table(DeploymentRecord.__tablename__):
        # A device's own database has no deployments table: only `birdtrap sync` makes one (issue 18).
        raise ExportError(
            f"{session.get_bind().url.render_as_string(hide_password=True)} is not a central database (it has no deployments "
            "table). Give the central database that `birdtrap sync --to URL` fills with --from URL; for this device's own "
            "photos use `birdtrap export camtrap-dp OUT_DIR`."
        )
    infos = deployment_infos(session, deployments)
    chosen: list[tuple[DeploymentInfo, list[ImageRecord]]] = []
    seen_images: set[int] = set()
    empty, people, undated = [], 0, 0
    for info in infos:
        images, left_people, left_undated = camtrapdp._select_images(session, info, exclude_people)
        images = [image for image in images if image.id not in seen_images]
        seen_images.update(image.id for image in images)
        people, undated = people + left_people, undated + left_undated
        if images:
            chosen.append((info, images))
        else:
            empty.append(info.deployment_id)
    if not chosen:
        raise ExportError(f"no processed photos in deployments {', '.join(i.deployment_id for i in infos)}; let the devices sync first.")

    media_ids = camtrapdp._media_ids([image for _, images in chosen for image in images])
    deployment_rows, media_rows, event_rows, photo_rows = [], [], [], []
    names: list[tuple[str | None, str | None, str | None, int | None]] = []
    seen_events: set[int] = set()
    starts, ends = [], []
    for info, images in chosen:
        tz = timezone(info.utc_offset)
        start: datetime = images[0].captured_at  # type: ignore[assignment]
        end: datetime = images[-1].captured_at  # type: ignore[assignment]
        starts.append(start - info.utc_offset)  # UTC, to compare deployments in other time zones
        ends.append(end - info.utc_offset)
        events: list[tuple[EventRecord, list[ImageRecord]]] = [
            (event, members) for event, members in camtrapdp._select_events(session, images, exclude_people) if event.id not in seen_events
        ]
        seen_events.update(event.id for event, _ in events)
        deployment_rows.append(camtrapdp._deployment_row(info, images, start, end, tz))
        media_rows += [camtrapdp._media_row(image, media_ids[image.id], info, tz) for image in images]
        event_rows += [camtrapdp._event_observation(event, members, info, tz) for event, members in events]
        photo_rows += [camtrapdp._media_observation(image, media_ids[image.id], info, tz) for image in images]
        names += [(e.scientific_name, e.taxon_rank, e.common_name, e.id) for e, _ in events]
        names += [(i.scientific_name, i.taxon_rank, i.common_name, i.event_id) for i in images if i.kind == Kind.BIRD]
    # A person's review (birdtrap serve on this database) replaces the machine's answer, as in
    # camtrapdp.write_package.
    reviews = latest_reviews(session, seen_events)
    for row in event_rows + photo_rows:
        correction = reviews.get(int(row["eventID"].removeprefix("event-"))) if row["eventID"] else None
        if correction is not None:
            row.update(camtrapdp._reviewed(correction))
    taxa = camtrapdp._taxonomic(
        [(name, rank, common) for name, rank, common, event_id in names if event_id not in reviews]
        + [(c.scientific_name, c.taxon_rank, c.common_name) for c in reviews.values() if c.kind == Kind.BIRD]
    )

    out_dir.mkdir(parents=True, exist_ok=True)
    files = [
        camtrapdp._write_csv(out_dir / "deployments.csv", camtrapdp.DEPLOYMENT_COLUMNS, deployment_rows),
        camtrapdp._write_csv(out_dir / "media.csv", camtrapdp.MEDIA_COLUMNS, media_rows),
        camtrapdp._write_csv(out_dir / "observations.csv", camtrapdp.OBSERVATION_COLUMNS, event_rows + photo_rows),
    ]
    infos_used = [info for info, _ in chosen]
    descriptor = _network_descriptor(infos_used, package, min(starts), max(ends), taxa, created or datetime.now(UTC))
    descriptor_path = out_dir / "datapackage.json"
    descriptor_path.write_text(json.dumps(descriptor, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    log.info("wrote the network package %s: %d deployments, %d photos", out_dir, len(chosen), len(media_rows))
    return NetworkSummary(
        out_dir=out_dir,
        deployments=tuple(info.deployment_id for info in infos_used),
        media=len(media_rows),
        event_observations=len(event_rows),
        media_observations=len(photo_rows),
        taxa=tuple(t["scientificName"] for t in taxa),
        empty_deployments=tuple(empty),
        people_left_out=people,
        undated_left_out=undated,
        files=(descriptor_path, *files),
    )


def _network_descriptor(
    infos: list[DeploymentInfo], package: PackageInfo, start: datetime, end: datetime, taxa: list[dict[str, Any]], created: datetime
) -> dict[str, Any]:
    """camtrapdp's descriptor for the first deployment, widened to the network: name, title, place, time."""
    descriptor = camtrapdp._descriptor(infos[0], package, start, end, taxa, created)
    title = package.title or f"Birds at {len(infos)} camera{'s' if len(infos) != 1 else ''} ({', '.join(i.deployment_id for i in infos)})"
    descriptor["name"] = "birdtrap-network"
    descriptor["title"] = title
    descriptor["project"]["title"] = package.project_title or title
    points = sorted({(info.longitude, info.latitude) for info in infos})
    if len(points) == 1:
        descriptor["spatial"] = {"type": "Point", "coordinates": list(points[0])}
    else:
        descriptor["spatial"] = {"type": "MultiPoint", "coordinates": [list(point) for point in points]}
    return descriptor


__all__ = ["NetworkSummary", "write_network_package", "deployment_infos", "parse_offset"]
