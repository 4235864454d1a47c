"""The `birdtrap` command: parse arguments, call the library, print. No logic of its own."""

from __future__ import annotations

import functools
import json
import logging
import sys
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import click

from birdtrap import __version__
from birdtrap import config as config_module
from birdtrap.cli.common import BirdtrapGroup, config_option, load_config
from birdtrap.cli.export import export
from birdtrap.cli.health import doctor, plot
from birdtrap.cli.learn import learn
from birdtrap.cli.output import clip, output_options, print_rows
from birdtrap.cli.scale import archive, export_network, sync
from birdtrap.cli.web import serve
from birdtrap.errors import BirdtrapError
from birdtrap.identify.answer import ANSWER_FIELDS, answer
from birdtrap.identify.kinds import Status

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}


@click.group(cls=BirdtrapGroup)
@click.version_option(__version__, prog_name="birdtrap")
def cli() -> None:
    """birdtrap: find and name the birds in camera-trap photos.

    \b
        birdtrap model fetch inat-birds     # install the default model
        birdtrap run                        # watch the folder in config.yaml
        birdtrap sightings --since 2024-05-01
    """


@cli.command()
@click.option("--serve", "with_server", is_flag=True, help="Also serve the web pages and API (serve: section) from this process.")
@config_option
def run(with_server: bool, config_path: Path | None) -> None:
    """Watch the folder and record every photo's sightings (what systemd starts).

    Runs in the foreground until SIGTERM or Ctrl-C; the batch in flight is finished first.

    \b
        birdtrap run --config /etc/birdtrap/config.yaml
        birdtrap run --serve
    """
    from birdtrap.daemon import loop

    config = load_config(config_path)
    if not with_server:
        loop.run(config)
        return
    from birdtrap.web.app import BackgroundServer, create_app
    # The server loads its own models: TFLite interpreters are not shared between threads.
    server = BackgroundServer(create_app(config, config.serve), config.serve.host, config.serve.port).start()
    click.echo(f"serving on {server.url}/", err=True)
    try:
        loop.run(config)
    finally:
        server.stop()


@cli.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@output_options(json_alias="ndjson")
@click.option("--model", "model_path", type=click.Path(exists=True, path_type=Path), help="Override model.path.")
@click.option("--record", is_flag=True, help="Also store the results in the database, as the daemon would (each photo once).")
@config_option
def classify(paths: tuple[Path, ...], fmt: str, model_path: Path | None, record: bool, config_path: Path | None) -> None:
    """Name the birds in photos or folders of photos; stores nothing unless --record.

    A photo that cannot be read is listed as failed with the reason, and the others go on; the
    exit status is 1 when any failed.

    \b
        birdtrap classify ../shared/images/real/bird.bmp
        birdtrap classify inbox/ --json
        birdtrap classify sdcard/DCIM --record

    Every photo gets its line; one that cannot be read or identified is reported as failed with
    the reason, and the exit status is then 1 (0 when every photo was classified).
    """
    from birdtrap.daemon.ingest import record_files
    from birdtrap.daemon.wiring import build_identifier
    from birdtrap.identify.photos import classify_files
    from birdtrap.store import path_as_text

    config = load_config(config_path)
    if model_path is not None:
        config = config.model_copy(update={"model": config.model.model_copy(update={"path": model_path.resolve()})})
    identifier = build_identifier(config)
    files = list(_expand(paths))
    if record:
        _print_recorded(record_files(config, identifier, files), fmt)
        return
    failures = 0

    def rows() -> Iterator[dict[str, Any]]:
        nonlocal failures
        for path, outcome in classify_files(files, identifier):
            if isinstance(outcome, BirdtrapError):
                failures += 1
                failed = dict.fromkeys(ANSWER_FIELDS, None) | {"kind": "failed"}
                yield {"path": path_as_text(str(path)), **failed, "error": path_as_text(str(outcome))}
            else:
                yield {"path": path_as_text(str(path)), **answer(outcome, identifier.species.labels), "error": None}

    if fmt == "table":  # streamed, a line a photo as it is named
        click.echo(f"{'photo':40} {'kind':8} {'taxon_rank':10} {'confidence':>10}  label")
        for row in rows():
            name = clip(Path(row["path"]).name, 40)
            if row["kind"] == "failed":
                click.echo(f"{name:40} {'failed':8} {'':10} {'':>10}  {row['error']}")
            else:
                click.echo(f"{name:40} {row['kind']:8} {row['taxon_rank'] or '-':10} {row['confidence']:10.2f}  {row['label']}")
    else:
        print_rows(rows(), fmt, empty="no photos")
    if failures:
        raise click.ClickException(f"{failures} of {len(files)} photos could not be read (see above).")


