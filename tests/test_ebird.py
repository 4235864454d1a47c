"""`birdtrap export ebird`: the eBird Record Format, column by column (issue 18).

A real database: real photos decided by the real models through `classify --record`, one event
reviewed by a person through the store, as the web review does.
"""

from __future__ import annotations

import csv
import sqlite3
from datetime import datetime
from pathlib import Path

import pytest
from click.testing import CliRunner

from birdtrap import __version__, store
from birdtrap.cli import cli
from birdtrap.export.ebird import COLUMNS

from conftest import bird_variants, write_config

# The 19 columns of eBird's record-format template, in order (support.ebird.org article
# 48000907878, "eBird Record Format"); written out here, not imported, so a change is seen.
PUBLISHED_COLUMNS = [
    "Common Name", "Genus", "Species", "Number", "Species Comments", "Location Name", "Latitude", "Longitude", "Date",
    "Start Time", "State/Province", "Country Code", "Protocol", "Number of Observers", "Duration", "All observations reported?",
    "Effort Distance Miles", "Effort area acres", "Submission Comments",
]  # fmt: skip
DAY1 = datetime(2024, 5, 1, 8, 0).timestamp()
DAY2 = datetime(2024, 5, 2, 7, 0).timestamp()


@pytest.fixture(scope="module")
def season(tmp_path_factory) -> tuple[Path, Path, int]:
    """(folder, config, id of the reviewed event): day 1 a burst of 3 chickadee frames at 08:00
    and one frame at 10:00; day 2 one frame a person corrected to Grey Heron."""
    folder = tmp_path_factory.mktemp("ebird")
    config = write_config(folder, camera={"id": "pond-cam", "latitude": 51.0543, "longitude": 3.7174, "location_name": "Pond"})
    photos = bird_variants(folder / "photos", 3, DAY1, 1, "burst")
    photos += bird_variants(folder / "photos", 1, DAY1 + 2 * 3600, 1, "later")
    photos += bird_variants(folder / "photos", 1, DAY2, 1, "heron")
    result = CliRunner().invoke(cli, ["classify", "--record", *map(str, photos), "-c", str(config)])
    assert result.exit_code == 0, result.output
    with sqlite3.connect(folder / "birdtrap.db") as db:
        (event_id,) = db.execute("select event_id from images where path like '%heron-000.png'").fetchone()
    sessions = store.open_store(f"sqlite:///{folder / 'birdtrap.db'}", create=False)
    with sessions.begin() as session:
        store.add_correction(session, event_id, "corrected", scientific_name="Ardea cinerea", common_name="Grey Heron", reviewer="Jane")
    return folder, config, event_id


def export(season, tmp_path, *args: str) -> list[dict[str, str]]:
    _, config, _ = season
    out = tmp_path / "ebird.csv"
    result = CliRunner().invoke(cli, ["export", "ebird", str(out), "--state", "VOV", "--country", "BE", *args, "-c", str(config)])
    assert result.exit_code == 0, result.output
    with out.open(newline="") as f:
        reader = csv.reader(f)
        header = next(reader)
        assert header == PUBLISHED_COLUMNS == list(COLUMNS)
        return [dict(zip(header, row, strict=True)) for row in reader]


def machine(season) -> tuple[str, str, float]:
    folder, _, _ = season
    with sqlite3.connect(folder / "birdtrap.db") as db:
        return db.execute("select scientific_name, common_name, confidence from events where start < '2024-05-02' limit 1").fetchone()


def test_a_day_of_verified_events_is_one_row_per_species_column_by_column_with_maxn_not_a_sum(season, tmp_path):
    rows = export(season, tmp_path)
    scientific, common, _ = machine(season)
    assert [(r["Date"], r["Genus"] + " " + r["Species"]) for r in rows] == [("05/01/2024", scientific), ("05/02/2024", "Ardea cinerea")]
    day1, day2 = rows
    assert day1["Common Name"] == common
    assert day1["Number"] == "1"  # 4 frames in 2 events of one bird: the most in one frame, never 4 or 2
    assert day1["Species Comments"].startswith("camera trap: 4 photos in 2 events, machine confidence up to")
    assert (day1["Location Name"], day1["Latitude"], day1["Longitude"]) == ("Pond", "51.054300", "3.717400")
    assert day1["Start Time"] == "08:00"
    assert (day1["State/Province"], day1["Country Code"]) == ("VOV", "BE")
    assert (day1["Protocol"], day1["Number of Observers"], day1["Duration"]) == ("Incidental", "1", "")
    assert day1["All observations reported?"] == "N"
    assert (day1["Effort Distance Miles"], day1["Effort area acres"]) == ("", "")
    assert day1["Submission Comments"].startswith(f"Camera trap pond-cam (one day), identified by birdtrap {__version__}")
    assert (day2["Common Name"], day2["Number"], day2["Start Time"]) == ("Grey Heron", "1", "07:00")
    assert "1 reviewed by a person" in day2["Species Comments"]


def test_reviewed_only_keeps_the_persons_event_and_drops_the_machines(season, tmp_path):
    rows = export(season, tmp_path, "--reviewed-only")
    assert [(r["Common Name"], r["Genus"], r["Species"], r["Date"]) for r in rows] == [("Grey Heron", "Ardea", "cinerea", "05/02/2024")]


def test_an_unreviewed_event_below_min_confidence_is_left_out_and_said_so(season, tmp_path):
    _, _, confidence = machine(season)
    _, config, _ = season
    out = tmp_path / "ebird.csv"
    above = f"{min(1.0, confidence + 0.001):.4f}"
    result = CliRunner().invoke(cli, ["export", "ebird", str(out), "--min-confidence", above, "-c", str(config)])
    assert result.exit_code == 0, result.output
    assert "left out 2 events neither reviewed nor sure enough" in result.output
    rows = list(csv.DictReader(out.open(newline="")))
    assert [r["Common Name"] for r in rows] == ["Grey Heron"]


def test_per_event_makes_one_checklist_per_event_each_with_its_start_time(season, tmp_path):
    rows = export(season, tmp_path, "--per", "event")
    assert [(r["Date"], r["Start Time"], r["Number"]) for r in rows] == [("05/01/2024", "08:00", "1"), ("05/01/2024", "10:00", "1"),
                                                                          ("05/02/2024", "07:00", "1")]  # fmt: skip


def test_without_a_place_the_export_names_the_flags_and_the_config_keys(tmp_path, season):
    folder, _, _ = season
    config = write_config(tmp_path, database={"url": f"sqlite:///{folder / 'birdtrap.db'}"})
    result = CliRunner().invoke(cli, ["export", "ebird", str(tmp_path / "x.csv"), "-c", str(config)])
    assert result.exit_code == 2
    assert "--latitude (or camera.latitude) and --longitude (or camera.longitude)" in result.output
    assert not (tmp_path / "x.csv").exists()
