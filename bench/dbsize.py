"""`python -m bench.dbsize`: how `birdtrap sightings` and `birdtrap stats` slow down as the database grows.

    python -m bench.dbsize                              # 1-2 minutes on 2 cores: 10^4, 10^5, 10^6 photos (10^6 build 25-40 s)
    python -m bench.dbsize --rows 2000,8000 --repeats 2 # ~3 s (the smoke test)
    python -m bench.dbsize --extra-index "CREATE INDEX ix_try ON images (kind, status, captured_at)"

For each size N a SQLite file is created by birdtrap itself (`open_store`, so the schema and its
indexes are exactly the daemon's) and filled with N synthetic photos through the raw sqlite3
module in one transaction: ~2 years of bursts from 5 cameras, ~80% bird photos of 60 species from
the iNat labels (Zipf-like frequencies), the rest empty, animal, person, unknown, failed or duplicate,
grouped into events as the daemon groups them, and a person's verdict on 2% of the bird events.
No predictions rows unless --predictions: neither query reads them. No ANALYZE: birdtrap never runs it,
so the planner sees what a Pi's database gives it.

Then the query path of `birdtrap sightings` (`find_sightings` in a fresh session from
`open_store(url, create=False)`, as the CLI opens it) is timed for seven filter sets (a --species
prefix no photo matches among them: the worst case of a LIMIT that is never reached), and
`stats_rows(session, "species", ...)` for `birdtrap stats`; every figure is the median of
--repeats runs after one warm-up, on a warm page cache. Each figure's baseline is the same query
at the smallest N, so the ratio is how the cost grows: ~1x for an index seek with a LIMIT, ~100x
from 10^4 to 10^6 for a full scan. The note column carries the rows returned and SQLite's query
plan for `images` (SEARCH / SCAN ... USING INDEX / full SCAN, temp B-tree sorts). --extra-index adds
an index to the bench databases only (never to birdtrap) and times every query again beside it.

Prints a table and writes JSON naming the machine (default bench/out/dbsize.json); the temporary
folder with the databases is deleted afterwards unless --keep.
"""

from __future__ import annotations

import argparse
import math
import re
import shutil
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from bench.report import add_output_options, run_settings

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
LABELS = SHARED / "models" / "inat_birds" / "labels.txt"

SEED = 20240501
END = datetime(2025, 6, 1)  # the newest synthetic capture is just before this
SPAN_DAYS = 730
CAMERAS = ("cam-feeder", "cam-pond", "cam-hedge", "cam-roof", "cam-meadow")
CAMERA_SHARE = (0.35, 0.25, 0.2, 0.12, 0.08)
SPECIES_COUNT = 60
# Event kinds and their shares; with 2% failed and 1% duplicate photos and some empty frames in
# bird bursts this gives ~80% bird photos, as a feeder camera records.
EVENT_KINDS = ("bird", "blank", "animal", "person", "unsure")
EVENT_SHARE = (0.88, 0.07, 0.025, 0.015, 0.01)
FAILED_SHARE, DUPLICATE_SHARE, REVIEWED_SHARE = 0.02, 0.01, 0.02
DEFAULT_LIMIT = 50  # used only if the CLI's --limit default cannot be read


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.dbsize", description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    parser.add_argument("--rows", default="10000,100000,1000000", help="photos per database, comma separated [10000,100000,1000000]")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs of every query; figures are medians [5]")
    parser.add_argument("--seed", type=int, default=SEED, help=f"random seed of the synthetic data [{SEED}]")
    parser.add_argument("--predictions", action="store_true", help="also store 5 predictions rows per bird photo (a larger file)")
    parser.add_argument(
        "--extra-index", action="append", default=[], metavar="SQL",
        help="a CREATE INDEX statement tried on the bench databases: every query is timed again after it (repeatable)",
    )  # fmt: skip
    parser.add_argument("--labels", type=Path, default=LABELS, help="species names, one a line [../shared/models/inat_birds/labels.txt]")
    parser.add_argument("--workdir", type=Path, help="where to build the databases [a new temporary folder]")
    parser.add_argument("--keep", action="store_true", help="keep the databases")
    add_output_options(parser, "dbsize")
    args = parser.parse_args(argv)
    try:
        args.rows = sorted({int(item) for item in args.rows.split(",") if item.strip()})
    except ValueError:
        parser.error("--rows takes whole numbers separated by commas, e.g. 10000,100000")
    if not args.rows or args.rows[0] < 100:
        parser.error("--rows needs at least one size of 100 photos or more")
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    if any(not re.match(r"(?i)\s*create\s+(unique\s+)?index\s", sql) for sql in args.extra_index):
        parser.error("--extra-index takes a CREATE INDEX statement")
    return args


