"""The house's rules (DESIGN.md, "Packages") hold: import-linter checks every contract in setup.cfg."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_import_contracts_hold_identify_is_pure_click_only_in_cli_layers_and_no_training_on_the_edge():
    command = shutil.which("lint-imports", path=str(Path(sys.executable).parent)) or shutil.which("lint-imports")
    assert command, "lint-imports is missing: pip install -e '.[test]'"
    result = subprocess.run([command, "--config", str(ROOT / "setup.cfg"), "--no-cache"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout
    assert "4 kept" in result.stdout


def test_a_broken_rule_is_caught(tmp_path):
    """The check can fail: a config whose only contract forbids identify -> errors reports it broken."""
    config = tmp_path / "setup.cfg"
    config.write_text(
        "[importlinter]\nroot_packages =\n    birdtrap\n\n"
        "[importlinter:contract:x]\nname = identify without errors\ntype = forbidden\n"
        "source_modules =\n    birdtrap.identify\nforbidden_modules =\n    birdtrap.errors\n"
    )
    command = shutil.which("lint-imports", path=str(Path(sys.executable).parent)) or shutil.which("lint-imports")
    result = subprocess.run([command, "--config", str(config), "--no-cache"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode != 0
    assert "BROKEN" in result.stdout
