"""No single file stops birdtrap: odd names, symlinks that go nowhere, identical broken copies,
an error inside the models on one photo. Each lies beside good photos; the real daemon runs."""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from click.testing import CliRunner

from birdtrap import store
from birdtrap.cli import cli
from birdtrap.config import load
from birdtrap.daemon.ingest import Ingestor
from birdtrap.daemon.wiring import build_identifier

from conftest import HERON, copy_photo, photo, rows, wait_for, write_config

LATIN1_NAME = os.fsdecode(b"M\xf6we.jpg")  # as a FAT card or an old FTP tool writes "Möwe.jpg"


def recorded(tmp_path: Path) -> list[tuple]:
    return [r for r in rows(tmp_path) if r[1] != "pending"]


def by_name(tmp_path: Path) -> dict[str, tuple[str, str | None]]:
    return {Path(path).name: (status, error) for path, status, _, _, _, error in rows(tmp_path)}


def good_photos(inbox: Path) -> list[str]:
    return [copy_photo(path.name, inbox).name for path in HERON[:2]]


def run_until_recorded(tmp_path: Path, daemon_factory, count: int, **sections: dict):
    daemon = daemon_factory(write_config(tmp_path, **sections))
    wait_for(lambda: len(recorded(tmp_path)) >= count or not daemon.alive(), timeout=120, what=f"{count} photos recorded")
    assert daemon.alive(), daemon.output()[-3000:]
    return daemon


def test_a_latin1_file_name_is_processed_stored_readably_and_not_found_again(tmp_path, daemon_factory):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    good = good_photos(inbox)
    (inbox / LATIN1_NAME).write_bytes(photo("bird.bmp").read_bytes())
    daemon = run_until_recorded(tmp_path, daemon_factory, 3)
    daemon.stop()
    outcome = by_name(tmp_path)
    assert outcome["M\\xf6we.jpg"][0] == "done", outcome  # stored as text, each odd byte as \xNN
    assert all(outcome[name][0] == "done" for name in good), outcome
    [stored] = [path for path, *_ in rows(tmp_path) if path.endswith("M\\xf6we.jpg")]
    assert store.path_from_text(stored) == str((inbox / LATIN1_NAME).resolve())  # the file can be found again
    # A restart's scan knows it: nothing is offered, nothing recorded twice.
    again = daemon_factory(write_config(tmp_path))
    wait_for(lambda: "watching" in again.output(), what="the daemon to start again")
    assert "(0 photos waiting)" in again.output(), again.output()
    again.stop()
    assert len(rows(tmp_path)) == 3


def test_a_symlink_loop_named_like_a_photo_is_one_failed_row_and_the_daemon_goes_on(tmp_path, daemon_factory):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    good = good_photos(inbox)
    (inbox / "selfloop.jpg").symlink_to("selfloop.jpg")
    daemon = run_until_recorded(tmp_path, daemon_factory, 3)
    daemon.stop()
    outcome = by_name(tmp_path)
    status, error = outcome["selfloop.jpg"]
    assert status == "failed" and "symbolic link that loops" in error, outcome
    assert all(outcome[name][0] == "done" for name in good), outcome
    assert len(rows(tmp_path)) == 3


def test_a_dangling_symlink_is_failed_as_a_link_to_nothing_not_as_disappeared(tmp_path, daemon_factory):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    good = good_photos(inbox)
    (inbox / "gone.jpg").symlink_to("never_written.jpg")
    daemon = run_until_recorded(tmp_path, daemon_factory, 3)
    daemon.stop()
    outcome = by_name(tmp_path)
    status, error = outcome["gone.jpg"]
    assert status == "failed" and "symbolic link to never_written.jpg, which does not exist" in error, outcome
    assert "disappeared" not in error
    assert all(outcome[name][0] == "done" for name in good), outcome


def test_identical_broken_files_each_fail_and_identical_good_copies_stay_duplicates_of_a_done_photo(tmp_path, daemon_factory):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    broken = [f"empty_{index}.jpg" for index in range(8)]  # a failing card copy
    for name in broken:
        (inbox / name).write_bytes(b"")
    copy_photo(HERON[0].name, inbox, "good.jpg")
    copy_photo(HERON[0].name, inbox, "good_copy.jpg")
    daemon = run_until_recorded(tmp_path, daemon_factory, 10)
    daemon.stop()
    outcome = by_name(tmp_path)
    assert len(rows(tmp_path)) == 10
    for name in broken:
        status, error = outcome[name]
        assert status == "failed" and name in error and "empty" in error, (name, outcome[name])
    assert sorted(outcome[n][0] for n in ("good.jpg", "good_copy.jpg")) == ["done", "duplicate"], outcome
    with sqlite3.connect(tmp_path / "birdtrap.db") as connection:
        counts = dict(connection.execute("select status, count(*) from images group by status"))
    assert counts == {"failed": 8, "done": 1, "duplicate": 1}


