"""`birdtrap export`: the database for field tools (Camtrap DP) and for retraining (training-set).

Thin like the rest of the CLI: parse, call `birdtrap.export.camtrapdp` or `birdtrap.export.trainingset`, print.
Registered in cli.py with `cli.add_command(export)`.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import click

from birdtrap import store
from birdtrap.cli.common import LazyGroup, config_option, echo_package_summary, load_config, package_options
from birdtrap.export import camtrapdp, trainingset

_OFFSET = re.compile(r"^(?:(?P<utc>Z|UTC)|(?P<sign>[+-])(?P<hours>\d{1,2})(?::?(?P<minutes>\d{2}))?)$", re.IGNORECASE)
_CONTRIBUTOR = re.compile(r"^\s*(?P<name>[^<>]+?)\s*(?:<(?P<email>[^<>\s]+)>)?\s*$")


class UtcOffset(click.ParamType):
    """+02:00, -0530, +2 or Z: the offset of the camera's clock from UTC."""

    name = "offset"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> timedelta:
        if isinstance(value, timedelta):
            return value
        match = _OFFSET.match(str(value).strip())
        if match is None:
            self.fail(f"{value!r} is not a UTC offset; write it as +02:00, -05:30 or Z", param, ctx)
        if match["utc"]:
            return timedelta(0)
        offset = timedelta(hours=int(match["hours"]), minutes=int(match["minutes"] or 0))
        if offset > timedelta(hours=14) or int(match["minutes"] or 0) >= 60:
            self.fail(f"{value!r} is not a UTC offset (they run from -12:00 to +14:00)", param, ctx)
        return -offset if match["sign"] == "-" else offset


def _contributor(text: str, role: str) -> camtrapdp.Contributor:
    match = _CONTRIBUTOR.match(text)
    if match is None:
        raise click.BadParameter(f"{text!r} is not 'Name' or 'Name <email>'", param_hint="--contributor")
    return camtrapdp.Contributor(title=match["name"], email=match["email"], role=role)


def _local_time(value: str | None, flag: str, offset: timedelta) -> datetime | None:
    """An ISO date/time as the camera's local clock (the database's convention)."""
    if value is None:
        return None
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a date; use YYYY-MM-DD or YYYY-MM-DDTHH:MM[:SS]", param_hint=flag) from None
    if when.tzinfo is not None:
        when = when.astimezone(timezone(offset)).replace(tzinfo=None)
    return when


@click.group(cls=LazyGroup, lazy={"network": "birdtrap.cli.scale:export_network"})
def export() -> None:
    """Export the database: a Camtrap DP package for field tools, or a training set.

    \b
        birdtrap export camtrap-dp season-2024/ --latitude 51.0543 --longitude 3.7174 \\
            --utc-offset +02:00 --contributor "Jane Doe <jane@example.org>"
        birdtrap export training-set dataset/ --min-confidence 0.9
    """


