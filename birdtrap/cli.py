"""The `birdtrap` command: parse arguments, call the library, print. No logic of its own."""

from __future__ import annotations

import csv
import functools
import json
import logging
import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import click

from birdtrap import __version__
from birdtrap import config as config_module
from birdtrap.cli_common import config_option, load_config
from birdtrap.cli_export import export
from birdtrap.cli_health import doctor, plot
from birdtrap.cli_learn import learn
from birdtrap.cli_scale import archive, export_network, sync
from birdtrap.cli_web import serve
from birdtrap.errors import BirdtrapError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}


@click.group()
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
    from birdtrap import daemon

    config = load_config(config_path)
    if not with_server:
        daemon.run(config)
        return
    try:
        from birdtrap.web.app import BackgroundServer, create_app
    except ImportError as e:
        raise click.ClickException(f"--serve needs the web extra ({e.name} is missing); run: pip install 'birdtrap[web]'") from e
    # The server loads its own models: TFLite interpreters are not shared between threads.
    server = BackgroundServer(create_app(config, config.serve), config.serve.host, config.serve.port).start()
    click.echo(f"serving on {server.url}/", err=True)
    try:
        daemon.run(config)
    finally:
        server.stop()


@cli.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object a photo.")
@click.option("--model", "model_path", type=click.Path(exists=True, path_type=Path), help="Override model.path.")
@click.option("--record", is_flag=True, help="Also store the results in the database, as the daemon would (each photo once).")
@config_option
def classify(paths: tuple[Path, ...], as_json: bool, model_path: Path | None, record: bool, config_path: Path | None) -> None:
    """Name the birds in photos or folders of photos; stores nothing unless --record.

    \b
        birdtrap classify ../shared/images/real/bird.bmp
        birdtrap classify inbox/ --json
        birdtrap classify sdcard/DCIM --record
    """
    from birdtrap.ingest import classify_files, record_files
    from birdtrap.loading import build_identifier

    config = load_config(config_path)
    if model_path is not None:
        config = config.model_copy(update={"model": config.model.model_copy(update={"path": model_path.resolve()})})
    identifier = build_identifier(config)
    files = list(_expand(paths))
    if record:
        _print_recorded(record_files(config, identifier, files), as_json)
        return
    failures = 0
    if not as_json:
        click.echo(f"{'photo':40} {'decision':8} {'rank':7} {'confidence':>10}  label")
    for path, outcome in classify_files(files, identifier):
        if isinstance(outcome, BirdtrapError):
            failures += 1
            if as_json:
                click.echo(json.dumps({"path": str(path), "error": str(outcome)}))
            else:
                click.echo(f"{_clip(path.name, 40):40} {'failed':8} {'':7} {'':>10}  {outcome}")
            continue
        decision = outcome.decision
        if as_json:
            click.echo(
                json.dumps(
                    {
                        "path": str(path),
                        "kind": decision.kind,
                        "label": decision.label,
                        "scientific_name": decision.scientific_name,
                        "common_name": decision.common_name,
                        "taxon_rank": decision.taxon_rank,
                        "confidence": round(decision.confidence, 4),
                        "box": outcome.box,
                        "invokes": outcome.invokes,
                        "top": [{"label": s.label.text, "probability": round(s.probability, 4)} for s in outcome.prediction.top],
                    }
                )
            )
        else:
            click.echo(
                f"{_clip(path.name, 40):40} {decision.kind:8} {decision.taxon_rank or '-':7} "
                f"{decision.confidence:10.2f}  {decision.label}"
            )
    if failures:
        raise click.ClickException(f"{failures} of {len(files)} photos could not be read (see above).")


def _print_recorded(images: list[Any], as_json: bool) -> None:
    rows = [
        {
            "path": image.path,
            "status": image.status,
            "kind": image.kind,
            "label": image.label,
            "rank": image.taxon_rank,
            "confidence": round(image.confidence, 4) if image.confidence is not None else None,
            "error": image.error,
        }
        for image in images
    ]
    _print_rows(rows, "ndjson" if as_json else "table", empty="nothing was recorded")
    failed = sum(1 for image in images if image.status == "failed")
    if failed:
        raise click.ClickException(f"{failed} of {len(images)} photos could not be read (recorded as failed).")


