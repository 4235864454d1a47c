"""The configuration file: validated once, with errors that name the file, the key and the fix."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from birdtrap import config
from birdtrap.cli import cli
from birdtrap.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def test_the_shipped_config_yaml_is_valid_and_matches_the_defaults():
    loaded = config.parse((ROOT / "config.yaml").read_text(), ROOT / "config.yaml")
    defaults = config._resolve_paths(config.Config(), ROOT)
    assert loaded.model_dump() == defaults.model_dump()


def test_every_key_in_the_shipped_config_is_commented():
    lines = (ROOT / "config.yaml").read_text().splitlines()
    for number, line in enumerate(lines):
        stripped = line.strip()
        if stripped and not stripped.startswith("#") and ":" in stripped and not stripped.endswith(":"):
            assert lines[number - 1].strip().startswith("#"), f"config.yaml line {number + 1} ({stripped}) has no comment"


def test_an_unknown_key_is_named_with_a_suggestion(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("databse:\n  url: sqlite:///x.db\nmodel:\n  treshold: 3\n  therads: 2\n")
    with pytest.raises(ConfigError) as error:
        config.load(path)
    message = str(error.value)
    assert str(path) in message
    assert "databse: unknown key; did you mean 'database'?" in message
    assert "model.therads: unknown key; did you mean 'model.threads'?" in message
    # A key in the wrong section is matched against every section's keys.
    assert re.search(r"model.treshold: unknown key; did you mean '(decision|gate).threshold'\?", message)


def test_a_wrong_type_names_the_key(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("batch:\n  size: many\ndecision:\n  threshold: 1.5\n")
    with pytest.raises(ConfigError) as error:
        config.load(path)
    assert "batch.size: Input should be a valid integer" in str(error.value)
    assert "decision.threshold: Input should be less than or equal to 1" in str(error.value)


def test_a_model_that_is_not_tflite_gets_the_fix(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("model:\n  path: model.h5\n")
    with pytest.raises(ConfigError, match="expected a .tflite file.*python -m training export"):
        config.load(path)


def test_relative_paths_are_relative_to_the_config_file(tmp_path):
    path = tmp_path / "site" / "config.yaml"
    path.parent.mkdir()
    path.write_text("watch:\n  folder: photos\ndatabase:\n  url: sqlite:///data/b.db\n")
    loaded = config.load(path)
    assert loaded.watch.folder == (tmp_path / "site" / "photos").resolve()
    assert loaded.database.url == f"sqlite:///{(tmp_path / 'site' / 'data' / 'b.db').resolve()}"


def test_birdtrap_config_selects_the_file(tmp_path, monkeypatch):
    path = tmp_path / "elsewhere.yaml"
    path.write_text("camera:\n  id: trap-7\n")
    monkeypatch.setenv("BIRDTRAP_CONFIG", str(path))
    assert config.load().camera.id == "trap-7"


def test_a_missing_config_file_names_the_flag(tmp_path):
    result = CliRunner().invoke(cli, ["sightings", "--config", str(tmp_path / "nope.yaml")])
    assert result.exit_code == 1
    assert "nope.yaml not found; pass --config PATH or set BIRDTRAP_CONFIG" in result.output


def test_yaml_that_is_not_a_mapping_is_refused(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("- just\n- a list\n")
    with pytest.raises(ConfigError, match="must be a mapping"):
        config.load(path)


def test_an_archive_inside_the_watch_folder_is_refused(tmp_path):
    (tmp_path / "inbox" / "done").mkdir(parents=True)
    path = tmp_path / "config.yaml"
    path.write_text("after:\n  action: move\n  archive_folder: inbox/done\n")
    with pytest.raises(ConfigError, match="after.archive_folder .* is inside watch.folder"):
        config.check_folders(config.load(path))


@settings(max_examples=60, deadline=None)
@given(st.recursive(st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=8)),
                    lambda children: st.dictionaries(st.text(max_size=8), children, max_size=4) | st.lists(children, max_size=3),
                    max_leaves=12))
def test_any_yaml_value_either_loads_or_raises_a_config_error(value):
    import yaml

    text = yaml.safe_dump(value)
    try:
        loaded = config.parse(text, Path("/tmp/hypothesis.yaml"))
    except ConfigError as e:
        assert "/tmp/hypothesis.yaml" in str(e)
    else:
        assert isinstance(loaded, config.Config)


def test_a_detector_preset_sets_decoding_classes_and_input_and_a_key_given_too_wins(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("detector:\n  preset: megadetector-v6\n  person_classes: [1, 2]\n", encoding="utf-8")
    detector = config.load(path).detector
    assert (detector.decoding, detector.animal_classes, detector.bird_classes) == ("yolov8", (0,), ())
    assert detector.person_classes == (1, 2)

    path.write_text("detector:\n  preset: yolox-nano\n", encoding="utf-8")
    yolox = config.load(path).detector
    assert (yolox.decoding, yolox.bird_classes, yolox.input_channels, yolox.input_std) == ("yolov5", (14,), "BGR", 1.0)


def test_an_unknown_detector_preset_names_the_key_and_the_choices(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("detector:\n  preset: megadetector-v7\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="detector.preset") as caught:
        config.load(path)
    assert "megadetector-v5" in str(caught.value)
