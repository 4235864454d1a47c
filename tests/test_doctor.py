"""`birdtrap doctor`: a healthy device passes, and each broken part is named with its fix."""

from __future__ import annotations

import os
import pwd
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from birdtrap import doctor, store
from birdtrap.cli import cli
from birdtrap.store.backup import write_backup

from conftest import INAT, ROOT, write_config

ANALYZE = shutil.which("systemd-analyze")
UNIT = ROOT / "systemd" / "birdtrap.service"


def run_doctor(config: Path):
    result = CliRunner().invoke(cli, ["doctor", "--config", str(config)])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result


def lines(result, status: str) -> dict[str, str]:
    """name -> the whole line, for the lines of one status."""
    found = {}
    for line in result.output.splitlines():
        if line.startswith(status + " "):
            name = line[5:].split("  ")[0].strip()
            found[name] = line
    return found


def healthy(tmp_path: Path, **sections: dict) -> Path:
    config = write_config(tmp_path, **sections)
    store.open_store(f"sqlite:///{tmp_path / 'birdtrap.db'}").kw["bind"].dispose()  # what `birdtrap run` creates,
    write_backup(tmp_path / "birdtrap.db", keep=1)  # with its first backup
    return config


def test_a_healthy_set_up_passes_every_check_and_exits_zero(tmp_path):
    config = healthy(tmp_path, model={"delegate": "auto"})
    result = run_doctor(config)
    assert result.exit_code == 0, result.output
    assert lines(result, "FAIL") == {}
    # Only what this machine lacks may warn: the installed systemd unit.
    assert set(lines(result, "WARN")) <= {"systemd unit"}, result.output
    ok = lines(result, "OK")
    for name in ("config", "runtime", "delegate", "model", "gate", "detector", "database", "database write", "database WAL",
                 "watch folder", "disk"):
        assert name in ok, f"no OK line for {name}:\n{result.output}"
    assert "965 labels fit 965 outputs" in ok["model"] and "test invoke" in ok["model"]
    assert "sha256s match the pinned inat-birds release" in ok["model"]
    assert "ai_edge_litert" in ok["runtime"]
    assert f"schema version {int(store.HEAD_REVISION)}" in ok["database"]
    assert "OK, " in result.output.splitlines()[-1] and "0 FAIL" in result.output.splitlines()[-1]


def test_a_missing_model_file_is_named_with_how_to_fetch_it(tmp_path):
    missing = tmp_path / "models" / "inat-birds" / "model.tflite"
    result = run_doctor(healthy(tmp_path, model={"path": str(missing)}))
    assert result.exit_code == 1
    failed = lines(result, "FAIL")
    assert set(failed) == {"model"}, result.output
    assert f"model file {missing} not found" in failed["model"]
    assert "birdtrap model fetch inat-birds" in failed["model"]
    # The rest is still checked.
    assert "database" in lines(result, "OK") and "gate" in lines(result, "OK")


def test_labels_that_do_not_fit_the_model_are_named_with_both_counts(tmp_path):
    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join((INAT / "labels.txt").read_text().splitlines()[:10]) + "\n")
    result = run_doctor(healthy(tmp_path, model={"labels": str(labels)}))
    assert result.exit_code == 1
    failed = lines(result, "FAIL")
    assert set(failed) == {"model"}, result.output
    assert "has 965 outputs but" in failed["model"] and f"{labels} has 10 labels" in failed["model"]


def test_edited_labels_with_the_right_count_are_caught_by_their_sha256(tmp_path):
    original = (INAT / "labels.txt").read_text().splitlines()
    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join([original[1], original[0], *original[2:]]) + "\n")  # two names swapped
    result = run_doctor(healthy(tmp_path, model={"labels": str(labels)}))
    assert result.exit_code == 0
    warned = lines(result, "WARN")
    assert "model" in warned, result.output
    assert f"{labels} differs from the labels pinned for inat-birds" in warned["model"]


def test_a_database_folder_that_is_a_file_is_named(tmp_path):
    (tmp_path / "data").write_text("not a folder")
    result = run_doctor(write_config(tmp_path, database={"url": "sqlite:///data/birdtrap.db"}))
    assert result.exit_code == 1
    failed = lines(result, "FAIL")
    assert set(failed) == {"database"}, result.output
    assert f"cannot create the database {tmp_path / 'data' / 'birdtrap.db'}" in failed["database"]
    assert f"{tmp_path / 'data'} is a file, not a folder" in failed["database"]
    assert "change database.url" in failed["database"]


