"""What a listing prints is all there is, or says what it left out (issue 18).

`sightings` and `events` cut CSV/JSON/NDJSON at 50 rows without a word; a season's export looked
complete and was not. A real database: 55 real photos decided by the real models (classify
--record), ten minutes apart (55 events), and one unreadable file.
"""

from __future__ import annotations

import csv
import io
import json
import re
from datetime import datetime
from pathlib import Path

import pytest
from click.testing import CliRunner

from birdtrap.cli import cli

from conftest import bird_variants, rows, write_config

PHOTOS = 55


@pytest.fixture(scope="module")
def season(tmp_path_factory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("listings")
    config = write_config(folder)
    photos = bird_variants(folder / "photos", PHOTOS, datetime(2024, 5, 1, 6, 0).timestamp(), 600)
    broken = folder / "photos" / "half-written.jpg"
    broken.write_bytes(photos[0].read_bytes()[:400])
    result = CliRunner().invoke(cli, ["classify", "--record", str(folder / "photos"), "-c", str(config)])
    assert result.exit_code == 1 and "1 of 56 photos could not be read" in result.output, result.output
    assert rows(folder, "select count(*) from images where kind = 'bird'") == [(PHOTOS,)]
    return folder, config


def listing(season, *args: str) -> str:
    _, config = season
    result = CliRunner().invoke(cli, [*args, "-c", str(config)])
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.parametrize("command", ["sightings", "events"])
def test_csv_json_and_ndjson_are_whole_without_limit(season, command):
    assert len(list(csv.DictReader(io.StringIO(listing(season, command, "--format", "csv"))))) == PHOTOS
    assert len(json.loads(listing(season, command, "--format", "json"))) == PHOTOS
    assert len(listing(season, command, "--format", "ndjson").splitlines()) == PHOTOS


@pytest.mark.parametrize("command", ["sightings", "events"])
def test_the_table_shows_fifty_and_says_how_many_more_there_are(season, command):
    lines = listing(season, command).splitlines()
    assert len(lines) == 1 + 50 + 1  # header, rows, the note
    assert lines[-1].startswith(f"... and {PHOTOS - 50} more ({PHOTOS} in all): --limit {PHOTOS} lists them")


def test_limit_cuts_an_export_and_adds_nothing_to_the_csv(season):
    output = listing(season, "sightings", "--limit", "3", "--format", "csv")
    assert len(list(csv.DictReader(io.StringIO(output)))) == 3
    assert "more" not in output


def test_failed_lists_each_unreadable_photo_with_its_reason(season):
    folder, _ = season
    (row,) = json.loads(listing(season, "failed", "--format", "json"))
    assert row["path"] == str(folder / "photos" / "half-written.jpg")
    assert row["error"] and "half-written.jpg" in row["error"]
    assert "half-written.jpg" in listing(season, "failed")


def test_a_frame_that_is_not_a_bird_is_logged_at_info_with_kind_and_confidence(tmp_path):
    config = write_config(tmp_path)
    empty = tmp_path / "photos" / "grey.png"
    empty.parent.mkdir()
    from PIL import Image

    Image.new("RGB", (640, 480), (128, 128, 128)).save(empty)
    result = CliRunner().invoke(cli, ["classify", "--record", str(empty), "-c", str(config)])  # logging.level: INFO
    assert result.exit_code == 0, result.output
    ((kind,),) = rows(tmp_path, "select kind from images")
    assert kind != "bird"
    lines = [line for line in result.stderr.splitlines() if "grey.png" in line]
    assert len(lines) == 1 and re.search(rf" INFO birdtrap\.daemon\.ingest: grey\.png: not a bird: {kind} \(\d\.\d\d\)$", lines[0]), lines


def test_classify_prints_a_dash_not_none_for_a_frame_without_a_label(tmp_path):
    config = write_config(tmp_path)
    from PIL import Image

    Image.new("RGB", (640, 480), (128, 128, 128)).save(tmp_path / "grey.png")
    result = CliRunner().invoke(cli, ["classify", str(tmp_path / "grey.png"), "-c", str(config)])
    assert result.exit_code == 0, result.output
    assert "None" not in result.output
