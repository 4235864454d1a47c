"""Notifications per event: a real mosquitto broker, a real HTTP receiver, an outbox that survives."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import threading
import time
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from birdtrap import store
from birdtrap.config import NotifySettings
from birdtrap.daemon import notify
from birdtrap.errors import BirdtrapError

from conftest import HERON, copy_photo, rows, wait_for, write_config


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Receiver:
    """A local webhook receiver that records every JSON body posted to it."""

    def __init__(self, port: int) -> None:
        self.bodies: list[dict] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                length = int(self.headers["Content-Length"])
                outer.bodies.append(json.loads(self.rfile.read(length)))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def broker(tmp_path):
    binary = shutil.which("mosquitto") or next((p for p in ("/usr/sbin/mosquitto",) if Path(p).exists()), None)
    if binary is None:
        pytest.skip("mosquitto is not installed (apt-get install mosquitto)")
    port = free_port()
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
    process = subprocess.Popen([binary, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    wait_for(lambda: _accepts(port), timeout=20, what="mosquitto to listen")
    yield port
    process.terminate()
    process.wait(10)


def _accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        return True
    except OSError:
        return False


def subscribe(port: int, topic: str) -> list[tuple[str, dict, bool]]:
    import paho.mqtt.client as mqtt

    received: list[tuple[str, dict, bool]] = []
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    client.on_message = lambda _c, _u, message: received.append((message.topic, json.loads(message.payload), message.retain))
    client.connect("127.0.0.1", port)
    client.subscribe(topic, qos=1)
    client.loop_start()
    time.sleep(0.3)
    return received


def test_one_event_gives_one_mqtt_message_one_webhook_and_a_home_assistant_sensor(tmp_path, daemon_factory, broker):
    receiver = Receiver(free_port())
    messages = subscribe(broker, "#")
    config = write_config(
        tmp_path,
        camera={"id": "pond"},
        notify={
            "mqtt": {"host": "127.0.0.1", "port": broker},
            "webhook": {"url": f"http://127.0.0.1:{receiver.server.server_port}/hook"},
            "quiet_seconds": 4,
        },
    )
    for path in HERON:
        copy_photo(path.name, tmp_path / "inbox")
    daemon = daemon_factory(config)
    try:
        wait_for(lambda: len([r for r in rows(tmp_path) if r[1] == "done"]) >= 10, timeout=90, what="the heron burst")
        wait_for(lambda: receiver.bodies and any(t == "birdtrap/pond/event" for t, _, _ in messages), timeout=60, what="both notifications")
        time.sleep(3)  # anything further would be a duplicate
    finally:
        daemon.stop()
        receiver.close()
    events = rows(tmp_path, "select id, scientific_name from events where kind = 'bird'")
    assert len(events) == 1
    assert len(receiver.bodies) == 1 and receiver.bodies[0]["event"] == events[0][0]
    assert receiver.bodies[0]["photos"] == 10 and receiver.bodies[0]["scientific_name"] == events[0][1]
    published = [payload for topic, payload, _ in messages if topic == "birdtrap/pond/event"]
    assert published == receiver.bodies
    discovery = [(payload, retain) for topic, payload, retain in messages if topic.startswith("homeassistant/sensor/")]
    assert discovery and discovery[0][0]["state_topic"] == "birdtrap/pond/event"


def test_a_webhook_that_is_down_gets_the_notification_after_a_restart_exactly_once(tmp_path, daemon_factory):
    port = free_port()  # nothing listens yet
    config = write_config(tmp_path, notify={"webhook": {"url": f"http://127.0.0.1:{port}/hook", "timeout_seconds": 2}, "quiet_seconds": 0})
    for path in HERON[:3]:
        copy_photo(path.name, tmp_path / "inbox")
    daemon = daemon_factory(config)
    wait_for(lambda: rows(tmp_path, "select last_error from outbox where last_error is not null"), timeout=90, what="a failed send")
    daemon.stop()
    assert rows(tmp_path, "select count(*) from outbox where sent_at is null") == [(1,)]
    # Due again at once (the back-off would otherwise make the test wait).
    import sqlite3

    with sqlite3.connect(tmp_path / "birdtrap.db") as connection:
        connection.execute("update outbox set next_attempt_at = '2000-01-01 00:00:00'")
    receiver = Receiver(port)
    try:
        restarted = daemon_factory(config)
        wait_for(lambda: receiver.bodies, timeout=60, what="the delayed notification")
        time.sleep(3)
        restarted.stop()
    finally:
        receiver.close()
    assert len(receiver.bodies) == 1
    assert rows(tmp_path, "select count(*) from outbox where sent_at is not null") == [(1,)]


def _event(session, species: str, when: datetime, confidence: float = 0.9) -> store.EventRecord:
    event = store.EventRecord(
        camera_id="cam", start=when, end=when, photo_count=1, bird_photo_count=1, kind="bird",
        label=species, scientific_name=species, common_name=None, taxon_rank="species", confidence=confidence,
    )  # fmt: skip
    session.add(event)
    session.flush()
    return event


def test_filters_species_confidence_and_first_of_the_season(tmp_path):
    sessions = store.open_store(f"sqlite:///{tmp_path / 'n.db'}")
    hook = {"webhook": {"url": "http://127.0.0.1:9/hook"}}
    with sessions.begin() as session:
        heron = _event(session, "Ardea cinerea", datetime(2024, 5, 1, 6))
        owl = _event(session, "Athene cunicularia", datetime(2024, 5, 1, 7), confidence=0.55)
        assert notify.enqueue(session, [heron, owl], NotifySettings(**hook, species=("ardea",))) == 1
        assert notify.enqueue(session, [heron, owl], NotifySettings(**hook, min_confidence=0.6)) == 0  # heron already queued
        assert notify.enqueue(session, [owl], NotifySettings(**hook, min_confidence=0.6)) == 0
        first = NotifySettings(**hook, only_first="season")
        later = _event(session, "Ardea cinerea", datetime(2024, 8, 1, 6))
        next_year = _event(session, "Ardea cinerea", datetime(2025, 3, 1, 6))
        assert notify.enqueue(session, [later], first) == 0
        assert notify.enqueue(session, [next_year], first) == 1
        assert notify.enqueue(session, [later], NotifySettings(**hook, only_first="ever")) == 0  # a heron came before


def test_back_off_grows_and_is_capped():
    assert notify.backoff(1) == timedelta(seconds=5)
    assert notify.backoff(3) == timedelta(seconds=20)
    assert notify.backoff(40) == timedelta(hours=1)


def _photo(session, event: store.EventRecord, name: str, confidence: float, kind: str = "bird") -> store.ImageRecord:
    image = store.ImageRecord(
        path=f"/srv/inbox/{name}", sha256=name.ljust(64, "0")[:64], camera_id=event.camera_id, status="done", kind=kind,
        confidence=confidence, event_id=event.id, captured_at=event.start,
    )  # fmt: skip
    session.add(image)
    session.flush()
    return image


def test_apprise_delivers_an_event_to_a_real_local_json_target_with_the_photo_link(tmp_path):
    """Apprise's own json:// service posting to a receiver on loopback: the real library, no network."""
    receiver = Receiver(free_port())
    settings = NotifySettings(
        apprise={"urls": (f"json://127.0.0.1:{receiver.server.server_port}/birds",)}, public_url="http://birdtrap.local:8080",
        quiet_seconds=0,
    )  # fmt: skip
    sessions = store.open_store(f"sqlite:///{tmp_path / 'n.db'}")
    with sessions.begin() as session:
        heron = _event(session, "Ardea cinerea", datetime(2024, 5, 1, 6))
        heron.common_name = "Grey Heron"
        _photo(session, heron, "a.jpg", 0.7)
        best = _photo(session, heron, "b.jpg", 0.95)
        assert notify.enqueue(session, [heron], settings) == 1
    sender = notify.OutboxSender(sessions, settings)
    try:
        assert sender.deliver_due() == 1
    finally:
        receiver.close()
    (body,) = receiver.bodies
    assert body["title"] == "birdtrap cam: Grey Heron"
    assert f"http://birdtrap.local:8080/api/v1/photos/{best.id}/thumbnail?size=640" in body["message"]
    assert f"http://birdtrap.local:8080/events/{heron.id}" in body["message"]
    import sqlite3

    with sqlite3.connect(tmp_path / "n.db") as db:
        assert db.execute("select channel, sent_at is not null, last_error from outbox").fetchall() == [("apprise-0", 1, None)]