def make_read_only(path: Path) -> bool:
    """chmod for a normal user; root ignores mode bits, so also the immutable flag where allowed."""
    path.chmod(0o444)
    if os.access(path, os.W_OK) and shutil.which("chattr"):
        subprocess.run(["chattr", "+i", str(path)], capture_output=True)
    return not os.access(path, os.W_OK)


def test_a_database_file_that_cannot_be_written_fails_the_write_test(tmp_path):
    config = healthy(tmp_path)
    database = tmp_path / "birdtrap.db"
    try:
        if not make_read_only(database):
            pytest.skip("cannot make a file read-only for this user here (root without chattr)")
        result = run_doctor(config)
    finally:
        subprocess.run(["chattr", "-i", str(database)], capture_output=True)
        database.chmod(0o644)
    assert result.exit_code == 1
    failed = lines(result, "FAIL")
    assert set(failed) == {"database write"}, result.output
    assert f"the database {database} is read-only" in failed["database write"] and "readonly" in failed["database write"]
    assert f"chown birdtrap: {database} {tmp_path}" in failed["database write"]


@pytest.mark.skipif(int(store.HEAD_REVISION) < 2, reason="needs a schema revision older than the newest")
def test_a_database_from_an_older_birdtrap_warns_and_says_how_to_upgrade(tmp_path):
    from alembic import command

    config = write_config(tmp_path)
    engine = store.make_engine(f"sqlite:///{tmp_path / 'birdtrap.db'}")
    with engine.begin() as connection:  # the first schema, as the first release wrote it
        command.upgrade(store._alembic(connection), "0001")
    engine.dispose()
    result = run_doctor(config)
    assert result.exit_code == 0, result.output
    warned = lines(result, "WARN")
    assert f"schema version 1, older than this birdtrap's {int(store.HEAD_REVISION)}" in warned["database"]
    assert "birdtrap db upgrade" in warned["database"]
    assert "database write" in lines(result, "OK")


def test_a_missing_watch_folder_and_archive_folder_are_each_named(tmp_path):
    config = healthy(tmp_path, after={"action": "move", "archive_folder": "archive"})
    shutil.rmtree(tmp_path / "inbox")
    result = run_doctor(config)
    assert result.exit_code == 1
    failed = lines(result, "FAIL")
    assert set(failed) == {"watch folder", "archive folder"}, result.output
    assert f"watch.folder: {tmp_path / 'inbox'} does not exist" in failed["watch folder"]
    assert f"mkdir -p {tmp_path / 'archive'}" in failed["archive folder"]


def test_an_archive_inside_the_watch_folder_is_refused(tmp_path):
    (tmp_path / "inbox" / "done").mkdir(parents=True)
    result = run_doctor(healthy(tmp_path, after={"action": "move", "archive_folder": "inbox/done"}))
    assert result.exit_code == 1
    assert "inside watch.folder" in lines(result, "FAIL")["folders"]


