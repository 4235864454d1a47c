"""`birdtrap doctor`: is this device ready to run unattended? One verdict per thing that can break.

Each check returns `Check`s (OK, WARN or FAIL, a detail, and the fix for anything not OK). The
checks use the same code the daemon uses (config.load, load_bundle, Classifier, open_store), so
"doctor is happy" means "the daemon will start", not an approximation of it. A check that breaks
in an unexpected way becomes a FAIL line with the exception text: doctor is what a user runs
when something is wrong, so it must not be the next thing that crashes.
"""

from __future__ import annotations

import ctypes
import getpass
import grp
import os
import pwd
import shutil
import stat
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Literal

import numpy as np
from sqlalchemy.exc import OperationalError, SQLAlchemyError
from sqlalchemy.orm import sessionmaker

from birdtrap import config as config_module
from birdtrap.config import Config
from birdtrap.errors import BirdtrapError, DatabaseFileError, StoreError
from birdtrap.store.schema import sqlite_path

OK, WARN, FAIL = "OK", "WARN", "FAIL"
Status = Literal["OK", "WARN", "FAIL"]

UNIT_PATH = Path("/etc/systemd/system/birdtrap.service")
SERVICE_USER = "birdtrap"
FAIL_FREE_BYTES = 100 * 1000**2
WARN_FREE_BYTES = 1000**3
WARN_FREE_FRACTION = 0.05
# The longest the write test waits for the daemon's batch to commit; a batch takes well under this.
WRITE_TEST_TIMEOUT_SECONDS = 5.0

INSTALL_UNIT = (
    "install it: sudo cp systemd/birdtrap.service /etc/systemd/system/ && sudo systemctl daemon-reload "
    "&& sudo systemctl enable --now birdtrap (README: Install on a Raspberry Pi)"
)


@dataclass(frozen=True)
class Check:
    """One verdict: `name` is what was checked, `fix` says what to do when it is not OK."""

    name: str
    status: Status
    detail: str
    fix: str = ""


def one_line(text: str) -> str:
    """Error messages may span lines (a config with three bad keys); a check prints one."""
    return " ".join(part.strip() for part in str(text).splitlines() if part.strip())


def run_checks(
    config_path: Path | None = None, unit_path: Path = UNIT_PATH, service_user: str = SERVICE_USER, root: Path | None = None
) -> list[Check]:
    """Run every check and return them in a fixed order; never raises.

    `config_path` is found as the daemon finds it (--config, $BIRDTRAP_CONFIG, ./config.yaml,
    /etc/birdtrap/config.yaml). A config that does not load is one FAIL; the checks that need
    it are then skipped, the others (runtime, systemd unit) still run. `root` is the folder an
    installation was staged under (`birdtrap install --root`): the unit's sandbox is judged as
    the system will see it once that folder is /.
    """
    checks: list[Check] = []
    config: Config | None = None
    try:
        config = config_module.load(config_path)
    except Exception as e:
        checks += _failed("config", e)
    else:
        checks.append(check_config(config))

    checks += _guarded("runtime", check_runtime)
    if config is not None:
        delegate_check = _guarded("delegate", check_delegate, config)[0]
        checks.append(delegate_check)
        # With the Edge TPU missing, the models are still checked, on the CPU, so one missing
        # USB stick does not hide a broken model behind it.
        delegate = config.model.delegate if delegate_check.status == OK else "cpu"
        checks += _guarded("model", check_species_model, config, delegate)
        checks += _guarded("gate", check_gate, config, delegate)
        checks += _guarded("detector", check_detector, config, delegate)
        checks += _guarded("database", check_database, config)
        checks += _guarded("cameras", check_cameras, config)
        checks += _guarded("folders", check_folders, config)
        checks += _guarded("service user", check_service_user, config, service_user)
        checks += _guarded("disk", check_disk, config)
    checks += _guarded("systemd unit", check_systemd_unit, unit_path, config, root)
    return checks


