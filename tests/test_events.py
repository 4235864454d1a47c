"""Events: bursts of one camera become one event, whatever order the photos arrive in."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from birdtrap import store
from birdtrap.cli import cli
from birdtrap.daemon import events
from birdtrap.identify.decision import BIRD, Decision

from conftest import HERON, copy_photo, rows, wait_for, write_config

GAP = timedelta(seconds=5)
T0 = datetime(2024, 5, 1, 6, 0, 0)


def decide_mean(vector: np.ndarray, finest: str = "species") -> Decision:
    index = int(np.argmax(vector))
    return Decision(BIRD, f"label {index}", f"Genus species{index}", None, "species", float(vector[index]))


def add_photo(session, camera: str, seconds: float, kind: str = "blank", label_index: int | None = None, confidence: float = 0.9) -> int:
    image = store.ImageRecord(
        path=f"/{camera}/{seconds}-{np.random.randint(1 << 30)}.jpg",
        sha256=f"{np.random.randint(1 << 62):064x}",
        camera_id=camera,
        status=store.DONE,
        captured_at=T0 + timedelta(seconds=seconds),
        kind=kind,
        confidence=confidence,
    )
    if label_index is not None:
        prediction = store.PredictionRecord(rank=1, label_index=label_index, label=f"label {label_index}", confidence=confidence)
        image.predictions.append(prediction)
    session.add(image)
    session.flush()
    return image.id


def grouping(session) -> set[frozenset[tuple[str, datetime]]]:
    """The events as sets of (camera, time), independent of ids."""
    result: dict[int, set] = {}
    for image in session.scalars(select(store.ImageRecord)):
        assert image.event_id is not None
        result.setdefault(image.event_id, set()).add((image.camera_id, image.captured_at))
    return {frozenset(members) for members in result.values()}


def expected(photos: list[tuple[str, float]]) -> set[frozenset[tuple[str, datetime]]]:
    groups = set()
    for camera in {c for c, _ in photos}:
        times = sorted(T0 + timedelta(seconds=s) for c, s in photos if c == camera)
        current: list = []
        for when in times:
            if current and when - current[-1] > GAP:
                groups.add(frozenset((camera, t) for t in current))
                current = []
            current.append(when)
        groups.add(frozenset((camera, t) for t in current))
    return groups


@settings(max_examples=40, deadline=None)
@given(
    photos=st.lists(st.tuples(st.sampled_from(["cam-a", "cam-b"]), st.integers(0, 120).map(float)), min_size=1, max_size=25),
    batch=st.integers(1, 6),
    seed=st.integers(0, 1000),
)
def test_any_arrival_order_gives_the_same_events_and_regrouping_is_idempotent(tmp_path_factory, photos, batch, seed):
    sessions = store.open_store(f"sqlite:///{tmp_path_factory.mktemp('db') / 'e.db'}")
    order = list(photos)
    np.random.default_rng(seed).shuffle(order)  # late and out-of-order arrival; ties included
    with sessions.begin() as session:
        for start in range(0, len(order), batch):
            chunk = order[start : start + batch]
            for camera, seconds in chunk:
                add_photo(session, camera, seconds)
            for camera in {c for c, _ in chunk}:
                times = [T0 + timedelta(seconds=s) for c, s in chunk if c == camera]
                events.regroup(session, camera, times, GAP, decide_mean, 10)
        assert grouping(session) == expected(photos)
        before = {(e.id, e.start, e.end, e.photo_count) for e in session.scalars(select(store.EventRecord))}
        for camera in {c for c, _ in photos}:
            events.regroup(session, camera, [T0 + timedelta(seconds=s) for c, s in photos if c == camera], GAP, decide_mean, 10)
        assert {(e.id, e.start, e.end, e.photo_count) for e in session.scalars(select(store.EventRecord))} == before
        assert len(before) == len(expected(photos))


def test_a_late_photo_joins_two_events_into_one(tmp_path):
    sessions = store.open_store(f"sqlite:///{tmp_path / 'e.db'}")
    with sessions.begin() as session:
        for seconds in (0, 4, 12, 16):
            add_photo(session, "cam", seconds)
        events.regroup(session, "cam", [T0, T0 + timedelta(seconds=16)], GAP, decide_mean, 10)
        assert session.scalar(select(func.count()).select_from(store.EventRecord)) == 2
        add_photo(session, "cam", 8)
        events.regroup(session, "cam", [T0 + timedelta(seconds=8)], GAP, decide_mean, 10)
        remaining = list(session.scalars(select(store.EventRecord)))
        assert len(remaining) == 1 and remaining[0].photo_count == 5
        assert remaining[0].start == T0 and remaining[0].end == T0 + timedelta(seconds=16)


def test_two_clear_frames_of_ten_decide_the_event(tmp_path):
    sessions = store.open_store(f"sqlite:///{tmp_path / 'e.db'}")
    with sessions.begin() as session:
        for seconds in range(8):
            add_photo(session, "cam", seconds * 0.5)
        add_photo(session, "cam", 4.5, kind=BIRD, label_index=3, confidence=0.9)
        add_photo(session, "cam", 5.0, kind=BIRD, label_index=3, confidence=0.8)
        events.regroup(session, "cam", [T0], GAP, decide_mean, 10)
        (event,) = session.scalars(select(store.EventRecord))
        assert event.kind == BIRD and event.label == "label 3"
        assert event.photo_count == 10 and event.bird_photo_count == 2
        assert abs(event.confidence - 0.85) < 1e-6


def test_the_heron_burst_becomes_one_event_through_the_daemon(tmp_path, daemon_factory):
    config = write_config(tmp_path)
    for path in HERON:
        copy_photo(path.name, tmp_path / "inbox")
    daemon = daemon_factory(config)
    wait_for(lambda: len([r for r in rows(tmp_path) if r[1] == "done"]) >= 10, timeout=90, what="the ten heron frames")
    daemon.stop()
    assert rows(tmp_path, "select count(distinct event_id) from images where event_id is not null") == [(1,)]
    result = CliRunner().invoke(cli, ["events", "--all", "--format", "json", "--config", str(config)])
    assert result.exit_code == 0, result.output
    (event,) = json.loads(result.output)
    assert event["photos"] == 10
    assert Path(event["path"]).name in {path.name for path in HERON}  # `events --all` says which photo to open
    assert event["start"] == "2021-04-11 20:43:09" and event["end"] == "2021-04-11 20:43:15"
    stats = CliRunner().invoke(cli, ["stats", "--format", "json", "--config", str(config)])
    assert stats.exit_code == 0, stats.output


def test_an_infrared_burst_held_to_family_rank_is_not_named_a_species_by_its_mean(tmp_path):
    """The frames of a night burst were allowed no finer than a family: their mean is no new
    evidence of colour, so the event is decided at family rank too."""
    seen: list[str] = []

    def decide_and_note(vector: np.ndarray, finest: str = "species") -> Decision:
        seen.append(finest)
        return decide_mean(vector, finest)

    sessions = store.open_store(f"sqlite:///{tmp_path / 'e.db'}")
    with sessions.begin() as session:
        for seconds in (0.0, 0.5):
            image_id = add_photo(session, "cam", seconds, kind=BIRD, label_index=3, confidence=0.9)
            session.get(store.ImageRecord, image_id).taxon_rank = "family"
        events.regroup(session, "cam", [T0], GAP, decide_and_note, 10)
    assert seen == ["family"]
