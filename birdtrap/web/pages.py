"""Server-rendered pages (Jinja2): latest events, an event's review, the review queue, today,
the gallery, a species, stats, failed photos, the fleet.

No front-end build: plain HTML and one stylesheet, a few lines of inline script to refresh the
list and send a review. Filters are plain GET forms, so they work without JavaScript too.
"""

from __future__ import annotations

from datetime import date, datetime
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates
from sqlalchemy import inspect

from birdtrap import store
from birdtrap.identify.kinds import Kind
from birdtrap.store import central, daily, trust
from birdtrap.store import examples as examples_store
from birdtrap.store import health as health_store
from birdtrap.web import queries
from birdtrap.web.api import EventId
from birdtrap.web.context import Context, WebContext
from birdtrap.web.problems import Problem

templates = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))
templates.env.filters["verdict"] = lambda verdict: "blank" if verdict == store.MARKED_EMPTY else verdict  # the stored word is older


def _camera_problems(request: Request) -> list[Any]:
    """The open camera health problems (issue 19) for the banner on every page (_health.html);
    none when the database cannot be read: the page itself will say so."""
    try:
        return request.app.state.web.read(health_store.open_problems)
    except Problem:
        return []


templates.env.globals["camera_problems"] = _camera_problems
router = APIRouter(include_in_schema=False, default_response_class=HTMLResponse)

PAGE_SIZE = 30
QUEUE_SIZE = 50


def _date(value: str | None, name: str) -> datetime | None:
    # Empty form fields arrive as "", which means "no filter", not a bad date.
    if not value:
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        raise Problem(422, "bad-parameters", f"{name}: {value!r} is not a date; use YYYY-MM-DD.") from None


@router.get("/")
def index(
    request: Request,
    context: Context,
    species: Annotated[str | None, Query(max_length=200)] = None,
    since: Annotated[str | None, Query(max_length=40)] = None,
    until: Annotated[str | None, Query(max_length=40)] = None,
    camera: Annotated[str | None, Query(max_length=100)] = None,
    all: Annotated[bool, Query()] = False,  # noqa: A002
    offset: Annotated[int, Query(ge=0, le=queries.MAX_OFFSET)] = 0,
    partial: Annotated[bool, Query()] = False,
) -> HTMLResponse:
    filters = queries.Filters(_date(since, "since"), _date(until, "until"), species or None, camera or None)

    def load(session: Any) -> dict[str, Any]:
        events, more = queries.events_page(session, filters, PAGE_SIZE, offset, birds_only=not all)
        return {
            "events": events,
            "more": more,
            "token": store.change_token(session),
            "species": [] if partial else store.species_stats(session),
        }

    data = context.read(load)
    next_url = None
    if data["more"]:
        url = request.url.include_query_params(offset=offset + PAGE_SIZE).remove_query_params("partial")
        next_url = f"{url.path}?{url.query}"
    values = {
        "events": data["events"],
        "next_url": next_url,
        "filters": filters,
        "token": data["token"],
        "species": data["species"],
        "since_value": since or "",
        "until_value": until or "",
        "all_kinds": all,
        "refresh_seconds": context.settings.refresh_seconds,
    }
    return templates.TemplateResponse(request, "_events.html" if partial else "index.html", values)


@router.get("/events/{event_id}")
def event_page(request: Request, event_id: EventId, context: Context) -> HTMLResponse:
    detail = context.read(lambda s: queries.event_detail(s, event_id))
    if detail is None:
        raise Problem(404, "no-such-event", f"there is no event {event_id}; it may have been merged into a neighbouring burst.")
    # The form starts from what decides now: a corrected event offers its correction, not the
    # machine's species (saving it unchanged must not undo a person's work, issue 18).
    current = detail["reviews"][0] if detail["reviews"] else None
    if current is not None and current["verdict"] == store.CORRECTED:
        selected, species = "correct", current["label"] or current["scientific_name"] or ""
    elif current is not None and current["verdict"] == store.MARKED_EMPTY:
        selected, species = "blank", ""
    elif detail["machine"]["kind"] == Kind.BIRD:
        selected, species = "confirm", ""
    else:
        selected, species = "correct", ""
    values = {"event": detail, "selected": selected, "species": species}
    return templates.TemplateResponse(request, "event.html", values)


@router.get("/review")
def review_queue(request: Request, context: Context) -> HTMLResponse:
    events, total = context.read(lambda s: queries.queue_page(s, QUEUE_SIZE))
    return templates.TemplateResponse(request, "review.html", {"events": events, "total": total})