def _print_recorded(images: list[Any], fmt: str) -> None:
    rows = [
        {
            "path": image.path,
            "status": image.status,
            "kind": image.kind,
            "label": image.label,
            "taxon_rank": image.taxon_rank,
            "confidence": round(image.confidence, 4) if image.confidence is not None else None,
            "error": image.error,
        }
        for image in images
    ]
    print_rows(rows, fmt, empty="nothing was recorded")
    failed = sum(1 for image in images if image.status == Status.FAILED)
    if failed:
        raise click.ClickException(f"{failed} of {len(images)} photos could not be read (recorded as failed).")


def _expand(paths: tuple[Path, ...]):
    for path in paths:
        if path.is_dir():
            # A symlink named like a photo is listed even when it leads nowhere: it is reported failed.
            yield from sorted(p for p in path.rglob("*") if (p.is_file() or p.is_symlink()) and p.suffix.lower() in IMAGE_SUFFIXES)
        else:
            yield path


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
    @click.option("--limit", type=click.IntRange(1), default=50, show_default=True, help="At most this many rows.")
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


@cli.command()
@query_options
@output_options()
@config_option
def sightings(filters: dict[str, Any], fmt: str, config_path: Path | None) -> None:
    """List bird photos (sightings), newest first.

    \b
        birdtrap sightings --since 2024-05-01 --species ardea --format csv
    """
    from birdtrap import store

    with open_database(config_path)() as session:
        rows = [_sighting_row(image) for image in store.find_sightings(session, **filters)]
    print_rows(rows, fmt, empty="no sightings match")


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


@cli.command()
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
    from birdtrap.identify.kinds import Kind

    try:
        kind = Kind.parse(kind_name) if kind_name is not None else None
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--kind") from None

    with open_database(config_path)() as session:
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
            }
            for event in store.find_events(session, birds_only=not all_kinds, kind=kind, **filters)
        ]
    print_rows(rows, fmt, empty="no events match")


@cli.command()
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


@cli.group()
def model() -> None:
    """Inspect and install models.

    \b
        birdtrap model fetch inat-birds
        birdtrap model info
    """


@model.command("info")
@click.option("--model", "model_path", type=click.Path(exists=True, path_type=Path), help="Override model.path.")
@output_options()
@config_option
def model_info(model_path: Path | None, fmt: str, config_path: Path | None) -> None:
    """Show the runtime, input, labels and checksums of the configured model.

    \b
        birdtrap model info
        birdtrap model info --model ../shared/models/inat_birds
    """
    from birdtrap.identify.classifier import Classifier

    config = load_config(config_path)
    classifier = Classifier.from_path(
        model_path or config.model.path,
        None if model_path else config.model.labels,
        threads=config.model.threads,
        delegate=config.model.delegate,
    )
    bundle, spec = classifier.bundle, classifier.spec
    lines = {
        "model": str(bundle.model_path),
        "name": bundle.name,
        "version": bundle.version or "-",
        "runtime": classifier.model.runtime.name,
        "delegate": classifier.model.delegate,
        "input": f"{spec.height}x{spec.width}x3 {spec.channels} {spec.dtype}",
        "input quantization": f"scale {spec.scale:g}, zero point {spec.zero_point}" if spec.scale else "none (float)",
        "input scaling": f"(pixel - {spec.mean:g}) / {spec.std:g}",
        "labels": f"{len(bundle.labels)} ({bundle.labels_path})",
        "model card": "yes" if bundle.card else "no (third-party model, config settings apply)",
        "sha256": bundle.model_sha256,
        "labels sha256": bundle.labels_sha256,
    }
    if fmt != "table":
        print_rows([{key.replace(" ", "_"): value for key, value in lines.items()}], fmt)
        return
    for key, value in lines.items():
        click.echo(f"{key + ':':20} {value}")


@model.command("fetch")
@click.argument("name", type=click.Choice(["inat-birds", "imagenet-mobilenet-v2", "coco-ssd-mobilenet-v1"]))
@click.option("--mirror", help="Folder or URL laid out as <mirror>/<model folder>/<file> [default: $BIRDTRAP_MODEL_MIRROR].")
@click.option("--dest", type=click.Path(file_okay=False, path_type=Path), help="Install folder [default: where the config looks].")
@config_option
def model_fetch(name: str, mirror: str | None, dest: Path | None, config_path: Path | None) -> None:
    """Download a public model, verify its pinned sha256s and install it.

    \b
        birdtrap model fetch inat-birds
        birdtrap model fetch inat-birds --mirror /media/usb/models
    """
    from birdtrap import fetch

    config = load_config(config_path)
    if dest is None:
        dest = _install_folder(name, config)
    files = fetch.fetch(name, dest, mirror or config_module.model_mirror(), progress=sys.stderr.isatty())
    for path in files:
        click.echo(f"installed {path}")


