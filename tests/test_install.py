"""`sudo ./install.sh` / `birdtrap install --system` against a temporary root (issue 18).

The real script and the real command, with the real models from ../shared/models as the mirror;
only useradd and systemctl are left out (a fake root skips them: they would act on this
machine). The install must end with doctor all OK on what it wrote, change nothing when run
again, and an uninstall must keep the data.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
from pathlib import Path

import yaml
from click.testing import CliRunner

from birdtrap import install as installer
from birdtrap.cli import cli
from birdtrap.fetch import CATALOG

from conftest import MODELS, ROOT


def _install_sh(root: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "BIRDTRAP_SKIP_PIP": "1", "BIRDTRAP_VENV": sys.prefix, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [str(ROOT / "install.sh"), "--root", str(root), "--mirror", str(MODELS)], capture_output=True, text=True, env=env, timeout=300
    )


def _snapshot(root: Path) -> dict[str, str]:
    """Every file under root and its sha256; SQLite's -wal/-shm come and go with doctor's write test."""
    return {
        str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file() and not path.name.endswith(("-wal", "-shm"))
    }


def test_install_sh_lays_out_a_working_service_doctor_all_ok_and_a_second_run_changes_nothing(tmp_path):
    root = tmp_path / "root"
    first = _install_sh(root)
    assert first.returncode == 0, first.stdout + first.stderr
    doctor_lines = [line.strip() for line in first.stdout.splitlines() if re.match(r"\s+(OK|WARN|FAIL)\s", line)]
    assert len(doctor_lines) >= 12 and all(line.startswith("OK") for line in doctor_lines), first.stdout
    assert "no Edge TPU found" not in first.stderr

    config = yaml.safe_load((root / "etc/birdtrap/config.yaml").read_text())
    models = root / "var/lib/birdtrap/models"
    assert config["model"]["path"] == str(models / "inat-birds" / "model.tflite")
    assert config["gate"]["path"] == str(models / "imagenet-mobilenet-v2" / "model.tflite")
    assert config["detector"]["path"] == str(models / "coco-ssd-mobilenet-v1" / "model.tflite")
    for key in CATALOG:
        assert (models / key / "model.tflite").stat().st_size > 0
        assert (models / key / "labels.txt").stat().st_size > 0
    assert (root / "srv/birdtrap/inbox").is_dir()
    unit = (root / "etc/systemd/system/birdtrap.service").read_text()
    assert f"ExecStart={sys.prefix}/bin/birdtrap run --config {root}/etc/birdtrap/config.yaml" in unit
    assert "skipped  service user" in first.stdout and "skipped  systemctl" in first.stdout

    before = _snapshot(root)
    second = _install_sh(root)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "changed " not in second.stdout
    assert _snapshot(root) == before

    removed = CliRunner().invoke(cli, ["uninstall", "--system", "--root", str(root)])
    assert removed.exit_code == 0, removed.output
    assert not (root / "etc/systemd/system/birdtrap.service").exists()
    after = _snapshot(root)
    assert {name: digest for name, digest in before.items() if "systemd" not in name} == after


def test_install_without_system_says_what_it_would_change_and_does_nothing(tmp_path):
    result = CliRunner().invoke(cli, ["install", "--root", str(tmp_path / "root")])
    assert result.exit_code == 2
    assert "--system" in result.output
    assert not (tmp_path / "root").exists()


def test_a_config_the_user_broke_stops_the_install_naming_the_file_and_the_fix(tmp_path):
    root = tmp_path / "root"
    layout = installer.Layout(root)
    layout.config.parent.mkdir(parents=True)
    layout.config.write_text("modle:\n  path: x\n")
    result = CliRunner().invoke(cli, ["install", "--system", "--root", str(root), "--mirror", str(MODELS)])
    assert result.exit_code == 1
    assert str(layout.config) in result.output and "did you mean 'model'" in result.output
    assert "move it aside" in result.output


def test_the_readme_recipe_fetches_every_default_model_and_points_the_config_at_them():
    """The manual recipe in the README left gate and detector unfetched and under /etc (issue 18)."""
    readme = (ROOT / "README.md").read_text()
    recipe = readme.split("## Install on a Raspberry Pi", 1)[1].split("\n## ", 1)[0]
    fetch_step = recipe.split("# 4.", 1)[1].split("# 5.", 1)[0]
    assert "model fetch" in fetch_step
    for key in CATALOG:
        assert key in fetch_step, key
    keys = dict(re.findall(r"#\s+(\w+\.\w+): (\S+)", recipe))
    written = yaml.safe_load(installer.config_text(installer.Layout(Path("/")), "trap"))
    for section, values in written.items():
        for key, value in values.items():
            if f"{section}.{key}" != "camera.id":
                assert keys.get(f"{section}.{key}") == str(value), f"{section}.{key}"


def test_on_the_real_system_the_unit_is_enabled_once_and_reloaded_only_when_it_changed(tmp_path, monkeypatch):
    """The systemctl steps, recorded instead of run (a test must not touch this machine's systemd)."""
    monkeypatch.setattr(installer.Layout, "real_system", property(lambda self: True))
    layout = installer.Layout(tmp_path / "root")
    commands: list[list[str]] = []
    unit = ROOT / "systemd" / "birdtrap.service"

    def install() -> None:
        installer.install(layout, unit, Path(sys.prefix) / "bin" / "birdtrap", str(MODELS), create_user=False, run=commands.append)

    install()
    assert commands == [["systemctl", "daemon-reload"], ["systemctl", "enable", "--now", "birdtrap.service"],
                        ["systemctl", "restart", "birdtrap.service"]]  # fmt: skip
    commands.clear()
    install()
    assert commands == [["systemctl", "enable", "--now", "birdtrap.service"]]
    commands.clear()
    installer.uninstall(layout, run=commands.append)
    assert commands == [["systemctl", "disable", "--now", "birdtrap.service"], ["systemctl", "daemon-reload"]]
    assert layout.config.exists() and layout.database.exists() and (layout.models / "inat-birds" / "model.tflite").exists()