@router.get("/today")
def today_page(
    request: Request, context: Context, day: Annotated[str | None, Query(max_length=40, description="YYYY-MM-DD")] = None
) -> HTMLResponse:
    chosen = _date(day, "day")
    shown: date = chosen.date() if chosen is not None else date.today()

    def load(session: Any) -> dict[str, Any]:
        return {"species": queries.species_rows(daily.day_summary(session, shown)), "latest": daily.latest_bird_day(session)}

    data = context.read(load)
    values = {"day": shown, "is_today": shown == date.today(), **data}
    return templates.TemplateResponse(request, "today.html", values)


@router.get("/gallery")
def gallery_page(request: Request, context: Context) -> HTMLResponse:
    species = context.read(lambda s: queries.species_rows(daily.species_summary(s)))
    return templates.TemplateResponse(request, "gallery.html", {"species": species})


@router.get("/failed")
def failed_page(request: Request, context: Context, offset: Annotated[int, Query(ge=0, le=queries.MAX_OFFSET)] = 0) -> HTMLResponse:
    photos, total = context.read(lambda s: queries.failed_page(s, PAGE_SIZE * 3, offset))
    more = offset + len(photos) < total
    values = {"photos": photos, "total": total, "offset": offset, "next_offset": offset + PAGE_SIZE * 3 if more else None}
    return templates.TemplateResponse(request, "failed.html", values)


@router.get("/species/{name:path}")
def species_page(request: Request, name: str, context: Context) -> HTMLResponse:
    # Exact scientific name: a prefix ("Ardea") would mix several species on one page.
    rows = context.read(lambda s: [r for r in store.find_sightings(s, species=name, limit=5000) if (r.scientific_name or "") == name])
    sightings = [queries.sighting_dict(r) for r in rows]
    days = queries.daily_counts(rows)
    peak = max((count for _, count in days), default=1)
    step = 10
    ticks = queries.axis_ticks(peak)
    chart = {"width": max(step * len(days), 100), "step": step, "scale": 96 / ticks[-1], "ticks": ticks}
    values = {
        "name": name,
        "common_name": next((s["common_name"] for s in sightings if s["common_name"]), None),
        "sightings": sightings[:200],
        "total": len(sightings),
        "days": days,
        "chart": chart,
        "first": days[0][0] if days else None,
        "last": days[-1][0] if days else None,
        "trust": _species_trust(context, name),
    }
    return templates.TemplateResponse(request, "species.html", values)


def _species_trust(context: WebContext, name: str) -> list[trust.SpeciesTrust]:
    """The trust report's rows for one species (issue 19): all cameras first, then each camera."""
    threshold_for = context.config.decision.threshold_for

    def load(session: Any) -> list[trust.SpeciesTrust]:
        overall = trust.trust_report(session, threshold_for, species=name)
        cameras = trust.trust_report(session, threshold_for, per_camera=True, species=name)
        return overall + (cameras if len(cameras) > 1 else [])

    return context.read(load)


@router.get("/stats")
def stats_page(request: Request, context: Context) -> HTMLResponse:
    def load(session: Any) -> dict[str, Any]:
        return {
            "species": store.species_stats(session),
            "by_status": sorted(store.counts_by_status(session).items()),
            "queue": store.pending_count(session),
            "hours": queries.hourly_counts(session),
            "camera": context.config.camera.id,
            "examples": examples_store.example_counts(session, context.config.camera.id),
            "head": examples_store.latest_head(session, context.config.camera.id),
        }

    data = context.read(load)
    data["hour_ticks"] = queries.axis_ticks(max(data["hours"]))
    data["hour_bars"] = [(f"{hour:02d}:00", count) for hour, count in enumerate(data["hours"])]
    data["heatmap"], data["heatmap_peak"] = context.read(queries.species_by_hour)
    return templates.TemplateResponse(request, "stats.html", data)


@router.get("/fleet")
def fleet_page(request: Request, context: Context) -> HTMLResponse:
    """The traps that sync to this (central) database: per trap its last sync and counts (issue 21)."""

    def load(session: Any) -> dict[str, Any]:
        if not inspect(session.connection()).has_table("devices"):
            return {"central": False, "traps": []}
        return {"central": True, "traps": central.fleet_status(session)}

    return templates.TemplateResponse(request, "fleet.html", context.read(load))