def _failed(name: str, error: Exception) -> list[Check]:
    if isinstance(error, DatabaseFileError):
        return [Check(name, FAIL, one_line(error.problem), one_line(error.fix))]
    if isinstance(error, BirdtrapError):  # its message already names the thing and the fix
        return [Check(name, FAIL, one_line(str(error)))]
    return [Check(name, FAIL, one_line(f"the check itself failed: {type(error).__name__}: {error}"), "report this as a birdtrap bug")]


def _guarded(name: str, check: Callable[..., Check | list[Check]], *args: object) -> list[Check]:
    """The check's verdicts, or one FAIL: one broken check must not hide the others."""
    try:
        result = check(*args)
    except Exception as e:
        return _failed(name, e)
    return result if isinstance(result, list) else [result]


# --- config, runtime, models ---------------------------------------------------------------


def check_config(config: Config) -> Check:
    if config.source is None:
        return Check(
            "config",
            WARN,
            f"no config file found; using the defaults with paths relative to {Path.cwd()}",
            f"pass --config PATH, set {config_module.ENV_CONFIG}, or create ./config.yaml or /etc/birdtrap/config.yaml",
        )
    return Check("config", OK, f"{config.source} is valid")


_RUNTIME_DISTRIBUTIONS = {"ai_edge_litert": "ai-edge-litert", "tflite_runtime": "tflite-runtime", "tensorflow.lite": "tensorflow"}


def check_runtime() -> Check:
    from birdtrap.identify.tflite import find_runtime

    runtime = find_runtime()
    try:
        version = metadata.version(_RUNTIME_DISTRIBUTIONS.get(runtime.name, runtime.name))
    except metadata.PackageNotFoundError:
        version = "(version unknown)"
    return Check("runtime", OK, f"{runtime.name} {version}")


def edgetpu_problem() -> str | None:
    """Why the Coral Edge TPU delegate cannot be loaded here, or None when it can."""
    from birdtrap.identify.tflite import EDGETPU_LIBRARY, find_runtime

    try:
        # Probe the library first, as tflite.open_interpreter does: a Delegate built without it
        # complains from its destructor.
        ctypes.CDLL(EDGETPU_LIBRARY)
    except OSError:
        return f"{EDGETPU_LIBRARY} is not installed"
    try:
        find_runtime().load_delegate(EDGETPU_LIBRARY)
    except (ValueError, OSError, RuntimeError) as e:
        return f"{EDGETPU_LIBRARY} is installed but no Edge TPU answered ({e}); a running birdtrap holds it"
    return None


def check_delegate(config: Config) -> Check:
    wanted = config.model.delegate
    if wanted == "cpu":
        return Check("delegate", OK, "CPU (model.delegate: cpu)")
    problem = edgetpu_problem()
    if problem is None:
        return Check("delegate", OK, f"Coral Edge TPU found (model.delegate: {wanted})")
    if wanted == "edgetpu":
        return Check(
            "delegate",
            FAIL,
            f"model.delegate is 'edgetpu' but {problem}",
            "install libedgetpu1-std and plug in the Coral (stop birdtrap first if it runs), or set model.delegate to auto or cpu",
        )
    return Check("delegate", OK, f"no Edge TPU ({problem}); model.delegate auto runs on the CPU")


def _blank(model) -> np.ndarray:
    height, width, channels = model.input_shape
    return np.zeros((1, height, width, channels), dtype=model.input_dtype)


def _timed_invoke(model) -> tuple[list[np.ndarray], float]:
    started = time.perf_counter()
    outputs = model.invoke(_blank(model))
    return outputs, (time.perf_counter() - started) * 1000


def _pinned(sha256: str) -> tuple[str, str] | None:
    """(catalogue key, file name) of a model file `birdtrap model fetch` pins with this sha256."""
    from birdtrap.fetch import CATALOG

    for entry in CATALOG.values():
        for remote in entry.files:
            if remote.sha256 == sha256:
                return entry.key, remote.name
    return None


