"""Notifications per event (never per frame): MQTT (with Home Assistant discovery) and a webhook.

Delivery goes through an outbox table: the notification is written in the same transaction as
the event it announces, and a sender thread delivers it with retries and back-off. The pipeline
never waits on the network, and a restart or a broker that is down loses nothing.
"""

from __future__ import annotations

import json
import logging
import threading
import urllib.error
import urllib.request
from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from birdtrap.config import NotifySettings
from birdtrap.errors import BirdtrapError
from birdtrap.store import KIND_BIRD, EventRecord, OutboxRecord, utcnow

log = logging.getLogger(__name__)

MQTT, WEBHOOK = "mqtt", "webhook"


def channels(settings: NotifySettings) -> list[str]:
    return [name for name, on in ((MQTT, settings.mqtt.host), (WEBHOOK, settings.webhook.url)) if on]


def payload(event: EventRecord) -> dict[str, Any]:
    return {
        "event": event.id,
        "camera": event.camera_id,
        "deployment": event.deployment_id,
        "start": event.start.isoformat(),
        "end": event.end.isoformat(),
        "photos": event.photo_count,
        "bird_photos": event.bird_photo_count,
        "scientific_name": event.scientific_name,
        "common_name": event.common_name,
        "taxon_rank": event.taxon_rank,
        "confidence": round(event.confidence or 0.0, 4),
    }


def _wanted_now(event: EventRecord, settings: NotifySettings) -> bool:
    # At send time only the event's own filters are checked again ("first of the season" was
    # decided when it was queued).
    if event.kind != KIND_BIRD or (event.confidence or 0.0) < settings.min_confidence:
        return False
    if settings.species:
        names = [n.lower() for n in (event.scientific_name, event.common_name) if n]
        return any(name.startswith(prefix.lower()) for name in names for prefix in settings.species)
    return True


def _wanted(session: Session, event: EventRecord, settings: NotifySettings) -> bool:
    if not _wanted_now(event, settings):
        return False
    if settings.only_first != "none":
        earlier = select(EventRecord.id).where(
            EventRecord.kind == KIND_BIRD,
            EventRecord.scientific_name == event.scientific_name,
            EventRecord.start < event.start,
        )
        if settings.only_first == "season":
            earlier = earlier.where(EventRecord.start >= datetime(event.start.year, 1, 1))
        if session.scalar(earlier.limit(1)) is not None:
            return False
    return True


def enqueue(session: Session, events: list[EventRecord], settings: NotifySettings) -> int:
    """Queue a notification per wanted bird event and channel (once each); returns how many."""
    wanted_channels = channels(settings)
    if not wanted_channels:
        return 0
    queued = 0
    for event in events:
        if not _wanted(session, event, settings):
            continue
        for channel in wanted_channels:
            exists = session.scalar(select(OutboxRecord.id).where(OutboxRecord.event_id == event.id, OutboxRecord.channel == channel))
            if exists is None:
                due = utcnow() + timedelta(seconds=settings.quiet_seconds)
                session.add(OutboxRecord(event_id=event.id, channel=channel, payload=json.dumps(payload(event)), next_attempt_at=due))
                queued += 1
    session.flush()
    return queued


class Channel(Protocol):
    def send(self, message: dict[str, Any]) -> None: ...

    def close(self) -> None: ...


class WebhookChannel:
    def __init__(self, url: str, timeout: float, headers: dict[str, str]) -> None:
        self.url, self.timeout, self.headers = url, timeout, headers

    def send(self, message: dict[str, Any]) -> None:
        request = urllib.request.Request(
            self.url,
            data=json.dumps(message).encode(),
            headers={"Content-Type": "application/json", "User-Agent": "birdtrap", **self.headers},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310 - the user's URL
                if response.status >= 300:
                    raise BirdtrapError(f"webhook {self.url} answered HTTP {response.status}")
        except urllib.error.HTTPError as e:
            raise BirdtrapError(f"webhook {self.url} answered HTTP {e.code}") from None
        except (urllib.error.URLError, OSError) as e:
            raise BirdtrapError(f"webhook {self.url} is unreachable ({getattr(e, 'reason', e)})") from None

    def close(self) -> None:
        pass


class MqttChannel:
    """Publishes events (QoS 1) and, once per connection, a Home Assistant discovery config."""

    def __init__(self, settings: NotifySettings) -> None:
        try:
            import paho.mqtt.client as mqtt
        except ImportError:
            raise BirdtrapError("notify.mqtt.host is set but paho-mqtt is not installed; run `pip install 'birdtrap[notify]'`.") from None
        self.settings = settings.mqtt
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"birdtrap-{id(self):x}")
        if self.settings.username:
            self.client.username_pw_set(self.settings.username, self.settings.password)
        if self.settings.tls:
            self.client.tls_set()
        self.connected = False
        self.announced: set[str] = set()

    def _connect(self) -> None:
        if self.connected:
            return
        try:
            self.client.connect(self.settings.host, self.settings.port, keepalive=60)
        except OSError as e:
            raise BirdtrapError(f"MQTT broker {self.settings.host}:{self.settings.port} is unreachable ({e})") from None
        self.client.loop_start()
        self.connected = True
        self.announced.clear()

    def _announce(self, camera: str) -> None:
        if not self.settings.homeassistant_discovery or camera in self.announced:
            return
        node = "".join(c if c.isalnum() else "_" for c in camera)
        config = {
            "name": f"birdtrap {camera} last bird",
            "unique_id": f"birdtrap_{node}_last_bird",
            "state_topic": f"{self.settings.topic_prefix}/{camera}/event",
            "value_template": "{{ value_json.common_name or value_json.scientific_name }}",
            "json_attributes_topic": f"{self.settings.topic_prefix}/{camera}/event",
            "icon": "mdi:bird",
        }
        self._publish(f"homeassistant/sensor/birdtrap_{node}/last_bird/config", config, retain=True)
        self.announced.add(camera)

    def _publish(self, topic: str, message: dict[str, Any], retain: bool = False) -> None:
        info = self.client.publish(topic, json.dumps(message), qos=1, retain=retain)
        info.wait_for_publish(timeout=10)
        if not info.is_published():
            self.close()
            raise BirdtrapError(f"MQTT broker {self.settings.host} did not acknowledge {topic}")

    def send(self, message: dict[str, Any]) -> None:
        self._connect()
        if message.get("type") == "camera_health":  # daemon/health.py: not an event
            self._publish(f"{self.settings.topic_prefix}/{message['camera']}/health", message)
            return
        self._announce(message["camera"])
        self._publish(f"{self.settings.topic_prefix}/{message['camera']}/event", message)

    def close(self) -> None:
        if self.connected:
            self.client.loop_stop()
            self.client.disconnect()
            self.connected = False


