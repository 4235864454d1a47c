"""Preprocessing on real photos: reduced decode, orientation, info bars, model input."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from birdtrap.errors import PhotoError
from birdtrap.identify.preprocess import (
    InputSpec,
    PreprocessSettings,
    crop_info_bars,
    decode,
    load,
    read_header,
    reduction_for,
    to_model_input,
)

from conftest import HERON, photo

SPEC = InputSpec(224, 224, dtype="uint8", scale=0.0078125, zero_point=128)


def test_a_large_jpeg_is_reduced_in_the_decoder_but_keeps_the_short_side_asked_for():
    settings = PreprocessSettings(decode_min_side=448, crop_info_bars=False)
    decoded = load(photo("2021-05-28_SYFR0041_deer.JPG"), settings)  # 4032 x 3024
    assert decoded.original_size == (4032, 3024)
    assert decoded.reduction == 4
    assert decoded.bgr.shape[:2] == (756, 1008)
    full = load(photo("2021-05-28_SYFR0041_deer.JPG"), PreprocessSettings(reduced_decode=False, crop_info_bars=False))
    assert full.bgr.shape[:2] == (3024, 4032)


def test_the_reduction_never_goes_below_the_short_side():
    assert reduction_for(2048, 1440, 448) == 2
    assert reduction_for(512, 343, 224) == 1
    assert reduction_for(4032, 3024, 224) == 8


def test_exif_orientation_is_applied(tmp_path):
    source = Image.open(photo("bird.bmp")).convert("RGB")  # 512 x 343
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    buffer = io.BytesIO()
    source.save(buffer, "JPEG", exif=exif.tobytes(), quality=90)
    decoded = decode(buffer.getvalue(), "exif_rotated.jpg", PreprocessSettings(crop_info_bars=False))
    assert decoded.bgr.shape[:2] == (512, 343)


def test_the_reconyx_info_bars_are_cropped_from_the_heron_frames():
    for path in HERON[:3]:
        decoded = load(path, PreprocessSettings(decode_min_side=360))
        top, bottom = decoded.crop
        height = decoded.bgr.shape[0] + top + bottom
        # The bars are about 2-3 % of the height; never more than the 5 % cap.
        assert 0.015 * height <= top <= 0.05 * height
        assert 0.015 * height <= bottom <= 0.05 * height
        # Exactly the bar: the dark night scene right above the bottom bar is kept.
        assert top == bottom


def test_a_photo_without_bars_is_left_whole():
    decoded = load(photo("bird.bmp"))
    assert decoded.crop == (0, 0)
    image = np.full((100, 80, 3), 120, np.uint8)
    assert crop_info_bars(image)[1] == (0, 0)


def test_model_input_has_the_models_shape_dtype_and_quantized_range():
    decoded = load(photo("bird.bmp"))
    array = to_model_input(decoded.bgr, SPEC)
    assert array.shape == (224, 224, 3) and array.dtype == np.uint8
    # For this quantization (-1..1 in steps of 1/128) a pixel p becomes round(p * 256 / 255).
    assert 240 <= array.max() <= 255 and array.min() <= 15
    as_float = to_model_input(decoded.bgr, InputSpec(224, 224, dtype="float32"))
    assert as_float.dtype == np.float32 and -1.0 <= as_float.min() and as_float.max() <= 1.0
    assert np.allclose((array.astype(np.float32) - 128) * 0.0078125, as_float, atol=0.0079)


def test_int8_inputs_are_quantized_with_their_own_zero_point():
    decoded = load(photo("bird.bmp"))
    array = to_model_input(decoded.bgr, InputSpec(96, 96, dtype="int8", scale=0.0078125, zero_point=0))
    assert array.dtype == np.int8 and array.min() >= -128 and array.max() <= 127


def test_rgb_order_is_what_the_model_gets():
    red = np.zeros((50, 50, 3), np.uint8)
    red[..., 2] = 255  # BGR red
    array = to_model_input(red, InputSpec(32, 32, mean=0, std=1, dtype="float32"))
    assert array[..., 0].min() == 255 and array[..., 2].max() == 0


@pytest.mark.parametrize("denoise,auto_contrast", [(True, False), (False, True), (True, True)])
def test_denoise_and_auto_contrast_keep_the_contract(denoise, auto_contrast):
    decoded = load(photo("IMG_1160.JPG"))
    settings = PreprocessSettings(denoise=denoise, auto_contrast=auto_contrast)
    plain = to_model_input(decoded.bgr, SPEC)
    processed = to_model_input(decoded.bgr, SPEC, settings)
    assert processed.shape == plain.shape and processed.dtype == plain.dtype
    assert not np.array_equal(processed, plain)


def test_empty_truncated_and_non_image_bytes_are_named_in_the_error():
    settings = PreprocessSettings()
    with pytest.raises(PhotoError, match="zero.jpg is empty"):
        decode(b"", "zero.jpg", settings)
    whole = photo("IMG_0708.JPG").read_bytes()
    with pytest.raises(PhotoError, match="truncated.jpg is a truncated JPEG"):
        decode(whole[: len(whole) // 2], "truncated.jpg", settings)
    with pytest.raises(PhotoError, match="notes.jpg is not a readable image"):
        decode(b"hello, this is text\n" * 20, "notes.jpg", settings)


def test_padding_after_the_end_marker_is_not_truncation():
    whole = photo("IMG_0708.JPG").read_bytes()
    decoded = decode(whole + b"\x00" * 300, "padded.jpg", PreprocessSettings())
    assert decoded.bgr.size > 0


def _png_header(width: int, height: int) -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")


def test_a_decompression_bomb_is_refused_from_its_header():
    bomb = _png_header(50_000, 50_000)
    assert len(bomb) < 200
    with pytest.raises(PhotoError, match="bomb.png claims 50000x50000 pixels.*refused without decoding"):
        read_header(bomb, "bomb.png", PreprocessSettings().max_pixels)


def test_a_fifo_is_refused_without_blocking(tmp_path):
    import os

    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)
    with pytest.raises(PhotoError, match="not a regular file"):
        load(fifo)


def test_a_trailer_after_the_end_marker_is_not_truncation_but_a_cut_scan_is():
    whole = photo("IMG_0708.JPG").read_bytes()
    assert decode(whole + b"maker trailer SEFT\x00\x01", "trailer.jpg", PreprocessSettings()).bgr.size > 0
    for fraction in (0.2, 0.5, 0.9, 0.999):
        with pytest.raises(PhotoError, match="truncated JPEG"):
            decode(whole[: int(len(whole) * fraction)], "cut.jpg", PreprocessSettings())


# --- memory bounds (issue 16) ---------------------------------------------------------------


def png_bytes(width: int, height: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (80, 110, 70)).save(out, "PNG")
    return out.getvalue()


@pytest.mark.parametrize(("width", "height"), [(1, 5000), (5000, 1), (2, 3000), (3000, 2), (25, 600)])
def test_a_tiny_very_tall_or_wide_image_is_refused_before_decoding_naming_the_key(width, height):
    # A 106-byte 1x5000 PNG asked preprocess._bands for a (960000, 5000) float32 matrix: 17.9 GiB.
    data = png_bytes(width, height)
    with pytest.raises(PhotoError, match=rf"line.png is {width}x{height} pixels.*preprocess\.(max_aspect_ratio|min_side)"):
        decode(data, "line.png", PreprocessSettings())


def test_a_panorama_of_six_to_one_is_decoded_and_shrunk_for_the_model_and_the_motion_thumbnail():
    from birdtrap.identify.motion import THUMB_MAX_HEIGHT, thumbnail_for_motion

    for width, height in ((6000, 1000), (1000, 6000)):
        photo_ = decode(png_bytes(width, height), "panorama.png", PreprocessSettings(crop_info_bars=False))
        assert photo_.bgr.shape[:2] == (height, width)
        assert to_model_input(photo_.bgr, SPEC).shape == (224, 224, 3)
        thumb = thumbnail_for_motion(photo_.bgr)
        assert thumb.shape[1] == 192 and thumb.shape[0] <= THUMB_MAX_HEIGHT


def test_the_aspect_and_side_bounds_follow_the_config_keys():
    data = png_bytes(30, 900)
    settings = PreprocessSettings(max_aspect_ratio=40, min_side=16)
    assert decode(data, "tall.png", settings).bgr.shape[:2] == (900, 30)
    with pytest.raises(PhotoError, match=r"preprocess\.min_side \(64\)"):
        decode(data, "tall.png", PreprocessSettings(max_aspect_ratio=40, min_side=64))


def test_a_photo_file_over_max_file_mb_is_refused_before_it_is_read(tmp_path):
    big = tmp_path / "video.jpg"
    big.write_bytes(bytes(3 * 2**20))
    with pytest.raises(PhotoError, match=r"video.jpg is 3 MB, more than preprocess.max_file_mb \(2\)"):
        load(big, PreprocessSettings(max_file_mb=2))


def test_resampling_in_chunks_gives_the_same_pixels_as_in_one_piece(monkeypatch):
    from birdtrap.identify import preprocess

    image = np.random.default_rng(7).integers(0, 256, (3000, 500, 3), dtype=np.uint8)
    whole = [preprocess.resample(image, 192, 1152), preprocess.resample(image, 224, 224, "linear")]
    # Chunks of a few rows and a few source rows at a time: every split of the work is exercised.
    monkeypatch.setattr(preprocess, "_CHUNK_BYTES", 40 * 500 * 3 * 4)
    monkeypatch.setattr(preprocess, "_SOURCE_BYTES", 3 * 500 * 3 * 4)
    chunked = [preprocess.resample(image, 192, 1152), preprocess.resample(image, 224, 224, "linear")]
    for one, other in zip(whole, chunked, strict=True):
        assert np.array_equal(one, other)


def test_a_photo_that_must_be_decoded_at_full_size_is_refused_above_the_bound_naming_the_key(tmp_path):
    """A PNG cannot shrink while decoding: above preprocess.max_full_decode_pixels it is refused
    from its header (no pixel decoded), while a JPEG of the same size decodes reduced."""
    import io
    from dataclasses import replace

    from PIL import Image

    from birdtrap.errors import PhotoError
    from birdtrap.identify.preprocess import PreprocessSettings, decode

    settings = PreprocessSettings(max_full_decode_pixels=1_000_000)
    frame = Image.new("RGB", (1400, 800), (90, 120, 60))
    as_png, as_jpeg = io.BytesIO(), io.BytesIO()
    frame.save(as_png, "PNG")
    frame.save(as_jpeg, "JPEG")
    with pytest.raises(PhotoError) as refused:
        decode(as_png.getvalue(), "big.png", settings)
    assert "big.png is a PNG of 1400x800 pixels" in str(refused.value)
    assert "preprocess.max_full_decode_pixels (1000000)" in str(refused.value)
    photo = decode(as_jpeg.getvalue(), "big.jpg", replace(settings, decode_min_side=300))
    assert photo.reduction > 1
    assert decode(as_png.getvalue(), "big.png", replace(settings, max_full_decode_pixels=1_120_000)).bgr.shape[:2] == (800, 1400)
