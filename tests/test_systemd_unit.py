"""The systemd unit: what systemd itself says of it."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

UNIT = Path(__file__).resolve().parents[1] / "systemd" / "birdtrap.service"
ANALYZE = shutil.which("systemd-analyze")
needs_systemd = pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze is not installed (apt-get install systemd)")


def directives() -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            found.setdefault(key.strip(), []).append(value.strip())
    return found


def test_the_unit_is_a_hardened_notify_service_with_a_watchdog():
    unit = directives()
    assert unit["Type"] == ["notify"]
    assert unit["Restart"] == ["on-failure"]
    assert unit["User"] == ["birdtrap"]
    assert int(unit["WatchdogSec"][0]) > 0
    for key in ("ProtectSystem", "ReadWritePaths", "NoNewPrivileges", "PrivateTmp", "ProtectHome", "StateDirectory"):
        assert key in unit, key


@needs_systemd
def test_systemd_analyze_verify_accepts_the_unit(tmp_path):
    # verify checks that ExecStart exists: point it at this checkout's birdtrap.
    executable = Path(sys.executable).with_name("birdtrap")
    assert executable.exists()
    unit = tmp_path / "birdtrap.service"
    unit.write_text(UNIT.read_text().replace("/opt/birdtrap/venv/bin/birdtrap", str(executable)))
    result = subprocess.run([ANALYZE, "verify", str(unit)], capture_output=True, text=True)
    problems = [line for line in (result.stdout + result.stderr).splitlines() if "birdtrap.service" in line]
    assert result.returncode == 0 and not problems, result.stdout + result.stderr


@needs_systemd
def test_the_exposure_score_is_two_or_lower():
    result = subprocess.run([ANALYZE, "security", "--offline=yes", str(UNIT)], capture_output=True, text=True)
    match = re.search(r"Overall exposure level for birdtrap.service: (\d+\.\d+)", result.stdout)
    assert match, result.stdout + result.stderr
    assert float(match.group(1)) <= 2.0