def _provenance(bundle) -> tuple[str, str]:
    """What the sha256s say about where the files came from: (detail, warning or '')."""
    from birdtrap.fetch import CATALOG

    if bundle.card is not None:
        return "sha256s match model.json", ""
    pinned = _pinned(bundle.model_sha256)
    if pinned is None:
        return f"sha256 {bundle.model_sha256[:12]}… (no model card to check it against)", ""
    key = pinned[0]
    labels_pin = next((r.sha256 for r in CATALOG[key].files if r.name == "labels.txt"), None)
    if labels_pin and labels_pin != bundle.labels_sha256:
        return (
            f"sha256 matches the pinned {key} model",
            f"{bundle.labels_path} differs from the labels pinned for {key}; run `birdtrap model fetch {key}` to restore them",
        )
    return f"sha256s match the pinned {key} release", ""


def check_species_model(config: Config, delegate: str) -> Check:
    from birdtrap.identify.bundle import load_bundle
    from birdtrap.identify.classifier import Classifier

    bundle = load_bundle(config.model.path, config.model.labels)
    # A real Classifier: it refuses labels that do not fit the output tensor, as the daemon does.
    classifier = Classifier(
        bundle, threads=config.model.threads, delegate=delegate, top_k=1, mean=config.model.input_mean, std=config.model.input_std
    )
    outputs, milliseconds = _timed_invoke(classifier.model)
    if not np.all(np.isfinite(outputs[0])):
        return Check("model", FAIL, f"{bundle.model_path} gives NaN or infinite scores on a blank input", "fetch or export the model again")
    spec = classifier.spec
    provenance, warning = _provenance(bundle)
    detail = (
        f"{bundle.name}: {len(bundle.labels)} labels fit {len(bundle.labels)} outputs, {spec.height}x{spec.width} {spec.dtype} input, "
        f"test invoke {milliseconds:.0f} ms on {classifier.model.runtime.name}/{classifier.model.delegate}; {provenance}"
    )
    if warning:
        return Check("model", WARN, detail, warning)
    return Check("model", OK, detail)


def _with_delegate(config: Config, delegate: str) -> Config:
    return config.model_copy(update={"model": config.model.model_copy(update={"delegate": delegate})})


def check_gate(config: Config, delegate: str) -> Check:
    from birdtrap.daemon.wiring import load_gate

    if config.gate.path is None:
        return Check("gate", OK, "off (gate.path is null): every region the species model names is trusted")
    gate = load_gate(_with_delegate(config, delegate))
    if gate is None:
        return Check("gate", OK, "off")
    started = time.perf_counter()
    probability = gate.bird_probability(_blank(gate.model.model))
    milliseconds = (time.perf_counter() - started) * 1000
    if not np.all(np.isfinite(probability)):
        return Check("gate", FAIL, f"{config.gate.path} returns NaN on a blank input", "run `birdtrap model fetch imagenet-mobilenet-v2`")
    bundle = gate.model.bundle
    return Check(
        "gate",
        OK,
        f"{bundle.model_path}: {len(bundle.labels)} labels, {len(gate.bird_indices)} bird classes, test invoke {milliseconds:.0f} ms",
    )


def check_detector(config: Config, delegate: str) -> Check:
    from birdtrap.daemon.wiring import load_detector

    if config.detector.path is None:
        return Check("detector", OK, "off (detector.path is null)")
    if "detector" not in config.finder.methods:
        return Check("detector", OK, "not used (finder.methods has no 'detector')")
    detector = load_detector(_with_delegate(config, delegate))
    if detector is None:
        return Check("detector", OK, "off")
    outputs, milliseconds = _timed_invoke(detector.model)
    height, width, _ = detector.model.input_shape
    detail = f"{config.detector.path}: {height}x{width} input, {len(outputs)} outputs, test invoke {milliseconds:.0f} ms"
    return Check("detector", OK, detail)


