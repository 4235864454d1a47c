"""`birdtrap serve`: the real server on a loopback port, the real model, a database the real daemon
filled from the heron burst and a burrowing owl.

Every endpoint and every error the issue names, a batch with one corrupt photo, a repeated photo
answered without invoking the model, paths outside the folders refused, and schemathesis against
the served OpenAPI document.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta
from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="birdtrap serve needs the web extra: pip install -e '.[web]'")
httpx = pytest.importorskip("httpx")

import cv2  # noqa: E402
import numpy as np  # noqa: E402
from click.testing import CliRunner  # noqa: E402
from PIL import Image  # noqa: E402

from birdtrap import config as config_module  # noqa: E402
from birdtrap.cli import cli  # noqa: E402
from birdtrap.daemon.wiring import build_identifier  # noqa: E402
from birdtrap.web import ServeSettings, create_app  # noqa: E402
from birdtrap.web.app import BackgroundServer  # noqa: E402

from conftest import HERON, DaemonProcess, copy_photo, photo, rows, wait_for, write_config  # noqa: E402

TOKEN = "heron-review-token-0123"
OWL = "IMG_1435.JPG"
DEER = "2021-05-28_SYFR0041_deer.JPG"  # an event with no bird
PROBLEM = "application/problem+json"


def fill_site(folder: Path, extra_inbox: dict[str, Path] | None = None) -> Path:
    """A config whose database the real daemon filled from the heron burst, an owl and a deer."""
    config = write_config(folder, after={"quarantine_folder": str(folder / "quarantine")})
    (folder / "quarantine").mkdir()
    for path in HERON:
        copy_photo(path.name, folder / "inbox")
    copy_photo(OWL, folder / "inbox")
    copy_photo(DEER, folder / "inbox")
    for name, target in (extra_inbox or {}).items():
        os.symlink(target, folder / "inbox" / name)
    expected = len(HERON) + 2 + len(extra_inbox or {})
    daemon = DaemonProcess(config)
    try:
        wait_for(lambda: len([r for r in rows(folder) if r[1] in ("done", "failed")]) >= expected, timeout=120, what="the daemon's backlog")
    finally:
        daemon.stop()
    return config


def start(config: Path, loader=None, **settings) -> BackgroundServer:
    serve = ServeSettings(**{"token": TOKEN, "upload_limit_mb": 2, "max_files": 4, **settings})
    app = create_app(config_module.load(config), serve, loader=loader)
    server = BackgroundServer(app).start()
    if loader is None:
        assert app.state.web.classifier.wait_ready(60), app.state.web.classifier.error
    return server


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("site")
    # A link in the watch folder to a photo outside it: the daemon refuses it, so must the server.
    return fill_site(folder, {"linked-outside.bmp": photo("bird.bmp")})


@pytest.fixture(scope="module")
def server(site):
    running = start(site, thumbnail_cache=site.parent / "thumbs")
    yield running
    running.stop()


@pytest.fixture
def api(server):
    with httpx.Client(base_url=server.url, timeout=60) as client:
        yield client


def auth(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def problem(response, status: int, kind: str | None = None) -> dict:
    """The response is RFC 9457 problem details with this status (and type)."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM), response.headers
    body = response.json()
    assert body["status"] == status and body["title"]
    if kind is not None:
        assert body["type"] == f"urn:birdtrap:problem:{kind}", body
    return body