def test_a_copy_of_a_photo_that_failed_for_a_passing_reason_becomes_the_original_and_is_processed(tmp_path):
    sessions = store.open_store(f"sqlite:///{tmp_path / 'birdtrap.db'}")
    with sessions.begin() as session:
        first = store.register_photo(session, "/in/a.jpg", "a" * 64, 10, 1.5, "cam")
        copies = [store.register_photo(session, f"/in/{name}.jpg", "a" * 64, 10, 1.5, "cam") for name in "bc"]
        store.record_failure(session, "/in/a.jpg", "/in/a.jpg disappeared before it could be read.", "cam", first.image_id)
        heir = store.release_copies(session, first.image_id)
    assert heir == "/in/b.jpg"
    with sessions() as session:
        records = {r.path: r for r in store.images_by_path(session, ["/in/a.jpg", "/in/b.jpg", "/in/c.jpg"])}
    assert (records["/in/b.jpg"].status, records["/in/b.jpg"].duplicate_of) == ("pending", None)
    assert (records["/in/c.jpg"].status, records["/in/c.jpg"].duplicate_of) == ("duplicate", copies[0].image_id)
    assert records["/in/a.jpg"].status == "failed"


def test_an_error_inside_identification_of_one_photo_fails_it_alone_and_the_batch_is_stored(tmp_path, monkeypatch):
    """No real file was found that makes the models raise (1x1 to 600x8 images all pass), so the
    real Identifier is made to raise on one photo of the batch, chosen by its pixel size."""
    from PIL import Image

    inbox = tmp_path / "inbox"
    inbox.mkdir()
    good = [copy_photo(path.name, inbox) for path in HERON[:2]]
    poison = inbox / "tiny.png"
    Image.new("RGB", (24, 24), (200, 10, 10)).save(poison)
    good_copy = copy_photo(HERON[0].name, inbox, "copy_of_good.jpg")
    config = load(write_config(tmp_path))
    identifier = build_identifier(config)
    real = identifier._identify_one

    def choke_on_tiny(work, burst_key, thumbnail):
        if work.photo.original_size == (24, 24):
            raise ValueError("cannot reshape array of size 0 into shape (0,0,3)")
        return real(work, burst_key, thumbnail)

    monkeypatch.setattr(identifier, "_identify_one", choke_on_tiny)
    sessions = store.open_store(config.database.url)
    with ThreadPoolExecutor(2) as pool:
        ingestor = Ingestor(config, identifier, sessions, inbox, pool, after_actions=False)
        totals = ingestor.handle([str(p) for p in [*good, poison, good_copy]])
    assert (totals["done"], totals["failed"], totals["duplicate"]) == (2, 1, 1), totals
    outcome = by_name(tmp_path)
    status, error = outcome["tiny.png"]
    assert status == "failed" and "could not be identified (ValueError: cannot reshape" in error, outcome
    assert [outcome[p.name][0] for p in good] == ["done", "done"]


def test_a_symlinked_photo_and_restored_content_are_not_offered_by_every_rescan(tmp_path, daemon_factory):
    inbox = tmp_path / "inbox"
    (inbox / "sub").mkdir(parents=True)
    copy_photo(HERON[0].name, inbox / "sub", "real.jpg")
    (inbox / "alias.jpg").symlink_to("sub/real.jpg")
    copy_photo(HERON[1].name, inbox, "restored.jpg")
    (inbox / LATIN1_NAME).write_bytes(b"")  # a failure with an odd name is on record too
    daemon = run_until_recorded(tmp_path, daemon_factory, 4, watch={"rescan_seconds": 0.5})
    # Rewritten with other content, then the original restored (a user undoing an edit).
    (inbox / "restored.jpg").write_bytes(HERON[2].read_bytes())
    wait_for(lambda: len(recorded(tmp_path)) >= 5, timeout=60, what="the rewritten photo")
    (inbox / "restored.jpg").write_bytes(HERON[1].read_bytes())
    rescans_before = daemon.output().count("rescan found")
    time.sleep(8)  # about 16 rescans
    assert daemon.alive()
    daemon.stop()
    warnings = daemon.output().count("rescan found") - rescans_before
    assert warnings <= 1, daemon.output()[-3000:]
    statuses = Counter(status for _, status, *_ in rows(tmp_path))
    assert statuses == {"done": 3, "duplicate": 1, "failed": 1}, rows(tmp_path)