def _expand(paths: tuple[Path, ...]):
    for path in paths:
        if path.is_dir():
            yield from sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        else:
            yield path


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


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
    @click.option("--format", "fmt", type=click.Choice(["table", "csv", "json", "ndjson"]), default="table", show_default=True)
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
@config_option
def sightings(filters: dict[str, Any], fmt: str, config_path: Path | None) -> None:
    """List bird photos (sightings), newest first.

    \b
        birdtrap sightings --since 2024-05-01 --species ardea --format csv
    """
    from birdtrap import store

    with open_database(config_path)() as session:
        rows = [_sighting_row(image) for image in store.find_sightings(session, **filters)]
    _print_rows(rows, fmt, empty="no sightings match")


def _sighting_row(image: Any) -> dict[str, Any]:
    return {
        "captured_at": image.captured_at.isoformat(sep=" ") if image.captured_at else None,
        "camera": image.camera_id,
        "scientific_name": image.scientific_name,
        "common_name": image.common_name,
        "rank": image.taxon_rank,
        "confidence": round(image.confidence, 4) if image.confidence is not None else None,
        "event": image.event_id,
        "path": image.path,
    }


@cli.command()
@query_options
@click.option("--all", "all_kinds", is_flag=True, help="Also events without a bird (empty, animal, person).")
@config_option
def events(filters: dict[str, Any], fmt: str, all_kinds: bool, config_path: Path | None) -> None:
    """List events (the bursts a trigger fires), newest first, with the species they decide.

    \b
        birdtrap events --species "grey heron" --format json
    """
    from birdtrap import store

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
                "rank": event.taxon_rank,
                "confidence": round(event.confidence, 4) if event.confidence is not None else None,
            }
            for event in store.find_events(session, birds_only=not all_kinds, **filters)
        ]
    _print_rows(rows, fmt, empty="no events match")


