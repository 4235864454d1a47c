"""The export benchmark still trains, exports and times all three formats, and reports every figure.

A tiny MobileNetV3 at 64x64 (the real training and export code, real photos from ../shared) keeps
it near a minute on 2 cores. Only presence, type and the size order are checked: a timing
threshold would fail on a busy machine and pass a broken optimisation (STYLE.md section 8).
"""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest

from conftest import ROOT, SHARED

pytest.importorskip("tensorflow", reason="the export bench trains: pip install -e '.[train]'")
pytest.importorskip("tf_keras", reason="the export bench trains: pip install -e '.[train]'")

pytestmark = pytest.mark.slow

FORMATS = ("float32", "float16", "int8")
EXPECTED = [f"exports.{fmt}.{figure}" for figure in ("size_mb", "invoke_ms", "top1_agreement") for fmt in FORMATS]


def is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def test_export_bench_reports_size_invoke_and_agreement_of_every_format(tmp_path):
    out = tmp_path / "exports.json"
    command = [
        sys.executable, "-m", "bench.exports", "--backbone", "mobilenet_v3_small", "--image-size", "64", "--repeats", "5",
        "--calibration-images", "12", "--shared", str(SHARED), "--workdir", str(tmp_path / "work"), "--out", str(out),
    ]  # fmt: skip
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    figures = json.loads(out.read_text())["figures"]

    assert [key for key in EXPECTED if key not in figures] == []
    assert {key: figures[key]["value"] for key in EXPECTED if not is_number(figures[key]["value"])} == {}
    # Every figure but float32's own is measured against float32 of the same run, and carries the ratio.
    for key in EXPECTED:
        if ".float32." not in key:
            assert figures[key]["baseline"] == key.replace(".float16.", ".float32.").replace(".int8.", ".float32.")
            assert is_number(figures[key]["ratio"]), key
    sizes = {fmt: figures[f"exports.{fmt}.size_mb"]["value"] for fmt in FORMATS}
    assert 0 < sizes["int8"] < sizes["float16"] < sizes["float32"], sizes
    assert all(0.0 <= figures[f"exports.{fmt}.top1_agreement"]["value"] <= 1.0 for fmt in FORMATS)
    assert "seed: int8 3.2x faster than float, 46 -> 12 MB" in figures["exports.int8.invoke_ms"]["note"]
    assert "seed: int8 3.2x faster than float, 46 -> 12 MB" in figures["exports.int8.size_mb"]["note"]
    assert "int8 invoke" in result.stdout
    assert not (tmp_path / "work").exists(), "the run and bundles are deleted without --keep"