def test_classify_prints_the_failure_of_each_poison_file_and_the_results_of_the_others(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    copy_photo("bird.bmp", folder)
    (folder / "selfloop.jpg").symlink_to("selfloop.jpg")
    (folder / "empty.jpg").write_bytes(b"")
    (folder / LATIN1_NAME).write_bytes(photo("bird.bmp").read_bytes())
    config = write_config(tmp_path)
    result = CliRunner().invoke(cli, ["classify", str(folder), "--config", str(config), "--json"])
    # Exit code 1 when any photo failed (documented in `birdtrap classify --help`); every photo is reported.
    assert result.exit_code == 1, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("{")]
    reports = {Path(r["path"]).name: r for r in map(json.loads, lines)}
    assert "symbolic link that loops" in reports["selfloop.jpg"]["error"]
    assert "empty.jpg" in reports["empty.jpg"]["error"]
    assert reports["bird.bmp"]["kind"] == "bird"
    assert reports["M\\xf6we.jpg"]["kind"] == "bird"  # printed as text, classified like the original
    assert "3 of 4 photos" not in result.output and "2 of 4 photos could not be read" in result.output


def test_a_photo_that_cannot_be_registered_fails_alone_and_the_others_are_registered(tmp_path, monkeypatch):
    """The fallback behind registration: no real per-photo registration error is left (the Latin-1
    name was one), so store.register_photo is made to raise for one photo, by its size."""
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    good = [copy_photo(path.name, inbox) for path in HERON[:2]]
    odd = copy_photo("bird.bmp", inbox)
    odd_size = odd.stat().st_size
    real = store.register_photo

    def refuse_one(session, path, sha256, size_bytes, *args, **kwargs):
        if size_bytes == odd_size:
            raise UnicodeEncodeError("utf-8", path, 0, 1, "surrogates not allowed")
        return real(session, path, sha256, size_bytes, *args, **kwargs)

    monkeypatch.setattr(store, "register_photo", refuse_one)
    config = load(write_config(tmp_path))
    sessions = store.open_store(config.database.url)
    with ThreadPoolExecutor(2) as pool:
        ingestor = Ingestor(config, build_identifier(config), sessions, inbox, pool, after_actions=False)
        totals = ingestor.handle([str(p) for p in [*good, odd]])
    assert (totals["done"], totals["failed"]) == (2, 1), totals
    status, error = by_name(tmp_path)["bird.bmp"]
    assert status == "failed" and "could not be registered (UnicodeEncodeError" in error


def test_a_good_photo_whose_identical_copy_fails_for_a_passing_reason_is_still_classified(tmp_path, monkeypatch):
    """The first of two identical photos meets a passing error inside the models (injected twice:
    memory that was short a moment); its copy, registered as its duplicate, is processed and done."""
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    first = copy_photo(HERON[0].name, inbox, "first.jpg")
    second = copy_photo(HERON[0].name, inbox, "second.jpg")
    other = copy_photo(HERON[1].name, inbox)
    config = load(write_config(tmp_path))
    identifier = build_identifier(config)
    real = identifier._identify_one
    failures_left = [2]  # the batch call and the photo-by-photo call

    def short_of_memory_once(work, burst_key, thumbnail):
        if failures_left[0] and work.photo.original_size == _size_of(first):
            failures_left[0] -= 1
            raise MemoryError("cannot allocate 40 MiB")
        return real(work, burst_key, thumbnail)

    monkeypatch.setattr(identifier, "_identify_one", short_of_memory_once)
    sessions = store.open_store(config.database.url)
    with ThreadPoolExecutor(2) as pool:
        ingestor = Ingestor(config, identifier, sessions, inbox, pool, after_actions=False)
        totals = ingestor.handle([str(p) for p in [first, second, other]])
    outcome = by_name(tmp_path)
    assert outcome["first.jpg"][0] == "failed" and "MemoryError" in outcome["first.jpg"][1]
    assert outcome["second.jpg"] == ("done", None), outcome
    assert outcome[other.name][0] == "done"
    assert (totals["done"], totals["failed"], totals["duplicate"]) == (2, 1, 0), totals


def _size_of(path: Path) -> tuple[int, int]:
    from PIL import Image

    with Image.open(path) as image:
        return image.size
