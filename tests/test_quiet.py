"""A command says each thing once (issue 18): one Edge TPU line per process, a quiet install."""

from __future__ import annotations

import os
import subprocess
import sys

from setuptools.config.setupcfg import read_configuration

from conftest import ROOT, photo, write_config


def test_a_command_that_loads_three_models_without_an_edge_tpu_says_so_once(tmp_path):
    config = write_config(tmp_path, model={"delegate": "auto"}, finder={"search": "always"})
    result = subprocess.run(
        [sys.executable, "-m", "birdtrap", "classify", str(photo("bird.bmp")), "-c", str(config)],
        capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("no Edge TPU found") == 1, result.stderr


def test_every_folder_of_package_data_is_a_package_so_setuptools_has_nothing_to_warn_about(monkeypatch):
    """`pip install -e .` printed 133 lines of "Package would be ignored" for birdtrap/data and
    the web's templates and static folders: folders with files but outside `packages`."""
    monkeypatch.chdir(ROOT)
    packages = set(read_configuration(ROOT / "setup.cfg")["options"]["packages"])
    for folder in (ROOT / "birdtrap").rglob("*"):
        if folder.is_dir() and folder.name != "__pycache__" and any(p.is_file() for p in folder.iterdir()):
            name = ".".join(folder.relative_to(ROOT).parts)
            assert name in packages, f"{name} holds files but is not in setup.cfg's packages"
