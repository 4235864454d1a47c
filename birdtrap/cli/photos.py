"""`birdtrap classify` and `birdtrap evaluate`: photos in, what the daemon would decide out."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click

from birdtrap.cli.common import config_option, load_config
from birdtrap.cli.output import clip, output_options, print_rows
from birdtrap.errors import BirdtrapError
from birdtrap.identify.answer import ANSWER_FIELDS, answer
from birdtrap.identify.kinds import Kind, Status

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}


@click.command()
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
            if row["kind"] == Kind.FAILED:
                click.echo(f"{name:40} {'failed':8} {'':10} {'':>10}  {row['error']}")
            else:
                # A blank or unsure frame has no label: '-', never the word None (issue 18).
                click.echo(f"{name:40} {row['kind']:8} {row['taxon_rank'] or '-':10} {row['confidence']:10.2f}  {row['label'] or '-'}")
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


@click.command()
@click.argument("labels", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--root",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Folder the paths in LABELS are relative to [default: the parent of each file's folder].",
)
@output_options()
@click.option("-v", "--verbose", is_flag=True, help="Also print one line per photo (json: every photo too).")
@click.option("--no-camera-head", is_flag=True, help="Leave out the head `birdtrap learn` installed for this camera (see its effect).")
@config_option
def evaluate(
    labels: tuple[Path, ...], root: Path | None, fmt: str, verbose: bool, no_camera_head: bool, config_path: Path | None
) -> None:
    """Score the daemon's own pipeline on labelled photos (truth: scientific name or none).

    Counts, per labels file and per source: birds found, named right (species, genus, family,
    order), wrong names, false birds, animals or people called blank, blank frames recognised,
    unsure frames, invokes and time. `--format json` prints the summaries; csv and ndjson print
    one row per photo.

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
    if fmt == "json":
        if verbose:
            payload["photos"] = [o.__dict__ for o in outcomes]
        click.echo(json.dumps(payload, indent=2, default=str))
        return
    if fmt in ("csv", "ndjson"):
        print_rows([dict(o.__dict__) for o in outcomes], fmt)
        return
    if verbose:
        click.echo(f"{'photo':34} {'truth':22} {'decided':8} {'label':40} {'conf':>5} {'inv':>3} {'gate':>4} {'det':>3} {'emb':>3}  source")
        for o in outcomes:
            right = o.species_right or o.genus_right or o.family_right or o.order_right
            mark = "ok" if right or (o.truth is None and not o.false_bird and not o.called_blank) else "XX"
            click.echo(
                f"{clip(Path(o.path).name, 34):34} {clip(o.truth or 'none', 22):22} {o.decided:8} {clip(o.label or '-', 40):40} "
                f"{o.confidence:5.2f} {o.invokes:3d} {o.gate_invokes:4d} {o.detector_invokes:3d} {o.embed_invokes:3d}  {o.source} {mark}"
            )
        click.echo()
    click.echo(_evaluation_table(payload))


def _evaluation_table(payload: dict[str, Any]) -> str:
    """One row per labels file, per source and for all photos: what a user feels, then the cost."""
    header = (
        f"{'':30} {'photos':>6} {'found':>7} {'named':>7} {'sp/ge/fa/or/cl':>14} {'wrong':>5} {'false':>5} "
        f"{'bird>blank':>10} {'animal>blank':>12} {'blank ok':>8} {'unsure':>6} {'invokes s/g/d/e':>20} {'ms':>5}"
    )
    lines = [header, "-" * len(header)]

    def row(name: str, s: dict[str, Any]) -> str:
        birds = s["bird_photos"]
        return (
            f"{clip(name, 30):30} {s['photos']:6d} {s['birds_found']:3d}/{birds:<3d} {s['named_right']:3d}/{birds:<3d} "
            f"{s['species_right']:>2}/{s['genus_right']}/{s['family_right']}/{s['order_right']}/{s['unnamed_birds']:<4} "
            f"{s['wrong_names']:5d} "
            f"{s['false_birds']:5d} {s['birds_called_blank']:10d} {s['animals_people_called_blank']:12d} "
            f"{s['blank_recognised']:4d}/{s['blank_photos']:<3d} "
            f"{s['unsure']:6d} {s['mean_invokes']:4.1f}/{s['mean_gate_invokes']:4.1f}/{s['mean_detector_invokes']:4.1f}"
            f"/{s['mean_embed_invokes']:4.1f} "
            f"{s['mean_seconds'] * 1000:5.0f}"
        )

    for group in ("files", "sources"):
        lines += [row(name, summary) for name, summary in payload[group].items()]
        lines.append("")
    lines.append(row("all photos", payload["summary"]))
    lines.append(
        "found: bird photos given any bird answer; named: species or genus right (sp/ge/fa/or: right at species, genus, "
        "family, order; cl: only \"a bird\", Aves); wrong: a species, genus, "
        "family or order the truth is not in; false: no-bird photos called birds; bird>blank, animal>blank: a bird, or a mammal, "
        "person or vehicle, called blank; blank ok: truly empty frames called blank; invokes s/g/d/e: species model, gate, "
        "detector and the camera head's embedder, mean per photo; ms: mean per photo."
    )
    return "\n".join(lines)