# --- database ------------------------------------------------------------------------------


def _folder_problem(folder: Path, write: bool) -> str | None:
    """Why this user cannot use `folder` (list it, and create files in it when `write`), or None."""
    if not folder.exists():
        existing = next((p for p in folder.parents if p.exists()), None)
        if existing is not None and not existing.is_dir():
            return f"{existing} is a file, not a folder"
        return f"{folder} does not exist"
    if not folder.is_dir():
        return f"{folder} is a file, not a folder"
    mode = os.R_OK | os.X_OK | (os.W_OK if write else 0)
    if not os.access(folder, mode):
        return f"{folder} is not {'writable' if write else 'readable'} by {_whoami()}"
    return None


def _whoami() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid {os.getuid()}"


def check_cameras(config: Config) -> list[Check]:
    """Each camera's health (issue 19): the problems the daemon found in its photos, and silence
    as of now (the daemon may be the thing that stopped)."""
    from birdtrap import store
    from birdtrap.identify import health
    from birdtrap.store import health as health_store

    if not config.health.enabled:
        return [Check("cameras", OK, "health checks off (health.enabled: false)")]
    path = sqlite_path(config.database.url)
    if path is not None and not path.exists():
        return [Check("cameras", OK, "no photos yet")]
    try:
        sessions = store.open_store(config.database.url, config.database.busy_timeout_seconds, create=False)
    except StoreError:
        return []  # the database check says why
    rules = config.health.settings()
    checks = []
    with sessions() as session:
        problems = {(p.camera_id, p.check): p for p in health_store.open_problems(session)}
        cameras = health_store.cameras(session)
        for camera in cameras:
            verdict = health.silent(health_store.arrivals(session, camera), store.utcnow(), rules)
            if verdict is not None and verdict[0] and (camera, health.SILENCE) not in problems:
                checks.append(Check(f"camera {camera}", WARN, f"{health.WHAT[health.SILENCE]} ({verdict[1].total_seconds() / 3600:.1f} h)",
                                    FIXES[health.SILENCE]))
    for (camera, check), problem in problems.items():
        checks.append(Check(f"camera {camera}", WARN, f"{problem.detail} (since {problem.opened_at:%Y-%m-%d %H:%M} UTC)", FIXES[check]))
    if not checks:
        checks.append(Check("cameras", OK, f"{len(cameras)} camera{'s' if len(cameras) != 1 else ''}, no problem found in the photos"))
    return checks


FIXES = {
    "silence": "check the camera's batteries, card and trigger, and that its photos reach watch.folder",
    "lens_blocked": "clean the lens (spider web, dirt, condensation) or clear what grows in front of it",
    "moved": "re-aim the camera; if it was moved on purpose, this resolves itself as new frames come in",
    "night_black": "check the infrared lamp and its batteries; night photos are coming out black",
    "clock_drift": "set the camera's clock (and camera.utc_offset); capture times are wrong until then",
}


