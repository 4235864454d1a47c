"""Plots of what the database holds: activity over time, photos and events per species, confidence.

matplotlib is an optional extra (`pip install 'birdtrap[plot]'`): a Pi in the field never plots,
so it is imported inside the functions, and only its Agg canvas is used (no pyplot, no display,
no global state), which also makes these safe to call from any thread.

Each function reads with the caller's `Session`, writes one PNG of exactly `width` x `height`
pixels and returns its path. With nothing to show, the PNG says so instead of failing: an empty
plot is a normal state of a new deployment.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from birdtrap import store
from birdtrap.errors import BirdtrapError

DEFAULT_WIDTH, DEFAULT_HEIGHT = 1200, 700
MIN_SIDE, MAX_SIDE = 200, 10_000
NO_BIRDS = "no bird photos yet"
MAX_SPECIES_COLOURS = 9  # tab10 minus the grey kept for "other species"
OTHER_COLOUR = "#9e9e9e"


# --- data ----------------------------------------------------------------------------------


def species_name(scientific: str | None, common: str | None, rank: str | None) -> str:
    """'Snowy Egret (Egretta thula)', or 'Egretta (genus)' for a roll-up without a common name."""
    if not scientific:
        return "unnamed bird"
    if common:
        return f"{common} ({scientific})"
    if rank and rank != "species":
        return f"{scientific} ({rank})"
    return scientific


def _names(session: Session) -> dict[str, str]:
    return {s.scientific_name: species_name(s.scientific_name, s.common_name, s.taxon_rank) for s in store.species_stats(session)}


def _bucket_days(days: list[date]) -> tuple[str, int]:
    """Bin size for a daily activity plot: days for a season, else weeks, else months.

    A day-wide bar on a multi-year axis is a hairline nobody can see; summing into wider bins
    keeps the bars visible, and the axis label says which bin was used.
    """
    span = (max(days) - min(days)).days + 1
    if span <= 92:
        return "day", 1
    if span <= 2 * 366:
        return "week", 7
    return "month", 31


def _bin_start(day: date, unit: str) -> date:
    if unit == "week":
        return day - timedelta(days=day.weekday())
    if unit == "month":
        return day.replace(day=1)
    return day


# --- drawing helpers -----------------------------------------------------------------------


def _figure(width: int, height: int) -> Any:
    """A matplotlib Figure on the Agg canvas that renders to exactly width x height pixels."""
    for side, name in ((width, "width"), (height, "height")):
        if not MIN_SIDE <= side <= MAX_SIDE:
            raise BirdtrapError(f"plot {name} {side} px is out of range; use {MIN_SIDE} to {MAX_SIDE} pixels.")
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise BirdtrapError("plots need matplotlib, which is not installed; run `pip install 'birdtrap[plot]'`.") from None
    # Text scales with the image, so a large PNG is a sharper copy of the default rather than a
    # wide page of tiny print. The canvas truncates width/dpi*dpi to whole pixels: the quarter
    # pixel keeps float rounding from losing one.
    dpi = max(72.0, min(300.0, width / 11, height / 6.5))
    figure = Figure(figsize=((width + 0.25) / dpi, (height + 0.25) / dpi), dpi=dpi, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _save(figure: Any, out_png: Path) -> Path:
    out_png = Path(out_png)
    try:
        figure.savefig(out_png, format="png", dpi=figure.dpi, facecolor="white")
    except OSError as e:
        raise BirdtrapError(f"cannot write {out_png} ({e.strerror or e}); check that its folder exists and is writable.") from None
    return out_png


def _nothing_to_show(figure: Any, title: str, message: str = NO_BIRDS, hint: str = "") -> None:
    axes = figure.add_subplot()
    axes.set_axis_off()
    axes.set_title(title)
    axes.text(0.5, 0.55, message, ha="center", va="center", fontsize="x-large", color="#444444", transform=axes.transAxes)
    if hint:
        axes.text(0.5, 0.42, hint, ha="center", va="center", fontsize="medium", color="#777777", transform=axes.transAxes)


def _colours(names: list[str]) -> dict[str, str]:
    from matplotlib import colormaps

    palette = [c for i, c in enumerate(colormaps["tab10"].colors) if i != 7]  # 7 is tab10's grey
    return {name: palette[i % len(palette)] for i, name in enumerate(names)}


def _top_and_other(totals: dict[str, int], keep: int) -> tuple[list[str], set[str]]:
    ranked = sorted(totals, key=lambda name: (-totals[name], name))
    if len(ranked) <= keep:
        return ranked, set()
    return ranked[: keep - 1], set(ranked[keep - 1 :])


# --- plots ---------------------------------------------------------------------------------


def activity_plot(
    session: Session,
    out_png: Path,
    by: str = "day",
    width: int = DEFAULT_WIDTH,
    height: int = DEFAULT_HEIGHT,
    since: datetime | None = None,
    camera: str | None = None,
) -> Path:
    """Bird photos per species over time (`by='day'`) or by hour of day (`by='hour'`), stacked bars.

    Daily counts over more than a season are summed per week or per month (the axis says which).
    Returns the PNG's path; raises BirdtrapError without matplotlib or when the file cannot be written.
    """
    if by not in ("day", "hour"):
        raise BirdtrapError(f"activity by {by!r} is not known; use 'day' or 'hour'.")
    figure = _figure(width, height)
    rows = store.activity(session, by, since, camera)
    where = f" — camera {camera}" if camera else ""
    if not rows:
        _nothing_to_show(figure, f"Bird activity by {by}{where}", hint="Photos with a bird and a capture time appear here.")
        return _save(figure, out_png)

    names = _names(session)
    totals: dict[str, int] = defaultdict(int)
    for scientific, _, count in rows:
        totals[scientific] += count
    shown, other = _top_and_other(totals, MAX_SPECIES_COLOURS + 1)
    colours = _colours(shown)
    axes = figure.add_subplot()

    if by == "hour":
        positions = list(range(24))
        counts: dict[str, list[int]] = defaultdict(lambda: [0] * 24)
        for scientific, hour, count in rows:
            counts["other" if scientific in other else scientific][int(hour)] += count
        bar_width: float = 0.8
        axes.set_xticks(positions, [f"{h:02d}" for h in positions])
        axes.set_xlim(-0.6, 23.6)
        axes.set_xlabel("hour of day (camera clock)")
        axes.set_ylabel("bird photos (all days)")
        title = "Bird activity by hour of day"
        x_values: list[Any] = positions
    else:
        import matplotlib.dates as mdates

        days = sorted({date.fromisoformat(day) for _, day, _ in rows})
        unit, step = _bucket_days(days)
        bins = sorted({_bin_start(day, unit) for day in days})
        index = {start: i for i, start in enumerate(bins)}
        counts = defaultdict(lambda: [0] * len(bins))
        for scientific, day, count in rows:
            counts["other" if scientific in other else scientific][index[_bin_start(date.fromisoformat(day), unit)]] += count
        # Bars are centred on their bin so a week's bar covers that week on the axis.
        x_values = [start + timedelta(days=step / 2) for start in bins]
        bar_width = step * 0.85
        locator = mdates.AutoDateLocator(minticks=3, maxticks=10)
        axes.xaxis.set_major_locator(locator)
        axes.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
        axes.set_xlabel(f"{'date' if unit == 'day' else unit + ' starting'} (camera clock)")
        axes.set_ylabel(f"bird photos per {unit}")
        title = f"Bird activity per {unit}, {days[0]:%Y-%m-%d} to {days[-1]:%Y-%m-%d}"
        if unit != "day":
            title += f" (daily counts summed per {unit})"

    bottom = [0] * len(x_values)
    for key in [*shown, *(["other"] if other else [])]:
        values = counts[key]
        label = names.get(key, key) if key != "other" else f"{len(other)} other species"
        colour = colours.get(key, OTHER_COLOUR)
        axes.bar(x_values, values, bar_width, bottom=bottom, label=label, color=colour, edgecolor="white", linewidth=0.4)
        bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    axes.set_title(f"{title}{where}")
    axes.yaxis.get_major_locator().set_params(integer=True)
    axes.grid(axis="y", alpha=0.3)
    axes.set_axisbelow(True)
    axes.spines[["top", "right"]].set_visible(False)
    axes.legend(title="species", loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small", frameon=False)
    return _save(figure, out_png)


def species_plot(
    session: Session,
    out_png: Path,
    width: int = DEFAULT_WIDTH,
    height: int = DEFAULT_HEIGHT,
    since: datetime | None = None,
    until: datetime | None = None,
    camera: str | None = None,
) -> Path:
    """Bird photos and events per species (or genus), horizontal bars, most photos at the top.

    Photos count every frame; events count bursts, which is closer to "how many visits". Species
    beyond what fits the height are left out and counted in the title.
    """
    figure = _figure(width, height)
    stats = store.species_stats(session, since, until, camera)
    where = f" — camera {camera}" if camera else ""
    if not stats:
        _nothing_to_show(figure, f"Bird photos and events per species{where}", hint="Species appear here once photos are classified.")
        return _save(figure, out_png)

    fits = max(3, int((height / figure.dpi * 72 - 90) / 26))  # rows of two-line labels at ~26 pt each
    shown, hidden = stats[:fits], stats[fits:]
    labels = [
        f"{s.common_name}\n{s.scientific_name}" if s.common_name else species_name(s.scientific_name, None, s.taxon_rank) for s in shown
    ]
    positions = list(range(len(shown)))
    axes = figure.add_subplot()
    thickness = 0.38
    photos = axes.barh([p - thickness / 2 for p in positions], [s.photos for s in shown], thickness, label="bird photos")
    events = axes.barh([p + thickness / 2 for p in positions], [s.events for s in shown], thickness, label="events (bursts)")
    axes.bar_label(photos, padding=3, fontsize="small")
    axes.bar_label(events, padding=3, fontsize="small")
    axes.set_yticks(positions, labels, fontsize="small")
    axes.invert_yaxis()  # most photos at the top
    axes.set_xlabel("count")
    axes.xaxis.get_major_locator().set_params(integer=True)
    axes.margins(x=0.08)
    axes.grid(axis="x", alpha=0.3)
    axes.set_axisbelow(True)
    axes.spines[["top", "right"]].set_visible(False)
    total_photos = sum(s.photos for s in stats)
    title = f"Bird photos and events per species ({len(stats)} taxa, {total_photos} bird photos){where}"
    if hidden:
        title += f"\n{len(hidden)} taxa with fewer photos not shown; `birdtrap stats` lists all"
    axes.set_title(title)
    axes.legend(loc="lower right", frameon=False)
    return _save(figure, out_png)


def confidence_plot(
    session: Session,
    out_png: Path,
    threshold: float | None = None,
    width: int = DEFAULT_WIDTH,
    height: int = DEFAULT_HEIGHT,
    camera: str | None = None,
) -> Path:
    """Histogram of the decision confidence of bird photos, by taxon rank, with the threshold line.

    Many bird photos just above the threshold suggest the threshold (or the model) decides a lot
    of them; genus, family and order roll-ups sit low by design.
    """
    figure = _figure(width, height)
    query = select(store.ImageRecord.confidence, store.ImageRecord.taxon_rank).where(
        store.ImageRecord.status == store.DONE,
        store.ImageRecord.kind == store.KIND_BIRD,
        store.ImageRecord.confidence.is_not(None),
    )
    if camera:
        query = query.where(store.ImageRecord.camera_id == camera)
    by_rank: dict[str, list[float]] = defaultdict(list)
    for confidence, rank in session.execute(query):
        by_rank[rank or "unknown rank"].append(float(confidence))
    where = f" — camera {camera}" if camera else ""
    if not by_rank:
        _nothing_to_show(figure, f"Confidence of bird decisions{where}", hint="Bird photos appear here once photos are classified.")
        return _save(figure, out_png)

    order = ["species", "genus", "family", "order", "class"]
    ranks = sorted(by_rank, key=lambda r: (order.index(r) if r in order else len(order), r))
    colours = {"species": "#1f77b4", "genus": "#2ca02c", "family": "#bcbd22", "order": "#17becf", "class": "#9467bd"}
    axes = figure.add_subplot()
    bins = [i / 20 for i in range(21)]
    axes.hist(
        [by_rank[r] for r in ranks],
        bins=bins,
        stacked=True,
        label=[f"{r} rank ({len(by_rank[r])})" for r in ranks],
        color=[colours.get(r, OTHER_COLOUR) for r in ranks],
        edgecolor="white",
        linewidth=0.5,
    )
    if threshold is not None:
        axes.axvline(threshold, color="#d62728", linestyle="--", linewidth=1.5, label=f"threshold {threshold:.2f} (decision.threshold)")
    total = sum(len(v) for v in by_rank.values())
    axes.set_xlim(0, 1)
    axes.set_xticks([i / 10 for i in range(11)])
    axes.set_xlabel("decision confidence (probability, 0 to 1; bins of 0.05)")
    axes.set_ylabel("bird photos")
    axes.yaxis.get_major_locator().set_params(integer=True)
    axes.set_title(f"Confidence of bird decisions ({total} bird photos){where}")
    axes.grid(axis="y", alpha=0.3)
    axes.set_axisbelow(True)
    axes.spines[["top", "right"]].set_visible(False)
    axes.legend(loc="upper left", frameon=False)
    return _save(figure, out_png)
