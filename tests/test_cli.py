"""The command line as a user types it: classify, sightings, model info, --help."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from birdtrap.cli import cli

from conftest import INAT, MODELS, photo, write_config


def invoke(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_classify_names_the_chickadee_close_up_first(tmp_path):
    config = write_config(tmp_path)
    result = invoke("classify", str(photo("bird.bmp")), "--config", str(config), "--json")
    assert result.exit_code == 0, result.output
    answer = json.loads(result.output.strip().splitlines()[-1])
    assert answer["top"][0]["label"].startswith("Poecile atricapillus")
    assert answer["scientific_name"].split()[0] == "Poecile"
    assert answer["kind"] == "bird"
    probabilities = [entry["probability"] for entry in answer["top"]]
    assert probabilities == sorted(probabilities, reverse=True) and 0 < probabilities[0] <= 1


def test_classify_prints_a_table_for_a_folder_and_stores_nothing(tmp_path):
    config = write_config(tmp_path)
    result = invoke("classify", str(photo("bird.bmp").parent), "--config", str(config))
    assert result.exit_code == 0, result.output
    assert "bird.bmp" in result.output and "Poecile atricapillus" in result.output
    assert "cat.bmp" in result.output
    assert not (tmp_path / "birdtrap.db").exists()


def test_classify_reports_an_unreadable_file_by_path_and_exits_non_zero(tmp_path):
    config = write_config(tmp_path)
    broken = tmp_path / "broken.jpg"
    broken.write_text("not a photo")
    result = CliRunner().invoke(cli, ["classify", str(broken), str(photo("bird.bmp")), "--config", str(config)])
    assert result.exit_code == 1
    assert f"{broken} is not a readable image" in result.output
    assert "Poecile atricapillus" in result.output
    assert "1 of 2 photos could not be read" in result.output


def test_model_info_names_the_runtime_input_and_labels(tmp_path):
    config = write_config(tmp_path)
    result = invoke("model", "info", "--config", str(config))
    assert result.exit_code == 0, result.output
    assert "ai_edge_litert" in result.output
    assert "224x224x3 RGB uint8" in result.output
    assert "965" in result.output
    assert "350fcd8cf1df1560060d464595dfed8b174b05792788052896004848d9ad04f9" in result.output
    assert "scale 0.0078125, zero point 128" in result.output


def test_a_model_whose_labels_do_not_fit_is_refused_with_both_counts(tmp_path):
    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join((INAT / "labels.txt").read_text().splitlines()[:10]) + "\n")
    config = write_config(tmp_path, model={"labels": str(labels)})
    result = CliRunner().invoke(cli, ["model", "info", "--config", str(config)])
    assert result.exit_code == 1
    assert "has 965 outputs but" in result.output and "has 10 labels" in result.output


def test_a_broken_model_file_is_refused_by_path(tmp_path):
    bad = tmp_path / "model.tflite"
    bad.write_bytes(b"this is not a flatbuffer" * 10)
    (tmp_path / "labels.txt").write_text("a\nb\n")
    config = write_config(tmp_path, model={"path": str(bad)})
    result = CliRunner().invoke(cli, ["classify", str(photo("bird.bmp")), "--config", str(config)])
    assert result.exit_code == 1
    assert f"{bad} is not a usable TFLite model" in result.output


def test_a_model_that_fails_to_invoke_says_so(tmp_path):
    broken = MODELS / "broken" / "model_invoking_error.tflite"
    from birdtrap.errors import ModelError
    from birdtrap.identify.tflite import TFLiteModel

    try:
        model = TFLiteModel(broken, delegate="cpu")
    except ModelError as e:
        assert str(broken) in str(e)
        return
    import numpy as np

    height, width, channels = model.input_shape
    with pytest.raises(ModelError, match="failed to run"):
        model.invoke(np.zeros((1, height, width, channels), dtype=model.input_dtype))


@pytest.mark.parametrize(
    "command",
    [
        [],
        ["run"],
        ["classify"],
        ["sightings"],
        ["events"],
        ["stats"],
        ["evaluate"],
        ["model"],
        ["model", "info"],
        ["model", "fetch"],
        ["db"],
        ["db", "upgrade"],
        ["db", "current"],
        ["export"],
        ["export", "camtrap-dp"],
        ["export", "training-set"], ["plot"], ["doctor"], ["serve"], ["archive"], ["sync"], ["export", "network"],
        ["export", "ebird"], ["install"], ["uninstall"], ["failed"],
    ],
)
def test_every_command_has_help_with_an_example(command):
    result = invoke(*command, "--help")
    assert result.exit_code == 0
    assert "birdtrap " in result.output.split("Options:")[0]


def test_sightings_on_a_database_that_does_not_exist_says_how_to_create_it(tmp_path):
    config = write_config(tmp_path)
    result = CliRunner().invoke(cli, ["sightings", "--config", str(config)])
    assert result.exit_code == 1
    assert "birdtrap run" in result.output


def test_a_bad_date_names_the_flag(tmp_path):
    config = write_config(tmp_path)
    result = CliRunner().invoke(cli, ["sightings", "--since", "yesterday", "--config", str(config)])
    assert result.exit_code == 2
    assert "--since" in result.output and "YYYY-MM-DD" in result.output


def test_db_upgrade_creates_the_schema_and_db_current_reports_it(tmp_path):
    config = write_config(tmp_path)
    result = invoke("db", "upgrade", "--config", str(config))
    assert result.exit_code == 0, result.output
    from birdtrap import store

    head = store.head_revision()
    assert f"schema revision {head} (current)" in result.output
    current = invoke("db", "current", "--config", str(config))
    assert f"database {head}, birdtrap {head}: current" in current.output
    assert invoke("sightings", "--config", str(config)).exit_code == 0


def test_classify_record_stores_each_photo_once_like_the_daemon(tmp_path):
    from conftest import sightings

    config = write_config(tmp_path)
    folder = tmp_path / "card"
    folder.mkdir()
    for name in ("bird.bmp", "cat.bmp"):
        (folder / name).write_bytes(photo(name).read_bytes())
    (folder / "broken.jpg").write_text("no photo")
    for _ in range(2):
        result = CliRunner().invoke(cli, ["classify", str(folder), "--record", "--config", str(config)])
        assert result.exit_code == 1 and "1 of 3 photos could not be read" in result.output
    assert [Path(p).name for p, _, _ in sightings(tmp_path)] == ["bird.bmp"]
    from conftest import rows

    assert len(rows(tmp_path)) == 3
    assert (folder / "bird.bmp").exists()  # no after-action for named files


def test_every_listing_takes_format_and_json_is_an_alias_that_cannot_contradict_it(tmp_path):
    config = write_config(tmp_path)
    as_csv = invoke("classify", str(photo("bird.bmp")), "--format", "csv", "--config", str(config))
    assert as_csv.exit_code == 0, as_csv.output
    header, row = as_csv.output.strip().splitlines()[-2:]
    assert header.split(",")[:6] == ["path", "kind", "label", "scientific_name", "common_name", "taxon_rank"]
    assert row.split(",")[1] == "bird"
    clash = CliRunner().invoke(cli, ["classify", str(photo("bird.bmp")), "--json", "--format", "csv", "--config", str(config)])
    assert clash.exit_code == 2
    assert "--json means --format ndjson; it cannot be combined with --format csv" in clash.output
    info = invoke("model", "info", "--format", "json", "--config", str(config))
    assert json.loads(info.stdout)[0]["labels_sha256"] == "a16108dfe3f8daff015b87a97ab6a17e717b9b1bccd719f6d8f747746d7b9277"


def test_a_missing_extra_is_named_with_the_command_that_installs_it(tmp_path):
    """A Pi without the web extra: `birdtrap serve` says which package is missing and how to add it."""
    import subprocess
    import sys

    config = write_config(tmp_path)
    # sys.modules[name] = None makes `import name` fail exactly as on an install without it.
    code = "import sys; sys.modules['uvicorn'] = None; from birdtrap.cli import main; main()"
    result = subprocess.run([sys.executable, "-c", code, "serve", "--config", str(config)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert "Error: `birdtrap serve` needs uvicorn, which this install lacks: pip install 'birdtrap[web]'" in result.stderr
    assert "Traceback" not in result.stderr


def test_evaluate_prints_one_row_per_photo_as_csv(tmp_path):
    config = write_config(tmp_path)
    labels = tmp_path / "labels.csv"
    labels.write_text("path,truth\nreal/bird.bmp,Poecile atricapillus\nreal/cat.bmp,none\n")
    result = CliRunner().invoke(cli, ["evaluate", str(labels), "--root", str(photo("bird.bmp").parents[1]), "--format", "csv",
                                      "--config", str(config)])  # fmt: skip
    assert result.exit_code == 0, result.output
    import csv
    import io

    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert [Path(row["path"]).name for row in rows] == ["bird.bmp", "cat.bmp"]
    assert rows[0]["species_right"] == "True" and rows[1]["false_bird"] == "False"


EVERY_COMMAND = ("archive", "classify", "db", "doctor", "evaluate", "events", "export", "failed", "fleet", "install", "learn",
                 "model", "plot", "run", "serve", "sightings", "stats", "sync", "uninstall")


def test_help_lists_every_command_with_its_summary_though_they_are_imported_lazily():
    result = invoke("--help")
    assert result.exit_code == 0
    listed = result.output.split("Commands:")[1].splitlines()
    names = [line.split()[0] for line in listed if line.strip()]
    assert names == list(EVERY_COMMAND)
    assert all(len(line.split()) > 1 for line in listed if line.strip()), "each command has its one-line summary"
    assert "network" in invoke("export", "--help").output


def test_birdtrap_run_does_not_import_the_other_commands_modules():
    """The daemon runs for months: it should not carry exports, plots or sync (issue 22 item 5)."""
    import subprocess
    import sys

    code = (
        "import sys; from birdtrap.cli import cli; cli.main(['run', '--help'], standalone_mode=False); "
        "print(' '.join(sorted(m for m in sys.modules if m.startswith('birdtrap.cli') or m.startswith('birdtrap.export'))))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1].split() == ["birdtrap.cli", "birdtrap.cli.common", "birdtrap.cli.main"]
