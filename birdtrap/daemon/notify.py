"""Notifications per event (never per frame): MQTT (with Home Assistant discovery), a webhook and
Apprise (one URL per service: Telegram, ntfy, Pushover, e-mail, Discord ...).

Delivery goes through an outbox table: the notification is written in the same transaction as
the event it announces, and a sender thread delivers it with retries and back-off. The pipeline
never waits on the network, and a restart or a broker that is down loses nothing.
"""

from __future__ import annotations

import json
import logging
import threading
from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from birdtrap.config import NotifySettings
from birdtrap.errors import BirdtrapError
from birdtrap.store import KIND_BIRD, EventRecord, ImageRecord, OutboxRecord, utcnow

log = logging.getLogger(__name__)

MQTT, WEBHOOK, APPRISE = "mqtt", "webhook", "apprise"


def channels(settings: NotifySettings) -> list[str]:
    """The outbox channels: one per Apprise URL, so a retry goes only to the service that failed."""
    named = [name for name, on in ((MQTT, settings.mqtt.host), (WEBHOOK, settings.webhook.url)) if on]
    return named + [f"{APPRISE}-{i}" for i in range(len(settings.apprise.urls))]


def _best_photo(session: Session, event: EventRecord) -> int | None:
    """The event's surest bird photo (else its first photo): the one a notification links to."""
    query = select(ImageRecord.id).where(ImageRecord.event_id == event.id)
    ordered = query.order_by((ImageRecord.kind == KIND_BIRD).desc(), ImageRecord.confidence.desc(), ImageRecord.id)
    return session.scalar(ordered.limit(1))


def payload(event: EventRecord, session: Session | None = None, public_url: str | None = None) -> dict[str, Any]:
    """The message every channel sends. With `public_url` (notify.public_url) it links the event
    page and its best photo, so a phone can show the bird (issue 18)."""
    links: dict[str, Any] = {}
    if public_url and session is not None:
        base = public_url.rstrip("/")
        photo = _best_photo(session, event)
        links = {
            "event_url": f"{base}/events/{event.id}",
            "image_url": f"{base}/api/v1/photos/{photo}/thumbnail?size=640" if photo is not None else None,
        }
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
        **links,
    }


def _matches(event: EventRecord, prefixes: tuple[str, ...]) -> bool:
    names = [n.lower() for n in (event.scientific_name, event.common_name) if n]
    return any(name.startswith(prefix.lower()) for name in names for prefix in prefixes)


def _wanted_now(event: EventRecord, settings: NotifySettings) -> bool:
    # At send time only the event's own filters are checked again ("first of the season" was
    # decided when it was queued).
    if event.kind != KIND_BIRD or (event.confidence or 0.0) < settings.min_confidence:
        return False
    if settings.exclude_species and _matches(event, settings.exclude_species):
        return False
    return not settings.species or _matches(event, settings.species)


def _wanted(session: Session, event: EventRecord, settings: NotifySettings) -> bool:
    if not _wanted_now(event, settings):
        return False
    # Novelty: each rule names the window in which an earlier event of the species makes this
    # one old news; the event is wanted only if every window is empty.
    windows: list[datetime | None] = []
    if settings.only_first == "day":
        windows.append(datetime(event.start.year, event.start.month, event.start.day))
    elif settings.only_first == "season":
        windows.append(datetime(event.start.year, 1, 1))
    elif settings.only_first == "ever":
        windows.append(None)
    if settings.not_seen_days is not None:
        windows.append(event.start - timedelta(days=settings.not_seen_days))
    for since in windows:
        earlier = select(EventRecord.id).where(
            EventRecord.kind == KIND_BIRD,
            EventRecord.scientific_name == event.scientific_name,
            EventRecord.start < event.start,
            EventRecord.id != event.id,
        )
        if since is not None:
            earlier = earlier.where(EventRecord.start >= since)
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
                message = payload(event, session, settings.public_url)
                session.add(OutboxRecord(event_id=event.id, channel=channel, payload=json.dumps(message), next_attempt_at=due))
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
        # Imported here: urllib.request brings http.client and email, ~2 MB resident in every
        # daemon, most of which never sends a webhook (bench/README.md, "Memory").
        import urllib.error
        import urllib.request

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


class AppriseChannel:
    """One Apprise URL (a service: Telegram, ntfy, Pushover, e-mail ...); Apprise does the talking."""

    def __init__(self, url: str, index: int) -> None:
        try:
            import apprise
        except ImportError:
            raise BirdtrapError("notify.apprise.urls is set but apprise is not installed; run `pip install 'birdtrap[notify]'`.") from None
        self.where = f"notify.apprise.urls[{index}]"  # the URL itself holds tokens: never logged
        self.apprise = apprise.Apprise()
        if not self.apprise.add(url):
            raise BirdtrapError(
                f"{self.where} is not a URL Apprise knows (e.g. tgram://bottoken/chatid, ntfys://topic); "
                "see https://github.com/caronc/apprise/wiki and fix it in the config."
            )

    def send(self, message: dict[str, Any]) -> None:
        name = message.get("common_name") or message.get("scientific_name") or "a bird"
        lines = [
            f"{name} ({message.get('scientific_name') or '-'}), {round(100 * (message.get('confidence') or 0))}% sure",
            f"{message.get('photos')} photos from {message.get('start')}",
        ]
        lines += [message[key] for key in ("event_url", "image_url") if message.get(key)]
        if not self.apprise.notify(title=f"birdtrap {message.get('camera')}: {name}", body="\n".join(lines)):
            raise BirdtrapError(f"Apprise could not deliver to {self.where} (its log line above says why)")

    def close(self) -> None:
        pass


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
        for i, url in enumerate(settings.apprise.urls):
            self.channels[f"{APPRISE}-{i}"] = AppriseChannel(url, i)

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
                    message = payload(event, session, self.settings.public_url) if event is not None else None
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

