"""What the database holds: `sightings`, `events`, `failed`, `stats`."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import click

from birdtrap.cli.common import config_option, load_config
from birdtrap.cli.output import output_options, print_rows
from birdtrap.identify.kinds import Kind

log = logging.getLogger(__name__)

# The table view is for a glance; csv/json/ndjson are exports and are whole unless --limit (issue 18).
TABLE_ROWS = 50


def _parse_when(value: str | None, flag: str) -> datetime | None:
    if value is None:
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a date; use YYYY-MM-DD or YYYY-MM-DDTHH:MM", param_hint=flag) from None


def query_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """The filters shared by `sightings` and `events`, parsed into a `filters` dict."""

    @click.option("--since", help="Only from this date/time on (YYYY-MM-DD[THH:MM], capture time).")
    @click.option("--until", help="Only before this date/time.")
    @click.option("--species", help="Scientific or common name, case-insensitive; a prefix is enough.")
    @click.option("--camera", help="Only this camera id.")
    @click.option("--min-confidence", type=click.FloatRange(0, 1), help="Only decisions at least this sure.")
    @click.option("--limit", type=click.IntRange(1), help=f"At most this many rows [default: all; the table shows {TABLE_ROWS}].")
    @functools.wraps(command)
    def wrapper(*args: Any, since: str | None, until: str | None, species: str | None, camera: str | None,
                min_confidence: float | None, limit: int, **kwargs: Any) -> Any:
        filters = {
            "since": _parse_when(since, "--since"),
            "until": _parse_when(until, "--until"),
            "species": species,
            "camera": camera,
            "min_confidence": min_confidence,
            "limit": limit,
        }
        return command(*args, filters=filters, **kwargs)

    return wrapper


def open_database(config_path: Path | None):
    from birdtrap import store

    config = load_config(config_path)
    return store.open_store(config.database.url, config.database.busy_timeout_seconds, create=False)


@click.command()
@query_options
@output_options()
@config_option
def sightings(filters: dict[str, Any], fmt: str, config_path: Path | None) -> None:
    """List bird photos (sightings), newest first.

    \b
        birdtrap sightings --since 2024-05-01 --species ardea --format csv
    """
    from birdtrap import store

    shown = _shown_limit(filters, fmt)
    with open_database(config_path)() as session:
        rows = [_sighting_row(image) for image in store.find_sightings(session, **{**filters, "limit": shown})]
        total = _total(rows, shown, fmt, lambda: store.count_sightings(session, **_without_limit(filters)))
    print_rows(rows, fmt, empty="no sightings match")
    _say_how_many_more(rows, total)


def _shown_limit(filters: dict[str, Any], fmt: str) -> int | None:
    """--limit if given; else all rows, except that the table shows the first TABLE_ROWS."""
    return filters["limit"] if filters["limit"] is not None or fmt != "table" else TABLE_ROWS


def _without_limit(filters: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in filters.items() if key != "limit"}


def _total(rows: list[Any], shown: int | None, fmt: str, count: Callable[[], int]) -> int:
    """How many rows match, counted only when a table was cut (an export prints nothing else)."""
    return count() if fmt == "table" and shown is not None and len(rows) == shown else len(rows)


def _say_how_many_more(rows: list[Any], total: int) -> None:
    if total > len(rows):
        click.echo(f"... and {total - len(rows)} more ({total} in all): --limit {total} lists them, --format csv|json|ndjson writes all")


def _sighting_row(image: Any) -> dict[str, Any]:
    return {
        "captured_at": image.captured_at.isoformat(sep=" ") if image.captured_at else None,
        "camera": image.camera_id,
        "scientific_name": image.scientific_name,
        "common_name": image.common_name,
        "taxon_rank": image.taxon_rank,
        "confidence": round(image.confidence, 4) if image.confidence is not None else None,
        "event": image.event_id,
        "path": image.path,
    }


@click.command()
@query_options
@output_options()
@click.option("--all", "all_kinds", is_flag=True, help="Also events without a bird (animal, person, vehicle, unsure, blank).")
@click.option("--kind", "kind_name", metavar="KIND",
              help="Only events of this kind: bird, animal, person, vehicle, unsure or blank (old names empty, unknown accepted).")
@config_option
def events(filters: dict[str, Any], fmt: str, all_kinds: bool, kind_name: str | None, config_path: Path | None) -> None:
    """List events (the bursts a trigger fires), newest first, with the species they decide.

    \b
        birdtrap events --species "grey heron" --format json
        birdtrap events --kind unsure
    """
    from birdtrap import store
    try:
        kind = Kind.parse(kind_name) if kind_name is not None else None
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--kind") from None

    shown = _shown_limit(filters, fmt)
    with open_database(config_path)() as session:
        found = store.find_events(session, birds_only=not all_kinds, kind=kind, **{**filters, "limit": shown})
        photos = store.event_photos(session, [event.id for event in found])
        rows = [
            {
                "event": event.id,
                "start": event.start.isoformat(sep=" "),
                "end": event.end.isoformat(sep=" "),
                "camera": event.camera_id,
                "photos": event.photo_count,
                "bird_photos": event.bird_photo_count,
                "kind": event.kind,
                "scientific_name": event.scientific_name,
                "common_name": event.common_name,
                "taxon_rank": event.taxon_rank,
                "confidence": round(event.confidence, 4) if event.confidence is not None else None,
                "path": _cover(photos.get(event.id, [])),
            }
            for event in found
        ]
        unlimited = _without_limit(filters)
        total = _total(rows, shown, fmt, lambda: store.count_events(session, birds_only=not all_kinds, kind=kind, **unlimited))
    print_rows(rows, fmt, empty="no events match")
    _say_how_many_more(rows, total)


def _cover(photos: list[Any]) -> str | None:
    """The photo to open for an event: its surest bird frame, else its first frame."""
    birds = [p for p in photos if p.kind == Kind.BIRD]
    best = max(birds, key=lambda p: p.confidence or 0.0) if birds else (photos[0] if photos else None)
    return best.path if best is not None else None


@click.command()
@click.option("--limit", type=click.IntRange(1), help="At most this many photos [default: all].")
@output_options()
@config_option
def failed(limit: int | None, fmt: str, config_path: Path | None) -> None:
    """List the photos that could not be read, newest first, with the reason for each.

    \b
        birdtrap failed
        birdtrap failed --format csv > unreadable.csv
    """
    from birdtrap import store

    with open_database(config_path)() as session:
        rows = [
            {
                "path": image.path,
                "error": image.error,
                "seen": image.discovered_at.isoformat(sep=" ", timespec="seconds") if image.discovered_at else None,
                "moved_to": image.archived_path,
            }
            for image in store.find_failed(session, limit)
        ]
    print_rows(rows, fmt, empty="no photo has failed")


@click.command()
@click.option("--since", help="Only from this date/time on (YYYY-MM-DD[THH:MM]).")
@click.option("--until", help="Only before this date/time.")
@click.option("--camera", help="Only this camera id.")
@click.option("--by", type=click.Choice(["species", "day", "hour"]), default="species", show_default=True,
              help="Per species totals, or photos per species by day or by hour of day.")
@click.option("--trust", is_flag=True, help="How often each species was right in your reviews, and a suggested threshold.")
@click.option("--per-camera", is_flag=True, help="With --trust: one row per species and camera.")
@output_options()
@config_option
def stats(
    since: str | None, until: str | None, camera: str | None, by: str, trust: bool, per_camera: bool, fmt: str, config_path: Path | None
) -> None:
    """Which species, how often, first and last seen; or activity by day or hour; or --trust.

    \b
        birdtrap stats
        birdtrap stats --by hour --format csv
        birdtrap stats --trust --per-camera
    """
    from birdtrap import store

    if trust:
        _print_trust(config_path, per_camera, camera, fmt)
        return
    since_time, until_time = _parse_when(since, "--since"), _parse_when(until, "--until")
    with open_database(config_path)() as session:
        rows = store.stats_rows(session, by, since_time, until_time, camera)
        counts = store.counts_by_status(session)
        redacted = store.redacted_count(session)
    print_rows(rows, fmt, empty="no bird photos yet")
    if fmt == "table":
        click.echo("photos by status: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
        click.echo(f"photos with people hidden in every image birdtrap makes: {redacted}")


def _print_trust(config_path: Path | None, per_camera: bool, camera: str | None, fmt: str) -> None:
    """`stats --trust`: the trust report (store/trust.py), one row per species (and camera)."""
    from birdtrap import store
    from birdtrap.store import trust as trust_report

    config = load_config(config_path)
    sessions = store.open_store(config.database.url, config.database.busy_timeout_seconds, create=False)
    with sessions() as session:
        report = trust_report.trust_report(session, config.decision.threshold_for, per_camera=per_camera or camera is not None)
    rows = [
        {
            "species": t.species,
            "common_name": t.common_name or "",
            "camera": t.camera,
            "reviewed": t.reviewed,
            "right": t.right,
            "precision": round(t.precision, 3),
            "corrected_into": "; ".join(f"{name} x{count}" for name, count in t.corrected_into),
            "threshold": t.threshold,
            "suggested": t.suggested if t.suggested is not None else "",
            "meaning": t.sentence(),
        }
        for t in report
        if camera is None or t.camera == camera
    ]
    print_rows(rows, fmt, empty="no reviewed events yet: review some in `birdtrap serve` first")
    if fmt == "table" and any(t.suggested is not None for t in report):
        click.echo("to accept a suggestion, add it under decision.species_thresholds in the config, e.g.")
        first = next(t for t in report if t.suggested is not None)
        click.echo(f"  species_thresholds: {{\"{first.species}\": {first.suggested}}}")
