"""`birdtrap install --system` and `birdtrap uninstall --system`: thin commands over birdtrap.install.

`sudo ./install.sh` makes the virtual environment and then runs `birdtrap install --system`;
the steps live in Python so that they are tested (against a temporary --root) and so that a
Pi that already has birdtrap in a venv needs no script at all.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
from pathlib import Path

import click

from birdtrap import config as config_module
from birdtrap.cli.health import STATUS_COLOURS

# The unit shipped in the repository, beside the package (an editable install or the clone
# install.sh runs from); a wheel install passes --unit.
REPO_UNIT = Path(__file__).resolve().parents[2] / "systemd" / "birdtrap.service"
SKIP_ENV = "BIRDTRAP_INSTALL_SKIP"  # "user,systemctl": the steps a container or CI cannot run


def _skips(no_user: bool, no_systemctl: bool) -> tuple[bool, bool]:
    skipped = {part.strip() for part in os.environ.get(SKIP_ENV, "").split(",") if part.strip()}
    unknown = skipped - {"user", "systemctl"}
    if unknown:
        raise click.UsageError(f"{SKIP_ENV} names unknown steps {', '.join(sorted(unknown))}; use user and/or systemctl.")
    return not (no_user or "user" in skipped), not (no_systemctl or "systemctl" in skipped)


def _need_system(system: bool, verb: str) -> None:
    if not system:
        raise click.UsageError(f"`birdtrap {verb}` changes the system (user, /etc, /var/lib, systemd); say so with --system.")


def _print_report(report, show_checks: bool) -> None:
    for line in report.changed:
        click.echo(f"changed  {line}")
    for line in report.kept:
        click.echo(f"kept     {line}")
    for line in report.skipped:
        click.echo(f"skipped  {line}")
    if not show_checks:
        return
    click.echo("birdtrap doctor:")
    for check in report.checks:
        status = click.style(f"{check.status:<4}", fg=STATUS_COLOURS[check.status], bold=check.status != "OK")
        click.echo(f"  {status} {check.name}: {check.detail}" + (f" -> {check.fix}" if check.fix and check.status != "OK" else ""))


@click.command()
@click.option("--system", is_flag=True, help="Install as a system service (required: this writes to /etc, /var/lib, /srv).")
@click.option("--root", type=click.Path(file_okay=False, path_type=Path), default=Path("/"), show_default=True,
              help="Lay everything out under this folder instead of / (image builds, tests); skips useradd and systemctl.")
@click.option("--mirror", help="Folder or URL holding the models [default: $BIRDTRAP_MODEL_MIRROR, else the public sources].")
@click.option("--unit", "unit_template", type=click.Path(dir_okay=False, path_type=Path), default=REPO_UNIT,
              show_default="systemd/birdtrap.service of the repository", help="The unit file to install.")
@click.option("--no-user", is_flag=True, help=f"Do not create the service user (also: {SKIP_ENV}=user).")
@click.option("--no-systemctl", is_flag=True, help=f"Do not run systemctl (also: {SKIP_ENV}=systemctl).")
def install(system: bool, root: Path, mirror: str | None, unit_template: Path, no_user: bool, no_systemctl: bool) -> None:
    """Install birdtrap as a service: user, folders, all default models, config, database, unit, then doctor.

    Running it again changes nothing; the config file, once written, is yours and is kept.
    Exit status 1 if doctor finds anything not OK.

    \b
        sudo ./install.sh                                   # makes the venv, then runs:
        sudo /opt/birdtrap/venv/bin/birdtrap install --system
        birdtrap install --system --root /tmp/staged --mirror ../shared/models
    """
    from birdtrap import install as installer

    _need_system(system, "install")
    # doctor's lines below say it (no Edge TPU, say); the library's log would say it again.
    logging.getLogger("birdtrap").addHandler(logging.NullHandler())
    create_user, use_systemctl = _skips(no_user, no_systemctl)
    # The unit starts the birdtrap of this environment (install.sh's venv), else the one on PATH.
    executable = Path(sys.prefix) / "bin" / "birdtrap"
    if not executable.exists() and shutil.which("birdtrap"):
        executable = Path(shutil.which("birdtrap") or executable)
    layout = installer.Layout(root.resolve())
    report = installer.install(
        layout, unit_template, executable, mirror or config_module.model_mirror(), create_user=create_user, use_systemctl=use_systemctl
    )
    _print_report(report, show_checks=True)
    if not report.doctor_ok:
        raise click.ClickException(
            f"installed, but doctor is not all OK (above); fix that, then run `birdtrap doctor --config {layout.config}`."
        )
    click.echo(f"birdtrap is installed: photos in {layout.inbox}, config {layout.config}, data in {layout.state}")


@click.command()
@click.option("--system", is_flag=True, help="Remove the system service (required).")
@click.option("--root", type=click.Path(file_okay=False, path_type=Path), default=Path("/"), show_default=True,
              help="The folder birdtrap was installed under.")
@click.option("--no-systemctl", is_flag=True, help=f"Do not run systemctl (also: {SKIP_ENV}=systemctl).")
def uninstall(system: bool, root: Path, no_systemctl: bool) -> None:
    """Stop and remove the birdtrap service; keeps the config, models, database, photos and user.

    \b
        sudo /opt/birdtrap/venv/bin/birdtrap uninstall --system
    """
    from birdtrap import install as installer

    _need_system(system, "uninstall")
    _, use_systemctl = _skips(False, no_systemctl)
    _print_report(installer.uninstall(installer.Layout(root.resolve()), use_systemctl=use_systemctl), show_checks=False)