@export.command("camtrap-dp")
@click.argument("out_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--deployment-id", help="Deployment id [default: camera.deployment_id in the config, else camera.id].")
@click.option("--latitude", type=click.FloatRange(-90, 90), help="Where the camera stood, decimal degrees (WGS84). Required.")
@click.option("--longitude", type=click.FloatRange(-180, 180), help="Where the camera stood, decimal degrees (WGS84). Required.")
@click.option("--utc-offset", type=UtcOffset(), help="Offset of the camera's clock from UTC, e.g. +02:00. Required.")
@click.option("--contributor", "contributors", multiple=True, help="'Name <email>'; repeat for more. The first is the contact. Required.")
@click.option("--location-name", help="Name of the place, e.g. 'Pond, north bank'.")
@click.option("--location-id", help="Id of the place, shared by deployments at the same spot.")
@click.option("--coordinate-uncertainty", type=click.IntRange(1), help="Uncertainty of the coordinates, in metres.")
@click.option("--start", help="Deployment start, camera time (YYYY-MM-DD[THH:MM]) [default: the first photo]; earlier photos are left out.")
@click.option("--end", help="Deployment end, camera time [default: the last photo]; later photos are left out.")
@click.option("--camera-model", help="Camera make-model [default: from the photos' EXIF].")
@click.option("--camera-height", type=click.FloatRange(0), help="Height of the camera above the ground, in metres.")
@click.option("--setup-by", help="Who set the camera up.")
@click.option("--habitat", help="Short description of the habitat.")
@click.option("--feature-type", type=click.Choice(camtrapdp.FEATURE_TYPES), help="What the camera points at.")
@click.option("--title", help="Package title [default: from the location and deployment].")
@click.option(
    "--sampling-design",
    type=click.Choice(camtrapdp.SAMPLING_DESIGNS),
    default="opportunistic",
    show_default=True,
    help="How the site was chosen.",
)
@package_options
@config_option
def camtrap_dp(
    out_dir: Path,
    deployment_id: str | None,
    latitude: float | None,
    longitude: float | None,
    utc_offset: timedelta | None,
    contributors: tuple[str, ...],
    start: str | None,
    end: str | None,
    title: str | None,
    sampling_design: str,
    data_license: str | None,
    media_license: str | None,
    exclude_people: bool,
    overwrite: bool,
    config_path: Path | None,
    **deployment_fields: Any,
) -> None:
    """Write a Camtrap DP 1.0 data package (for GBIF, Agouti, camtrapdp in R) of one deployment.

    \b
        birdtrap export camtrap-dp season-2024/ --latitude 51.0543 --longitude 3.7174 \\
            --utc-offset +02:00 --contributor "Jane Doe <jane@example.org>" --exclude-people
    """
    config = load_config(config_path)
    camera = config.camera
    # Flags win; the config's camera section supplies what they leave out.
    # camera.id is always set: the --help example works on a config that names no deployment (issue 18).
    deployment_id = deployment_id or camera.deployment_id or camera.id
    latitude = latitude if latitude is not None else camera.latitude
    longitude = longitude if longitude is not None else camera.longitude
    if utc_offset is None and camera.utc_offset is not None:
        utc_offset = UtcOffset().convert(camera.utc_offset, None, None)
    for field in ("location_name", "coordinate_uncertainty"):
        if deployment_fields.get(field) is None:
            deployment_fields[field] = getattr(camera, field)
    required = {
        "--latitude (or camera.latitude)": latitude,
        "--longitude (or camera.longitude)": longitude,
        "--utc-offset (or camera.utc_offset)": utc_offset,
        "--contributor": contributors or None,
    }
    missing = [flag for flag, value in required.items() if value is None]
    if missing:
        raise click.UsageError(
            f"Camtrap DP needs {', '.join(missing)}, e.g. --deployment-id pond-2024 --latitude 51.0543 --longitude 3.7174 "
            "--utc-offset +02:00 --contributor 'Jane Doe <jane@example.org>'."
        )
    deployment = camtrapdp.DeploymentInfo(
        deployment_id=deployment_id,
        camera_id=config.camera.id,
        latitude=latitude,
        longitude=longitude,
        utc_offset=utc_offset,
        start=_local_time(start, "--start", utc_offset),
        end=_local_time(end, "--end", utc_offset),
        **deployment_fields,  # the options named as DeploymentInfo's fields: location_name, camera_model, ...
    )
    package = camtrapdp.PackageInfo(
        contributors=tuple(_contributor(text, "contact" if i == 0 else "contributor") for i, text in enumerate(contributors)),
        title=title,
        sampling_design=sampling_design,
        data_license=data_license,
        media_license=media_license,
    )
    sessions = store.open_store(config.database.url, config.database.busy_timeout_seconds, create=False)
    with sessions() as session:
        summary = camtrapdp.write_package(
            session, out_dir, deployment, package, exclude_people=exclude_people, overwrite=overwrite,
            hide_people=config.privacy.redact_people,
        )
    echo_package_summary(summary)


@export.command("training-set")
@click.argument("out_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--min-confidence", type=click.FloatRange(0, 1), required=True, help="Export species decisions at least this sure.")
@click.option("--copy", is_flag=True, help="Copy the photos instead of linking them.")
@click.option("--review", is_flag=True, help="Write nothing; list the frames below --min-confidence to label by hand, least sure first.")
@click.option("--limit", type=click.IntRange(1), default=50, show_default=True, help="With --review: list at most this many.")
@config_option
def training_set(out_dir: Path, min_confidence: float, copy: bool, review: bool, limit: int, config_path: Path | None) -> None:
    """Write OUT_DIR/<scientific name>/<photo> of confident sightings, the layout training/ reads.

    \b
        birdtrap export training-set dataset/ --min-confidence 0.9
        birdtrap export training-set dataset/ --min-confidence 0.9 --review
    """
    config = load_config(config_path)
    sessions = store.open_store(config.database.url, config.database.busy_timeout_seconds, create=False)
    with sessions() as session:
        if review:
            candidates = trainingset.review_candidates(session, limit, below=min_confidence)
        else:
            summary = trainingset.export_training_set(
                session, out_dir, min_confidence, copy=copy, hide_people=config.privacy.redact_people
            )
    if review:
        if not candidates:
            click.echo(f"no bird or unsure frames below {min_confidence}")
            return
        click.echo(f"{'confidence':>10}  {'kind':7}  {'taxon_rank':10}  {'label':40}  path")
        for c in candidates:
            confidence = f"{c.confidence:10.3f}" if c.confidence is not None else f"{'-':>10}"
            click.echo(f"{confidence}  {c.kind:7}  {c.taxon_rank or '-':10}  {(c.label or '-')[:40]:40}  {c.path}")
        click.echo(f"label these into {out_dir}/<scientific name>/ by hand, the first ones first")
        return
    for label, count in summary.per_label:
        click.echo(f"{count:6d}  {label}")
    action = "copied" if copy else "linked"
    click.echo(f"{action} {summary.written} photos into {summary.out_dir} ({summary.already_there} already there)")
    if summary.redacted:
        click.echo(f"{summary.redacted} of them hold people: copies with the people hidden were written instead (privacy.redact_people)")
    for photo, target in summary.renamed:
        click.echo(f"{target.name}: {photo.name} was taken by another file in {target.parent}")
    if summary.missing:
        click.echo(f"{len(summary.missing)} photos are no longer on disk, e.g. {summary.missing[0]}")


