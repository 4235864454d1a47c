"""Every way a photo is recorded goes through one commit path: results, its event and its
notification together. A photo recorded through the web API once queued no notification and lost
its deployment id (issue 17); `classify --record` is the reference."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="birdtrap serve needs the web extra: pip install -e '.[web]'")
httpx = pytest.importorskip("httpx")

from click.testing import CliRunner  # noqa: E402

from birdtrap import config as config_module  # noqa: E402
from birdtrap.cli import cli  # noqa: E402
from birdtrap.web import ServeSettings, create_app  # noqa: E402
from birdtrap.web.app import BackgroundServer  # noqa: E402

from conftest import photo, write_config  # noqa: E402

TOKEN = "commit-path-token-0123"
BIRD = "bird.bmp"  # a chickadee, close up: a sure bird on every path


def site(folder: Path) -> Path:
    # The webhook points at a closed port: nothing is sent here, the outbox row is what counts.
    folder.mkdir()
    return write_config(
        folder,
        camera={"id": "feeder", "deployment_id": "feeder-2026"},
        notify={"webhook": {"url": "http://127.0.0.1:9/hook"}, "quiet_seconds": 0},
    )


def stored(folder: Path) -> tuple[list[tuple], int]:
    with sqlite3.connect(folder / "birdtrap.db") as connection:
        images = list(connection.execute("select camera_id, deployment_id, kind, event_id from images where status = 'done'"))
        outbox = connection.execute("select count(*) from outbox").fetchone()[0]
    return images, outbox


def test_a_photo_recorded_through_the_api_queues_its_notification_like_classify_record(tmp_path):
    by_cli, by_api = tmp_path / "cli", tmp_path / "api"
    result = CliRunner().invoke(cli, ["classify", str(photo(BIRD)), "--record", "--config", str(site(by_cli))], catch_exceptions=False)
    assert result.exit_code == 0, result.output

    config = config_module.load(site(by_api))
    app = create_app(config, ServeSettings(token=TOKEN, upload_limit_mb=2, max_files=4))
    server = BackgroundServer(app).start()
    try:
        assert app.state.web.classifier.wait_ready(60), app.state.web.classifier.error
        with httpx.Client(base_url=server.url, timeout=60) as api:
            response = api.post(
                "/api/v1/classify",
                params={"record": True, "camera": "feeder"},
                files=[("files", (BIRD, photo(BIRD).read_bytes(), "application/octet-stream"))],
                headers={"Authorization": f"Bearer {TOKEN}"},
            )
        assert response.status_code == 200, response.text
        assert response.json()["items"][0]["recorded"]["outcome"] == "new"
    finally:
        server.stop()

    cli_images, cli_outbox = stored(by_cli)
    api_images, api_outbox = stored(by_api)
    assert cli_outbox == 1, "classify --record queues one notification for the bird event"
    assert api_outbox == cli_outbox
    assert [row[:3] for row in api_images] == [row[:3] for row in cli_images] == [("feeder", "feeder-2026", "bird")]
    assert api_images[0][3] is not None
