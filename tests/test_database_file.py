"""Issue 16: a damaged or read-only database, the rolling backup, and one daemon per database.

Real SQLite files, the real daemon as a subprocess, the real CLI. The tests run as root, who
ignores file permissions, so "read-only" is made real with `chattr +i` (the immutable flag,
which binds root too) where the file system has it.
"""

from __future__ import annotations

import shutil
import signal
import sqlite3
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from birdtrap import config as config_module
from birdtrap.cli import cli
from birdtrap.errors import ConfigError

from conftest import HERON, birdtrap_command, copy_photo, rows, wait_for, write_config

FAST = {"gate": {"path": None}, "detector": {"path": None}}
DAMAGE = b"this is no longer a SQLite header, a card wrote garbage here" * 2


def birdtrap(config: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """A `birdtrap` command as a real process: its exit status and everything it printed."""
    return subprocess.run(
        [*birdtrap_command(), *args, "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=config.parent,
    )


def output(result: subprocess.CompletedProcess) -> str:
    return result.stdout + result.stderr


def damage(database: Path) -> None:
    with database.open("r+b") as handle:
        handle.write(DAMAGE)


def done_rows(database: Path) -> list[tuple]:
    with sqlite3.connect(f"{database.as_uri()}?mode=ro", uri=True) as connection:
        return list(connection.execute("select path, status, label from images where status = 'done' order by path"))


def immutable(path: Path, on: bool) -> None:
    subprocess.run(["chattr", "+i" if on else "-i", str(path)], check=True, capture_output=True)


@pytest.fixture
def can_freeze(tmp_path):
    """Skip where `chattr +i` does not work (no e2fsprogs, a file system without the flag, no capability)."""
    probe = tmp_path / "probe"
    probe.write_text("x")
    try:
        immutable(probe, True)
    except (OSError, subprocess.CalledProcessError) as e:
        pytest.skip(f"chattr +i is not available here ({e}); a read-only database cannot be made real for root")
    immutable(probe, False)
    frozen: list[Path] = []

    def freeze(path: Path) -> None:
        immutable(path, True)
        frozen.append(path)

    yield freeze
    for path in frozen:
        immutable(path, False)


def test_a_damaged_database_stops_run_and_sightings_naming_the_backup_and_the_command_and_doctor_fails_with_the_fix(tmp_path):
    config = write_config(tmp_path, **FAST)
    database = tmp_path / "birdtrap.db"
    assert birdtrap(config, "db", "upgrade").returncode == 0
    made = birdtrap(config, "db", "backup")
    assert made.returncode == 0, output(made)
    backup = next(tmp_path.glob("birdtrap.db.backup-*"))
    assert f"backed up {database} to {backup}" in made.stdout
    damage(database)

    for command in (["run"], ["sightings"], ["stats"], ["db", "current"]):
        result = birdtrap(config, *command)
        text = output(result)
        assert result.returncode == 1, (command, text)
        assert "Traceback" not in text, text
        assert f"Error: the database {database} is damaged (file is not a database)" in text, (command, text)
        assert f"restore the automatic backup {backup}" in text
        assert f"birdtrap db restore {backup}" in text
        assert "birdtrap db move-aside" in text
    assert database.read_bytes().startswith(DAMAGE)  # left as it was for the user to decide

    report = CliRunner().invoke(cli, ["doctor", "--config", str(config)])
    assert report.exit_code == 1
    failed = [line for line in report.output.splitlines() if line.startswith("FAIL database ")]
    assert len(failed) == 1, report.output
    assert f"the database {database} is damaged (file is not a database) -> " in failed[0]
    assert f"birdtrap db restore {backup}" in failed[0]
    assert "report this as a birdtrap bug" not in report.output


def test_a_damaged_database_without_a_backup_is_moved_aside_kept_and_a_new_one_starts(tmp_path):
    config = write_config(tmp_path, **FAST)
    database = tmp_path / "birdtrap.db"
    assert birdtrap(config, "db", "upgrade").returncode == 0
    damage(database)
    damaged_bytes = database.read_bytes()

    refused = birdtrap(config, "sightings")
    assert refused.returncode == 1
    assert "No backup of it exists" in refused.stderr and "birdtrap db move-aside, then birdtrap run" in refused.stderr

    moved = birdtrap(config, "db", "move-aside")
    assert moved.returncode == 0, output(moved)
    kept = next(tmp_path.glob("birdtrap.db.set-aside-*"))
    assert f"moved {database} aside to {kept}" in moved.stdout
    assert kept.read_bytes() == damaged_bytes and not database.exists()
    assert birdtrap(config, "db", "upgrade").returncode == 0
    fresh = birdtrap(config, "sightings")
    assert fresh.returncode == 0 and "no sightings match" in output(fresh)


def test_a_page_damaged_inside_the_file_is_found_by_the_start_up_check(tmp_path):
    config = write_config(tmp_path, **FAST)
    database = tmp_path / "birdtrap.db"
    assert birdtrap(config, "db", "upgrade").returncode == 0
    with sqlite3.connect(database) as connection:
        connection.execute("PRAGMA journal_mode=DELETE")
        root = connection.execute("select rootpage from sqlite_master where name = 'ix_images_status'").fetchone()[0]
        page_size = connection.execute("PRAGMA page_size").fetchone()[0]
    with database.open("r+b") as handle:  # the header is fine; one index page is garbage
        handle.seek((root - 1) * page_size)
        handle.write(b"\xff" * page_size)

    result = birdtrap(config, "run")
    assert result.returncode == 1
    assert "Traceback" not in output(result)
    assert f"the database {database} is damaged" in result.stderr
    assert "birdtrap db move-aside" in result.stderr


def test_a_read_only_database_file_stops_run_with_the_file_and_the_fix_and_queries_still_read_it(tmp_path, can_freeze):
    config = write_config(tmp_path, **FAST)
    database = tmp_path / "birdtrap.db"
    assert birdtrap(config, "db", "upgrade").returncode == 0
    copy_photo(HERON[0].name, tmp_path / "inbox")
    can_freeze(database)

    result = birdtrap(config, "run")
    text = output(result)
    assert result.returncode == 1, text
    assert "Traceback" not in text
    assert f"Error: the database {database} is read-only (attempt to write a readonly database)" in text
    assert f"chown birdtrap: {database} {tmp_path}" in text and f"lsattr {database}" in text
    assert rows(tmp_path) == []

    reading = birdtrap(config, "sightings")
    assert reading.returncode == 0, output(reading)

    report = CliRunner().invoke(cli, ["doctor", "--config", str(config)])
    failed = [line for line in report.output.splitlines() if line.startswith("FAIL database write")]
    assert failed and f"the database {database} is read-only" in failed[0] and "chown birdtrap:" in failed[0], report.output


def test_a_database_folder_that_cannot_be_written_stops_run_naming_the_folder(tmp_path, can_freeze):
    config = write_config(tmp_path, **FAST)
    assert birdtrap(config, "db", "upgrade").returncode == 0
    can_freeze(tmp_path)

    result = birdtrap(config, "run")
    text = output(result)
    assert result.returncode == 1, text
    assert "Traceback" not in text
    assert f"cannot create the lock file {tmp_path / 'birdtrap.db.lock'}" in text
    assert f"Make the folder {tmp_path} writable" in text and f"lsattr -d {tmp_path}" in text

    # Once a lock file exists, the folder still stops SQLite from making its -wal file.
    immutable(tmp_path, False)
    (tmp_path / "birdtrap.db.lock").touch()
    immutable(tmp_path, True)
    again = output(birdtrap(config, "run"))
    assert f"cannot open the database {tmp_path / 'birdtrap.db'} (unable to open database file)" in again, again
    assert f"The folder {tmp_path} must exist and be writable" in again


def test_the_daemon_keeps_a_verified_backup_with_the_photos_it_recorded_and_restore_brings_them_back(tmp_path, daemon_factory):
    config = write_config(tmp_path, database={"backup_every_hours": 0.0005, "backup_keep": 2}, **FAST)  # every 1.8 s
    database = tmp_path / "birdtrap.db"
    daemon = daemon_factory(config)
    wait_for(lambda: "watching" in daemon.output(), what="the daemon to start")
    for path in HERON[:3]:
        copy_photo(path.name, tmp_path / "inbox")
    recorded = wait_for(lambda: len(done := done_rows(database)) == 3 and done, what="3 photos done")

    def backup_with_the_photos() -> Path | None:
        for backup in sorted(tmp_path.glob("birdtrap.db.backup-*"), reverse=True):
            if done_rows(backup) == recorded:
                return backup
        return None

    backup = wait_for(backup_with_the_photos, what="a backup holding the 3 photos")
    wait_for(lambda: "backed up the database to" in daemon.output(), what="the backup's log line")

    refused = birdtrap(config, "db", "restore", str(backup))
    assert refused.returncode == 1
    assert f"a birdtrap daemon (PID {daemon.process.pid}) is already running on {database}" in refused.stderr
    assert database.stat().st_size > 0 and done_rows(database) == recorded

    assert daemon.stop() == 0
    assert len(list(tmp_path.glob("birdtrap.db.backup-*"))) <= 2  # backup_keep
    assert not list(tmp_path.glob(".birdtrap.db.backup-partial-*"))
    with sqlite3.connect(f"{backup.as_uri()}?mode=ro", uri=True) as connection:
        assert connection.execute("PRAGMA quick_check").fetchone() == ("ok",)
    kept = tmp_path / "keep"
    kept.mkdir()
    backup = Path(shutil.copy2(backup, kept / backup.name))  # the daemon prunes beside the database only
    damage(database)

    restored = birdtrap(config, "db", "restore", str(backup))
    assert restored.returncode == 0, output(restored)
    aside = next(p for p in tmp_path.glob("birdtrap.db.set-aside-*") if not p.name.endswith(("-wal", "-shm")))
    assert aside.read_bytes().startswith(DAMAGE)
    assert f"restored {database} from {backup}" in restored.stdout
    assert done_rows(database) == recorded
    listed = birdtrap(config, "sightings", "--format", "csv")
    assert listed.returncode == 0, output(listed)


def test_a_second_daemon_on_the_same_database_exits_at_once_naming_the_first_and_a_kill_9_leaves_no_stale_lock(tmp_path, daemon_factory):
    config = write_config(tmp_path, **FAST)
    inbox = tmp_path / "inbox"
    first = daemon_factory(config)
    wait_for(lambda: "watching" in first.output(), what="the first daemon to start")
    copy_photo(HERON[0].name, inbox)
    wait_for(lambda: len(done_rows(tmp_path / "birdtrap.db")) == 1, what="the first photo done")

    second = daemon_factory(config)
    second.process.wait(60)
    text = second.output()
    assert second.process.returncode == 1, text
    assert "Traceback" not in text
    assert f"a birdtrap daemon (PID {first.process.pid}) is already running on {tmp_path / 'birdtrap.db'}" in text
    assert f"it holds the lock on {tmp_path / 'birdtrap.db.lock'}" in text
    assert "watching" not in text

    copy_photo(HERON[1].name, inbox)
    wait_for(lambda: len(done_rows(tmp_path / "birdtrap.db")) == 2, what="the first daemon to go on working")
    listed = birdtrap(config, "sightings", "--format", "csv")  # queries still read while it runs
    assert listed.returncode == 0, output(listed)

    first.stop(signal.SIGKILL)
    third = daemon_factory(config)
    wait_for(lambda: "watching" in third.output() or not third.alive(), what="a new daemon after kill -9")
    assert third.alive(), third.output()
    copy_photo(HERON[2].name, inbox)
    wait_for(lambda: len(done_rows(tmp_path / "birdtrap.db")) == 3, what="the new daemon's photo")
    assert sorted(r[0] for r in rows(tmp_path, "select path, count(*) from images group by sha256")) == sorted(
        str(inbox / p.name) for p in HERON[:3]
    )
    assert third.stop() == 0


def test_backup_settings_out_of_range_name_the_key(tmp_path):
    config = write_config(tmp_path, database={"backup_keep": 0})
    with pytest.raises(ConfigError, match="database.backup_keep"):
        config_module.load(config)
    config = write_config(tmp_path, database={"backup_keep": 2, "backup_every_hours": -1})
    with pytest.raises(ConfigError, match="database.backup_every_hours"):
        config_module.load(config)


def test_a_server_database_is_not_backed_up_by_birdtrap(tmp_path):
    config = write_config(tmp_path, database={"url": "postgresql+psycopg://birdtrap@localhost/birdtrap"})
    result = CliRunner().invoke(cli, ["db", "backup", "--config", str(config)])
    assert result.exit_code == 1
    assert "database.url is a server database: use its own tools (pg_dump, pg_restore)" in result.output



def test_a_database_folder_that_does_not_exist_stops_run_with_the_mkdir(tmp_path):
    config = write_config(tmp_path, database={"url": "sqlite:///data/birdtrap.db"}, **FAST)
    result = birdtrap(config, "run")
    text = output(result)
    assert result.returncode == 1 and "Traceback" not in text, text
    assert f"Error: the database's folder {tmp_path / 'data'} does not exist. Create it (mkdir -p {tmp_path / 'data'})" in text