@cli.group()
def db() -> None:
    """The database: its schema, its backups, a damaged file.

    \b
        birdtrap db upgrade
        birdtrap db backup
        birdtrap db restore /var/lib/birdtrap/birdtrap.db.backup-20240501T030000Z
    """


@db.command("upgrade")
@config_option
def db_upgrade(config_path: Path | None) -> None:
    """Upgrade the database to this birdtrap's schema (a SQLite file is backed up first).

    The daemon does this by itself at start; run it by hand for a central PostgreSQL or before
    pointing queries at an old database.

    \b
        birdtrap db upgrade --config /etc/birdtrap/config.yaml
    """
    from birdtrap import store

    config = load_config(config_path)
    engine = store.make_engine(config.database.url, config.database.busy_timeout_seconds)
    backup = store.migrate(engine, config.database.url)
    if backup is not None:
        click.echo(f"backed up the old database to {backup}")
    click.echo(f"schema revision {store.head_revision()} (current)")


@db.command("current")
@config_option
def db_current(config_path: Path | None) -> None:
    """Show the database's schema revision and this birdtrap's.

    \b
        birdtrap db current
    """
    from birdtrap import store

    config = load_config(config_path)
    engine = store.make_engine(config.database.url, config.database.busy_timeout_seconds)
    with engine.connect() as connection:
        current = store.current_revision(connection)
    head = store.head_revision()
    state = "current" if current == head else "run `birdtrap db upgrade`" if (current or "0") < head else "newer than this birdtrap"
    click.echo(f"database {current or 'none'}, birdtrap {head}: {state}")


@db.command("backup")
@config_option
def db_backup(config_path: Path | None) -> None:
    """Back up the SQLite database now, beside it (the daemon also does, every database.backup_every_hours).

    Safe while the daemon runs. The copy is checked before it replaces the oldest of the
    database.backup_keep backups kept.

    \b
        birdtrap db backup
    """
    from birdtrap.store import backup

    config = load_config(config_path)
    database = _sqlite_database(config, "back up")
    written = backup.write_backup(database, config.database.backup_keep, config.database.busy_timeout_seconds)
    click.echo(f"backed up {database} to {written}")


