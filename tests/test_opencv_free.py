"""The daemon's per-photo path runs without OpenCV, and gives what OpenCV gave.

OpenCV maps ~35 MB into any process that imports it (bench: the daemon's peak RSS); the decode,
resize, motion thumbnail, motion blobs and YOLO NMS are Pillow and numpy, and OpenCV (the `opencv`
extra) is loaded only by the optional denoise and auto-contrast steps. These tests hold both
halves: OpenCV stays out, and the replacements match it (OpenCV itself is installed for the
tests); and a config that needs the missing extra stops the daemon at start with a message.
"""

from __future__ import annotations

import shutil
import subprocess
import sys

import cv2
import numpy as np
import pytest

from birdtrap.config import load as load_config
from birdtrap.daemon.wiring import build_identifier
from birdtrap.errors import ConfigError
from birdtrap.identify.motion import _component_boxes, _window
from birdtrap.identify.preprocess import decode_pixels, resample
from birdtrap.identify.regions import non_max_suppression

from conftest import HERON, ROOT, photo, rows, write_config


def test_the_daemon_imports_and_runs_a_burst_without_loading_opencv():
    script = f"""
import sys
import birdtrap.cli, birdtrap.daemon.loop
from birdtrap.identify.motion import BurstMemory, BurstKey, thumbnail_for_motion
from birdtrap.identify.preprocess import InputSpec, PreprocessSettings, load, to_model_input
from datetime import datetime, timedelta
memory, start = BurstMemory(), datetime(2024, 5, 1, 3, 0)
regions = []
for i, path in enumerate({[str(p) for p in HERON[:3]]!r}):
    photo = load(path, PreprocessSettings())
    to_model_input(photo.bgr, InputSpec(224, 224, scale=0.0078125, zero_point=128))
    regions = memory.observe(BurstKey("cam", start + timedelta(seconds=i)), thumbnail_for_motion(photo.bgr))()
print(len(regions), "cv2" in sys.modules)
"""
    run = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.split() == [run.stdout.split()[0], "False"], run.stdout


def test_pillows_reduced_decode_gives_opencvs_pixels():
    data = photo("2021-05-28_SYFR0041_deer.JPG").read_bytes()  # 4032 x 3024
    for factor, flag in ((1, cv2.IMREAD_COLOR), (4, cv2.IMREAD_REDUCED_COLOR_4), (8, cv2.IMREAD_REDUCED_COLOR_8)):
        ours = decode_pixels(data, factor)
        theirs = cv2.imdecode(np.frombuffer(data, np.uint8), flag)
        assert ours.shape == theirs.shape
        assert np.abs(ours.astype(np.int16) - theirs).max() <= 1


def test_motion_morphology_and_blobs_match_opencv_on_random_masks():
    rng = np.random.default_rng(7)
    for _ in range(40):
        mask = (rng.random((72, 96)) > rng.uniform(0.93, 0.995)).astype(np.uint8)
        theirs = cv2.dilate(cv2.morphologyEx(mask, cv2.MORPH_OPEN, np.ones((2, 2), np.uint8)), np.ones((5, 5), np.uint8))
        ours = _window(_window(mask, range(-1, 1), np.minimum, 1), range(-1, 1), np.maximum, 0)
        ours = _window(ours, range(-2, 3), np.maximum, 0)
        assert np.array_equal(ours, theirs)
        _, _, stats, _ = cv2.connectedComponentsWithStats(theirs)
        # The same blobs; OpenCV's block-based labelling may number them in another order.
        assert sorted(_component_boxes(ours)) == sorted(tuple(int(v) for v in row) for row in stats[1:])


def test_resizing_matches_opencvs_area_and_bilinear_within_one_level():
    rng = np.random.default_rng(3)
    for shape, size in (((756, 1008, 3), (224, 224)), ((300, 150, 3), (224, 224)), ((40, 30, 3), (224, 224)), ((756, 1008, 1), (192, 138))):
        image = rng.integers(0, 256, shape, dtype=np.uint8)
        shrinking = shape[1] >= size[0] and shape[0] >= size[1]
        theirs = cv2.resize(image, size, interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR).reshape(size[1], size[0], -1)
        ours = resample(image, size[0], size[1], "area" if shrinking else "linear")
        assert ours.shape == theirs.shape
        # OpenCV rounds its fixed-point weights differently: one grey level at most, rarely.
        difference = np.abs(ours.astype(np.int16) - theirs)
        assert difference.max() <= 1 and difference.mean() < 0.2


def test_yolo_nms_without_opencv_keeps_what_opencvs_nmsboxes_keeps():
    rng = np.random.default_rng(11)
    for _ in range(300):
        count = int(rng.integers(1, 30))
        centres, sizes = rng.random((count, 2)), rng.random((count, 2)) * rng.choice([0.05, 0.3, 1.0])
        corners = np.clip(np.concatenate([centres - sizes / 2, centres + sizes / 2], axis=1), 0, 1).astype(np.float32)
        scores = np.round(rng.random(count), 2).astype(np.float32)  # rounded: ties must break alike
        min_score, iou = float(rng.choice([0.0, 0.25, 0.5])), float(rng.choice([0.3, 0.45, 0.7]))
        rectangles = [[float(x0), float(y0), float(x1 - x0), float(y1 - y0)] for x0, y0, x1, y1 in corners]
        theirs = [int(k) for k in np.array(cv2.dnn.NMSBoxes(rectangles, scores.tolist(), min_score, iou)).reshape(-1)]
        assert non_max_suppression(corners, scores, min_score, iou) == theirs


def test_denoise_without_opencv_is_refused_when_the_models_load_naming_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "cv2", None)  # what `import cv2` meets in an edge install
    config = load_config(write_config(tmp_path, preprocess={"denoise": True}))
    with pytest.raises(ConfigError, match=r"preprocess.denoise .*turned on by the config.*birdtrap\[opencv\]"):
        build_identifier(config)


def test_the_daemon_without_opencv_stops_at_start_and_leaves_the_photos_untouched(tmp_path):
    config = write_config(tmp_path, preprocess={"auto_contrast": True})
    shutil.copy(HERON[0], tmp_path / "inbox")
    script = (
        "import runpy, sys; sys.modules['cv2'] = None; "
        "sys.argv = ['birdtrap', 'run', '--config', sys.argv[1]]; runpy.run_module('birdtrap', run_name='__main__')"
    )
    run = subprocess.run([sys.executable, "-c", script, str(config)], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert run.returncode != 0
    assert "pip install 'birdtrap[opencv]'" in run.stdout + run.stderr
    assert (tmp_path / "inbox" / HERON[0].name).exists()
    assert [row for row in rows(tmp_path) if row[1] != "pending"] == []