def test_an_apprise_target_that_is_down_is_retried_and_its_url_never_logged(tmp_path, caplog):
    port = free_port()  # nothing listens
    settings = NotifySettings(apprise={"urls": (f"json://secret-token@127.0.0.1:{port}/birds",)}, quiet_seconds=0)
    sessions = store.open_store(f"sqlite:///{tmp_path / 'n.db'}")
    with sessions.begin() as session:
        notify.enqueue(session, [_event(session, "Ardea cinerea", datetime(2024, 5, 1, 6))], settings)
    assert notify.OutboxSender(sessions, settings).deliver_due() == 0
    import sqlite3

    with sqlite3.connect(tmp_path / "n.db") as db:
        ((attempts, error, sent),) = db.execute("select attempts, last_error, sent_at from outbox").fetchall()
    assert (attempts, sent) == (1, None)
    assert error == "Apprise could not deliver to notify.apprise.urls[0] (its log line above says why)"
    assert "secret-token" not in " ".join(r.getMessage() for r in caplog.records if r.name.startswith("birdtrap"))


def test_an_url_apprise_does_not_know_is_refused_naming_the_key():
    with pytest.raises(BirdtrapError, match=r"notify\.apprise\.urls\[0\] is not a URL Apprise knows"):
        notify.AppriseChannel("nosuchservice://x", 0)


