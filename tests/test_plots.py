"""`birdtrap plot`: PNGs of the size asked for, drawn from a database the real daemon filled."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from birdtrap import store
from birdtrap.cli import cli
from birdtrap.errors import BirdtrapError
from birdtrap.export import plots

from conftest import HERON, DaemonProcess, copy_photo, photo, rows, wait_for, write_config

OWLS = sorted(photo("IMG_0708.JPG").parent.glob("*.JPG"))


@pytest.fixture(scope="module")
def season(tmp_path_factory) -> Path:
    """A config whose database the daemon filled: the heron burst, ten owl photos, a chickadee."""
    folder = tmp_path_factory.mktemp("season")
    config = write_config(folder)
    for source in [*HERON, *OWLS]:
        copy_photo(source.name, folder / "inbox")
    copy_photo("bird.bmp", folder / "inbox")
    daemon = DaemonProcess(config)
    try:
        expected = len(HERON) + len(OWLS) + 1
        wait_for(lambda: len([r for r in rows(folder) if r[1] == "done"]) >= expected, timeout=90, what="photos processed")
    finally:
        daemon.stop()
    assert rows(folder, "select count(*) from images where kind = 'bird'")[0][0] >= 5
    return config


def png(path: Path) -> np.ndarray:
    assert path.exists(), f"{path} was not written"
    with Image.open(path) as image:
        assert image.format == "PNG"
        return np.asarray(image.convert("L"), dtype=np.float32)


def inked(pixels: np.ndarray) -> float:
    """Fraction of pixels that are not background white."""
    return float((pixels < 250).mean())


def plot_command(config: Path, *args: str):
    return CliRunner().invoke(cli, ["plot", *args, "--config", str(config)])


@pytest.mark.parametrize(
    ("args", "size"),
    [
        (["activity", "--by", "day"], (1200, 700)),
        (["activity", "--by", "hour", "--width", "1000", "--height", "500"], (1000, 500)),
        (["species", "--width", "901", "--height", "611"], (901, 611)),
        (["confidence", "--width", "640", "--height", "480"], (640, 480)),
    ],
)
def test_each_plot_is_a_png_of_the_size_asked_for_with_something_drawn(season, tmp_path, args, size):
    out = tmp_path / f"{args[0]}.png"
    result = plot_command(season, *args, "-o", str(out))
    assert result.exit_code == 0, result.output
    assert f"wrote {out}" in result.output
    pixels = png(out)
    assert (pixels.shape[1], pixels.shape[0]) == size
    assert pixels.std() > 20, "the image is blank"
    assert inked(pixels) > 0.02, "hardly anything was drawn"


def test_a_database_without_bird_photos_gives_a_plot_that_says_so_rather_than_an_error(tmp_path):
    config = write_config(tmp_path)
    sessions = store.open_store(f"sqlite:///{tmp_path / 'birdtrap.db'}")
    with sessions.begin() as session:  # an empty frame only: a deployment's first night
        registered = store.register_photo(session, str(tmp_path / "inbox" / "wind.jpg"), "e" * 64, 10, 1.0, "camera-1")
        empty = store.Result("blank", "background", None, None, None, 0.97, (), None, None, None)
        store.record_result(session, registered.image_id, empty, store.record_model(session, "m" * 64, "inat", "", "model.tflite"))
    with sessions() as session:
        drawn = [
            plots.activity_plot(session, tmp_path / "activity.png", width=640, height=400),
            plots.species_plot(session, tmp_path / "species.png", width=640, height=400),
            plots.confidence_plot(session, tmp_path / "confidence.png", threshold=0.5, width=640, height=400),
        ]
    for path in drawn:
        pixels = png(path)
        assert pixels.shape == (400, 640)
        # The title and the "no bird photos yet" line, and nothing else: no axes, no bars.
        assert 0.0005 < inked(pixels) < 0.02, path.name

    result = plot_command(config, "species", "-o", str(tmp_path / "cli.png"))
    assert result.exit_code == 0, result.output
    assert png(tmp_path / "cli.png").shape == (700, 1200)


def test_plot_before_the_daemon_ever_ran_says_how_to_create_the_database(tmp_path):
    config = write_config(tmp_path)
    result = plot_command(config, "activity", "-o", str(tmp_path / "a.png"))
    assert result.exit_code == 1
    assert "no database at" in result.output and "birdtrap run" in result.output
    assert not (tmp_path / "a.png").exists()


def test_an_output_name_that_is_not_png_names_the_flag(season, tmp_path):
    result = plot_command(season, "species", "-o", str(tmp_path / "species.jpg"))
    assert result.exit_code == 2
    assert "-o/--output" in result.output and "does not end in .png" in result.output


def test_an_unwritable_output_path_is_named_with_the_fix(season, tmp_path):
    out = tmp_path / "no-such-folder" / "species.png"
    result = plot_command(season, "species", "-o", str(out))
    assert result.exit_code == 1
    assert f"cannot write {out}" in result.output and "folder exists" in result.output


def test_without_matplotlib_the_error_says_which_extra_to_install(season, tmp_path, monkeypatch):
    # As if matplotlib were not installed: Python refuses imports of modules set to None.
    for name in [n for n in sys.modules if n == "matplotlib" or n.startswith("matplotlib.")]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(BirdtrapError, match=r"pip install 'birdtrap\[plot\]'"):
        with store.open_store(f"sqlite:///{season.parent / 'birdtrap.db'}", create=False)() as session:
            plots.species_plot(session, tmp_path / "species.png")
    assert not (tmp_path / "species.png").exists()


def test_names_read_common_then_scientific_and_genus_roll_ups_say_so():
    assert plots.species_name("Egretta thula", "Snowy Egret", "species") == "Snowy Egret (Egretta thula)"
    assert plots.species_name("Egretta", None, "genus") == "Egretta (genus)"
    assert plots.species_name("Aves", None, "class") == "Aves (class)"


def test_plot_help_shows_a_real_example():
    result = CliRunner().invoke(cli, ["plot", "--help"])
    assert result.exit_code == 0
    assert "birdtrap plot activity --by hour -o activity.png" in result.output
