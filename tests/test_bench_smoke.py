"""The benchmark still runs end to end and reports every figure (STYLE.md section 8).

Only presence and type are checked: a timing threshold here would fail on a slow CI machine and
pass on a broken optimisation, so the numbers themselves are read by people, in bench/README.md.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest

from conftest import ROOT, SHARED, write_config

pytestmark = pytest.mark.slow

SIZES = ("3mp", "12mp", "20mp")
STAGES = (
    "bound",
    "read",
    "sha256",
    "header",
    "decode",
    "exif",
    "crop",
    "resize",
    "color",
    "dtype",
    "denoise",
    "clahe",
    "to_model_input",
    "invoke",
    "rank",
    "decision",
    "identify",
    "move",
)
DECODERS = ("opencv_full", "opencv_reduced", "pillow_full", "pillow_draft")
OTHERS = (
    "bound.decode",
    "bound.invoke",
    "bound.per_photo",
    "bound.cpu_per_photo",
    "db.per_photo_commit",
    "db.batched",
    "db.batched_bytes",
    "models.inat_birds",
    "models.imagenet_mobilenet_v2",
    "models.coco_ssd_mobilenet_v1",
    "install.edge_mb",
    "daemon.import_s",
    "daemon.ready_s",
    "daemon.per_photo",
    "daemon.per_photo_from_start",
    "daemon.steady_per_photo",
    "daemon.rss_ready_mb",
    "daemon.peak_rss_mb",
    "daemon.cpu_per_photo",
    "daemon.drain_cpu_percent",
    "daemon.drain_wakeups_per_s",
    "daemon.stored_bytes_per_photo",
    "daemon.write_bytes_per_photo",
    "daemon.log_bytes_per_photo",
    "daemon.idle_cpu_percent",
    "daemon.idle_wakeups_per_s",
    "daemon.finder_per_photo",
    "daemon.finder_peak_rss_mb",
    "shipped.invokes.species",
    "shipped.invokes.gate",
    "shipped.invokes.detector",
    "shipped.invoke_ms.species",
    "shipped.invoke_ms.gate",
    "shipped.invoke_ms.detector",
    "shipped.decode",
    "shipped.bound.per_photo",
    "shipped.identify_per_photo",
    "shipped.identify_invokes_per_photo",
    "shipped.daemon.per_photo",
    "shipped.daemon.peak_rss_mb",
    "shipped.daemon.species_invokes",
    "pi4.cpu.invokes_per_photo",
    "pi4.coral.invokes_per_photo",
    "naive.per_photo",
    "naive.decode",
    "naive.denoise",
    "naive.commit",
    "naive.top1_agreement",
    "naive.full_decode_top1_agreement",
    "accuracy.reduced.named_right",
    "accuracy.reduced.false_birds",
    "accuracy.full.named_right",
    "accuracy.full.false_birds",
    "accuracy.decision_agreement",
    "accuracy.bird_agreement",
    "accuracy.top1_agreement",
    "accuracy.sure_top1_agreement",
)
EXPECTED = [f"stage.{size}.{stage}" for size in SIZES for stage in STAGES]
EXPECTED += [f"decode.{size}.{decoder}" for size in SIZES for decoder in DECODERS]
EXPECTED += list(OTHERS)


def is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def test_quick_bench_reports_every_figure_as_a_number_with_its_ratio(tmp_path):
    out = tmp_path / "bench.json"
    command = [sys.executable, "-m", "bench", "--quick", "--photos", "8", "--out", str(out), "--shared", str(SHARED)]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(out.read_text())
    figures = report["figures"]

    assert report["machine"]["machine"] and report["machine"]["cpu"]
    assert [key for key in EXPECTED if key not in figures] == []
    assert {key: f["value"] for key, f in figures.items() if f["required"] and not is_number(f["value"])} == {}
    # A figure measured against a baseline carries the ratio; an optional one that could not run says why.
    assert [key for key, f in figures.items() if is_number(f["value"]) and f["baseline_value"] and not is_number(f["ratio"])] == []
    assert [key for key, f in figures.items() if f["value"] is None and not f["note"]] == []
    assert "daemon drain per photo" in result.stdout
    # The shipped drain is measured against decode + the invokes it made, each model's counted and timed alone.
    value = {key: f["value"] for key, f in figures.items()}
    assert value["shipped.invokes.species"] >= 1 and value["shipped.invokes.gate"] >= 1  # every photo: the whole frame, both models
    shares = sum(value[f"shipped.invokes.{m}"] * value[f"shipped.invoke_ms.{m}"] for m in ("species", "gate", "detector"))
    assert math.isclose(value["shipped.bound.per_photo"], value["shipped.decode"] + shares, rel_tol=1e-6)
    assert figures["shipped.daemon.per_photo"]["baseline"] == "shipped.bound.per_photo"


def test_the_ceiling_counts_what_an_oracle_over_regions_could_name(tmp_path):
    labels = tmp_path / "labels.csv"
    labels.write_text("path,truth,kind\nimages/real/bird.bmp,Poecile atricapillus,bird\nimages/real/cat.bmp,none,mammal\n")
    config = write_config(tmp_path)
    run = subprocess.run(
        [sys.executable, "-m", "bench.ceiling", "--labels", str(labels), "--root", str(SHARED), "--config", str(config), "--json"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    result = json.loads(run.stdout)
    assert result["bird_photos"] == 1  # the cat is no bird frame
    [row] = result["photos"]
    assert row["regions"] > 50 and 0 < row["named_right_gate_passed"] <= row["named_right"] <= row["regions"]
    assert result["reachable"] == result["reachable_gate_passed"] == 1


def test_the_bound_weighs_each_source_as_the_backlog_does(tmp_path):
    from bench.photos import BURST, bound_sample

    sources = 6
    backlog = [tmp_path / f"backlog-{index:05d}.jpg" for index in range(1000)]
    sample = bound_sample(backlog, sources, at_least=8)
    # write_backlog gives photo i the source (i // BURST) % sources.
    drawn = [(backlog.index(path) // BURST) % sources for path in sample]
    assert sorted(drawn) == sorted(list(range(sources)) * 2)
    assert bound_sample(backlog[:8], sources, at_least=8) == [backlog[0], backlog[5]]


def test_the_accuracy_bench_scores_both_decodes_on_labelled_photos(tmp_path):
    out = tmp_path / "accuracy.json"
    command = [sys.executable, "-m", "bench.accuracy", "--photos", "4", "--out", str(out), "--shared", str(SHARED), "--json"]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    figures = json.loads(out.read_text())["figures"]
    for key in ("accuracy.reduced.named_right", "accuracy.full.named_right", "accuracy.decision_agreement", "accuracy.top1_agreement"):
        assert is_number(figures[key]["value"]) and 0 <= figures[key]["value"] <= 1, key
    assert figures["accuracy.decision_agreement"]["repeats"] == 4
    assert "accuracy.naive.named_right" not in figures  # only with --naive


def test_the_accuracy_bench_says_what_is_missing(tmp_path):
    command = [sys.executable, "-m", "bench.accuracy", "--shared", str(tmp_path)]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "no labels file" in result.stderr


def test_the_shipped_peak_rss_bench_reports_each_variant_from_real_drains(tmp_path):
    out = tmp_path / "rss.json"
    command = [
        sys.executable, "-m", "bench.shipped_rss", "--photos", "4", "--runs", "1", "--sources", "2",
        "--env", "MALLOC_ARENA_MAX=2", "--shared", str(SHARED), "--json", str(out),
    ]  # fmt: skip
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    figures = json.loads(out.read_text())
    assert [f["env"] for f in figures] == [{}, {"MALLOC_ARENA_MAX": "2"}]
    for figure in figures:
        assert figure["runs"] == 1
        # Real drains: the peak is at least what the daemon held at READY=1, and both are positive.
        assert 0 < figure["rss_ready_mb"] <= figure["peak_rss_mb"]
        assert figure["drain_ms_per_photo"] > 0 and figure["cpu_ms_per_photo"] > 0