@db.command("restore")
@click.argument("backup_file", metavar="BACKUP", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@config_option
def db_restore(backup_file: Path, config_path: Path | None) -> None:
    """Put a backup in place of the SQLite database; the old file is set aside, never deleted.

    Refused while a daemon runs on the database: stop it first.

    \b
        systemctl stop birdtrap
        birdtrap db restore /var/lib/birdtrap/birdtrap.db.backup-20240501T030000Z
        systemctl start birdtrap
    """
    from birdtrap.store import backup
    from birdtrap.store.lock import DaemonLock

    config = load_config(config_path)
    database = _sqlite_database(config, "restore")
    lock = DaemonLock.acquire(database, doing=f"restore {backup_file}")
    try:
        set_aside = backup.restore(backup_file, database)
    finally:
        lock.release()
    if set_aside is not None:
        click.echo(f"set the old database aside as {set_aside}")
    click.echo(f"restored {database} from {backup_file}")


@db.command("move-aside")
@config_option
def db_move_aside(config_path: Path | None) -> None:
    """Rename a damaged SQLite database (and its -wal, -shm) so `birdtrap run` starts a new one.

    Nothing is deleted. Refused while a daemon runs on the database: stop it first.

    \b
        systemctl stop birdtrap
        birdtrap db move-aside
        systemctl start birdtrap
    """
    from birdtrap.store import backup
    from birdtrap.store.lock import DaemonLock

    config = load_config(config_path)
    database = _sqlite_database(config, "move aside")
    if not database.exists():
        raise click.ClickException(f"no database at {database}; nothing to move aside (database.url).")
    lock = DaemonLock.acquire(database, doing=f"move {database} aside")
    try:
        set_aside = backup.move_aside(database)
    finally:
        lock.release()
    click.echo(f"moved {database} aside to {set_aside}; `birdtrap run` starts a new, empty database")


def _sqlite_database(config: config_module.Config, doing: str) -> Path:
    from birdtrap import store

    database = store.sqlite_path(config.database.url)
    if database is None:
        raise click.ClickException(
            f"birdtrap can only {doing} a SQLite database; database.url is a server database: use its own tools (pg_dump, pg_restore)."
        )
    return database


def _install_folder(name: str, config: config_module.Config) -> Path:
    """Where the configuration looks for catalogue model `name` (its folder)."""
    configured = {"inat-birds": config.model.path, "imagenet-mobilenet-v2": config.gate.path, "coco-ssd-mobilenet-v1": config.detector.path}
    path = configured[name]
    if path is None:
        return config.model.path.parent.parent / name
    return path if path.suffix != ".tflite" else path.parent


@cli.command()
@click.argument("labels", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--root",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Folder the paths in LABELS are relative to [default: the parent of each file's folder].",
)
@click.option("--json", "as_json", is_flag=True, help="Print the summaries (all, per file, per source; --verbose: every photo) as JSON.")
@click.option("-v", "--verbose", is_flag=True, help="Also print one line per photo.")
@click.option("--no-camera-head", is_flag=True, help="Leave out the head `birdtrap learn` installed for this camera (see its effect).")
@config_option
def evaluate(
    labels: tuple[Path, ...], root: Path | None, as_json: bool, verbose: bool, no_camera_head: bool, config_path: Path | None
) -> None:
    """Score the daemon's own pipeline on labelled photos (truth: scientific name or none).

    Counts, per labels file and per source: birds found, named right (species, genus, family,
    order), wrong names, false birds, animals or people called blank, blank frames recognised,
    unsure frames, invokes and time.

    \b
        birdtrap evaluate ../shared/data/labels.csv ../shared/data/labels-more.csv --verbose
    """
    from tqdm import tqdm

    from birdtrap import evaluate as evaluation
    from birdtrap.daemon.wiring import build_identifier

    config = load_config(config_path)
    photos = [photo for file in labels for photo in evaluation.read_labels(file, root)]
    identifier = build_identifier(config, camera_head=not no_camera_head)
    with tqdm(total=len(photos), unit="photo", disable=not sys.stderr.isatty(), leave=False) as bar:
        outcomes = evaluation.evaluate(photos, identifier, bar.update)
    payload: dict[str, Any] = evaluation.report(outcomes)
    if as_json:
        if verbose:
            payload["photos"] = [o.__dict__ for o in outcomes]
        click.echo(json.dumps(payload, indent=2, default=str))
        return
    if verbose:
        click.echo(f"{'photo':34} {'truth':22} {'decided':8} {'label':40} {'conf':>5} {'inv':>3} {'gate':>4} {'det':>3}  source")
        for o in outcomes:
            right = o.species_right or o.genus_right or o.family_right or o.order_right
            mark = "ok" if right or (o.truth is None and not o.false_bird and not o.called_blank) else "XX"
            click.echo(
                f"{clip(Path(o.path).name, 34):34} {clip(o.truth or 'none', 22):22} {o.decided:8} {clip(o.label or '-', 40):40} "
                f"{o.confidence:5.2f} {o.invokes:3d} {o.gate_invokes:4d} {o.detector_invokes:3d}  {o.source} {mark}"
            )
        click.echo()
    click.echo(_evaluation_table(payload))


def _evaluation_table(payload: dict[str, Any]) -> str:
    """One row per labels file, per source and for all photos: what a user feels, then the cost."""
    header = (
        f"{'':30} {'photos':>6} {'found':>7} {'named':>7} {'sp/ge/fa/or':>11} {'wrong':>5} {'false':>5} "
        f"{'bird>blank':>10} {'animal>blank':>12} {'blank ok':>8} {'unsure':>6} {'invokes s/g/d':>15} {'ms':>5}"
    )
    lines = [header, "-" * len(header)]

    def row(name: str, s: dict[str, Any]) -> str:
        birds = s["bird_photos"]
        return (
            f"{clip(name, 30):30} {s['photos']:6d} {s['birds_found']:3d}/{birds:<3d} {s['named_right']:3d}/{birds:<3d} "
            f"{s['species_right']:>2}/{s['genus_right']}/{s['family_right']}/{s['order_right']:<4} {s['wrong_names']:5d} "
            f"{s['false_birds']:5d} {s['birds_called_blank']:10d} {s['animals_people_called_blank']:12d} "
            f"{s['blank_recognised']:4d}/{s['blank_photos']:<3d} "
            f"{s['unsure']:6d} {s['mean_invokes']:4.1f}/{s['mean_gate_invokes']:4.1f}/{s['mean_detector_invokes']:4.1f} "
            f"{s['mean_seconds'] * 1000:5.0f}"
        )

    for group in ("files", "sources"):
        lines += [row(name, summary) for name, summary in payload[group].items()]
        lines.append("")
    lines.append(row("all photos", payload["summary"]))
    lines.append(
        "found: bird photos given any bird answer; named: species or genus right; wrong: a species or genus "
        "that is not the truth; false: no-bird photos called birds; bird>blank, animal>blank: a bird, or a mammal, "
        "person or vehicle, called blank; blank ok: truly empty frames called blank; ms: mean per photo."
    )
    return "\n".join(lines)


cli.add_command(export)
cli.add_command(plot)
cli.add_command(doctor)
cli.add_command(serve)
cli.add_command(learn)
cli.add_command(archive)
cli.add_command(sync)
export.add_command(export_network, "network")


def main() -> None:
    cli(prog_name="birdtrap")


if __name__ == "__main__":
    main()