def check_database(config: Config) -> list[Check]:
    from birdtrap import store

    url = config.database.url
    path = sqlite_path(url)
    if path is not None and not path.exists():
        problem = _folder_problem(path.parent, write=True)
        if problem:
            return [
                Check(
                    "database",
                    FAIL,
                    f"cannot create the database {path}: {problem}",
                    "create the folder and make it writable for the user birdtrap runs as, or change database.url",
                )
            ]
        return [Check("database", WARN, f"no database at {path} yet; its folder is writable", "`birdtrap run` creates it on start")]

    timeout = min(config.database.busy_timeout_seconds, WRITE_TEST_TIMEOUT_SECONDS)
    where = path or store.display_url(url)
    refused: StoreError | None = None
    try:
        sessions = store.open_store(url, timeout, create=False)  # as the query commands open it
    except DatabaseFileError as e:
        return [Check("database", FAIL, one_line(e.problem), one_line(e.fix))]
    except StoreError as e:
        # An older schema is refused by queries but upgraded by the daemon on start: still look
        # at it (version, write test) to tell that case from a database that cannot be opened.
        refused = e
        sessions = sessionmaker(store.make_engine(url, timeout))
    checks = []
    with sessions() as session:
        try:
            try:
                revision = store.revision_state(session.connection())
            except SQLAlchemyError:
                if refused is not None:
                    return [Check("database", FAIL, one_line(str(refused)))]
                raise
            if path is not None:
                # The daemon's start-up check, here too: a damaged page deep in the file.
                store.check_integrity(session.connection(), path)
            if refused is None:
                checks.append(Check("database", OK, f"{where}: opens, schema version {int(revision.current or 0)}"))
            elif revision.state == "older" and revision.current is not None:
                checks.append(
                    Check(
                        "database",
                        WARN,
                        f"{where}: schema version {int(revision.current)}, older than this birdtrap's "
                        f"{int(revision.head)}; queries refuse it",
                        "start `birdtrap run` (it backs the file up, then upgrades it) or run `birdtrap db upgrade`",
                    )
                )
            else:
                return [Check("database", FAIL, one_line(str(refused)))]
            checks.append(_write_test(session, where, path))
            if path is not None:
                checks.append(_journal_mode(session, path))
                checks.append(_backups(config, path))
        finally:
            # Doctor may run beside the daemon: leave no pooled connection holding the file.
            session.close()
            session.get_bind().dispose()
    return checks


def _write_test(session, where: object, path: Path | None = None) -> Check:
    """Insert a row and roll it back: proves the file, its folder (WAL files) and locks work."""
    from birdtrap import store

    try:
        session.merge(store.Meta(key="doctor_write_test", value=store.utcnow().isoformat()))
        session.flush()
    except OperationalError as e:
        reason = str(e.orig)
        if "locked" in reason:
            return Check("database write", WARN, f"{where} stayed locked by another writer for {WRITE_TEST_TIMEOUT_SECONDS:g} s ({reason})",
                         "run doctor again; if it persists, look for a stuck process holding the database")
        explained = store.database_file_error(path, reason) if path is not None else None
        if isinstance(explained, DatabaseFileError):
            return Check("database write", FAIL, one_line(explained.problem), one_line(explained.fix))
        return Check(
            "database write",
            FAIL,
            f"{where} is not writable ({reason})",
            "make the database file and its folder writable for the user birdtrap runs as (chown birdtrap: FILE FOLDER)",
        )
    except SQLAlchemyError as e:
        detail = one_line(f"{where}: test write failed ({e})")
        return Check("database write", FAIL, detail, "check database.url and the database server's grants")
    finally:
        session.rollback()
    return Check("database write", OK, "a test write succeeded and was rolled back")


def _backups(config: Config, path: Path) -> Check:
    """Is there a recent backup to restore if the file is damaged (issue 16)?"""
    from birdtrap.store.backup import newest_backup

    every = config.database.backup_every_hours
    newest = newest_backup(path)
    if newest is None:
        if every == 0:
            return Check("database backup", WARN, f"no backup of {path}: database.backup_every_hours is 0",
                         "set database.backup_every_hours (24: daily), or run `birdtrap db backup` from cron")
        return Check("database backup", WARN, f"no backup of {path} yet", "`birdtrap run` makes one at start; or run `birdtrap db backup`")
    age_hours = (time.time() - newest.stat().st_mtime) / 3600
    if every > 0 and age_hours > 2 * every + 1:
        detail = f"the newest backup {newest} is {age_hours:.0f} h old (database.backup_every_hours: {every:g})"
        return Check("database backup", WARN, detail, "look in the daemon's log for 'could not back up', or run `birdtrap db backup`")
    return Check("database backup", OK, f"{newest} ({age_hours:.1f} h old)")