def say(message: str) -> None:
    print(f"bench.dbsize: {message}", file=sys.stderr, flush=True)


# --- synthetic data --------------------------------------------------------------------------


@dataclass(frozen=True)
class Species:
    index: int  # the model's output index (line of labels.txt)
    label: str
    scientific: str
    common: str | None

    @property
    def genus(self) -> str:
        return self.scientific.split()[0]


@dataclass
class Built:
    """What one database holds and how long it took to make."""

    path: Path
    photos: int
    seconds: float
    counts: dict[str, int] = field(default_factory=dict)
    species: list[Species] = field(default_factory=list)  # most frequent first (by design, not by count)
    absent: str = "nosuchbird"  # a --species prefix no photo matches
    newest: datetime = END

    @property
    def url(self) -> str:
        return f"sqlite:///{self.path}"


def pick_species(labels_path: Path, count: int, seed: int) -> tuple[list[Species], str]:
    """`count` binomials from the model's labels in a fixed random order (index 0 the commonest), and
    the genus of another label that none of them matches as a --species prefix (a search that finds nothing)."""
    from birdtrap.identify.bundle import read_labels

    labels = [lab for lab in read_labels(labels_path) if lab.common and len(lab.scientific.split()) == 2]
    chosen = np.random.default_rng(seed).choice(len(labels), size=min(count, len(labels)), replace=False)
    species = [Species(labels[i].index, labels[i].text, labels[i].scientific, labels[i].common) for i in chosen]
    names = [name.lower() for s in species for name in (s.scientific, s.common or "")]
    absent = next((genus for lab in labels if not any(name.startswith(genus := lab.genus.lower()) for name in names)), "nosuchbird")
    return species, absent


def _times(base: datetime, seconds: np.ndarray) -> list[str]:
    """Offsets in seconds from `base` as SQLAlchemy stores a SQLite DateTime ('YYYY-MM-DD HH:MM:SS.ffffff')."""
    stamps = np.datetime64(base, "us") + np.round(seconds * 1e6).astype("timedelta64[us]")
    return [text.replace("T", " ") for text in np.datetime_as_string(stamps, unit="us").tolist()]


