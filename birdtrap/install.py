"""Install birdtrap as a system service in one step, and take the service away again.

`birdtrap install --system` (what `sudo ./install.sh` runs once the virtual environment exists)
does what the README's manual recipe did by hand: the service user, its folders, every default
model fetched and verified, a configuration whose paths all point at what was installed, the
database and its first backup, the systemd unit, and finally `doctor`. Each step looks before it
acts, so running it twice changes nothing (issue 18).

Everything is laid out under `root` (``/`` on a real device). Tests and image builders pass a
temporary folder: the files written there refer to each other by their paths under that folder,
so `doctor` can check them in place; the steps that act on the running system (useradd,
chown, systemctl) are skipped for any root but ``/``.
"""

from __future__ import annotations

import logging
import os
import pwd
import shutil
import socket
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from birdtrap import doctor, fetch
from birdtrap.errors import BirdtrapError, ConfigError

log = logging.getLogger(__name__)

SERVICE_USER = "birdtrap"
UNIT_NAME = "birdtrap.service"
# The paths the unit in systemd/ names; the installed unit names the real ones instead.
UNIT_EXECUTABLE = "/opt/birdtrap/venv/bin/birdtrap"
UNIT_CONFIG = "/etc/birdtrap/config.yaml"
UNIT_WATCH_ROOT = "/srv/birdtrap"
UNIT_STATE = "/var/lib/birdtrap"

Runner = Callable[[Sequence[str]], None]


class InstallError(BirdtrapError):
    """A step of `birdtrap install` failed; the message names the step and the fix."""


@dataclass(frozen=True)
class Layout:
    """Where everything goes, under `root` (the same places as the README's manual recipe)."""

    root: Path = Path("/")

    def _under(self, path: str) -> Path:
        return self.root / path.lstrip("/")

    @property
    def config(self) -> Path:
        return self._under(UNIT_CONFIG)

    @property
    def state(self) -> Path:
        return self._under(UNIT_STATE)

    @property
    def models(self) -> Path:
        return self.state / "models"

    @property
    def database(self) -> Path:
        return self.state / "birdtrap.db"

    @property
    def watch_root(self) -> Path:
        return self._under(UNIT_WATCH_ROOT)

    @property
    def inbox(self) -> Path:
        return self.watch_root / "inbox"

    @property
    def unit(self) -> Path:
        return self._under(f"/etc/systemd/system/{UNIT_NAME}")

    @property
    def real_system(self) -> bool:
        """True when installing onto the running system (root is /): only then useradd, chown, systemctl."""
        return self.root.resolve() == Path("/")


@dataclass
class Report:
    """What each step did: `changed` lists what was written, `kept` what was already right."""

    changed: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    checks: list[doctor.Check] = field(default_factory=list)

    @property
    def doctor_ok(self) -> bool:
        return bool(self.checks) and all(check.status == doctor.OK for check in self.checks)


def _run(command: Sequence[str]) -> None:
    try:
        subprocess.run(list(command), check=True, capture_output=True, text=True)
    except FileNotFoundError:
        raise InstallError(f"`{command[0]}` is not on this system; install it or pass the flag that skips this step.") from None
    except subprocess.CalledProcessError as e:
        raise InstallError(f"`{' '.join(command)}` failed ({(e.stderr or e.stdout).strip() or e.returncode}).") from None


def config_text(layout: Layout, camera_id: str) -> str:
    """The configuration the installer writes: every path at what it installed (issue 18: the
    README's recipe pointed gate and detector under /etc/birdtrap/models, where nothing was)."""
    models = layout.models
    data = {
        "watch": {"folder": str(layout.inbox)},
        "model": {"path": str(models / "inat-birds" / "model.tflite")},
        "gate": {"path": str(models / "imagenet-mobilenet-v2" / "model.tflite")},
        "detector": {"path": str(models / "coco-ssd-mobilenet-v1" / "model.tflite")},
        "database": {"url": f"sqlite:///{layout.database}"},
        "camera": {"id": camera_id},
    }
    header = (
        "# Written by `birdtrap install --system`; it is never overwritten by a later install.\n"
        "# Every key, with its default, is documented in config.yaml in the birdtrap repository.\n"
    )
    return header + yaml.safe_dump(data, sort_keys=False)


def unit_text(template: str, layout: Layout, executable: Path) -> str:
    """The unit in systemd/ with its paths replaced by the installed ones."""
    text = template.replace(UNIT_EXECUTABLE, str(executable)).replace(UNIT_CONFIG, str(layout.config))
    if not layout.real_system:
        # StateDirectory= is always /var/lib/birdtrap; a staged root's state folder must be named.
        text = text.replace(f"ReadWritePaths={UNIT_WATCH_ROOT}", f"ReadWritePaths={layout.watch_root} {layout.state}")
        text = text.replace(f"WorkingDirectory={UNIT_STATE}", f"WorkingDirectory={layout.state}")
    return text


def _write_if_different(path: Path, text: str, report: Report, what: str) -> bool:
    if path.exists() and path.read_text(encoding="utf-8") == text:
        report.kept.append(f"{what} {path}")
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(text, encoding="utf-8")
    os.replace(partial, path)
    report.changed.append(f"{what} {path}")
    return True


