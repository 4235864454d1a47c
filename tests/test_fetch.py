"""`birdtrap model fetch` against a real local HTTP server serving ../shared/models."""

from __future__ import annotations

import functools
import shutil
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import pytest
from click.testing import CliRunner

from birdtrap.cli import cli
from birdtrap.identify.bundle import sha256_file

from conftest import INAT, MODELS, photo, write_config


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def serve():
    servers = []

    def start(folder) -> str:
        server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(QuietHandler, directory=str(folder)))
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def test_fetch_installs_the_verified_model_where_the_config_looks_and_classify_uses_it(tmp_path, serve, monkeypatch):
    url = serve(MODELS)
    config = write_config(tmp_path, model={"path": "models/inat-birds/model.tflite"})
    monkeypatch.setenv("BIRDTRAP_MODEL_MIRROR", url)
    result = CliRunner().invoke(cli, ["model", "fetch", "inat-birds", "--config", str(config)])
    assert result.exit_code == 0, result.output
    installed = tmp_path / "models" / "inat-birds"
    assert sha256_file(installed / "model.tflite") == sha256_file(INAT / "model.tflite")
    assert sha256_file(installed / "labels.txt") == sha256_file(INAT / "labels.txt")
    assert not list(installed.glob("*.part"))
    classified = CliRunner().invoke(cli, ["classify", str(photo("bird.bmp")), "--config", str(config)])
    assert "Poecile atricapillus" in classified.output


def test_fetch_from_a_mirror_folder_and_again_is_a_no_op(tmp_path):
    destination = tmp_path / "gate"
    args = ["model", "fetch", "imagenet-mobilenet-v2", "--mirror", str(MODELS), "--dest", str(destination)]
    config = write_config(tmp_path)
    assert CliRunner().invoke(cli, [*args, "--config", str(config)]).exit_code == 0
    before = (destination / "model.tflite").stat().st_mtime_ns
    assert CliRunner().invoke(cli, [*args, "--config", str(config)]).exit_code == 0
    assert (destination / "model.tflite").stat().st_mtime_ns == before


def test_a_tampered_download_is_refused_and_nothing_is_installed(tmp_path, serve):
    mirror = tmp_path / "mirror"
    shutil.copytree(INAT, mirror / "inat_birds")
    (mirror / "inat_birds" / "labels.txt").write_text("not the real labels\n")
    url = serve(mirror)
    config = write_config(tmp_path)
    destination = tmp_path / "installed"
    result = CliRunner().invoke(cli, ["model", "fetch", "inat-birds", "--mirror", url, "--dest", str(destination), "--config", str(config)])
    assert result.exit_code == 1
    assert "labels.txt has sha256" in result.output and "refusing to install it" in result.output
    assert not (destination / "labels.txt").exists()
    assert not list(destination.glob(".*part"))


def test_an_unreachable_server_says_how_to_use_a_mirror(tmp_path, serve):
    url = serve(tmp_path / "empty")  # serves nothing: 404 for every file
    (tmp_path / "empty").mkdir()
    config = write_config(tmp_path)
    args = ["model", "fetch", "inat-birds", "--mirror", url, "--dest", str(tmp_path / "x"), "--config", str(config)]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 1
    assert "cannot download" in result.output and "BIRDTRAP_MODEL_MIRROR" in result.output


def test_fetching_again_says_already_installed_once_and_never_installed(tmp_path):
    destination = tmp_path / "gate"
    config = write_config(tmp_path)
    args = ["model", "fetch", "imagenet-mobilenet-v2", "--mirror", str(MODELS), "--dest", str(destination), "--config", str(config)]
    first = CliRunner().invoke(cli, args)
    assert first.output.splitlines() == [f"installed {destination / 'model.tflite'}", f"installed {destination / 'labels.txt'}"]
    again = CliRunner().invoke(cli, args)
    assert again.exit_code == 0
    assert again.output.splitlines() == [
        f"already installed and verified: {destination / 'model.tflite'}",
        f"already installed and verified: {destination / 'labels.txt'}",
    ]