def _journal_mode(session, path: Path) -> Check:
    mode = str(session.connection().exec_driver_sql("PRAGMA journal_mode").scalar()).lower()
    if mode == "wal":
        return Check("database WAL", OK, "journal_mode is wal: queries read while the daemon writes")
    return Check(
        "database WAL",
        WARN,
        f"{path} runs in journal_mode {mode}, not WAL: queries and the daemon block each other",
        "keep the database on a local disk (WAL does not work on network file systems)",
    )


# --- folders and the service user ----------------------------------------------------------


def _folders(config: Config) -> list[tuple[str, Path, bool]]:
    """(key, folder, whether birdtrap writes into it) for every folder the daemon uses."""
    folders = [("watch.folder", config.watch.folder, config.after.action == "move")]
    for key, path in (("after.archive_folder", config.after.archive_folder), ("after.quarantine_folder", config.after.quarantine_folder)):
        if path is not None:
            folders.append((key, path, True))
    return folders


def check_folders(config: Config) -> list[Check]:
    checks = []
    for key, folder, write in _folders(config):
        name = key.split(".")[-1].replace("_", " ")
        name = "watch folder" if key == "watch.folder" else name
        problem = _folder_problem(folder, write)
        if problem is None and not os.access(folder, os.W_OK):
            checks.append(Check(name, OK, f"{folder} is readable (read-only for {_whoami()}: fine, after.action is keep)"))
        elif problem is None:
            checks.append(Check(name, OK, f"{folder} is readable and writable by {_whoami()}"))
        elif not folder.exists():
            checks.append(Check(name, FAIL, f"{key}: {problem}", f"create it (mkdir -p {folder}) or change {key}"))
        else:
            fix = f"chown or chmod {folder} so that {_whoami()} can use it, or change {key}"
            checks.append(Check(name, FAIL, f"{key}: {problem}", fix))
    if all(c.status == OK for c in checks):
        # The rules between folders (archive inside the watch folder, move without an archive).
        try:
            config_module.check_folders(config)
        except BirdtrapError as e:
            checks.append(Check("folders", FAIL, one_line(str(e))))
    return checks


def user_access_problem(path: Path, user: pwd.struct_passwd, groups: set[int], want: str) -> str | None:
    """Why `user` cannot `want` ('r', 'w', 'x' letters) `path`, from mode bits and ownership; None if it can.

    This is os.access for another user: every parent folder must be searchable, then the owner,
    group or other bits (whichever class the user falls in, as the kernel picks) must grant
    `want`. ACLs and read-only mounts are not looked at here.
    """
    if user.pw_uid == 0:
        return None
    path = path.resolve()
    for folder in reversed(path.parents):
        problem = _bits_problem(folder, user, groups, "x")
        if problem:
            return problem
    return _bits_problem(path, user, groups, want)


def _bits_problem(path: Path, user: pwd.struct_passwd, groups: set[int], want: str) -> str | None:
    info = path.stat()
    if info.st_uid == user.pw_uid:
        shift, role = 6, "owner"
    elif info.st_gid in groups:
        shift, role = 3, "group"
    else:
        shift, role = 0, "others"
    bits = (info.st_mode >> shift) & 0o7
    missing = [letter for letter, bit in (("r", 4), ("w", 2), ("x", 1)) if letter in want and not bits & bit]
    if not missing:
        return None
    owner = _name(pwd.getpwuid, info.st_uid, "pw_name")
    group = _name(grp.getgrgid, info.st_gid, "gr_name")
    return f"{path} is {stat.filemode(info.st_mode)} {owner}:{group}, no {''.join(missing)} for {user.pw_name} ({role})"


def _name(lookup: Callable, number: int, attribute: str) -> str:
    try:
        return getattr(lookup(number), attribute)
    except KeyError:
        return str(number)


