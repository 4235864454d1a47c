"""`python -m bench.backlog` still fills, drains and measures every backlog, and deletes its photos.

Only presence and type are checked, never a timing (STYLE.md section 8): a threshold would fail on
a busy CI machine and pass a daemon that slows down with its backlog. Two small backlogs, 4 and 12
photos at 3 MP, keep it to seconds; the 4-photo backlog is one batch, so it has no RSS slope and
must say so instead.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from conftest import ROOT, SHARED

pytestmark = pytest.mark.slow

BACKLOGS = (4, 12)
PER_SIZE = ("per_photo", "ready_s", "cpu_per_photo", "write_bytes_per_photo", "peak_rss_mb", "rss_10_mb", "rss_90_mb")


def is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


@pytest.fixture
def work():
    """A short --workdir: the daemon's notify socket lives below it, and a socket path has at most 107 bytes."""
    folder = Path(tempfile.mkdtemp(prefix="bt-"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def test_small_backlog_bench_reports_every_figure_and_deletes_its_photos(tmp_path, work):
    out = tmp_path / "x.json"
    command = [
        sys.executable, "-m", "bench.backlog", "--backlogs", ",".join(map(str, BACKLOGS)), "--size", "3mp",
        "--shared", str(SHARED), "--workdir", str(work), "--out", str(out),
    ]  # fmt: skip
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(out.read_text())
    figures = report["figures"]

    expected = [f"backlog.{n}.{what}" for n in BACKLOGS for what in PER_SIZE] + ["backlog.12.rss_slope_mb_per_1000"]
    assert [key for key in expected if key not in figures] == []
    assert {key: figures[key]["value"] for key in expected if not is_number(figures[key]["value"])} == {}
    # Each size is measured against the smallest, so the ratio is how the cost per photo grows.
    for n in BACKLOGS:
        for what in ("per_photo", "peak_rss_mb", "cpu_per_photo", "write_bytes_per_photo"):
            assert figures[f"backlog.{n}.{what}"]["baseline"] == f"backlog.4.{what}"
            assert is_number(figures[f"backlog.{n}.{what}"]["ratio"]), (n, what)
    # One batch of four: 10% and 90% committed are the same commit, and the slope says why it is missing.
    slope = figures["backlog.4.rss_slope_mb_per_1000"]
    assert slope["value"] is None and "one batch" in slope["note"]
    samples = report["rss_samples"]
    assert sorted(samples) == ["12.run1", "4.run1"]
    assert all(trace and trace[-1]["committed"] == int(key.split(".")[0]) for key, trace in samples.items())
    assert report["settings"]["disk_mb_max"] > 0
    assert "drain per photo" in result.stdout
    # The generated photos (and the temporary folder holding them) are gone; only --workdir itself is left.
    assert list(work.rglob("*.jpg")) == []
    assert list(work.iterdir()) == []
