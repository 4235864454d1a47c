"""The eBird Record Format: the 19-column spreadsheet eBird's import tool reads (issue 18).

Column list and order as in eBird's record-format template ("Upload spreadsheet data to eBird",
https://support.ebird.org/en/support/solutions/articles/48000907878, section "eBird Record
Format"): Common Name, Genus, Species, Number, Species Comments, Location Name, Latitude,
Longitude, Date (MM/DD/YYYY), Start Time (HH:MM, 24 h), State/Province, Country Code, Protocol,
Number of Observers, Duration (minutes), All observations reported? (Y/N), Effort Distance Miles,
Effort area acres, Submission Comments. Each row is one species on one checklist; a checklist is
one date, one place and one protocol.

What goes in, and why:
- Only verified events: a person reviewed them as a bird, or the machine was at least
  `min_confidence` sure. eBird data feeds science; an unsure guess does not belong there.
- Number is MaxN, the most individuals of the species seen in one frame, taken as the maximum
  over frames and events, never a sum: the same heron photographed in 12 frames, or coming back
  three times a day, is one heron. birdtrap decides one bird per frame today, so a frame shows
  at most 1 of a species; `_individuals_in_frame` is where a per-frame count would come in.
- Protocol is Incidental and "all observations reported" is N: a camera trap does not report
  every bird it could have seen, and has no observer effort in eBird's sense.
- Genus-level answers go in as "Genus sp." (eBird's spuh); a family or order is left out (eBird
  takes those only by its own group names), and counted in the summary.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any, Literal

from sqlalchemy.orm import Session

from birdtrap import __version__, store
from birdtrap.errors import ExportError

COLUMNS = (
    "Common Name",
    "Genus",
    "Species",
    "Number",
    "Species Comments",
    "Location Name",
    "Latitude",
    "Longitude",
    "Date",
    "Start Time",
    "State/Province",
    "Country Code",
    "Protocol",
    "Number of Observers",
    "Duration",
    "All observations reported?",
    "Effort Distance Miles",
    "Effort area acres",
    "Submission Comments",
)
PROTOCOL = "Incidental"

Per = Literal["day", "event"]


@dataclass(frozen=True)
class Site:
    """Where the camera stands, as eBird wants it on every row."""

    location_name: str
    latitude: float
    longitude: float
    camera_id: str
    state: str = ""
    country: str = ""


@dataclass
class EbirdSummary:
    rows: int = 0
    events: int = 0
    unverified_left_out: int = 0
    above_genus_left_out: int = 0
    species: list[str] = field(default_factory=list)


@dataclass
class _Row:
    """One species on one checklist (a day, or one event), while its events are gathered."""

    scientific_name: str
    common_name: str | None
    day: date
    start: datetime
    count: int = 0
    events: int = 0
    photos: int = 0
    best_confidence: float | None = None
    reviewed: int = 0


def _individuals_in_frame(event: Any) -> int:
    """Most individuals of the event's species in any one of its frames (MaxN within the event).

    One: the decision names one bird per frame (the region that decided); a frame is never
    counted as more birds than it shows, and frames are never added up.
    """
    return 1 if event.bird_photo_count or _reviewed(event) else 0


def _reviewed(event: Any) -> bool:
    return isinstance(event, store.Reviewed)


def _verified(event: Any, min_confidence: float, reviewed_only: bool) -> bool:
    if _reviewed(event):
        return True
    return not reviewed_only and event.confidence is not None and event.confidence >= min_confidence


def ebird_rows(
    session: Session,
    site: Site,
    *,
    min_confidence: float,
    since: datetime | None = None,
    until: datetime | None = None,
    reviewed_only: bool = False,
    per: Per = "day",
) -> tuple[list[list[str]], EbirdSummary]:
    """The eBird rows (COLUMNS order) of the verified bird events of `site.camera_id`."""
    summary = EbirdSummary()
    gathered: dict[tuple, _Row] = {}
    events = store.find_events(session, since=since, until=until, camera=site.camera_id, birds_only=True)
    for event in sorted(events, key=lambda e: (e.start, e.id)):
        if not _verified(event, min_confidence, reviewed_only):
            summary.unverified_left_out += 1
            continue
        name = event.scientific_name or ""
        if event.taxon_rank not in ("species", "subspecies", "genus") or not name:
            summary.above_genus_left_out += 1
            continue
        key = (name, event.start.date()) if per == "day" else (name, event.id)
        row = gathered.setdefault(key, _Row(name, event.common_name, event.start.date(), event.start))
        row.count = max(row.count, _individuals_in_frame(event))  # MaxN: a maximum, never a sum
        row.events += 1
        row.photos += event.bird_photo_count
        row.reviewed += _reviewed(event)
        if event.confidence is not None:
            row.best_confidence = max(row.best_confidence or 0.0, event.confidence)
        summary.events += 1
    rows = [_cells(row, site, per) for row in sorted(gathered.values(), key=lambda r: (r.start, r.scientific_name))]
    summary.rows = len(rows)
    summary.species = sorted({row.scientific_name for row in gathered.values()})
    return rows, summary


def _cells(row: _Row, site: Site, per: Per) -> list[str]:
    words = row.scientific_name.split()
    genus = words[0]
    epithet = " ".join(words[1:]) if len(words) > 1 else "sp."
    common = row.common_name if len(words) > 1 and row.common_name else ""
    sure = f", machine confidence up to {row.best_confidence:.2f}" if row.best_confidence is not None else ""
    checked = f", {row.reviewed} reviewed by a person" if row.reviewed else ""
    comments = f"camera trap: {row.photos} photos in {row.events} event{'s' if row.events != 1 else ''}{sure}{checked}"
    checklist = "one event" if per == "event" else "one day"
    submission = (
        f"Camera trap {site.camera_id} ({checklist}), identified by birdtrap {__version__}; "
        "Number is the most individuals seen in one frame (MaxN)."
    )
    return [
        common,
        genus,
        epithet,
        str(row.count),
        comments,
        site.location_name,
        f"{site.latitude:.6f}",
        f"{site.longitude:.6f}",
        row.day.strftime("%m/%d/%Y"),
        row.start.strftime("%H:%M"),
        site.state,
        site.country,
        PROTOCOL,
        "1",
        "",
        "N",
        "",
        "",
        submission,
    ]


def write_ebird(path: Path, rows: Iterable[list[str]], overwrite: bool = False) -> Path:
    """Write the rows under eBird's header; refuses to replace a file unless `overwrite`."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise ExportError(f"{path} already exists; choose another file name or pass --overwrite to replace it.")
    if path.suffix.lower() != ".csv":
        raise ExportError(f"{path.name!r} does not end in .csv; eBird's import tool takes a .csv file.")
    partial = path.with_name(f".{path.name}.partial")
    with partial.open("w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out)
        writer.writerow(COLUMNS)
        writer.writerows(rows)
    partial.replace(path)
    return path