def _service_paths(config: Config) -> list[tuple[Path, str, str]]:
    """(path, access wanted, key) of what the daemon reads and writes, where it exists."""
    wanted: list[tuple[Path, str, str]] = []
    if config.source is not None:
        wanted.append((Path(config.source), "r", "the config file"))
    for key, folder, write in _folders(config):
        wanted.append((folder, "rwx" if write else "rx", key))
    model = config.model.path
    wanted.append((model / "model.tflite" if model.is_dir() else model, "r", "model.path"))
    labels = config.model.labels or (model if model.is_dir() else model.parent) / "labels.txt"
    wanted.append((labels, "r", "model.labels"))
    for key, path in (("gate.path", config.gate.path), ("detector.path", config.detector.path)):
        if path is not None:
            wanted.append((path, "r", key))
    database = sqlite_path(config.database.url)
    if database is not None:
        # SQLite writes -wal and -shm files beside the database: the folder must be writable too.
        wanted.append((database.parent, "rwx", "database.url's folder"))
        wanted.append((database, "rw", "database.url"))
    return [(path, want, key) for path, want, key in wanted if path.exists()]


def check_service_user(config: Config, name: str = SERVICE_USER) -> Check:
    try:
        user = pwd.getpwnam(name)
    except KeyError:
        return Check("service user", OK, f"no '{name}' user on this machine; the folders were checked for {_whoami()} only")
    groups = {user.pw_gid} | {g.gr_gid for g in grp.getgrall() if name in g.gr_mem}
    problems = []
    for path, want, key in _service_paths(config):
        problem = user_access_problem(path, user, groups, want)
        if problem:
            problems.append(f"{key}: {problem}")
    if problems:
        return Check(
            "service user",
            FAIL,
            "; ".join(problems),
            f"chown {name}: the folders and files named (or chmod them so that {name} can use them)",
        )
    return Check("service user", OK, f"'{name}' can read the config and models and write the database and folders")


# --- disk ----------------------------------------------------------------------------------


def disk_status(free: int, total: int) -> Status:
    """FAIL under 100 MB free; WARN under 1 GB or 5 %; else OK."""
    if free < FAIL_FREE_BYTES:
        return FAIL
    if free < WARN_FREE_BYTES or (total and free / total < WARN_FREE_FRACTION):
        return WARN
    return OK