def backoff(attempts: int) -> timedelta:
    """5 s, 10 s, 20 s ... capped at an hour."""
    return timedelta(seconds=min(3600, 5 * 2 ** max(0, attempts - 1)))


class OutboxSender(threading.Thread):
    """Delivers due outbox rows in the background; the daemon's pipeline never waits on it."""

    def __init__(self, sessions: sessionmaker[Session], settings: NotifySettings, poll_seconds: float = 2.0) -> None:
        super().__init__(name="notify", daemon=True)
        self.sessions = sessions
        self.settings = settings
        self.poll_seconds = poll_seconds
        self.stop_event = threading.Event()
        self.wake = threading.Event()
        self.channels: dict[str, Channel] = {}
        if settings.mqtt.host:
            self.channels[MQTT] = MqttChannel(settings)
        if settings.webhook.url:
            self.channels[WEBHOOK] = WebhookChannel(settings.webhook.url, settings.webhook.timeout_seconds, settings.webhook.headers)

    def stop(self) -> None:
        self.stop_event.set()
        self.wake.set()
        self.join(timeout=15)
        for channel in self.channels.values():
            channel.close()

    def run(self) -> None:
        while not self.stop_event.is_set():
            try:
                self.deliver_due()
            except Exception:  # noqa: BLE001 - the sender must outlive any one failure
                log.exception("notification sender failed; retrying")
            self.wake.wait(self.poll_seconds)
            self.wake.clear()

    def deliver_due(self) -> int:
        """Send every due notification once; returns how many were sent."""
        with self.sessions() as session:
            due = list(
                session.scalars(
                    select(OutboxRecord)
                    .where(OutboxRecord.sent_at.is_(None), OutboxRecord.next_attempt_at <= utcnow())
                    .where(OutboxRecord.attempts < self.settings.max_attempts)
                    .order_by(OutboxRecord.id)
                    .limit(50)
                )
            )
        sent = 0
        for row in due:
            if self.stop_event.is_set():
                break
            if row.event_id < 0:  # a camera health notice (daemon/health.py): sent as queued
                message, wanted = json.loads(row.payload), True
            else:  # the event as it stands now: the burst may have grown since it was queued
                with self.sessions() as session:
                    event = session.get(EventRecord, row.event_id)
                    message = payload(event) if event is not None else None
                    wanted = event is not None and _wanted_now(event, self.settings)
            if message is None or not wanted:
                with self.sessions.begin() as session:
                    record = session.get(OutboxRecord, row.id)
                    record.sent_at = utcnow()
                    record.last_error = "not sent: the event was merged into another" if message is None else "not sent: no longer wanted"
                continue
            channel = self.channels.get(row.channel)
            error = None
            if channel is None:
                error = f"channel {row.channel} is no longer configured"
            else:
                try:
                    channel.send(message)
                except BirdtrapError as e:
                    error = str(e)
            with self.sessions.begin() as session:
                record = session.get(OutboxRecord, row.id)
                record.attempts += 1
                record.payload = json.dumps(message)
                if error is None:
                    record.sent_at, record.last_error = utcnow(), None
                    sent += 1
                else:
                    record.last_error = error
                    record.next_attempt_at = utcnow() + backoff(record.attempts)
                    log.warning("notification for event %d via %s failed (%s); retrying in %s", row.event_id, row.channel, error,
                                backoff(record.attempts))
        if sent:
            log.info("sent %d notifications", sent)
        return sent

