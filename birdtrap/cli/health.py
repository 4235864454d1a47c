"""`birdtrap plot` and `birdtrap doctor`: thin commands over `plots` and `doctor`.

Kept apart from cli.py so the optional plotting extra and the checks stay out of the core
command module; cli.py registers them with `cli.add_command`.
"""

from __future__ import annotations

import logging
from pathlib import Path

import click

from birdtrap.cli.common import config_option, load_config

STATUS_COLOURS = {"OK": "green", "WARN": "yellow", "FAIL": "red"}


@click.command()
@click.argument("kind", type=click.Choice(["activity", "species", "confidence"]))
@click.option("-o", "--output", "output", required=True, type=click.Path(dir_okay=False, path_type=Path), help="PNG file to write.")
@click.option("--width", type=click.IntRange(200, 10_000), default=1200, show_default=True, help="Image width in pixels.")
@click.option("--height", type=click.IntRange(200, 10_000), default=700, show_default=True, help="Image height in pixels.")
@click.option("--by", type=click.Choice(["day", "hour"]), default="day", show_default=True,
              help="activity only: photos per day (weeks or months for long spans) or by hour of day.")
@click.option("--camera", help="Only this camera id.")
@config_option
def plot(kind: str, output: Path, width: int, height: int, by: str, camera: str | None, config_path: Path | None) -> None:
    """Plot activity over time, photos and events per species, or decision confidence, as a PNG.

    Needs the plot extra: pip install 'birdtrap[plot]'.

    \b
        birdtrap plot activity --by hour -o activity.png
        birdtrap plot species -o species.png --width 1600 --height 900
    """
    from birdtrap import store
    from birdtrap.export import plots

    if output.suffix.lower() != ".png":
        raise click.BadParameter(f"{output.name!r} does not end in .png; plots are written as PNG.", param_hint="-o/--output")
    config = load_config(config_path)
    sessions = store.open_store(config.database.url, config.database.busy_timeout_seconds, create=False)
    with sessions() as session:
        if kind == "activity":
            written = plots.activity_plot(session, output, by=by, width=width, height=height, camera=camera)
        elif kind == "species":
            written = plots.species_plot(session, output, width=width, height=height, camera=camera)
        else:
            written = plots.confidence_plot(session, output, threshold=config.decision.threshold, width=width, height=height, camera=camera)
    click.echo(f"wrote {written} ({width}x{height} px)")


@click.command()
@config_option
def doctor(config_path: Path | None) -> None:
    """Check that this device can run birdtrap unattended; exit 1 if anything FAILs.

    Config, model bundle and a test invoke, runtime and Edge TPU, database (schema, write, WAL),
    folders and the service user's permissions, free disk, and the systemd unit.

    \b
        birdtrap doctor --config /etc/birdtrap/config.yaml
    """
    from birdtrap import doctor as checks_module

    # The checks report what they find as lines; the library's own log warnings (no Edge TPU,
    # say) would print the same news again, out of order, on stderr.
    logging.getLogger("birdtrap").addHandler(logging.NullHandler())
    checks = checks_module.run_checks(config_path)
    width = max(len(c.name) for c in checks)
    for check in checks:
        status = click.style(f"{check.status:<4}", fg=STATUS_COLOURS[check.status], bold=check.status != "OK")
        line = f"{status} {check.name:<{width}}  {check.detail}"
        if check.fix and check.status != "OK":
            line += f" -> {check.fix}"
        click.echo(line)
    failed = [c.name for c in checks if c.status == "FAIL"]
    warned = [c.name for c in checks if c.status == "WARN"]
    click.echo(f"{len(checks) - len(failed) - len(warned)} OK, {len(warned)} WARN, {len(failed)} FAIL")
    if failed:
        raise click.exceptions.Exit(1)