def _size(count: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if count < 1000 or unit == "TB":
            return f"{count:.0f} {unit}" if unit in ("B", "kB") else f"{count:.1f} {unit}"
        count /= 1000
    return f"{count:.1f} TB"


def _mount_point(path: Path) -> Path:
    path = path.resolve()
    device = path.stat().st_dev
    while path.parent != path and path.parent.stat().st_dev == device:
        path = path.parent
    return path


def check_disk(config: Config) -> list[Check]:
    places: list[tuple[str, Path]] = []
    database = sqlite_path(config.database.url)
    if database is not None:
        places.append(("database", database.parent))
    places.append(("watch folder", config.watch.folder))
    by_device: dict[int, tuple[list[str], Path]] = {}
    for label, path in places:
        existing = next((p for p in (path, *path.parents) if p.exists()), None)
        if existing is None:
            continue
        device = existing.stat().st_dev
        by_device.setdefault(device, ([], existing))[0].append(label)
    checks = []
    for labels, path in by_device.values():
        usage = shutil.disk_usage(path)
        status = disk_status(usage.free, usage.total)
        mount = _mount_point(path)
        detail = f"{_size(usage.free)} free of {_size(usage.total)} ({100 * usage.free / usage.total:.0f}%) on {mount}"
        fix = "" if status == OK else f"free space on {mount}: move old photos off it, or give birdtrap a bigger disk"
        checks.append(Check("disk", status, f"{detail} ({', '.join(labels)})", fix))
    return checks


# --- systemd -------------------------------------------------------------------------------


def _directives(text: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in text.splitlines():
        line = line.strip()
        if "=" in line and not line.startswith(("#", ";", "[")):
            key, value = line.split("=", 1)
            found.setdefault(key.strip(), []).append(value.strip())
    return found


def sandbox_problems(unit_text: str, config: Config, root: Path | None = None) -> list[str]:
    """Paths the daemon must write that the unit's sandboxing hides or makes read-only.

    The unit runs with ProtectSystem=strict (all read-only but ReadWritePaths= and the
    StateDirectory), ProtectHome and PrivateTmp: a folder that works from a shell can still be
    read-only, empty or invisible to the service.
    """
    staged = root.resolve() if root is not None and root.resolve() != Path("/") else None

    def as_installed(path: Path) -> Path:
        path = path.resolve()
        return Path("/") / path.relative_to(staged) if staged is not None and staged in path.parents else path

    unit = _directives(unit_text)
    writable = [as_installed(Path(p.lstrip("-+"))) for value in unit.get("ReadWritePaths", []) for p in value.split()]
    writable += [Path("/var/lib") / p for value in unit.get("StateDirectory", []) for p in value.split()]
    strict = unit.get("ProtectSystem", [""])[-1] == "strict"
    hidden = []
    if unit.get("ProtectHome", ["no"])[-1] in ("yes", "true", "read-only", "tmpfs"):
        hidden += [Path("/home"), Path("/root"), Path("/run/user")]
    if unit.get("PrivateTmp", ["no"])[-1] in ("yes", "true"):
        hidden += [Path("/tmp"), Path("/var/tmp")]
    needs = [(folder, key) for key, folder, write in _folders(config) if write or key == "watch.folder"]
    database = sqlite_path(config.database.url)
    if database is not None:
        needs.append((database.parent, "database.url's folder"))
    problems = []
    for path, key in needs:
        path = as_installed(path)
        cover = next((h for h in hidden if path == h or h in path.parents), None)
        if cover is not None:
            problems.append(f"{key} {path} is under {cover}, which the unit hides from the service")
        elif strict and key != "watch.folder" and not any(path == w or w in path.parents for w in writable):
            problems.append(f"{key} {path} is outside ReadWritePaths= (ProtectSystem=strict makes it read-only)")
    return problems


def check_systemd_unit(unit_path: Path = UNIT_PATH, config: Config | None = None, root: Path | None = None) -> list[Check]:
    if not unit_path.exists():
        return [Check("systemd unit", WARN, f"{unit_path} is not installed: birdtrap runs only while you start it", INSTALL_UNIT)]
    analyze = shutil.which("systemd-analyze")
    checks = []
    if analyze is None:
        checks.append(Check("systemd unit", OK, f"{unit_path} is installed (systemd-analyze not found: not verified)"))
    else:
        result = subprocess.run([analyze, "verify", str(unit_path)], capture_output=True, text=True, timeout=60)
        # verify also reports on other units it loads on the way; only this unit's lines count.
        problems = [line.strip() for line in (result.stdout + result.stderr).splitlines() if unit_path.name in line]
        if result.returncode != 0 or problems:
            detail = "; ".join(problems) or one_line(result.stderr) or f"systemd-analyze verify exited {result.returncode}"
            checks.append(Check("systemd unit", FAIL, f"{unit_path}: {detail}", "fix the unit, then run sudo systemctl daemon-reload"))
        else:
            checks.append(Check("systemd unit", OK, f"{unit_path} passes systemd-analyze verify"))
    if config is not None:
        problems = sandbox_problems(unit_path.read_text(encoding="utf-8", errors="replace"), config, root)
        if problems:
            checks.append(
                Check(
                    "systemd sandbox",
                    WARN,
                    "; ".join(problems),
                    f"keep these folders under /srv/birdtrap or /var/lib/birdtrap, or add them to ReadWritePaths= in {unit_path} "
                    "(folders under /home or /tmp must move)",
                )
            )
    return checks