def cli_json(config: Path, *args: str) -> list[dict]:
    result = CliRunner().invoke(cli, [*args, "--format", "json", "--config", str(config)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def heron_event(api) -> dict:
    (event,) = [e for e in api.get("/api/v1/events", params={"all": True}).json()["items"] if e["photo_count"] == len(HERON)]
    return event


def files(*named: tuple[str, bytes]) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("files", (name, data, "application/octet-stream")) for name, data in named]


def invokes(api) -> float:
    for line in api.get("/metrics").text.splitlines():
        if line.startswith('birdtrap_model_invokes_total{model="species"}'):
            return float(line.split()[-1])
    raise AssertionError("no species invoke counter in /metrics")


# --- health, queries ----------------------------------------------------------------------


def test_health_names_the_model_runtime_queue_last_photo_and_free_disk(api, site):
    body = api.get("/api/v1/health").json()
    assert body["status"] == "ok"
    assert body["model"]["state"] == "ready" and body["model"]["labels"] == 965
    assert body["model"]["sha256"] == "350fcd8cf1df1560060d464595dfed8b174b05792788052896004848d9ad04f9"
    assert body["runtime"] == {"name": "ai_edge_litert", "delegate": "cpu"}
    assert body["queue_depth"] == 0
    assert body["photos_by_status"]["done"] == len(HERON) + 2 and body["photos_by_status"]["failed"] == 1
    assert body["last_photo"]["path"].startswith(str(site.parent / "inbox"))
    watch = next(d for d in body["disk"] if d["key"] == "watch.folder")
    assert watch["free_bytes"] > 0 and watch["path"] == str((site.parent / "inbox").resolve())


def test_sightings_are_the_clis_with_its_filters_and_pages(api, site):
    everything = cli_json(site, "sightings")
    assert len(everything) >= 5
    page = api.get("/api/v1/sightings").json()
    assert [s["path"] for s in page["items"]] == [row["path"] for row in everything] and page["next"] is None
    owls = api.get("/api/v1/sightings", params={"species": "athene"}).json()["items"]
    assert [s["scientific_name"] for s in owls] == ["Athene cunicularia"]
    assert [s["path"] for s in owls] == [row["path"] for row in cli_json(site, "sightings", "--species", "athene")]
    early = api.get("/api/v1/sightings", params={"until": "2021-01-01", "min_confidence": 0.9}).json()["items"]
    assert [s["scientific_name"] for s in early] == ["Athene cunicularia"]
    walked, url = [], "/api/v1/sightings?limit=2"
    while url:
        body = api.get(url).json()
        assert len(body["items"]) <= 2
        walked += body["items"]
        url = body["next"]
    assert [s["id"] for s in walked] == [s["id"] for s in page["items"]]


def test_events_show_the_heron_burst_as_one_event_with_a_bird_photo_as_its_cover(api, site):
    event = heron_event(api)
    (cli_event,) = [e for e in cli_json(site, "events", "--all") if e["event"] == event["id"]]
    assert event["scientific_name"] == cli_event["scientific_name"] and event["photo_count"] == 10
    assert event["start"] == "2021-04-11T20:43:09" and event["end"] == "2021-04-11T20:43:15"
    cover = api.get(f"/api/v1/photos/{event['cover_photo_id']}").json()
    assert cover["kind"] == "bird" and cover["event_id"] == event["id"]
    detail = api.get(f"/api/v1/events/{event['id']}").json()
    assert len(detail["photos"]) == 10 and detail["machine"]["scientific_name"] == event["scientific_name"]
    assert api.get("/api/v1/events", params={"species": "athene"}).json()["items"][0]["common_name"] == "Burrowing Owl"


def test_stats_are_the_clis(api, site):
    species = api.get("/api/v1/stats").json()
    assert species["rows"] == cli_json(site, "stats")
    assert species["photos_by_status"]["done"] == len(HERON) + 2
    hours = api.get("/api/v1/stats", params={"by": "hour"}).json()["rows"]
    assert hours == cli_json(site, "stats", "--by", "hour")


def test_a_photos_record_has_its_ranked_predictions_and_model(api):
    owl = api.get("/api/v1/sightings", params={"species": "athene"}).json()["items"][0]
    record = api.get(f"/api/v1/photos/{owl['id']}").json()
    with Image.open(photo(OWL)) as original:
        assert (record["width"], record["height"]) == original.size
    assert record["status"] == "done" and record["sha256"] == hashlib.sha256(photo(OWL).read_bytes()).hexdigest()
    assert [p["rank"] for p in record["predictions"]] == [1, 2, 3, 4, 5]
    assert record["predictions"][0]["scientific_name"] == "Athene cunicularia"
    assert record["model"]["sha256"].startswith("350fcd8c")


def test_server_times_carry_their_utc_offset_and_capture_times_are_the_cameras_clock(api, site):
    """Issue 16: discovered_at and processed_at are the server's UTC clock and say so (RFC 3339 with
    the offset); captured_at is what the camera wrote, which has no zone, and the schema says that."""
    owl = api.get("/api/v1/sightings", params={"species": "athene"}).json()["items"][0]
    record = api.get(f"/api/v1/photos/{owl['id']}").json()
    (stored,) = rows(site.parent, f"select discovered_at, processed_at from images where id = {owl['id']}")
    for key, naive in zip(("discovered_at", "processed_at"), stored, strict=True):
        when = datetime.fromisoformat(record[key])
        assert when.utcoffset() == timedelta(0), record[key]
        assert when.replace(tzinfo=None) == datetime.fromisoformat(naive)
    with Image.open(photo(OWL)) as image:
        written = image.getexif().get_ifd(0x8769)[0x9003]  # DateTimeOriginal, "YYYY:MM:DD HH:MM:SS"
    assert record["captured_at"] == datetime.strptime(written, "%Y:%m:%d %H:%M:%S").isoformat() == owl["captured_at"]
    last = api.get("/api/v1/health").json()["last_photo"]
    assert datetime.fromisoformat(last["discovered_at"]).utcoffset() == timedelta(0)
    schemas = api.get("/api/v1/openapi.json").json()["components"]["schemas"]
    photo_schema = next(schema for name, schema in schemas.items() if name.startswith("Photo") and "processed_at" in schema["properties"])
    assert {"type": "string", "format": "date-time"}.items() <= photo_schema["properties"]["processed_at"]["anyOf"][0].items()
    local = photo_schema["properties"]["captured_at"]["anyOf"][0]
    assert local["format"] == "date-time-local" and "no" in local["description"] and "offset" in local["description"]


def test_a_filter_that_is_not_a_date_is_refused_naming_the_parameter_and_the_format(api):
    for endpoint in ("sightings", "events", "stats"):
        body = problem(api.get(f"/api/v1/{endpoint}", params={"until": "0.5"}), 422, "bad-parameters")
        assert [e["location"] for e in body["errors"]] == ["query.until"]
        assert body["detail"].startswith("query.until: '0.5' is not a date; expected YYYY-MM-DD or YYYY-MM-DDTHH:MM"), body
    not_a_day = problem(api.get("/api/v1/sightings", params={"since": "2021-02-29"}), 422, "bad-parameters")
    assert not_a_day["errors"][0]["location"] == "query.since"
    with_offset = problem(api.get("/api/v1/sightings", params={"since": "2021-04-11T20:43:09+02:00"}), 422, "bad-parameters")
    assert "without a UTC offset" in with_offset["detail"]
    assert api.get("/api/v1/sightings", params={"since": "2024-02-29"}).status_code == 200  # a leap day is a day
    window = {"since": "2021-04-11 20:43:12", "until": "2021-04-11T20:43:14"}
    inside = api.get("/api/v1/sightings", params=window).json()["items"]
    assert inside and all("2021-04-11T20:43:12" <= s["captured_at"] < "2021-04-11T20:43:14" for s in inside)
    for name, value in (("min_confidence", "1.5"), ("min_confidence", "nan"), ("limit", "0"), ("limit", "501"), ("offset", "-1")):
        body = problem(api.get("/api/v1/sightings", params={name: value}), 422, "bad-parameters")
        assert body["errors"][0]["location"] == f"query.{name}", (name, value, body)


# --- photos and thumbnails ----------------------------------------------------------------


def test_a_thumbnail_is_small_cached_on_disk_and_the_original_only_when_asked(api, site):
    event = heron_event(api)
    url = f"/api/v1/photos/{event['cover_photo_id']}/thumbnail"
    first = api.get(url, params={"size": 200})
    assert first.status_code == 200 and first.headers["content-type"] == "image/jpeg"
    image = cv2.imdecode(np.frombuffer(first.content, np.uint8), cv2.IMREAD_COLOR)
    assert max(image.shape[:2]) == 200
    cached = list((site.parent / "thumbs").rglob("*.jpg"))
    assert len(cached) >= 1 and any(p.read_bytes() == first.content for p in cached)
    stamps = {p: p.stat().st_mtime_ns for p in cached}
    assert api.get(url, params={"size": 200}).content == first.content
    assert {p: p.stat().st_mtime_ns for p in cached} == stamps  # served from the cache, not made again
    # privacy.keep_originals_visible is false by default (issue 19): a re-encoded view, not the file.
    original = api.get(f"/api/v1/photos/{event['cover_photo_id']}/original")
    record = api.get(f"/api/v1/photos/{event['cover_photo_id']}").json()
    assert original.headers["content-type"] == "image/jpeg" and original.content != Path(record["path"]).read_bytes()
    assert len(original.content) > 10 * len(first.content)
    assert api.get(url, params={"size": 5000}).status_code == 422


def test_a_path_the_file_system_refuses_is_a_404_problem_not_a_server_error(api, site):
    """Issue 16: a 300-character name (ENAMETOOLONG from stat) answered 500."""
    for path in ("a" * 300, str(site.parent / "inbox" / ("b" * 300 + ".jpg"))):
        body = problem(api.get("/api/v1/thumbnail", params={"path": path}), 404, "photo-missing")
        assert body["detail"].endswith("cannot be read (File name too long)."), body


def test_a_path_outside_the_configured_folders_is_never_served(api, site):
    inbox = site.parent / "inbox"
    for path in ("/etc/passwd", f"{inbox}/../config.yaml", f"{inbox}/linked-outside.bmp", "../../etc/passwd"):
        body = problem(api.get("/api/v1/thumbnail", params={"path": path}), 403, "outside-folders")
        assert "outside the configured folders" in body["detail"]
    inside = sorted(inbox.glob("*.JPG"))[0]
    assert api.get("/api/v1/thumbnail", params={"path": str(inside), "size": 64}).status_code == 200
    # The daemon recorded the link as failed; its row's path still must not leak the outside file.
    linked = rows(site.parent, "select id from images where path like '%linked-outside.bmp'")[0][0]
    problem(api.get(f"/api/v1/photos/{linked}/thumbnail"), 403, "outside-folders")
    problem(api.get(f"/api/v1/photos/{linked}/original"), 403, "outside-folders")
    problem(api.get("/api/v1/photos/999999/thumbnail"), 404, "no-such-photo")


# --- classify -----------------------------------------------------------------------------


def test_classify_answers_top_k_for_each_photo_of_a_batch(api):
    batch = files(("bird.bmp", photo("bird.bmp").read_bytes()), (OWL, photo(OWL).read_bytes()))
    response = api.post("/api/v1/classify", params={"top_k": 3}, files=batch)
    assert response.status_code == 200, response.text
    chickadee, owl = response.json()["items"]
    assert chickadee["result"]["scientific_name"] == "Poecile atricapillus" and len(chickadee["result"]["top"]) == 3
    assert owl["result"]["scientific_name"] == "Athene cunicularia" and owl["filename"] == OWL
    assert chickadee["error"] is None and chickadee["recorded"] is None


def test_a_corrupt_photo_in_a_batch_fails_that_item_not_the_batch(api, tmp_path):
    heron = HERON[3].read_bytes()
    response = api.post(
        "/api/v1/classify",
        files=files(("truncated.jpg", heron[: len(heron) // 2]), ("notes.txt", b"field notes, not a photo"), ("heron.jpg", heron)),
    )
    assert response.status_code == 200, response.text
    truncated, notes, good = response.json()["items"]
    assert truncated["error"]["status"] == 422 and "truncated" in truncated["error"]["detail"] and truncated["result"] is None
    assert notes["error"]["status"] == 415 and notes["error"]["type"] == "urn:birdtrap:problem:not-an-image"
    assert good["error"] is None and good["result"]["kind"] == "bird"


def test_a_repeated_photo_is_answered_from_the_cache_without_invoking_the_model(api, site):
    data = photo("dragonfly.bmp").read_bytes()
    first = api.post("/api/v1/classify", files=files(("dragonfly.bmp", data))).json()["items"][0]
    assert first["cached"] is False
    before = invokes(api)
    again = api.post("/api/v1/classify", files=files(("same-photo-other-name.bmp", data), ("twice.bmp", data))).json()["items"]
    assert [item["cached"] for item in again] == [True, True]
    assert again[0]["result"] == first["result"]
    assert invokes(api) == before
    # The answer is in the database too: a restarted server does not invoke the model either.
    restarted = start(site, token=None)
    try:
        with httpx.Client(base_url=restarted.url, timeout=60) as other:
            item = other.post("/api/v1/classify", files=files(("dragonfly.bmp", data))).json()["items"][0]
            assert item["cached"] is True and item["result"] == first["result"]
            assert invokes(other) == 0
            # Without a token on the server, writes are refused whatever the client sends.
            body = problem(other.post("/api/v1/events/1/review", json={"verdict": "empty"}, headers=auth()), 403, "writes-disabled")
            assert "--token" in body["detail"]
    finally:
        restarted.stop()


def test_record_stores_the_photo_like_one_from_the_watch_folder(api, site):
    data = photo("bird.bmp").read_bytes()
    problem(api.post("/api/v1/classify", params={"record": True}, files=files(("bird.bmp", data))), 401, "token-missing")
    wrong = api.post("/api/v1/classify", params={"record": True}, files=files(("bird.bmp", data)), headers=auth("x" * 20))
    problem(wrong, 403, "token-wrong")
    response = api.post("/api/v1/classify", params={"record": True, "camera": "feeder"}, files=files(("bird.bmp", data)), headers=auth())
    item = response.json()["items"][0]
    assert item["recorded"]["outcome"] == "new"
    stored = Path(item["recorded"]["path"])
    assert stored.read_bytes() == data and stored.parent == (site.parent / "inbox" / "uploads").resolve()
    record = api.get(f"/api/v1/photos/{item['recorded']['image_id']}").json()
    assert record["status"] == "done" and record["camera"] == "feeder" and record["scientific_name"] == "Poecile atricapillus"
    assert len(record["predictions"]) == 5 and record["event_id"] is not None
    assert [s["camera"] for s in cli_json(site, "sightings", "--camera", "feeder")] == ["feeder"]
    again = api.post("/api/v1/classify", params={"record": True, "camera": "feeder"}, files=files(("bird.bmp", data)), headers=auth())
    assert again.json()["items"][0]["recorded"]["outcome"] == "seen"
    # The daemon watching the same folder finds the photo already done and leaves it alone.
    count = len(rows(site.parent))
    daemon = DaemonProcess(site)
    try:
        wait_for(lambda: "watching" in daemon.output(), timeout=60, what="the daemon to start")
        time.sleep(1.5)
    finally:
        daemon.stop()
    assert len(rows(site.parent)) == count
    assert rows(site.parent, f"select status, camera_id from images where path = '{stored}'") == [("done", "feeder")]


# --- errors -------------------------------------------------------------------------------


def test_every_error_is_problem_details(api):
    big = os.urandom(3 * 1024 * 1024)
    body = problem(api.post("/api/v1/classify", files=files(("big.jpg", big))), 413, "too-large")
    assert "serve.upload_limit_mb" in body["detail"]
    boundary = "b0undary"
    chunks = [f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="big.jpg"\r\n\r\n'.encode()]
    chunks += [big[i : i + 65536] for i in range(0, len(big), 65536)] + [f"\r\n--{boundary}--\r\n".encode()]
    streamed = api.post("/api/v1/classify", content=iter(chunks), headers={"content-type": f"multipart/form-data; boundary={boundary}"})
    problem(streamed, 413, "too-large")  # chunked: no Content-Length to refuse up front
    five = files(*[(f"{i}.bmp", photo("bird.bmp").read_bytes()[:1000]) for i in range(5)])
    problem(api.post("/api/v1/classify", files=five), 413, "too-many-files")
    problem(api.post("/api/v1/classify", json={"files": []}), 415, "unsupported-media-type")
    problem(api.post("/api/v1/classify", files=files(("notes.txt", b"no photo here"))), 415, "no-image-classified")
    problem(api.post("/api/v1/classify", data={"top_k": "3"}, files=[]), 415)
    bad = problem(api.post("/api/v1/classify", params={"top_k": 0}, files=files(("a.jpg", b"x"))), 422, "bad-parameters")
    assert bad["errors"][0]["location"] == "query.top_k"
    problem(api.get("/api/v1/sightings", params={"limit": "many"}), 422, "bad-parameters")
    problem(api.get("/api/v1/sightings", params={"since": "last tuesday"}), 422, "bad-parameters")
    problem(api.get("/api/v1/events/424242"), 404, "no-such-event")
    problem(api.get("/api/v1/photos/424242"), 404, "no-such-photo")
    problem(api.get("/api/v1/no-such-thing"), 404)
    problem(api.delete("/api/v1/sightings"), 405)
    problem(api.post("/api/v1/events/1/review", json={"verdict": "empty"}), 401, "token-missing")
    problem(api.post("/api/v1/events/1/review", json={"verdict": "empty"}, headers=auth("wrong-token-wrong-token")), 403, "token-wrong")
    problem(api.post("/api/v1/events/1/review", json={"verdict": "maybe"}, headers=auth()), 422, "bad-parameters")
    problem(api.post("/api/v1/events/1/review", content=b"{", headers={**auth(), "content-type": "application/json"}), 422)
    problem(api.post("/api/v1/events/424242/review", json={"verdict": "empty"}, headers=auth()), 404, "no-such-event")


def test_a_tiny_very_wide_png_upload_is_refused_before_decoding_and_good_photos_are_still_named(api):
    # Issue 16: a ~100-byte 2x3000 PNG took the server to 3.3 GB and no answer in 100 s.
    out = io.BytesIO()
    Image.new("RGB", (3000, 2), (90, 120, 60)).save(out, "PNG")
    assert len(out.getvalue()) < 200
    body = problem(api.post("/api/v1/classify", files=files(("line.png", out.getvalue()))), 422, "no-image-classified")
    (item,) = body["items"]
    assert item["error"]["type"].endswith("image-out-of-bounds")
    assert "line.png is 3000x2 pixels" in item["error"]["detail"] and "preprocess." in item["error"]["detail"]
    mixed = api.post("/api/v1/classify", files=files(("line.png", out.getvalue()), ("bird.bmp", photo("bird.bmp").read_bytes())))
    assert mixed.status_code == 200, mixed.text
    refused, named = mixed.json()["items"]
    assert refused["error"]["status"] == 422 and named["error"] is None and named["result"]["top"]


class FaultyIdentifier:
    """The real identifier, with a fault injected for one shape of photo (97x61 pixels).

    A stand-in for a bug that one hostile photo could trigger deep in the pipeline: no real
    photo is known to, by design, so the fault is injected around the real models.
    """

    POISON = (97, 61)

    def __init__(self, real) -> None:
        self.real = real

    def __getattr__(self, name: str):
        return getattr(self.real, name)

    def identify(self, photos, *args, **kwargs):
        if any(p.original_size == self.POISON for p in photos):
            raise RuntimeError("injected fault")
        return self.real.identify(photos, *args, **kwargs)


def test_a_photo_whose_identification_raises_is_its_own_422_and_the_others_are_named(site):
    server = start(site, loader=lambda config: FaultyIdentifier(build_identifier(config)))
    try:
        with httpx.Client(base_url=server.url, timeout=60) as client:
            wait_for(lambda: client.get("/api/v1/health").json()["status"] == "ok", timeout=60, what="the model")
            out = io.BytesIO()
            Image.new("RGB", FaultyIdentifier.POISON, (30, 60, 90)).save(out, "PNG")
            poison = ("poison.png", out.getvalue())
            mixed = client.post("/api/v1/classify", files=files(poison, ("bird.bmp", photo("bird.bmp").read_bytes())))
            assert mixed.status_code == 200, mixed.text
            failed, named = mixed.json()["items"]
            assert failed["error"]["status"] == 422 and failed["error"]["type"].endswith("identify-failed")
            assert "poison.png could not be identified (RuntimeError)" in failed["error"]["detail"]
            assert named["error"] is None and named["result"]["top"]
            alone = problem(client.post("/api/v1/classify", files=files(poison)), 422, "no-image-classified")
            assert alone["items"][0]["error"]["type"].endswith("identify-failed")
            assert client.get("/api/v1/health").json()["status"] == "ok"
    finally:
        server.stop()


def test_classify_answers_503_while_the_model_loads(site):
    release = threading.Event()

    def slow_loader(config):
        release.wait(30)
        return build_identifier(config)

    loading = start(site, loader=slow_loader)
    try:
        with httpx.Client(base_url=loading.url, timeout=60) as client:
            assert client.get("/api/v1/health").json()["status"] == "loading"
            refused = client.post("/api/v1/classify", files=files(("bird.bmp", photo("bird.bmp").read_bytes())))
            body = problem(refused, 503, "model-loading")
            assert refused.headers["retry-after"] == "5" and "loading" in body["detail"]
            assert client.get("/api/v1/sightings").status_code == 200  # the database is served meanwhile
            release.set()
            wait_for(lambda: client.get("/api/v1/health").json()["status"] == "ok", timeout=60, what="the model")
            answered = client.post("/api/v1/classify", files=files(("bird.bmp", photo("bird.bmp").read_bytes())))
            assert answered.status_code == 200
    finally:
        release.set()
        loading.stop()


# --- review -------------------------------------------------------------------------------


def test_a_correction_shows_in_birdtrap_sightings_and_events_beside_the_machines_answer(api, site):
    event = heron_event(api)
    machine = event["scientific_name"]
    assert machine != "Ardea cinerea"
    saved = api.post(
        f"/api/v1/events/{event['id']}/review",
        json={"verdict": "correct", "species": "grey heron", "reviewer": "Ana", "note": "long neck"},
        headers=auth(),
    )
    assert saved.status_code == 201, saved.text
    assert saved.json()["scientific_name"] == "Ardea cinerea" and saved.json()["machine_scientific_name"] == machine
    herons = cli_json(site, "sightings", "--species", "ardea cinerea")
    assert len(herons) == event["bird_photo_count"] and {s["scientific_name"] for s in herons} == {"Ardea cinerea"}
    assert cli_json(site, "sightings", "--species", machine.split()[0]) == []
    (shown,) = [e for e in cli_json(site, "events") if e["event"] == event["id"]]
    assert shown["common_name"] == "Grey Heron" and shown["confidence"] is None
    detail = api.get(f"/api/v1/events/{event['id']}").json()
    assert detail["reviewed"] == "corrected" and detail["machine"]["scientific_name"] == machine
    assert detail["reviews"][0]["reviewer"] == "Ana"
    # The machine's answer is untouched underneath.
    assert rows(site.parent, f"select scientific_name from events where id = {event['id']}") == [(machine,)]
    # Marked empty, the burst leaves the sightings; confirmed again, it comes back.
    assert api.post(f"/api/v1/events/{event['id']}/review", json={"verdict": "empty"}, headers=auth()).status_code == 201
    assert cli_json(site, "sightings", "--species", "ardea") == []
    assert event["id"] not in [e["event"] for e in cli_json(site, "events")]
    again = {"verdict": "correct", "species": "Ardea cinerea"}
    assert api.post(f"/api/v1/events/{event['id']}/review", json=again, headers=auth()).status_code == 201
    assert len(cli_json(site, "sightings", "--species", "ardea cinerea", "--min-confidence", "0.99")) == event["bird_photo_count"]
    assert [r["verdict"] for r in api.get(f"/api/v1/events/{event['id']}").json()["reviews"]] == ["corrected", "empty", "corrected"]
    stats = {row["scientific_name"]: row for row in api.get("/api/v1/stats").json()["rows"]}
    assert stats["Ardea cinerea"]["photos"] == event["bird_photo_count"] and stats["Ardea cinerea"]["events"] == 1
    assert machine not in stats
    missing = problem(api.post(f"/api/v1/events/{event['id']}/review", json={"verdict": "correct"}, headers=auth()), 422, "bad-parameters")
    assert missing["detail"].startswith("body.correct.species: Field required"), missing
    blank = {"verdict": "correct", "species": "   "}
    problem(api.post(f"/api/v1/events/{event['id']}/review", json=blank, headers=auth()), 422, "bad-parameters")


def test_confirming_an_event_without_a_bird_is_a_conflict_with_the_fix(api, site):
    empty = rows(site.parent, "select id from events where kind != 'bird'")
    assert empty, "the deer should make an event without a bird"
    body = problem(api.post(f"/api/v1/events/{empty[0][0]}/review", json={"verdict": "confirm"}, headers=auth()), 409, "review-refused")
    assert "correct it with a species" in body["detail"]


# --- metrics, pages -----------------------------------------------------------------------


def test_metrics_expose_photos_queue_latency_and_the_model(api):
    api.post("/api/v1/classify", files=files(("owl.jpg", photo(OWL).read_bytes())))
    text = api.get("/metrics").text
    assert 'birdtrap_photos_total{status="done"}' in text
    assert 'birdtrap_photos_total{status="failed"} 1.0' in text
    assert "birdtrap_queue_depth 0.0" in text
    assert "birdtrap_classify_invoke_seconds_count" in text and "birdtrap_classify_request_seconds_bucket" in text
    assert 'birdtrap_model_info{delegate="cpu",name="inat_birds",runtime="ai_edge_litert"' in text
    assert "birdtrap_last_photo_timestamp_seconds" in text
    (count,) = [line for line in text.splitlines() if line.startswith("birdtrap_photo_pipeline_seconds_count")]
    assert float(count.split()[-1]) >= len(HERON) + 2  # found -> stored, for the daemon's photos too


def test_the_pages_render_events_a_species_stats_and_a_review_form(api):
    event = heron_event(api)
    index = api.get("/")
    assert index.status_code == 200 and "text/html" in index.headers["content-type"]
    assert f'data-event="{event["id"]}"' in index.text and "Burrowing Owl" in index.text
    assert "data-event" not in api.get("/", params={"species": "Nonexistent bird"}).text
    assert "Burrowing Owl" in api.get("/species/Athene cunicularia").text
    assert "Athene cunicularia" in api.get("/stats").text
    review = api.get(f"/events/{event['id']}").text
    assert event["label"] in review and 'id="review"' in review and 'list="names"' in review
    assert api.get("/", params={"partial": 1}).text.lstrip().startswith("<ul") or "No events" in api.get("/", params={"partial": 1}).text
    assert api.get("/static/style.css").status_code == 200


def test_the_fleet_page_of_a_traps_own_database_says_where_traps_appear(api):
    page = api.get("/fleet")
    assert page.status_code == 200
    assert "This is a trap's own database, not a central one" in page.text and "birdtrap sync --to" in page.text


def test_serve_names_the_flag_of_a_bad_setting(site):

    result = CliRunner().invoke(cli, ["serve", "--token", "short", "--config", str(site)])
    assert result.exit_code == 1
    assert "Error: --token: Value error, a token needs at least 16 characters; make one with: openssl rand -hex 16" in result.output


# --- schemathesis -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fuzz_server(site, tmp_path_factory):
    """A server on a copy of the database, so generated reviews and records touch nothing else."""
    folder = tmp_path_factory.mktemp("fuzz")
    source = sqlite3.connect(site.parent / "birdtrap.db")
    with sqlite3.connect(folder / "birdtrap.db") as target:
        source.backup(target)
    source.close()
    config = write_config(folder, watch={"folder": str(site.parent / "inbox")})
    shutil.rmtree(folder / "inbox")
    running = start(config, upload_limit_mb=1, upload_folder=folder / "uploads", thumbnail_cache=folder / "thumbs")
    yield running
    running.stop()


# POST /classify, the two places where the check's default list and HTTP differ:
# - an OpenAPI schema can say "binary", not "a photo", so schemathesis's valid-looking bodies are
#   random bytes, which the API rightly refuses as 415 (not an image) or 422 (cannot be decoded);
# - more files than maxItems (serve.max_files) is refused as 413 Content Too Large, as a body over
#   serve.upload_limit_mb is, where the check expects 422.
# Everything else runs with schemathesis's defaults.
SCHEMATHESIS_CONFIG = """
[[operations]]
include-path = "/api/v1/classify"
checks.positive_data_acceptance.expected-statuses = ["2xx", "3xx", "401", "403", "404", "409", "415", "422", "429", "5xx"]
checks.negative_data_rejection.expected-statuses = [
    "400", "401", "403", "404", "405", "406", "409", "413", "415", "422", "428", "429", "5xx"
]

# POST /events/{id}/review: a schema can say "a string", not "a name the models or the taxonomy
# know", so a generated species is rightly refused as 422 (issue 18).
[[operations]]
include-path = "/api/v1/events/{event_id}/review"
checks.positive_data_acceptance.expected-statuses = ["2xx", "3xx", "401", "403", "404", "409", "422", "429", "5xx"]
"""


def test_the_served_openapi_document_is_what_the_api_does(fuzz_server, tmp_path):
    """schemathesis, run as a user would (`st run`), reads /api/v1/openapi.json and tests every
    operation with every check it has: no 5xx, documented status codes, content types and headers,
    answers that match their schemas (date-times included), invalid input refused, valid input
    accepted, and chains through the links between operations. With the token, so writes are
    exercised too; a fixed seed and deterministic generation, so a failure is the same on rerun."""
    pytest.importorskip("schemathesis")
    config = tmp_path / "schemathesis.toml"
    config.write_text(SCHEMATHESIS_CONFIG)
    command = [
        sys.executable, "-m", "schemathesis.cli", "--config-file", str(config), "--no-color",
        "run", f"{fuzz_server.url}/api/v1/openapi.json",
        "--checks", "all",
        "--header", f"Authorization: Bearer {TOKEN}",
        "--max-examples", "8",
        "--generation-deterministic",
        "--request-timeout", "30",
        "--workers", "1",
    ]  # fmt: skip
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-8000:]
    assert re.search(r"Tested: 15\b", output), output[-3000:]  # every operation, none skipped for want of data
