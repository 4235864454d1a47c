"""Kinds that tell the truth (issue 22): never blank without evidence, one vocabulary everywhere."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import replace
from datetime import datetime, timedelta

import pytest
from click.testing import CliRunner

from birdtrap import config as config_module
from birdtrap import store
from birdtrap.cli import cli
from birdtrap.daemon.wiring import build_identifier
from birdtrap.export import camtrapdp
from birdtrap.identify.kinds import Kind
from birdtrap.identify.motion import BurstKey
from birdtrap.identify.preprocess import load

from conftest import SHARED, photo, write_config

# Truly empty frames from SpeciesNet's test data and a trail camera, and animals the old pipeline
# called "empty" at confidence 1.00 (issue 22).
SPECIESNET, ENA24 = "camtrap_more/speciesnet_testdata/", "camtrap_more/ena24_zamba/"
BLANK, BLANK2, BLANK3 = (SPECIESNET + name for name in ("blank.jpg", "blank2.jpg", "blank3.jpg"))
BLANK_FRAMES = (BLANK, BLANK2, BLANK3, "B013_IMG_0005_empty.jpeg")
ANIMAL_FRAMES = (
    "2021-06-30_SYFR0218_cougar.JPG", SPECIESNET + "ocelot.jpg", ENA24 + "2968_striped_skunk.jpg",
    ENA24 + "2480_opossum.jpg", ENA24 + "4330_grey_fox.jpg",
)  # fmt: skip


@pytest.fixture(scope="module")
def identifier(tmp_path_factory):
    folder = tmp_path_factory.mktemp("kinds")
    return build_identifier(config_module.load(write_config(folder)))


def identify(identifier, name, finder=None, burst_key=None):
    if finder is not None:
        identifier = _with_finder(identifier, finder)
    [result] = identifier.identify([load(photo(name), identifier.preprocess)], [burst_key] if burst_key else None)
    return result


def _with_finder(identifier, finder):
    from birdtrap.identify.identifier import Identifier

    return Identifier(identifier.species, identifier.preprocess, identifier.rules, identifier.gate, identifier.detector,
                      finder, identifier.bursts)  # fmt: skip


# --- the blank rule ------------------------------------------------------------------------


@pytest.mark.parametrize("low_score", [0.2, 0.45, 0.6])
def test_a_frame_with_a_detector_box_of_any_class_above_the_low_score_is_never_blank(identifier, low_score):
    finder = replace(identifier.finder, blank_max_box_score=low_score)
    for name in BLANK_FRAMES + ANIMAL_FRAMES:
        result = identify(identifier, name, finder)
        strongest = max((d.score for d in result.detections), default=0.0)
        assert result.detector_invokes >= 1, f"{name}: the detector must look before anything is called blank"
        if strongest >= low_score:
            assert result.decision.kind != Kind.BLANK, f"{name}: a {strongest:.2f} box, yet blank"
        if result.decision.kind == Kind.BLANK:
            assert strongest < low_score


def test_the_animals_once_called_empty_at_confidence_one_are_never_blank_by_default(identifier):
    for name in ANIMAL_FRAMES:
        result = identify(identifier, name)
        assert result.decision.kind in (Kind.ANIMAL, Kind.PERSON, Kind.VEHICLE, Kind.UNSURE), (name, result.decision)


def test_a_truly_empty_frame_is_blank_once_every_witness_agrees(identifier):
    # With the detector's veto lifted, the species model's background, the gate and the absence of
    # motion decide: the empty frame is blank, with the background's confidence.
    result = identify(identifier, BLANK3, replace(identifier.finder, blank_max_box_score=1.0))
    assert result.decision.kind == Kind.BLANK
    assert result.decision.label == "background"
    assert result.gate_probability is not None and result.gate_probability < identifier.finder.gate_threshold


def test_an_empty_frame_with_motion_against_its_burst_is_unsure_not_blank(identifier):
    from birdtrap.identify.motion import BurstMemory

    lifted = replace(identifier.finder, blank_max_box_score=1.0)  # the detector's veto lifted: motion decides
    assert identify(identifier, BLANK3, lifted).decision.kind == Kind.BLANK
    moving = _with_finder(identifier, lifted)
    moving.bursts = BurstMemory(gap_seconds=5)
    start = datetime(2024, 5, 1, 6, 0, 0)
    frame = load(photo(BLANK3), identifier.preprocess)
    # Something changed in the scene: a quarter-size piece of another camera's empty frame pasted
    # in (no animal, so the species model alone still names no bird: only motion can tell).
    cougar = load(photo(BLANK), identifier.preprocess).bgr
    height, width = frame.bgr.shape[0] // 4, frame.bgr.shape[1] // 4
    pixels = frame.bgr.copy()
    top, left = (cougar.shape[0] - height) // 2, (cougar.shape[1] - width) // 2
    pixels[height : 2 * height, width : 2 * width] = cougar[top : top + height, left : left + width]
    changed = replace(frame, bgr=pixels)
    # Two frames of one scene, then a changed one (same camera, within the burst): it moved.
    results = moving.identify([frame, frame, changed], [BurstKey("camera-1", start + timedelta(seconds=s)) for s in (0, 1, 2)])
    assert [r.decision.kind for r in results] == [Kind.BLANK, Kind.BLANK, Kind.UNSURE]
    # Alone (no burst), the changed frame is blank: motion was the witness that kept it from blank.
    [alone] = _with_finder(identifier, lifted).identify([changed])
    assert alone.decision.kind == Kind.BLANK


def test_without_a_detector_nothing_is_ever_blank(identifier):
    blind = _with_finder(identifier, replace(identifier.finder, blank_max_box_score=1.0))
    blind.detector = None
    result = identify(blind, BLANK)
    assert result.decision.kind == Kind.UNSURE
    assert result.detector_invokes == 0


def test_with_search_never_a_background_frame_still_gets_the_detectors_look(identifier):
    never = replace(identifier.finder, search="never")
    cougar = identify(identifier, "2021-06-30_SYFR0218_cougar.JPG", never)
    assert cougar.detector_invokes >= 1 and cougar.invokes == 1  # no region search, only the detector
    assert cougar.decision.kind != Kind.BLANK
    empty = identify(identifier, BLANK, replace(never, blank_max_box_score=1.0))
    assert empty.decision.kind == Kind.BLANK


# --- one vocabulary --------------------------------------------------------------------------


def test_old_words_still_read_as_the_new_kinds():
    assert Kind.parse("empty") is Kind.BLANK
    assert Kind.parse("Unknown") is Kind.UNSURE
    assert Kind.parse("human") is Kind.PERSON
    with pytest.raises(ValueError, match="'nothing' is not a kind; use one of bird, animal, person, vehicle, blank, unsure"):
        Kind.parse("nothing")


@pytest.mark.parametrize(
    "kind,observation_type",
    [
        (Kind.BIRD, "animal"), (Kind.ANIMAL, "animal"), (Kind.PERSON, "human"), (Kind.VEHICLE, "vehicle"),
        (Kind.BLANK, "blank"), (Kind.UNSURE, "unknown"), ("empty", "blank"), ("unknown", "unknown"), (None, "unclassified"),
    ],
)  # fmt: skip
def test_each_kind_has_its_camtrap_dp_observation_type_and_only_blank_is_blank(kind, observation_type):
    schema = json.loads((SHARED / "data" / "camtrap-dp" / "observations-table-schema.json").read_text())
    [field] = [f for f in schema["fields"] if f["name"] == "observationType"]
    assert camtrapdp.observation_type(kind) == observation_type
    assert observation_type in field["constraints"]["enum"]


def test_every_kind_a_photo_can_hold_maps_to_camtrap_dp_and_blank_only_from_blank():
    types = {kind: camtrapdp.observation_type(kind) for kind in Kind if kind != Kind.FAILED}
    assert [kind for kind, value in types.items() if value == "blank"] == [Kind.BLANK]
    assert "unclassified" not in types.values()


def test_events_kind_accepts_the_old_name_empty_and_refuses_a_word_that_is_no_kind(tmp_path):
    config = write_config(tmp_path)
    sessions = store.open_store(f"sqlite:///{tmp_path / 'birdtrap.db'}")
    with sessions.begin() as session:
        for minute, kind in enumerate((Kind.BLANK, Kind.UNSURE, Kind.BIRD)):
            when = datetime(2024, 5, 1, 6, minute)
            session.add(store.EventRecord(camera_id="camera-1", start=when, end=when, photo_count=1, bird_photo_count=0, kind=kind))
    runner = CliRunner()
    for word, expected in (("empty", "blank"), ("blank", "blank"), ("unknown", "unsure")):
        result = runner.invoke(cli, ["events", "--kind", word, "--format", "json", "--config", str(config)])
        assert result.exit_code == 0, result.output
        assert [row["kind"] for row in json.loads(result.output)] == [expected]
    result = runner.invoke(cli, ["events", "--kind", "nothing", "--config", str(config)])
    assert result.exit_code == 2
    assert "--kind" in result.output and "'nothing' is not a kind" in result.output


# --- migration 0004 --------------------------------------------------------------------------


def test_migration_0004_renames_old_empty_and_unknown_rows_and_downgrade_restores_them(tmp_path):
    from alembic import command
    from sqlalchemy import create_engine

    path = tmp_path / "old.db"
    engine = create_engine(f"sqlite:///{path}")
    with engine.begin() as connection:
        command.upgrade(store._alembic(connection), "0003")
        insert_image = (
            "insert into images (path, sha256, camera_id, status, discovered_at, kind) "
            "values (?, ?, 'cam', 'done', '2024-01-01', ?)"
        )
        for i, kind in enumerate(("empty", "unknown", "bird", "animal", "person")):
            connection.exec_driver_sql(insert_image, (f"/{i}.jpg", f"{i:064x}", kind))
        for kind in ("empty", "unknown", "bird"):
            connection.exec_driver_sql(
                "insert into events (camera_id, start, \"end\", photo_count, bird_photo_count, kind) "
                "values ('cam', '2024-01-01', '2024-01-01', 1, 0, ?)",
                (kind,),
            )
        connection.exec_driver_sql(
            "insert into corrections (event_id, verdict, kind, machine_kind, created_at) "
            "values (1, 'empty', 'empty', 'unknown', '2024-01-02')"
        )
    engine.dispose()

    def kinds():
        with sqlite3.connect(path) as connection:
            return (
                [k for (k,) in connection.execute("select kind from images order by id")],
                [k for (k,) in connection.execute("select kind from events order by id")],
                connection.execute("select verdict, kind, machine_kind from corrections").fetchall(),
            )

    store.open_store(f"sqlite:///{path}")  # what the daemon does at start: back up, then upgrade
    assert kinds() == (
        ["blank", "unsure", "bird", "animal", "person"],
        ["blank", "unsure", "bird"],
        [("empty", "blank", "unsure")],  # the verdict is a person's word ("mark empty"), not a kind
    )
    with sqlite3.connect(tmp_path / f"old.db.before-{store.HEAD_REVISION}.bak") as connection:
        assert [k for (k,) in connection.execute("select kind from images order by id")][:2] == ["empty", "unknown"]
    engine = create_engine(f"sqlite:///{path}")
    with engine.begin() as connection:
        command.downgrade(store._alembic(connection), "0003")
    engine.dispose()
    assert kinds() == (
        ["empty", "unknown", "bird", "animal", "person"],
        ["empty", "unknown", "bird"],
        [("empty", "empty", "unknown")],
    )