def test_an_invalid_config_is_one_fail_line_not_a_traceback(tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text("databse:\n  url: sqlite:///x.db\n")
    result = run_doctor(config)
    assert result.exit_code == 1
    failed = lines(result, "FAIL")
    assert "databse: unknown key; did you mean 'database'?" in failed["config"]
    assert "runtime" in lines(result, "OK")  # checks that need no config still run
    assert "Traceback" not in result.output


def test_a_check_that_breaks_becomes_a_fail_line_and_the_others_still_run(tmp_path):
    # A unit path that is a folder: reading it raises IsADirectoryError inside the check.
    unit = tmp_path / "birdtrap.service"
    unit.mkdir()
    checks = doctor.run_checks(healthy(tmp_path), unit_path=unit)
    by_name = {c.name: c for c in checks}
    assert by_name["systemd unit"].status == doctor.FAIL
    assert "the check itself failed: IsADirectoryError" in by_name["systemd unit"].detail
    assert str(unit) in by_name["systemd unit"].detail
    assert by_name["model"].status == doctor.OK


@pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze is not installed")
def test_an_installed_unit_that_cannot_start_is_named_and_its_sandbox_is_checked(tmp_path):
    unit = tmp_path / "birdtrap.service"
    shutil.copyfile(UNIT, unit)  # ExecStart points at /opt/birdtrap/venv, which is not here
    checks = doctor.run_checks(healthy(tmp_path), unit_path=unit)
    by_name = {c.name: c for c in checks}
    assert by_name["systemd unit"].status == doctor.FAIL
    assert "/opt/birdtrap/venv/bin/birdtrap is not executable" in by_name["systemd unit"].detail
    # The database lives under /tmp here, which PrivateTmp= hides from the service.
    assert by_name["systemd sandbox"].status == doctor.WARN
    assert "database.url's folder" in by_name["systemd sandbox"].detail


@pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze is not installed")
def test_a_unit_that_systemd_accepts_passes(tmp_path):
    unit = tmp_path / "birdtrap.service"
    unit.write_text(UNIT.read_text().replace("/opt/birdtrap/venv/bin/birdtrap", str(Path(sys.executable).with_name("birdtrap"))))
    by_name = {c.name: c for c in doctor.check_systemd_unit(unit)}
    assert by_name["systemd unit"].status == doctor.OK, by_name["systemd unit"]


@pytest.fixture
def shared_folder():
    """A folder other users can reach (pytest's own tmp folder is private to this user)."""
    folder = Path(tempfile.mkdtemp(prefix="birdtrap-doctor-"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder)


def test_a_watch_folder_the_service_user_cannot_read_is_named_with_its_mode(shared_folder):
    nobody = pwd.getpwnam("nobody")
    config = healthy(shared_folder)
    (shared_folder / "inbox").chmod(0o700)
    check = doctor.check_service_user(doctor.config_module.load(config), "nobody")
    assert check.status == doctor.FAIL
    owner = pwd.getpwuid(os.getuid()).pw_name
    assert f"watch.folder: {shared_folder / 'inbox'} is drwx------ {owner}:" in check.detail
    assert f"no rx for {nobody.pw_name} (others)" in check.detail
    assert "chown nobody:" in check.fix


@pytest.mark.skipif(os.geteuid() != 0, reason="giving files to another user needs root")
def test_folders_owned_by_the_service_user_pass(shared_folder):
    nobody = pwd.getpwnam("nobody")
    config = healthy(shared_folder)
    for path in [shared_folder, *shared_folder.rglob("*")]:
        os.chown(path, nobody.pw_uid, nobody.pw_gid)
    (shared_folder / "inbox").chmod(0o700)
    (shared_folder / "birdtrap.db").chmod(0o600)
    check = doctor.check_service_user(doctor.config_module.load(config), "nobody")
    assert check.status == doctor.OK, check.detail


def test_access_for_another_user_follows_owner_then_group_then_other_bits(shared_folder):
    nobody = pwd.getpwnam("nobody")
    target = shared_folder / "file"
    target.write_text("x")
    target.chmod(stat.S_IRUSR | stat.S_IWUSR | stat.S_IROTH)  # rw----r--
    assert doctor.user_access_problem(target, nobody, {nobody.pw_gid}, "r") is None
    assert "no w for nobody (others)" in doctor.user_access_problem(target, nobody, {nobody.pw_gid}, "rw")
    shared_folder.chmod(0o700)
    assert f"{shared_folder} is drwx------" in doctor.user_access_problem(target, nobody, {nobody.pw_gid}, "r")


@pytest.mark.parametrize(
    ("free", "total", "status"),
    [
        (50 * 10**6, 64 * 10**9, doctor.FAIL),  # under 100 MB
        (500 * 10**6, 64 * 10**9, doctor.WARN),  # under 1 GB
        (2 * 10**9, 64 * 10**9, doctor.WARN),  # 3 %, under 5 %
        (2 * 10**9, 16 * 10**9, doctor.OK),
        (80 * 10**9, 250 * 10**9, doctor.OK),
    ],
)
def test_free_disk_thresholds(free, total, status):
    assert doctor.disk_status(free, total) == status


def test_doctor_help_shows_a_real_example():
    result = CliRunner().invoke(cli, ["doctor", "--help"])
    assert result.exit_code == 0
    assert "birdtrap doctor --config /etc/birdtrap/config.yaml" in result.output