@export.command("ebird")
@click.argument("out_file", metavar="OUT.csv", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--since", help="Only events from this date/time on (YYYY-MM-DD[THH:MM], camera time).")
@click.option("--until", help="Only events before this date/time.")
@click.option("--reviewed-only", is_flag=True, help="Only events a person reviewed (confirmed or corrected).")
@click.option("--min-confidence", type=click.FloatRange(0, 1),
              help="Unreviewed events need at least this confidence [default: decision.threshold].")
@click.option("--per", type=click.Choice(["day", "event"]), default="day", show_default=True,
              help="One checklist a day (a row per species per day) or one per event.")
@click.option("--latitude", type=click.FloatRange(-90, 90), help="Where the camera stood [default: camera.latitude].")
@click.option("--longitude", type=click.FloatRange(-180, 180), help="Where the camera stood [default: camera.longitude].")
@click.option("--location-name", help="eBird location name [default: camera.location_name, else camera.id].")
@click.option("--state", default="", help="State/province code, e.g. NY or ON (eBird's State/Province column).")
@click.option("--country", default="", help="Two-letter country code, e.g. US or BE.")
@click.option("--overwrite", is_flag=True, help="Replace OUT.csv if it exists.")
@config_option
def ebird(
    out_file: Path,
    since: str | None,
    until: str | None,
    reviewed_only: bool,
    min_confidence: float | None,
    per: str,
    latitude: float | None,
    longitude: float | None,
    location_name: str | None,
    state: str,
    country: str,
    overwrite: bool,
    config_path: Path | None,
) -> None:
    """Write verified bird events as an eBird Record Format file (eBird's spreadsheet import).

    Counts are the most birds seen in one frame (MaxN), never a sum of frames; only events a
    person reviewed, or at least --min-confidence sure, go in.

    \b
        birdtrap export ebird season.csv --since 2024-05-01 --reviewed-only --state NY --country US
    """
    from birdtrap.export import ebird as module

    config = load_config(config_path)
    camera = config.camera
    latitude = latitude if latitude is not None else camera.latitude
    longitude = longitude if longitude is not None else camera.longitude
    missing = [flag for flag, value in (("--latitude (or camera.latitude)", latitude), ("--longitude (or camera.longitude)", longitude))
               if value is None]  # fmt: skip
    if missing:
        raise click.UsageError(f"eBird needs {' and '.join(missing)}, e.g. --latitude 51.0543 --longitude 3.7174.")
    site = module.Site(location_name or camera.location_name or camera.id, latitude, longitude, camera.id, state, country)
    offset = timedelta(0)  # eBird takes the camera's local clock, the database's convention: no conversion
    sessions = store.open_store(config.database.url, config.database.busy_timeout_seconds, create=False)
    with sessions() as session:
        rows, summary = module.ebird_rows(
            session,
            site,
            min_confidence=config.decision.threshold if min_confidence is None else min_confidence,
            since=_local_time(since, "--since", offset),
            until=_local_time(until, "--until", offset),
            reviewed_only=reviewed_only,
            per=per,  # type: ignore[arg-type]
        )
    written = module.write_ebird(out_file, rows, overwrite=overwrite)
    click.echo(f"wrote {written}: {summary.rows} rows from {summary.events} events ({', '.join(summary.species) or 'no species'})")
    if summary.unverified_left_out:
        click.echo(f"left out {summary.unverified_left_out} events neither reviewed nor sure enough (--min-confidence, --reviewed-only)")
    if summary.above_genus_left_out:
        click.echo(f"left out {summary.above_genus_left_out} events named only to family or order (review them to name the species)")