@cli.command()
@click.option("--since", help="Only from this date/time on (YYYY-MM-DD[THH:MM]).")
@click.option("--until", help="Only before this date/time.")
@click.option("--camera", help="Only this camera id.")
@click.option("--by", type=click.Choice(["species", "day", "hour"]), default="species", show_default=True,
              help="Per species totals, or photos per species by day or by hour of day.")
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json", "ndjson"]), default="table", show_default=True)
@config_option
def stats(since: str | None, until: str | None, camera: str | None, by: str, fmt: str, config_path: Path | None) -> None:
    """Which species, how often, first and last seen; or activity by day or hour.

    \b
        birdtrap stats
        birdtrap stats --by hour --format csv
    """
    from birdtrap import store

    since_time, until_time = _parse_when(since, "--since"), _parse_when(until, "--until")
    with open_database(config_path)() as session:
        rows = store.stats_rows(session, by, since_time, until_time, camera)
        counts = store.counts_by_status(session)
    _print_rows(rows, fmt, empty="no bird photos yet")
    if fmt == "table":
        click.echo("photos by status: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))


def _print_rows(rows: list[dict[str, Any]], fmt: str, empty: str = "nothing matches") -> None:
    if fmt == "json":
        click.echo(json.dumps(rows, indent=2))
    elif fmt == "ndjson":
        for row in rows:
            click.echo(json.dumps(row))
    elif fmt == "csv":
        if rows:
            writer = csv.DictWriter(sys.stdout, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    else:
        if not rows:
            click.echo(empty)
            return
        columns = list(rows[0])
        widths = {c: max(len(c), *(len(str(r[c] if r[c] is not None else "")) for r in rows)) for c in columns}
        if "path" in widths:
            widths["path"] = min(widths["path"], 60)
        click.echo("  ".join(c.ljust(widths[c]) for c in columns))
        for row in rows:
            click.echo("  ".join(_clip(str(row[c] if row[c] is not None else ""), widths[c]).ljust(widths[c]) for c in columns))


@cli.group()
def model() -> None:
    """Inspect and install models.

    \b
        birdtrap model fetch inat-birds
        birdtrap model info
    """


@model.command("info")
@click.option("--model", "model_path", type=click.Path(exists=True, path_type=Path), help="Override model.path.")
@config_option
def model_info(model_path: Path | None, config_path: Path | None) -> None:
    """Show the runtime, input, labels and checksums of the configured model.

    \b
        birdtrap model info
        birdtrap model info --model ../shared/models/inat_birds
    """
    from birdtrap.classifier import Classifier

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
    """The database's schema: show it, upgrade it.

    \b
        birdtrap db upgrade
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


def _install_folder(name: str, config: config_module.Config) -> Path:
    """Where the configuration looks for catalogue model `name` (its folder)."""
    configured = {"inat-birds": config.model.path, "imagenet-mobilenet-v2": config.gate.path, "coco-ssd-mobilenet-v1": config.detector.path}
    path = configured[name]
    if path is None:
        return config.model.path.parent.parent / name
    return path if path.suffix != ".tflite" else path.parent


@cli.command()
@click.argument("labels", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--root",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Folder the paths in LABELS are relative to [default: the parent of its folder].",
)
@click.option("--json", "as_json", is_flag=True, help="Print the summary (and with --verbose, every photo) as JSON.")
@click.option("-v", "--verbose", is_flag=True, help="Also print one line per photo.")
@click.option("--no-camera-head", is_flag=True, help="Leave out the head `birdtrap learn` installed for this camera (see its effect).")
@config_option
def evaluate(labels: Path, root: Path | None, as_json: bool, verbose: bool, no_camera_head: bool, config_path: Path | None) -> None:
    """Score the daemon's own pipeline on labelled photos (truth: scientific name or none).

    \b
        birdtrap evaluate ../shared/data/labels.csv --verbose
    """
    from tqdm import tqdm

    from birdtrap import evaluate as evaluation
    from birdtrap.loading import build_identifier

    config = load_config(config_path)
    photos = evaluation.read_labels(labels, root)
    identifier = build_identifier(config, camera_head=not no_camera_head)
    with tqdm(total=len(photos), unit="photo", disable=not sys.stderr.isatty(), leave=False) as bar:
        outcomes = evaluation.evaluate(photos, identifier, bar.update)
    summary = evaluation.summarise(outcomes)
    if as_json:
        payload: dict[str, Any] = {"summary": summary.as_dict()}
        if verbose:
            payload["photos"] = [o.__dict__ for o in outcomes]
        click.echo(json.dumps(payload, indent=2, default=str))
        return
    if verbose:
        click.echo(f"{'photo':34} {'truth':22} {'decided':8} {'label':40} {'conf':>5} {'inv':>3} {'gate':>4} {'det':>3}  source")
        for o in outcomes:
            mark = "ok" if (o.species_right or o.genus_right or (o.truth is None and not o.false_bird)) else "XX"
            click.echo(
                f"{_clip(Path(o.path).name, 34):34} {_clip(o.truth or 'none', 22):22} {o.decided:8} {_clip(o.label or '-', 40):40} "
                f"{o.confidence:5.2f} {o.invokes:3d} {o.gate_invokes:4d} {o.detector_invokes:3d}  {o.source} {mark}"
            )
    s = summary
    click.echo(f"bird photos named right:     {s.named_right}/{s.bird_photos} (species {s.species_right}, genus {s.genus_right})")
    click.echo(f"no-bird photos called birds: {s.false_birds}/{s.no_bird_photos}")
    click.echo(f"empty photos recognised:     {s.empty_recognised}/{s.empty_photos}")
    click.echo(f"failed to read:              {s.failed}")
    click.echo(f"time per photo:              mean {s.mean_seconds * 1000:.0f} ms, p95 {s.p95_seconds * 1000:.0f} ms")
    click.echo(
        f"invokes per photo:           species {s.mean_invokes:.2f}, gate {s.mean_gate_invokes:.2f}, detector {s.mean_detector_invokes:.2f}"
    )


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
