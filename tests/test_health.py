"""Camera health from the photos (issue 19): real photos made into each condition (fogged,
shifted, darkened, time-shifted copies of the heron burst) are found, the shared sets as they are
raise no alarm, and a real daemon reports a problem once (webhook, doctor, /metrics, STATUS=, the
web banner) and once more when it is resolved.
"""

from __future__ import annotations

import json
import socket
import sqlite3
import threading
import time
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image, ImageFilter

from birdtrap.cli import cli
from birdtrap.identify import health
from birdtrap.identify.preprocess import PreprocessSettings, load

from conftest import HERON, IMAGES, DaemonProcess, rows, wait_for, write_config

EXIF_IFD, DATE_TIME_ORIGINAL = 0x8769, 36867


class Receiver:
    """A local webhook receiver that keeps every JSON body posted to it."""

    def __init__(self) -> None:
        self.bodies: list[dict] = []
        bodies = self.bodies

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                bodies.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def fogged(rgb: Image.Image) -> Image.Image:
    """A lens behind fog or a spider web: detail gone, contrast washed towards grey."""
    blurred = np.asarray(rgb.filter(ImageFilter.GaussianBlur(max(2, rgb.width // 40)))).astype(np.float32)
    return Image.fromarray((0.4 * blurred + 0.6 * blurred.mean()).astype(np.uint8))


def shifted(rgb: Image.Image) -> Image.Image:
    """The camera turned on its strap: the scene slid a quarter of the frame sideways."""
    pixels = np.asarray(rgb)
    quarter = pixels.shape[1] // 4
    return Image.fromarray(np.ascontiguousarray(np.concatenate([pixels[:, quarter:], pixels[:, :quarter][:, ::-1]], axis=1)))


def darkened(rgb: Image.Image) -> Image.Image:
    """The infrared lamp died: a night frame comes out nearly black."""
    return Image.fromarray((np.asarray(rgb).astype(np.float32) * 0.03).astype(np.uint8))


def unchanged(rgb: Image.Image) -> Image.Image:
    return rgb


def made(source: Path, target: Path, condition, hours_ahead: float = 0.0, quality: int = 90) -> Path:
    """`source` made into `condition`, re-encoded (new content, so not a duplicate), EXIF kept;
    with `hours_ahead`, stamped that many hours after now (a clock set wrong)."""
    with Image.open(source) as image:
        exif = image.getexif()
        picture = condition(image.convert("RGB"))
    if hours_ahead:
        exif.get_ifd(EXIF_IFD)[DATE_TIME_ORIGINAL] = (datetime.now() + timedelta(hours=hours_ahead)).strftime("%Y:%m:%d %H:%M:%S")
    target.parent.mkdir(parents=True, exist_ok=True)
    picture.save(target, quality=quality, exif=exif)
    return target


def measured(path: Path) -> health.FrameMeasure:
    return health.measure(load(path, PreprocessSettings()))


def test_each_condition_made_from_real_photos_is_found_and_the_photos_as_they_were_are_not(tmp_path):
    rules = health.HealthSettings()
    history = [measured(path) for path in HERON[:-3]] + [measured(path) for path in HERON[:3]]  # ten frames of the burst
    last = HERON[-3:]

    def three(condition) -> list[health.FrameMeasure]:
        return [measured(made(path, tmp_path / condition.__name__ / path.name, condition)) for path in last]

    assert health.lens_blocked(three(fogged), history, rules) is True
    assert health.moved(three(shifted), history, rules) is True
    assert health.night_black(history + three(darkened), rules) is True
    clean = three(unchanged)
    assert health.lens_blocked(clean, history, rules) is False
    assert health.moved(clean, history, rules) is False
    assert health.lens_blocked(three(shifted), history, rules) is False
    assert health.night_black(history + clean, rules) is False


def test_no_alarm_over_the_shared_photo_sets_as_they_are():
    """Each folder of ../shared played as one camera, photo by photo, with the default rules and
    with eager ones (a verdict from 4 earlier frames)."""
    verdicts = 0
    for rules in (health.HealthSettings(), health.HealthSettings(min_history=4)):
        for folder in sorted({p.parent for p in IMAGES.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".bmp", ".png")}):
            frames = [measured(p) for p in sorted(folder.iterdir()) if p.suffix.lower() in (".jpg", ".jpeg", ".bmp", ".png")]
            for end in range(1, len(frames) + 1):
                seen = frames[:end]
                recent, reference = seen[-rules.confirm :], seen[: -rules.confirm]
                found = {
                    "blocked": health.lens_blocked(recent, reference, rules),
                    "moved": health.moved(recent, reference, rules),
                    "night black": health.night_black(seen, rules),
                }
                assert not any(found.values()), (folder.name, end, found)
                verdicts += sum(v is not None for v in found.values())
    assert verdicts >= 20  # the checks did judge: most folders are too mixed or too short to


def test_silence_is_judged_against_the_cameras_own_hours():
    rules = health.HealthSettings()
    # A feeder camera: a photo every 20 minutes from 06:00 to 20:00 for a week, nothing at night.
    start = datetime(2024, 5, 1, 6, 0)
    arrivals = [start + timedelta(days=d, minutes=20 * i) for d in range(7) for i in range(43)]
    last = arrivals[-1]  # 20:00 on the 7th day
    assert health.silent(arrivals, last + timedelta(hours=9), rules)[0] is False  # its usual night
    quiet, allowed = health.silent(arrivals[: -30], arrivals[-30] + timedelta(hours=7), rules)  # silent from 10:20
    assert quiet is True and allowed == timedelta(hours=6)
    assert health.silent(arrivals[:5], last, rules) is None  # too little history to say


def test_a_clock_set_wrong_is_found_and_a_copied_file_is_not_taken_for_one():
    rules = health.HealthSettings()
    now = datetime(2024, 6, 21, 12, 0)
    assert health.clock_drift(now + timedelta(hours=5), now, False, rules) == "photos are stamped 5.0 h after their files were written"
    assert health.clock_drift(now - timedelta(days=30), now, False, rules) is None  # copied a month later: file is newer
    # An infrared frame stamped at noon in Ghent in June (UTC+2, 10:00 UTC): the sun is 56 degrees up.
    said = health.clock_drift(now, None, True, rules, 51.05, 3.72, timedelta(hours=2))
    assert said is not None and said == "an infrared (night) frame is stamped 12:00, when the sun is 56 degrees up"
    assert health.clock_drift(now.replace(hour=23), None, True, rules, 51.05, 3.72, timedelta(hours=2)) is None


def record(folder: Path, config: Path) -> None:
    result = CliRunner().invoke(cli, ["classify", str(folder), "--record", "--config", str(config)])
    assert result.exit_code == 0, result.output


def problems(tmp_path: Path) -> list[tuple]:
    return rows(tmp_path, "select camera_id, \"check\", resolved_at is null from camera_problems order by id")


def test_time_shifted_photos_open_a_clock_problem_named_in_doctor(tmp_path):
    config = write_config(tmp_path)
    for path in HERON[:4]:
        made(path, tmp_path / "card" / path.name, unchanged, hours_ahead=5)
    record(tmp_path / "card", config)
    assert problems(tmp_path) == [("camera-1", "clock_drift", 1)]
    doctor = CliRunner().invoke(cli, ["doctor", "--config", str(config)])
    assert "camera camera-1" in doctor.output and "photos are stamped 5.0 h after their files were written" in doctor.output
    assert "set the camera's clock" in doctor.output


def test_a_real_daemon_reports_a_fogged_lens_once_everywhere_and_once_more_when_it_clears(tmp_path):
    receiver = Receiver()
    config = write_config(tmp_path, notify={"webhook": {"url": receiver.url}, "quiet_seconds": 0})
    address = str(tmp_path / "notify.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(address)
    listener.settimeout(0.5)
    daemon = DaemonProcess(config, env={"NOTIFY_SOCKET": address})
    inbox = tmp_path / "inbox"

    def done() -> int:
        return len([r for r in rows(tmp_path) if r[1] == "done"])

    def notices() -> list[dict]:
        return [body for body in receiver.bodies if body.get("type") == "camera_health"]

    try:
        for path in HERON:
            made(path, inbox / path.name, unchanged)
        wait_for(lambda: done() == len(HERON), timeout=120, what="the heron burst")
        assert problems(tmp_path) == []
        for path in HERON[:3]:
            made(path, inbox / f"fogged-{path.name}", fogged)
        wait_for(lambda: done() == len(HERON) + 3, timeout=120, what="the fogged frames")
        wait_for(lambda: len(notices()) == 1, timeout=60, what="the problem's notification")
        [notice] = notices()
        assert (notice["camera"], notice["check"], notice["status"]) == ("camera-1", "lens_blocked", "problem")
        assert problems(tmp_path) == [("camera-1", "lens_blocked", 1)]

        status = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not any("CAMERA camera-1 lens blocked" in m for m in status):
            try:
                status.append(listener.recv(4096).decode())
            except TimeoutError:
                pass
        assert any("CAMERA camera-1 lens blocked" in m for m in status), status[-3:]

        doctor = CliRunner().invoke(cli, ["doctor", "--config", str(config)])
        assert "the lens looks blocked or fogged" in doctor.output and "clean the lens" in doctor.output
        web = web_views(config)
        assert 'birdtrap_camera_problem{camera="camera-1",check="lens_blocked"} 1.0' in web["metrics"]
        assert "Camera camera-1: the lens looks blocked or fogged" in web["page"]

        for path in HERON[3:6]:  # the lens wiped: clear frames again
            made(path, inbox / f"wiped-{path.name}", unchanged, quality=85)  # not the copies above: new content
        wait_for(lambda: done() == len(HERON) + 6, timeout=120, what="the frames after wiping")
        wait_for(lambda: len(notices()) == 2, timeout=60, what="the resolution's notification")
        assert notices()[1]["status"] == "resolved" and notices()[1]["check"] == "lens_blocked"
        assert problems(tmp_path) == [("camera-1", "lens_blocked", 0)]
        assert "birdtrap_camera_problem{" not in web_views(config)["metrics"]
    finally:
        daemon.stop()
        receiver.close()
        listener.close()
    time.sleep(0.5)
    assert len(notices()) == 2  # once each, never repeated


def web_views(config: Path) -> dict[str, str]:
    pytest.importorskip("fastapi", reason="the web extra")
    from fastapi.testclient import TestClient

    from birdtrap import config as config_module
    from birdtrap.web import ServeSettings, create_app

    client = TestClient(create_app(config_module.load(config), ServeSettings()))
    return {"metrics": client.get("/metrics").text, "page": client.get("/").text}


def test_health_checks_can_be_switched_off(tmp_path):
    config = write_config(tmp_path, health={"enabled": False})
    for path in HERON[:4]:
        made(path, tmp_path / "card" / path.name, unchanged, hours_ahead=5)
    record(tmp_path / "card", config)
    assert problems(tmp_path) == []
    with sqlite3.connect(tmp_path / "birdtrap.db") as db:
        assert db.execute("select count(*) from images where scene is not null").fetchone() == (0,)