def test_the_webhook_and_mqtt_message_carry_the_event_id_and_the_best_photos_url(tmp_path):
    sessions = store.open_store(f"sqlite:///{tmp_path / 'n.db'}")
    with sessions.begin() as session:
        heron = _event(session, "Ardea cinerea", datetime(2024, 5, 1, 6))
        _photo(session, heron, "empty.jpg", 0.99, kind="empty")
        best = _photo(session, heron, "bird.jpg", 0.8)
        message = notify.payload(heron, session, "https://pond.example.org/")
        assert message["event"] == heron.id
        assert message["image_url"] == f"https://pond.example.org/api/v1/photos/{best.id}/thumbnail?size=640"
        assert message["event_url"] == f"https://pond.example.org/events/{heron.id}"
        assert "image_url" not in notify.payload(heron, session, None)


def test_novelty_first_of_the_day_not_seen_in_n_days_and_a_block_list(tmp_path):
    sessions = store.open_store(f"sqlite:///{tmp_path / 'n.db'}")
    hook = {"webhook": {"url": "http://127.0.0.1:9/hook"}}
    with sessions.begin() as session:
        morning = _event(session, "Ardea cinerea", datetime(2024, 5, 1, 6))
        noon = _event(session, "Ardea cinerea", datetime(2024, 5, 1, 12))
        next_day = _event(session, "Ardea cinerea", datetime(2024, 5, 2, 6))
        day = NotifySettings(**hook, only_first="day")
        assert notify.enqueue(session, [noon], day) == 0
        assert notify.enqueue(session, [morning, next_day], day) == 2
        returning = NotifySettings(**hook, not_seen_days=7)
        back = _event(session, "Ardea cinerea", datetime(2024, 5, 20, 6))
        soon = _event(session, "Ardea cinerea", datetime(2024, 5, 22, 6))
        assert notify.enqueue(session, [soon], returning) == 0  # seen two days before
        assert notify.enqueue(session, [back], returning) == 1  # 18 days without a heron
        sparrow = _event(session, "Passer domesticus", datetime(2024, 5, 1, 7))
        blocked = NotifySettings(**hook, exclude_species=("passer",))
        assert notify.enqueue(session, [sparrow], blocked) == 0
        assert notify.enqueue(session, [sparrow], NotifySettings(**hook, species=("passer", "ardea"), exclude_species=("ardea",))) == 1
