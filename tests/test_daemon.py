"""The daemon end to end: a real `birdtrap run` subprocess, a real folder, model and SQLite file."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import time
from datetime import datetime
from pathlib import Path

from conftest import HERON, INAT, DaemonProcess, copy_photo, photo, rows, wait_for, write_config


def done_count(tmp_path: Path) -> int:
    return len([r for r in rows(tmp_path) if r[1] != "pending"])


def test_photos_dropped_in_the_folder_become_sightings_with_exif_times_and_a_duplicate(tmp_path, daemon_factory):
    config = write_config(tmp_path)
    inbox = tmp_path / "inbox"
    daemon = daemon_factory(config)
    wait_for(lambda: "watching" in daemon.output(), what="the daemon to start")

    for source in HERON[:4]:
        copy_photo(source.name, inbox)
    # One photo written slowly, in chunks, as a camera over USB would.
    data = photo("bird.bmp").read_bytes()
    slow = inbox / "slow_chickadee.bmp"
    with slow.open("wb") as handle:
        for start in range(0, len(data), len(data) // 5):
            handle.write(data[start : start + len(data) // 5])
            handle.flush()
            time.sleep(0.25)
    # The same content under a second name.
    shutil.copyfile(photo("bird.bmp"), inbox / "same_bird_again.bmp")

    wait_for(lambda: done_count(tmp_path) >= 6, timeout=60, what="six photos processed")
    daemon.stop()
    recorded = {Path(r[0]).name: r for r in rows(tmp_path)}
    assert len(recorded) == 6, recorded
    assert recorded["slow_chickadee.bmp"][1] == "done"
    assert recorded["slow_chickadee.bmp"][3].startswith("Poecile atricapillus")
    assert recorded["same_bird_again.bmp"][1] == "duplicate"

    labels = set((INAT / "labels.txt").read_text().splitlines())
    stored = rows(tmp_path, "select label, confidence from predictions")
    assert stored and all(label in labels for label, _ in stored)
    assert all(0 < confidence <= 1 for _, confidence in stored)

    times = rows(tmp_path, "select path, captured_at, captured_at_source from images where path like '%RCNX%' order by path")
    assert [source for _, _, source in times] == ["exif_original"] * 4
    captured = [datetime.fromisoformat(value) for _, value, _ in times]
    assert captured[0] == datetime(2021, 4, 11, 20, 43, 9)
    assert all(datetime(2021, 4, 11, 20, 43, 9) <= c <= datetime(2021, 4, 11, 20, 43, 15) for c in captured)


def test_broken_files_are_recorded_as_failed_and_good_photos_beside_them_are_processed(tmp_path, daemon_factory):
    config = write_config(tmp_path)
    inbox = tmp_path / "inbox"
    (inbox / "zero.jpg").write_bytes(b"")
    whole = photo("IMG_0708.JPG").read_bytes()
    (inbox / "truncated.jpg").write_bytes(whole[: len(whole) // 3])
    (inbox / "text.jpg").write_text("this is not a photo\n")
    copy_photo("bird.bmp", inbox)
    daemon = daemon_factory(config)
    wait_for(lambda: done_count(tmp_path) >= 4, timeout=60, what="four photos recorded")
    copy_photo(HERON[0].name, inbox)  # still running after the bad ones
    wait_for(lambda: done_count(tmp_path) >= 5, timeout=60, what="a photo after the bad ones")
    assert daemon.alive()
    daemon.stop()
    recorded = {Path(r[0]).name: r for r in rows(tmp_path)}
    assert recorded["zero.jpg"][1] == "failed" and "is empty" in recorded["zero.jpg"][5]
    assert recorded["truncated.jpg"][1] == "failed" and "truncated JPEG" in recorded["truncated.jpg"][5]
    assert recorded["text.jpg"][1] == "failed" and "not a readable image" in recorded["text.jpg"][5]
    assert recorded["bird.bmp"][1] == "done"
    assert recorded[HERON[0].name][1] == "done"


def test_sigkill_in_a_flood_then_restart_records_every_photo_exactly_once(tmp_path, daemon_factory):
    config = write_config(tmp_path, batch={"size": 4, "max_wait_seconds": 0.2})
    inbox = tmp_path / "inbox"
    sources = [*HERON, photo("bird.bmp"), *sorted((photo("IMG_0708.JPG").parent).glob("*.JPG"))]
    daemon = daemon_factory(config)
    wait_for(lambda: "watching" in daemon.output(), what="the daemon to start")
    expected = 0
    for round_number in range(3):
        for source in sources:
            # Each copy gets its own content (a trailing comment byte string) so none is a duplicate.
            data = source.read_bytes() + f"flood {round_number}".encode()
            (inbox / f"r{round_number}_{source.name}").write_bytes(data)
            expected += 1
    wait_for(lambda: done_count(tmp_path) >= 5, timeout=60, what="the flood to start draining")
    daemon.process.kill()
    daemon.process.wait()
    assert done_count(tmp_path) < expected, "the kill came too late to test anything"

    restarted = daemon_factory(config)
    wait_for(lambda: done_count(tmp_path) >= expected, timeout=120, what="every photo after the restart")
    restarted.stop()
    recorded = rows(tmp_path, "select path, status from images")
    paths = [path for path, _ in recorded]
    assert len(paths) == len(set(paths)) == expected
    assert {status for _, status in recorded} <= {"done", "failed"}
    assert not [p for p, s in recorded if s == "pending"]


def test_systemd_hears_ready_watchdog_and_status_on_its_notify_socket(tmp_path, daemon_factory):
    config = write_config(tmp_path)
    address = str(tmp_path / "notify.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(address)
    listener.settimeout(1.0)
    copy_photo("bird.bmp", tmp_path / "inbox")
    daemon = daemon_factory(config, env={"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "3000000"})
    messages: list[str] = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (
        any("READY=1" in m for m in messages) and any("WATCHDOG=1" in m for m in messages) and any("done 1" in m for m in messages)
    ):
        try:
            messages.append(listener.recv(4096).decode())
        except TimeoutError:
            pass
    daemon.stop()
    while True:
        try:
            messages.append(listener.recv(4096).decode())
        except (TimeoutError, BlockingIOError):
            break
    listener.close()
    ready = [m for m in messages if "READY=1" in m]
    assert ready, messages
    assert "STATUS=" in ready[0]
    assert any("WATCHDOG=1" in m for m in messages)
    assert any("STATUS=" in m and "done 1" in m for m in messages)
    assert any("STOPPING=1" in m for m in messages)


def test_sigterm_stops_cleanly_with_nothing_left_pending(tmp_path, daemon_factory):
    config = write_config(tmp_path)
    for source in HERON:
        copy_photo(source.name, tmp_path / "inbox")
    daemon = daemon_factory(config)
    wait_for(lambda: done_count(tmp_path) >= 1, timeout=60, what="processing to start")
    assert daemon.stop(signal.SIGTERM) == 0
    assert "stopped:" in daemon.output()
    statuses = [r[1] for r in rows(tmp_path)]
    assert "pending" not in statuses


def test_a_missing_watch_folder_stops_the_daemon_with_the_key_and_the_fix(tmp_path, daemon_factory):
    config = write_config(tmp_path, watch={"folder": "no-such-folder"})
    daemon = daemon_factory(config)
    assert daemon.process.wait(60) == 1
    output = daemon.output()
    assert "watch.folder" in output and "no-such-folder" in output and "does not exist" in output
    assert os.fspath(config) in output


def test_processed_photos_are_archived_and_only_blank_frames_go_to_the_empty_folder(tmp_path, daemon_factory):
    for name in ("archive", "empty", "quarantine"):
        (tmp_path / name).mkdir()
    config = write_config(
        tmp_path,
        after={
            "action": "move",
            "archive_folder": "archive",
            "empty_action": "move",
            "empty_folder": "empty",
            "quarantine_folder": "quarantine",
        },
        # The shipped COCO SSD boxes something at 0.39-0.62 on every truly empty frame, so at the
        # default (0.2) nothing is blank; at 0.5 the empty frame is, and the cougar (a 0.59 box) is not.
        finder={"blank_max_box_score": 0.5},
    )
    inbox = tmp_path / "inbox"
    copy_photo("bird.bmp", inbox)
    copy_photo("B013_IMG_0005_empty.jpeg", inbox)
    copy_photo("2021-06-30_SYFR0218_cougar.JPG", inbox)
    (inbox / "broken.jpg").write_text("not a photo")
    daemon = daemon_factory(config)
    wait_for(lambda: done_count(tmp_path) >= 4, timeout=60, what="four photos recorded")
    wait_for(lambda: not any(inbox.iterdir()), timeout=10, what="the inbox to empty")
    daemon.stop()
    kinds = dict(rows(tmp_path, "select path, kind from images where status = 'done'"))
    assert {Path(p).name: k for p, k in kinds.items()} == {
        "bird.bmp": "bird", "B013_IMG_0005_empty.jpeg": "blank", "2021-06-30_SYFR0218_cougar.JPG": "unsure",
    }
    assert (tmp_path / "archive" / "bird.bmp").exists()
    assert (tmp_path / "empty" / "B013_IMG_0005_empty.jpeg").exists()
    # Something may be there: a person should look, so it is archived with the rest, never moved as empty.
    assert (tmp_path / "archive" / "2021-06-30_SYFR0218_cougar.JPG").exists()
    assert (tmp_path / "quarantine" / "broken.jpg").exists()
    archived = rows(tmp_path, "select archived_path from images where path like '%bird.bmp'")
    assert archived == [(str(tmp_path / "archive" / "bird.bmp"),)]


def test_run_serve_answers_the_api_from_the_daemons_process(tmp_path, daemon_factory):
    import json
    import socket
    import urllib.request

    import pytest

    pytest.importorskip("fastapi", reason="the web extra is not installed")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = write_config(tmp_path, serve={"port": port})
    copy_photo("bird.bmp", tmp_path / "inbox")
    daemon = DaemonProcess(config, extra_args=["--serve"])
    try:
        wait_for(lambda: done_count(tmp_path) >= 1, timeout=90, what="the photo")

        def health() -> dict | None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/health", timeout=5) as response:
                    return json.load(response)
            except OSError:
                return None

        answer = wait_for(health, timeout=60, what="the API to answer")
        assert answer
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/sightings", timeout=10) as response:
            assert "Poecile atricapillus" in response.read().decode()
    finally:
        assert daemon.stop() == 0


def test_a_backlog_comes_out_of_the_settle_tracker_oldest_first(tmp_path):
    # Camera-trap frames of a burst must reach the identifier together and in order (motion
    # compares a frame with its burst), whatever order the folder listing gives.
    from birdtrap.daemon.watcher import SettleTracker

    tracker = SettleTracker(settle_seconds=0.5)
    names = ["c.jpg", "a.jpg", "e.jpg", "b.jpg", "d.jpg"]
    written = {"a.jpg": 50, "b.jpg": 10, "c.jpg": 40, "d.jpg": 10, "e.jpg": 20}  # seconds after a day's start
    for name in names:
        path = tmp_path / name
        path.write_bytes(b"x")
        os.utime(path, (1_700_000_000 + written[name],) * 2)
        tracker.touch(str(path), settled=True)
    assert [Path(p).name for p in tracker.due()] == ["b.jpg", "d.jpg", "e.jpg", "c.jpg", "a.jpg"]
