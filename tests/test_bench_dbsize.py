"""`python -m bench.dbsize` still builds its databases, times every query and explains its plan.

Only presence and type are checked, never a timing (STYLE.md section 8): the numbers are for
people to read, and a threshold would fail on a slow CI machine and pass on a broken index.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest

from conftest import ROOT

pytestmark = pytest.mark.slow

ROWS = (2000, 8000)
CASES = ("newest", "species", "species_none", "since_7d", "camera", "min_confidence", "month_export", "stats")


def is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def test_small_dbsize_bench_reports_every_query_with_its_plan(tmp_path):
    out = tmp_path / "x.json"
    command = [sys.executable, "-m", "bench.dbsize", "--rows", ",".join(map(str, ROWS)), "--repeats", "2", "--out", str(out)]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(out.read_text())
    figures = report["figures"]

    expected = [f"dbsize.{n}.{what}" for n in ROWS for what in ("build_s", "file_mb", *CASES)]
    assert [key for key in expected if key not in figures] == []
    assert {key: figures[key]["value"] for key in expected if not is_number(figures[key]["value"])} == {}
    # Each query is measured against itself at the smallest size, and says how SQLite reads it.
    assert {key: figures[key]["ratio"] for key in expected if not is_number(figures[key]["ratio"])} == {}
    queries = [f"dbsize.{n}.{case}" for n in ROWS for case in CASES]
    assert [key for key in queries if "plan: " not in figures[key]["note"] or "images" not in figures[key]["note"]] == []
    assert [key for key in queries if not report["query_plans"].get(key)] == []
    assert report["machine"]["cpu"]
    assert "newest first, --limit 50" in result.stdout
