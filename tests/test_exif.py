"""Capture times: EXIF first, file time last, wrong clocks flagged, broken EXIF never fatal."""

from __future__ import annotations

import io
from datetime import datetime

from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from birdtrap.identify.exif import parse_exif_datetime, read_metadata

from conftest import HERON, photo


@given(st.datetimes(min_value=datetime(1900, 1, 1), max_value=datetime(2200, 1, 1)))
def test_every_valid_exif_date_parses_back_to_itself(moment):
    moment = moment.replace(microsecond=0)
    assert parse_exif_datetime(moment.strftime("%Y:%m:%d %H:%M:%S")) == moment


@given(st.one_of(st.text(max_size=30), st.binary(max_size=30), st.integers(), st.none()))
def test_any_value_in_a_date_tag_parses_or_gives_none_never_raises(value):
    result = parse_exif_datetime(value)
    assert result is None or isinstance(result, datetime)


def test_impossible_dates_give_none():
    assert parse_exif_datetime("2021:02:30 10:00:00") is None
    assert parse_exif_datetime("0000:00:00 00:00:00") is None
    assert parse_exif_datetime("    :  :     :  :  ") is None


def test_the_heron_capture_time_comes_from_date_time_original():
    metadata = read_metadata(HERON[0].read_bytes(), file_mtime=0)
    assert metadata.captured.value == datetime(2021, 4, 11, 20, 43, 9)
    assert metadata.captured.source == "exif_original" and metadata.captured.plausible
    assert metadata.camera_model == "HYPERFIRE 2 COVERT"


def _jpeg_with_exif(**tags) -> bytes:
    exif = Image.Exif()
    for tag, value in tags.items():
        exif[int(tag[1:])] = value
    buffer = io.BytesIO()
    Image.open(photo("bird.bmp")).convert("RGB").save(buffer, "JPEG", exif=exif.tobytes())
    return buffer.getvalue()


def test_a_camera_clock_reset_to_2000_is_kept_but_flagged():
    metadata = read_metadata(_jpeg_with_exif(t306="2000:01:01 00:00:07"), file_mtime=1_700_000_000)
    assert metadata.captured.value == datetime(2000, 1, 1, 0, 0, 7)
    assert metadata.captured.source == "exif_datetime" and not metadata.captured.plausible


def test_a_date_in_the_future_is_flagged():
    metadata = read_metadata(_jpeg_with_exif(t306="2099:06:01 12:00:00"), file_mtime=1_700_000_000, now=datetime(2026, 11, 25))
    assert not metadata.captured.plausible


def test_no_exif_falls_back_to_the_file_time():
    metadata = read_metadata(photo("bird.bmp").read_bytes(), file_mtime=1_700_000_000)
    assert metadata.captured.source == "file_mtime"
    assert metadata.captured.value == datetime.fromtimestamp(1_700_000_000)


@settings(max_examples=50, deadline=None)
@given(st.binary(max_size=200))
def test_garbage_exif_never_raises(garbage):
    buffer = io.BytesIO()
    Image.open(photo("bird.bmp")).convert("RGB").save(buffer, "JPEG", exif=b"Exif\x00\x00" + garbage)
    metadata = read_metadata(buffer.getvalue(), file_mtime=1_700_000_000)
    assert metadata.captured.value is not None