def _service_user(layout: Layout, create_user: bool, run: Runner, report: Report) -> pwd.struct_passwd | None:
    if not layout.real_system or not create_user:
        report.skipped.append(f"service user '{SERVICE_USER}' " + ("(--root is not /)" if not layout.real_system else "(--no-user)"))
        return None
    try:
        user = pwd.getpwnam(SERVICE_USER)
        report.kept.append(f"service user '{SERVICE_USER}'")
        return user
    except KeyError:
        pass
    run(["useradd", "--system", "--home-dir", UNIT_STATE, "--shell", "/usr/sbin/nologin", SERVICE_USER])
    report.changed.append(f"service user '{SERVICE_USER}'")
    return pwd.getpwnam(SERVICE_USER)


def _chown(paths: Sequence[Path], user: pwd.struct_passwd) -> None:
    """The service user owns its state and inbox, so the hardened unit can write there."""
    for top in paths:
        for path in (top, *top.rglob("*")):
            if path.lstat().st_uid != user.pw_uid or path.lstat().st_gid != user.pw_gid:
                os.lchown(path, user.pw_uid, user.pw_gid)


def install(
    layout: Layout,
    unit_template: Path,
    executable: Path,
    mirror: str | None = None,
    create_user: bool = True,
    use_systemctl: bool = True,
    run: Runner = _run,
) -> Report:
    """Install (or re-check) birdtrap under `layout`; returns what changed and doctor's verdicts.

    Raises InstallError (or the FetchError / StoreError of the failing step) with the fix.
    """
    from birdtrap import config as config_module
    from birdtrap import store
    from birdtrap.store import backup

    report = Report()
    if not unit_template.is_file():
        raise InstallError(
            f"the unit template {unit_template} does not exist; pass --unit PATH (systemd/birdtrap.service in the repository)."
        )
    user = _service_user(layout, create_user, run, report)

    for folder in (layout.config.parent, layout.state, layout.models, layout.inbox):
        if folder.is_dir():
            continue
        folder.mkdir(parents=True)
        report.changed.append(f"folder {folder}")

    for key in fetch.CATALOG:
        installed = fetch.fetch(key, layout.models / key, mirror)
        downloaded = [file.path.name for file in installed if file.downloaded]
        (report.changed if downloaded else report.kept).append(f"model {key} (verified)")

    if layout.config.exists():
        report.kept.append(f"config {layout.config} (yours: never overwritten)")
    else:
        _write_if_different(layout.config, config_text(layout, socket.gethostname() or "camera-1"), report, "config")
    try:
        config = config_module.load(layout.config)
    except ConfigError as e:
        raise InstallError(f"{e}\nFix {layout.config}, or move it aside and run the installer again to write a new one.") from None

    database = store.sqlite_path(config.database.url)
    existed = database is not None and database.exists()
    engine = store.make_engine(config.database.url, config.database.busy_timeout_seconds)
    store.migrate(engine, config.database.url)
    engine.dispose()
    if database is not None and not existed:
        report.changed.append(f"database {database}")
        backup.write_backup(database, config.database.backup_keep, config.database.busy_timeout_seconds)
    elif database is not None:
        report.kept.append(f"database {database}")

    template = unit_template.read_text(encoding="utf-8")
    unit_changed = _write_if_different(layout.unit, unit_text(template, layout, executable), report, "unit")

    if user is not None:
        _chown([layout.state, layout.inbox], user)
    if not layout.real_system or not use_systemctl:
        report.skipped.append("systemctl enable --now birdtrap " + ("(--root is not /)" if not layout.real_system else "(--no-systemctl)"))
    else:
        if unit_changed:
            run(["systemctl", "daemon-reload"])
        run(["systemctl", "enable", "--now", UNIT_NAME])
        if unit_changed:
            run(["systemctl", "restart", UNIT_NAME])

    report.checks = doctor.run_checks(layout.config, unit_path=layout.unit, root=layout.root)
    return report


def uninstall(layout: Layout, use_systemctl: bool = True, run: Runner = _run) -> Report:
    """Stop and remove the service; the config, models, database, photos and user are kept."""
    report = Report()
    if layout.real_system and use_systemctl and layout.unit.exists():
        run(["systemctl", "disable", "--now", UNIT_NAME])
    elif layout.unit.exists():
        report.skipped.append("systemctl disable --now birdtrap " + ("(--root is not /)" if not layout.real_system else "(--no-systemctl)"))
    if layout.unit.exists():
        layout.unit.unlink()
        report.changed.append(f"removed unit {layout.unit}")
        if layout.real_system and use_systemctl:
            run(["systemctl", "daemon-reload"])
    for kept in (layout.config, layout.state, layout.inbox):
        if kept.exists():
            report.kept.append(f"{kept}")
    if shutil.which("userdel") and layout.real_system:
        report.kept.append(f"service user '{SERVICE_USER}' (userdel {SERVICE_USER} removes it)")
    return report