# The images insert binds what varies and derives the rest in SQL (C, not Python, per row): the path
# and deployment from camera and capture time, the columns only a processed photo has from its status.
_INSERT_IMAGE = """
INSERT INTO images (id, path, sha256, size_bytes, file_mtime, camera_id, deployment_id, status, error, discovered_at, processed_at,
    captured_at, captured_at_source, captured_at_plausible, camera_make, camera_model, width, height, model_id, duplicate_of,
    kind, label, scientific_name, common_name, taxon_rank, confidence, box_x0, box_y0, box_x1, box_y1, invokes, event_id)
VALUES (?1, '/srv/birdtrap/inbox/' || ?5 || '/' || substr(?7, 1, 10) || '/IMG_' || printf('%07d', ?1) || '.JPG', ?2, ?3, ?4, ?5,
    ?5 || '-' || substr(?7, 1, 4), ?6, CASE WHEN ?6 = 'failed' THEN 'cannot decode the photo: truncated JPEG' END,
    datetime(?7, '+' || ?8 || ' seconds') || substr(?7, 20), datetime(?7, '+' || (?8 + 40) || ' seconds') || substr(?7, 20),
    CASE WHEN ?6 = 'done' THEN ?7 END, CASE WHEN ?6 = 'done' THEN 'exif' END, CASE WHEN ?6 = 'done' THEN 1 END,
    CASE WHEN ?6 = 'done' THEN 'Browning' END, CASE WHEN ?6 = 'done' THEN 'BTC-8E' END, CASE WHEN ?6 = 'done' THEN 4000 END,
    CASE WHEN ?6 = 'done' THEN 3000 END, CASE WHEN ?6 = 'done' THEN 1 END, ?9,
    ?10, ?11, ?12, ?13, ?14, CASE WHEN ?6 = 'done' THEN ?15 END, CASE WHEN ?10 = 'bird' THEN ?16 END, CASE WHEN ?10 = 'bird' THEN ?17 END,
    CASE WHEN ?10 = 'bird' THEN ?16 + ?18 END, CASE WHEN ?10 = 'bird' THEN ?17 + ?19 END, CASE WHEN ?6 = 'done' THEN ?20 END,
    CASE WHEN ?6 = 'done' THEN ?21 END)
"""
_INSERT_EVENT = """
INSERT INTO events (id, camera_id, deployment_id, start, "end", photo_count, bird_photo_count, kind, label, scientific_name, common_name,
    taxon_rank, confidence) VALUES (?1, ?2, ?3 || '-' || substr(?4, 1, 4), ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)
"""
_INSERT_CORRECTION = """
INSERT INTO corrections (id, event_id, verdict, kind, label, scientific_name, common_name, taxon_rank, machine_kind, machine_label,
    machine_scientific_name, machine_common_name, machine_confidence, reviewer, note, created_at)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'reviewer', NULL, ?)
"""
_INSERT_PREDICTION = """
INSERT INTO predictions (image_id, rank, label_index, label, scientific_name, common_name, confidence) VALUES (?, ?, ?, ?, ?, ?, ?)
"""


@dataclass
class _Photos:
    """The synthetic photos as columns (index i is photo id i + 1), in capture order."""

    of_event: np.ndarray
    captured: np.ndarray  # seconds after the start of the span
    captured_text: list[str]
    camera: np.ndarray  # camera names (object)
    status: np.ndarray
    kind: np.ndarray  # None where not processed
    species: np.ndarray  # index into the species list
    genus_rank: np.ndarray
    confidence: np.ndarray

    @property
    def done(self) -> np.ndarray:
        return self.status == "done"

    @property
    def bird(self) -> np.ndarray:
        return self.kind == "bird"


def _photos(photos: int, species: list[Species], zipf: np.ndarray, base: datetime, rng: np.random.Generator) -> _Photos:
    """Bursts of 1..15 frames (mean ~3.3) at daylight hours over SPAN_DAYS, from 5 cameras."""
    sizes = np.minimum(rng.geometric(0.3, size=photos // 2 + 10), 15)
    ends = np.cumsum(sizes)
    n_events = int(np.searchsorted(ends, photos)) + 1
    sizes = sizes[:n_events]
    sizes[-1] -= int(ends[n_events - 1]) - photos
    day = rng.integers(0, SPAN_DAYS, n_events)
    hour = np.clip(rng.normal(11.5, 3.5, n_events), 4.5, 21.0)
    start = np.sort(day * 86400.0 + hour * 3600.0 + rng.uniform(0, 60, n_events))
    event_camera = rng.choice(len(CAMERAS), size=n_events, p=CAMERA_SHARE)
    event_kind = rng.choice(len(EVENT_KINDS), size=n_events, p=EVENT_SHARE)
    event_species = rng.choice(len(species), size=n_events, p=zipf)

    of_event = np.repeat(np.arange(n_events), sizes)
    burst_first = np.repeat(np.cumsum(sizes) - sizes, sizes)
    frame = np.arange(photos) - burst_first
    gaps = np.where(frame > 0, rng.uniform(1.5, 2.5, photos), 0.0).cumsum()  # 1.5-2.5 s between frames
    captured = start[of_event] + gaps - gaps[burst_first]
    status = np.full(photos, "done", dtype=object)
    roll = rng.random(photos)
    status[roll < FAILED_SHARE] = "failed"
    status[(roll >= FAILED_SHARE) & (roll < FAILED_SHARE + DUPLICATE_SHARE)] = "duplicate"
    status[0] = "done"  # a duplicate needs an earlier original
    kind = np.array(EVENT_KINDS, dtype=object)[event_kind[of_event]]
    # A bird burst has empty frames where the bird left; the first frame is always a bird.
    kind[(kind == "bird") & (frame > 0) & (rng.random(photos) < 0.08)] = "blank"
    kind[status != "done"] = None
    bird = kind == "bird"
    own = rng.random(photos) < 0.85  # most frames name the burst's species, the others another one
    photo_species = np.where(own, event_species[of_event], rng.choice(len(species), size=photos, p=zipf))
    genus_rank = bird & (rng.random(photos) < 0.05)
    confidence = np.where(genus_rank, 0.5 + 0.35 * rng.beta(2, 2, photos), 0.5 + 0.5 * rng.beta(2.5, 1.2, photos))
    confidence = np.where(kind == "blank", rng.beta(6, 1.5, photos), confidence)
    confidence = np.where(kind == "unsure", 0.2 + 0.3 * rng.random(photos), confidence)
    camera = np.array(CAMERAS, dtype=object)[event_camera[of_event]]
    return _Photos(of_event, captured, _times(base, captured), camera, status, kind, photo_species, genus_rank, confidence)


def _image_rows(p: _Photos, species: list[Species], base: datetime, rng: np.random.Generator) -> Iterator[tuple]:
    """The bound values of _INSERT_IMAGE, one tuple a photo."""
    photos = len(p.status)
    pick = np.array([(s.label, s.scientific, s.common, s.genus) for s in species], dtype=object)[p.species]
    bird, named = p.bird, p.bird | (p.kind == "unsure")
    other_label = np.array([{"blank": "background", "animal": "cat", "person": "person"}.get(k) for k in EVENT_KINDS], dtype=object)
    kind_index = {k: i for i, k in enumerate(EVENT_KINDS)}
    fallback = np.where(p.done, other_label[[kind_index.get(k, 0) for k in p.kind.tolist()]], None)
    label = np.where(named, np.where(p.genus_rank, pick[:, 3], pick[:, 0]), fallback)
    scientific = np.where(named, np.where(p.genus_rank, pick[:, 3], pick[:, 1]), None)
    common = np.where(named & ~p.genus_rank, pick[:, 2], None)
    rank = np.where(bird, np.where(p.genus_rank, "genus", "species").astype(object), None)

    digests = rng.bytes(32 * photos).hex()
    sha = [digests[64 * i : 64 * i + 64] for i in range(photos)]
    ids = np.arange(1, photos + 1)
    duplicate_of: list[int | None] = [None] * photos
    for i in np.flatnonzero(p.status == "duplicate").tolist():  # a copy has the content of an earlier original
        original = int(i * rng.random())
        while p.status[original] != "done":
            original -= 1
        duplicate_of[i], sha[i] = original + 1, sha[original]
    mtime = p.captured + (base - datetime(1970, 1, 1)).total_seconds() + 5
    return zip(
        ids.tolist(), sha, rng.integers(2_000_000, 7_000_000, photos).tolist(), mtime.tolist(), p.camera.tolist(), p.status.tolist(),
        p.captured_text, rng.integers(20, 600, photos).tolist(), duplicate_of, p.kind.tolist(), label.tolist(), scientific.tolist(),
        common.tolist(), rank.tolist(), p.confidence.tolist(), rng.uniform(0, 0.6, photos).tolist(), rng.uniform(0, 0.6, photos).tolist(),
        rng.uniform(0.05, 0.4, photos).tolist(), rng.uniform(0.05, 0.4, photos).tolist(), rng.integers(1, 4, photos).tolist(),
        (p.of_event + 1).tolist(), strict=True,
    )  # fmt: skip


def _events(p: _Photos, species: list[Species], rng: np.random.Generator) -> tuple[list[tuple], list[tuple]]:
    """Event rows as the daemon summarises a burst (bird if any frame is, named by most of its bird
    frames), and a person's verdicts on REVIEWED_SHARE of the bird events."""
    done, bird = p.done, p.bird
    n_events = int(p.of_event[-1]) + 1
    index = np.arange(len(done))
    first = np.full(n_events, len(done))
    last = np.full(n_events, -1)
    np.minimum.at(first, p.of_event[done], index[done])
    np.maximum.at(last, p.of_event[done], index[done])
    photo_count = np.bincount(p.of_event[done], minlength=n_events)
    bird_count = np.bincount(p.of_event[bird], minlength=n_events)
    best_bird = np.zeros(n_events)
    best_any = np.zeros(n_events)
    np.maximum.at(best_bird, p.of_event[bird], p.confidence[bird])
    np.maximum.at(best_any, p.of_event[done], p.confidence[done])
    # The species most bird frames name (ties: the lower index).
    keys = p.of_event[bird] * len(species) + p.species[bird]
    pairs, votes = np.unique(keys, return_counts=True)
    order = np.lexsort((-votes, pairs // len(species)))
    winners, at = np.unique(pairs[order] // len(species), return_index=True)
    event_species = np.zeros(n_events, dtype=np.int64)
    event_species[winners] = pairs[order][at] % len(species)
    # A burst without a bird frame is what its frames show (all alike in this data), else empty.
    other_kind = np.full(n_events, "blank", dtype=object)
    other_kind[p.of_event[done]] = p.kind[done]
    other_kind[other_kind == "bird"] = "blank"

    events, corrections = [], []
    reviewed = rng.random(n_events) < REVIEWED_SHARE
    verdicts = rng.choice(("confirmed", "corrected", "empty"), size=n_events, p=(0.7, 0.2, 0.1)).tolist()
    for e in np.flatnonzero(photo_count).tolist():  # a burst whose photos all failed or were copies has no event
        start, end = p.captured_text[first[e]], p.captured_text[last[e]]
        camera = p.camera[first[e]]
        if not bird_count[e]:
            events.append((e + 1, camera, camera, start, end, int(photo_count[e]), 0, other_kind[e], None, None, None, None,
                           float(best_any[e])))  # fmt: skip
            continue
        name = species[event_species[e]]
        machine = (name.label, name.scientific, name.common)
        events.append((e + 1, camera, camera, start, end, int(photo_count[e]), int(bird_count[e]), "bird", *machine, "species",
                       float(best_bird[e])))  # fmt: skip
        if reviewed[e]:
            verdict = verdicts[e]
            other = species[(event_species[e] + 1) % len(species)]
            shown = {"confirmed": machine, "corrected": (other.label, other.scientific, other.common)}.get(verdict, (None, None, None))
            corrections.append((len(corrections) + 1, e + 1, verdict, "blank" if verdict == "empty" else "bird", *shown,
                                None if verdict == "empty" else "species", "bird", *machine, float(best_bird[e]), end))  # fmt: skip
    return events, corrections


def _predictions(p: _Photos, species: list[Species], zipf: np.ndarray, rng: np.random.Generator) -> Iterator[tuple]:
    """Top-5 rows per bird photo: its decision first, then four runners-up sharing what is left."""
    images = np.flatnonzero(p.bird)
    rest = (1.0 - p.confidence[images])[:, None] * -np.sort(-rng.dirichlet(np.ones(4), size=len(images)), axis=1)
    ranked = np.column_stack((p.species[images], rng.choice(len(species), size=(len(images), 4), p=zipf)))
    values = np.column_stack((p.confidence[images], rest))
    for image, chosen, confidences in zip((images + 1).tolist(), ranked.tolist(), values.tolist(), strict=True):
        for rank, (which, value) in enumerate(zip(chosen, confidences, strict=True), start=1):
            name = species[which]
            yield image, rank, name.index, name.label, name.scientific, name.common, value


def build(path: Path, photos: int, species: list[Species], seed: int, predictions: bool = False) -> Built:
    """Create `path` with birdtrap's schema and fill it with `photos` synthetic photos and their events.

    The schema comes from `open_store` (the daemon's code path). Rows go in through sqlite3's
    executemany in one transaction with journaling off, and the secondary indexes of the filled
    tables are dropped first and re-created from their own CREATE statements afterwards: one sort
    per index instead of a million random B-tree inserts, and the same indexes in the end.
    """
    from birdtrap.store import open_store

    began = time.perf_counter()
    open_store(f"sqlite:///{path}").kw["bind"].dispose()
    rng = np.random.default_rng(seed)
    zipf = 1.0 / np.arange(1, len(species) + 1) ** 1.1
    zipf /= zipf.sum()
    base = END - timedelta(days=SPAN_DAYS)
    p = _photos(photos, species, zipf, base, rng)
    event_rows, corrections = _events(p, species, rng)

    connection = sqlite3.connect(path, isolation_level=None)
    try:
        connection.execute("PRAGMA journal_mode=OFF")
        connection.execute("PRAGMA synchronous=OFF")
        connection.execute("PRAGMA cache_size=-262144")
        indexes = connection.execute(
            "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL "
            "AND tbl_name IN ('images', 'events', 'predictions')"
        ).fetchall()
        connection.execute("BEGIN")
        for name, _ in indexes:
            connection.execute(f'DROP INDEX "{name}"')
        connection.execute(
            "INSERT INTO models (id, sha256, name, version, path, first_used, last_used) VALUES (1, ?, 'inat_birds', '1', ?, ?, ?)",
            ("0" * 64, str(LABELS.with_name("model.tflite")), p.captured_text[0], p.captured_text[-1]),
        )
        connection.executemany(_INSERT_EVENT, event_rows)
        connection.executemany(_INSERT_IMAGE, _image_rows(p, species, base, rng))
        connection.executemany(_INSERT_CORRECTION, corrections)
        if predictions:
            connection.executemany(_INSERT_PREDICTION, _predictions(p, species, zipf, rng))
        for _, sql in indexes:
            connection.execute(sql)
        connection.execute("COMMIT")
        counts = {
            table: connection.execute(f"SELECT count(*) FROM {table}").fetchone()[0]  # noqa: S608 - fixed names
            for table in ("images", "events", "corrections", "predictions")
        }
        counts["bird_photos"] = connection.execute("SELECT count(*) FROM images WHERE status = 'done' AND kind = 'bird'").fetchone()[0]
        connection.execute("PRAGMA journal_mode=WAL")  # as the daemon leaves it
    finally:
        connection.close()
    newest = base + timedelta(seconds=float(p.captured[p.done].max()))
    return Built(path, photos, time.perf_counter() - began, counts, species, newest=newest)


# --- queries ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    key: str
    label: str
    run: Callable[[Any], list]  # session -> rows
    remark: str = ""  # why its cost grows with N, where that is the query's nature and no index's fault


def cli_limit() -> tuple[int, str]:
    """The default of `birdtrap sightings --limit`, read from the CLI so the bench follows it."""
    try:
        from birdtrap.cli import sightings

        for param in sightings.params:
            if param.name == "limit" and isinstance(param.default, int):
                return param.default, "the CLI default"
    except Exception:  # noqa: BLE001 - the bench must run even if the CLI cannot be imported
        pass
    return DEFAULT_LIMIT, "the CLI has no default; 50 assumed"


def cases(built: Built, limit: int) -> list[Case]:
    """The filter sets timed (mirroring `birdtrap sightings` options), and `birdtrap stats`."""
    from birdtrap import store

    common = built.species[0].genus.lower()
    week, month = built.newest - timedelta(days=7), built.newest - timedelta(days=30)
    camera = CAMERAS[1]

    def sightings(**filters: Any) -> Callable[[Any], list]:
        return lambda session: store.find_sightings(session, **filters)

    return [
        Case("newest", f"newest first, --limit {limit}", sightings(limit=limit)),
        Case("species", f"--species {common} (commonest)", sightings(species=common, limit=limit)),
        Case(
            "species_none",
            f"--species {built.absent} (no match)",
            sightings(species=built.absent, limit=limit),
            "reads every bird photo: the name filtered is the reviewed one (CASE over the newest correction), no index serves it",
        ),
        Case("since_7d", "--since last 7 days", sightings(since=week, limit=limit)),
        Case("camera", f"--camera {camera}", sightings(camera=camera, limit=limit)),
        Case("min_confidence", "--min-confidence 0.8", sightings(min_confidence=0.8, limit=limit)),
        Case("month_export", "--since last 30 days, no limit", sightings(since=month), "grows with the rows returned"),
        Case(
            "stats",
            "stats --by species",
            lambda session: store.stats_rows(session, "species", None, None, None),
            "totals over every bird photo and event",
        ),
    ]


@contextmanager
def captured_statements(engine: Any) -> Iterator[list[tuple[str, Any]]]:
    """Every SQL statement (and its parameters) the engine sends while the block runs."""
    from sqlalchemy import event

    statements: list[tuple[str, Any]] = []

    def hook(_conn: Any, _cursor: Any, statement: str, parameters: Any, _context: Any, _many: bool) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            statements.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", hook)
    try:
        yield statements
    finally:
        event.remove(engine, "before_cursor_execute", hook)


def query_plan(path: Path, statement: str, parameters: Any) -> list[str]:
    """SQLite's EXPLAIN QUERY PLAN of a statement exactly as SQLAlchemy sent it (bound values included)."""
    connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        rows = connection.execute("EXPLAIN QUERY PLAN " + statement, parameters or ()).fetchall()
    finally:
        connection.close()
    return [detail for _id, _parent, _unused, detail in rows]


def plan_summary(plans: list[list[str]]) -> tuple[str, bool]:
    """How `images` and `events` are read in these plans, in a few words, and whether any reads all of `images`."""
    parts, full_scan = [], False
    for plan in plans:
        for detail in plan:
            table = re.match(r"(?:SCAN|SEARCH) (images|events)\b", detail)
            if table:
                whole = re.fullmatch(r"SCAN \w+( AS \w+)?", detail) is not None
                full_scan = full_scan or (whole and table[1] == "images")
                parts.append(f"full SCAN {table[1]}" if whole else detail)
            elif detail.startswith("USE TEMP B-TREE"):
                parts.append(detail.replace("USE TEMP B-TREE FOR", "temp sort for"))
    return "; ".join(dict.fromkeys(parts)), full_scan


@dataclass
class Measured:
    ms: float
    repeats: int
    rows: int
    plans: list[list[str]]


def measure(built: Built, case: Case, repeats: int) -> Measured:
    """Median ms of the case in a fresh session each run, as one CLI call makes, after one warm-up
    run whose statements are kept for their query plans."""
    from bench.measure import time_each
    from birdtrap.store import open_store

    sessions = open_store(built.url, create=False)
    engine = sessions.kw["bind"]
    try:
        with captured_statements(engine) as statements, sessions() as session:
            rows = len(case.run(session))
        plans = [query_plan(built.path, sql, params) for sql, params in statements if "FROM images" in sql or "FROM events" in sql]

        def once(_: object) -> None:
            with sessions() as session:
                case.run(session)

        timing = time_each(once, [None], repeats, warmup=0)
    finally:
        engine.dispose()
    return Measured(timing.ms, timing.samples, rows, plans)


# --- the run ---------------------------------------------------------------------------------


def _n(rows: int) -> str:
    exponent = math.log10(rows)
    return f"10^{exponent:.0f}" if exponent.is_integer() else f"{rows:,}"


def run(args: argparse.Namespace) -> tuple[Any, dict]:
    """Build, time and explain every size; returns the Results and the query plans by key."""
    from bench.report import Results

    results = Results()
    results.settings = run_settings(args)
    limit, limit_source = cli_limit()
    results.settings["limit"] = limit
    results.notes.append(f"--limit {limit} ({limit_source}); times are medians of {args.repeats} runs after a warm-up, page cache warm")
    plans_by_key: dict[str, list[list[str]]] = {}
    species, absent = pick_species(args.labels, SPECIES_COUNT, args.seed)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="birdtrap-dbsize-"))
    workdir.mkdir(parents=True, exist_ok=True)
    smallest = args.rows[0]
    try:
        for n in args.rows:
            say(f"building {n:,} photos in {workdir}")
            built = build(workdir / f"birdtrap-{n}.db", n, species, args.seed, args.predictions)
            built.absent = absent
            counts = built.counts
            say(f"  {built.seconds:.1f} s: " + ", ".join(f"{v:,} {k}" for k, v in counts.items()))
            prefix, base = f"dbsize.{n}", f"dbsize.{smallest}"
            results.add(f"{prefix}.build_s", f"{_n(n)}: build database", built.seconds, "s", f"{base}.build_s",
                        note=f"{n / built.seconds:,.0f} photos/s; {counts['events']:,} events, {counts['corrections']:,} verdicts"
                        + (f", {counts['predictions']:,} predictions" if counts["predictions"] else ""))  # fmt: skip
            size_mb = sum(p.stat().st_size for p in built.path.parent.glob(built.path.name + "*")) / 1e6
            results.add(f"{prefix}.file_mb", f"{_n(n)}: database file", size_mb, "MB", f"{base}.file_mb",
                        note=f"{counts['bird_photos']:,} bird photos ({counts['bird_photos'] / n:.0%})")  # fmt: skip
            for case in cases(built, limit):
                _time_case(results, plans_by_key, built, case, args.repeats, f"{prefix}.{case.key}", "", f"{base}.{case.key}")
            if args.extra_index:
                _with_extra_index(results, plans_by_key, built, args, limit, prefix)
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            say(f"kept the databases in {workdir}")
    results.finish()
    return results, plans_by_key


def _with_extra_index(results: Any, plans_by_key: dict, built: Built, args: argparse.Namespace, limit: int, prefix: str) -> None:
    """Add the --extra-index statements to this bench database and time every case again beside
    its un-indexed figure (ratio < 1: the index helps)."""
    began = time.perf_counter()
    connection = sqlite3.connect(built.path)
    try:
        for sql in args.extra_index:
            connection.execute(sql)
        connection.commit()
    finally:
        connection.close()
    results.add(f"{prefix}.extra_index_build_s", f"{_n(built.photos)}: create --extra-index", time.perf_counter() - began, "s",
                note="; ".join(args.extra_index))  # fmt: skip
    for case in cases(built, limit):
        _time_case(results, plans_by_key, built, case, args.repeats, f"{prefix}.{case.key}.extra_index", ", +index", f"{prefix}.{case.key}")


def _time_case(results: Any, plans_by_key: dict, built: Built, case: Case, repeats: int, key: str, suffix: str, baseline: str) -> None:
    """Measure one case and add its figure, with the rows, the plan and a full scan of `images` in its note."""
    measured = measure(built, case, repeats)
    summary, full_scan = plan_summary(measured.plans)
    plans_by_key[key] = measured.plans
    note = f"{measured.rows:,} rows; plan: {summary}"
    note += "; FULL SCAN of images: an index on the filtered columns would avoid it" if full_scan else ""
    note += f"; {case.remark}" if case.remark else ""
    results.add(key, f"{_n(built.photos)}: {case.label}{suffix}", measured.ms, "ms", baseline, measured.repeats, note=note)
    say(f"  {case.key}{suffix}: {measured.ms:.2f} ms, {note}")


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; returns the exit status."""
    args = parse_args(argv)
    if not args.labels.exists():
        print(f"bench.dbsize: no labels at {args.labels}; pass --labels PATH (one 'Genus species (Common Name)' a line)", file=sys.stderr)
        return 2
    from bench.report import OtherLoad, publish

    other_load = OtherLoad()
    results, plans = run(args)
    other_load.record(results)
    publish(results, args, {"query_plans": plans})  # the JSON carries the full query plans by figure key
    return 0


if __name__ == "__main__":
    sys.exit(main())
