"""Photo bytes in, model input out: the one preprocessing path shared by the daemon and training.

`training/` imports this module, so it must stay free of TensorFlow and of daemon state: every
setting arrives as an argument (`PreprocessSettings`, `InputSpec`), nothing is read from a global
config. What the model saw in training is then exactly what it sees in the field.
"""

from __future__ import annotations

import errno
import functools
import io
import os
import stat
import warnings
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from types import ModuleType

import numpy as np
from PIL import Image, UnidentifiedImageError

from birdtrap.errors import ConfigError, PhotoError

# Pillow only parses headers here; the pixel limit is ours (PreprocessSettings.max_pixels).
Image.MAX_IMAGE_PIXELS = None

JPEG_FORMATS = {"JPEG", "MPO"}
# EXIF orientation -> the Pillow transposes that show the photo as the camera meant it.
_ORIENTATION = {
    2: (Image.Transpose.FLIP_LEFT_RIGHT,),
    3: (Image.Transpose.ROTATE_180,),
    4: (Image.Transpose.FLIP_TOP_BOTTOM,),
    5: (Image.Transpose.TRANSPOSE,),
    6: (Image.Transpose.ROTATE_270,),
    7: (Image.Transpose.TRANSVERSE,),
    8: (Image.Transpose.ROTATE_90,),
}
# ITU-R BT.601 luma, the weights of OpenCV's grey, in RGB order.
LUMA_RGB = np.array([0.299, 0.587, 0.114], np.float32)

# Mean (max - min channel) on the 0-255 scale: a camera trap's infrared night frame measures about
# 0.1-1.5 (JPEG noise), colour frames 12 and more on the shared labelled sets; 4 sits between.
# One statistic and one bound for the species rank on infrared frames and the health checks' night.
MONOCHROME_SPREAD = 4.0


def colour_spread(pixels: np.ndarray) -> float:
    """Mean of each pixel's largest minus smallest channel: about 0 for an infrared or grey frame."""
    if pixels.ndim != 3 or pixels.shape[2] < 3 or pixels.size == 0:
        return 0.0
    sample = pixels[..., :3]
    return float((sample.max(axis=2) - sample.min(axis=2)).mean())  # max >= min: no uint8 wrap-around


def opencv(needed_by: str = "preprocess.denoise and preprocess.auto_contrast") -> ModuleType:
    """OpenCV, imported on first use: only the optional denoise and auto-contrast steps need it.

    The decode (Pillow) and the resize, motion and NMS steps (numpy) the daemon runs on every photo do not. Importing OpenCV alone
    maps ~35 MB into the process (bench: daemon peak RSS) and the wheel is half the edge install,
    too much for a Pi Zero 2 that needs none of it with the default settings: it is the `opencv`
    extra. OpenCV's own decoder limit is set before the import, so a decompression bomb that
    reaches it is refused there too.
    """
    os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", str(2**28))
    try:
        import cv2
    except ImportError:
        raise ConfigError(
            f"{needed_by} needs OpenCV, which this install lacks: pip install 'birdtrap[opencv]', or turn the step off."
        ) from None
    return cv2


@dataclass(frozen=True)
class PreprocessSettings:
    """The switchable preprocessing steps; training records them in the model card."""

    reduced_decode: bool = True
    decode_min_side: int = 672
    crop_info_bars: bool = True
    max_bar_fraction: float = 0.05
    denoise: bool = False
    auto_contrast: bool = False
    max_pixels: int = 100_000_000
    max_aspect_ratio: float = 20.0
    min_side: int = 16
    max_file_mb: float = 200.0
    # A decode the decoder cannot shrink (PNG, TIFF, BMP, WebP; a JPEG without reduced_decode) holds
    # Pillow's frame and ours at once, 1.4-1.8x the frame beyond it (bench.memory): 12.2 MP keeps
    # that under 64 MB (a 4032x3024 frame: 61 MB).
    max_full_decode_pixels: int = 12_200_000

    def as_dict(self) -> dict:
        return asdict(self)

    @property
    def max_bytes(self) -> int:
        """preprocess.max_file_mb in bytes: the largest photo file that is read."""
        return int(self.max_file_mb * 2**20)

    @classmethod
    def from_dict(cls, values: dict) -> PreprocessSettings:
        known = {k: v for k, v in values.items() if k in cls.__dataclass_fields__}
        return cls(**known)


@dataclass(frozen=True)
class InputSpec:
    """A model's input contract: size, channel order, pixel scaling and tensor dtype.

    The real value fed to the network is ``(pixel - mean) / std``; for a quantized input tensor
    that value is then quantized with the interpreter's own ``scale`` and ``zero_point``
    (``scale == 0`` means a float tensor).
    """

    height: int
    width: int
    channels: str = "RGB"
    mean: float = 127.5
    std: float = 127.5
    dtype: str = "uint8"
    scale: float = 0.0
    zero_point: int = 0

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Photo:
    """A decoded photo, already oriented and stripped of info bars.

    ``bgr`` is the (possibly reduced) decode; ``original_size`` is (width, height) of the file;
    ``crop`` is the (top, bottom) rows removed from ``bgr`` as burnt-in info bars.
    """

    bgr: np.ndarray
    original_size: tuple[int, int]
    format: str
    reduction: int = 1
    crop: tuple[int, int] = field(default=(0, 0))

    def without_pixels(self) -> Photo:
        """The photo once nothing will crop it again: no pixels, but ``bgr``'s height kept (a
        height x 0 x 3 array), which privacy needs to place boxes past the cropped info bars.

        A 12 MP frame's reduced decode is ~2.25 MB; the daemon lets each go as soon as its
        region search ends instead of when its batch is written (issue 22 item 5).
        """
        return replace(self, bgr=np.zeros((self.bgr.shape[0], 0, 3), np.uint8))


def read_header(
    data: bytes, name: str, max_pixels: int, max_aspect_ratio: float = 20.0, min_side: int = 16
) -> tuple[str, int, int]:
    """Return (format, width, height) from the header alone.

    Raises PhotoError for a non-image or for one whose header claims a shape outside the bounds
    (more pixels than `max_pixels`, a long side more than `max_aspect_ratio` times the short one,
    a side under `min_side`), before a single pixel is decoded: these bounds are what keep every
    buffer and resampling matrix a photo can cause small (RELIABILITY.md, issue 16).
    """
    if not data:
        raise PhotoError(f"{name} is empty (0 bytes); the camera or copy may have failed. Copy it again.")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(io.BytesIO(data)) as image:
                fmt, (width, height) = image.format or "unknown", image.size
    except UnidentifiedImageError:
        raise PhotoError(f"{name} is not a readable image (unknown format); remove it or replace it with a JPEG.") from None
    except Exception as e:  # noqa: BLE001 - Pillow raises many types for broken headers
        raise PhotoError(f"{name} is not a readable image ({e}); remove it or replace it with a JPEG.") from None
    check_shape(name, width, height, max_pixels, max_aspect_ratio, min_side)
    return fmt, width, height


def check_shape(name: str, width: int, height: int, max_pixels: int, max_aspect_ratio: float, min_side: int) -> None:
    """Raise PhotoError, naming the config key to change, for a shape outside the preprocess bounds.

    The aspect bound matters as much as the pixel bound: a 106-byte 1x5000 PNG is 5000 pixels,
    but scaled to a fixed thumbnail width it asked for a 960000-row resampling matrix (17.9 GiB).
    """
    if width * height > max_pixels:
        raise PhotoError(
            f"{name} claims {width}x{height} pixels, more than preprocess.max_pixels "
            f"({max_pixels}); refused without decoding. Raise the limit if the photo is genuine."
        )
    if min(width, height) < min_side:
        raise PhotoError(
            f"{name} is {width}x{height} pixels, a side under preprocess.min_side ({min_side}); refused without "
            "decoding: no camera writes such a photo. Lower preprocess.min_side if it is genuine."
        )
    aspect = max(width, height) / min(width, height)
    if aspect > max_aspect_ratio:
        raise PhotoError(
            f"{name} is {width}x{height} pixels, an aspect ratio of {aspect:.0f}:1, more than "
            f"preprocess.max_aspect_ratio ({max_aspect_ratio:g}:1); refused without decoding. "
            "Raise preprocess.max_aspect_ratio if the photo is a genuine panorama."
        )


def _looks_truncated(data: bytes) -> bool:
    """A complete JPEG has an end-of-image marker after its last scan.

    Not simply "ends with FFD9": cameras pad after it and phones append trailers (motion photos,
    maker data). Inside a scan FF is always stuffed (FF00), so the markers cannot be faked there;
    the EXIF thumbnail's own EOI comes before the main image's scan and does not count.
    """
    return data.rfind(b"\xff\xd9") < data.rfind(b"\xff\xda") or b"\xff\xd9" not in data


def reduction_for(width: int, height: int, min_side: int) -> int:
    """The largest JPEG DCT reduction (1, 2, 4 or 8) that keeps the short side >= min_side."""
    short = min(width, height)
    for factor in (8, 4, 2):
        if short // factor >= min_side:
            return factor
    return 1


def decode(data: bytes, name: str, settings: PreprocessSettings) -> Photo:
    """Decode photo bytes into an oriented BGR array, reduced in the JPEG decoder when large.

    Raises PhotoError naming ``name`` for empty, truncated, oversized or undecodable data.
    """
    fmt, width, height = read_header(data, name, settings.max_pixels, settings.max_aspect_ratio, settings.min_side)
    if fmt in JPEG_FORMATS and _looks_truncated(data):
        raise PhotoError(f"{name} is a truncated JPEG (no end-of-image marker); the copy was cut short. Copy it again.")
    factor = 1
    if settings.reduced_decode and fmt in JPEG_FORMATS:
        factor = reduction_for(width, height, settings.decode_min_side)
    if factor == 1 and width * height > settings.max_full_decode_pixels:
        raise PhotoError(
            f"{name} is a {fmt} of {width}x{height} pixels that must be decoded at full size (only JPEGs shrink while "
            f"decoding), more than preprocess.max_full_decode_pixels ({settings.max_full_decode_pixels}); refused without "
            "decoding. Save it as a JPEG, or raise the limit where memory allows."
        )
    try:
        bgr = decode_pixels(data, factor)
    except Exception as e:  # noqa: BLE001 - Pillow raises many types for broken data
        raise PhotoError(f"{name} is not a readable image (its {fmt} data cannot be decoded: {e}).") from None
    if bgr.size == 0:
        raise PhotoError(f"{name} is not a readable image (its {fmt} data holds no pixels).")
    crop = (0, 0)
    if settings.crop_info_bars:
        bgr, crop = crop_info_bars(bgr, settings.max_bar_fraction)
    return Photo(bgr=bgr, original_size=(width, height), format=fmt, reduction=factor, crop=crop)


def decode_pixels(data: bytes, factor: int = 1) -> np.ndarray:
    """Decode to a BGR array (a view of Pillow's RGB), shrunk `factor` times inside the JPEG decoder.

    Pillow's draft mode is libjpeg-turbo's DCT scaling, the same pixels as OpenCV's
    IMREAD_REDUCED_COLOR_n (bench: mean difference 0.00) at a fraction of the memory (see
    `opencv`). EXIF orientation is applied, as a camera's viewer would.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with Image.open(io.BytesIO(data)) as image:
            if factor > 1:
                image.draft("RGB", (max(1, image.width // factor), max(1, image.height // factor)))
            image.load()
            orientation = _ORIENTATION.get(image.getexif().get(0x0112), ())
            if not orientation:
                return _as_rgb_array(image)[..., ::-1]
            # Pillow's convert() copies even an RGB image: skip it when the decoder gave RGB.
            rgb = image if image.mode == "RGB" else image.convert("RGB")
            for method in orientation:
                rgb = rgb.transpose(method)
            return _as_rgb_array(rgb)[..., ::-1]


def looping_link(path: str | Path) -> PhotoError:
    """The failure of a symbolic link that never reaches a file (`ln -s a.jpg a.jpg`)."""
    return PhotoError(
        f"{path} is a symbolic link that loops (it points back to itself through links); nothing to read. "
        "Replace it with the photo or delete it."
    )


_COPY_BYTES = 4 * 2**20  # rows of decoded pixels converted and copied at once


def _as_rgb_array(image: Image.Image) -> np.ndarray:
    """Pillow's pixels as an RGB numpy array, converted and copied a band of rows at a time.

    `np.asarray` goes through `tobytes()`, which joins encoded chunks, and `convert("RGB")`
    makes a whole second frame: together 2.3x the frame beyond it (bench.memory, 534 MB for an
    80 MP PNG). Band by band, the cost is the array itself plus a few bands of _COPY_BYTES.
    Every mode conversion to RGB is per pixel, so the bands give the same pixels.
    """
    width, height = image.size
    step = max(1, _COPY_BYTES // (3 * width))
    if step >= height:
        return np.asarray(image if image.mode == "RGB" else image.convert("RGB"))
    out = np.empty((height, width, 3), np.uint8)
    for top in range(0, height, step):
        bottom = min(height, top + step)
        band = image.crop((0, top, width, bottom))
        out[top:bottom] = np.asarray(band if band.mode == "RGB" else band.convert("RGB"))
    return out


def read_photo_bytes(path: Path, max_bytes: int | None = None) -> bytes:
    """Read a regular file's bytes; refuse FIFOs, devices and folders without blocking on them.

    A file over `max_bytes` (preprocess.max_file_mb) is refused before it is read: a video or a
    disk image named like a photo must not be held in memory whole.
    """
    try:
        info = os.stat(path)
    except FileNotFoundError:
        if os.path.islink(path):
            raise PhotoError(
                f"{path} is a symbolic link to {os.readlink(path)}, which does not exist; nothing to read. "
                "Copy the photo in, or point the link at it."
            ) from None
        raise PhotoError(f"{path} disappeared before it could be read.") from None
    except PermissionError:
        raise PhotoError(f"{path} cannot be read (permission denied); give the birdtrap user read access.") from None
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise looping_link(path) from None
        raise PhotoError(f"{path} cannot be read ({e.strerror}).") from None
    if not stat.S_ISREG(info.st_mode):
        raise PhotoError(f"{path} is not a regular file; only photo files are processed.")
    try:
        # O_NONBLOCK: if the path was swapped for a FIFO after the stat, open must not hang.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except PermissionError:
        raise PhotoError(f"{path} cannot be read (permission denied); give the birdtrap user read access.") from None
    except OSError as e:
        raise PhotoError(f"{path} cannot be opened ({e.strerror}).") from None
    with os.fdopen(fd, "rb") as handle:
        opened = os.fstat(handle.fileno())
        if not stat.S_ISREG(opened.st_mode):
            raise PhotoError(f"{path} is not a regular file; only photo files are processed.")
        if max_bytes is not None and opened.st_size > max_bytes:
            raise PhotoError(
                f"{path} is {opened.st_size / 2**20:.0f} MB, more than preprocess.max_file_mb "
                f"({max_bytes / 2**20:g}); refused without reading. Raise the limit if the photo is genuine."
            )
        # What the stat saw plus one byte: read(n) allocates n bytes up front, so asking for the
        # bound (max_bytes + 1, 50 MB by default) reserved that much for every 3 MB photo. A file
        # that grew since the stat is read on, to at most one byte over the bound: cut, not held whole.
        data = handle.read(opened.st_size + 1)
        if len(data) > opened.st_size:
            data += handle.read() if max_bytes is None else handle.read(max(0, max_bytes + 1 - len(data)))
        if max_bytes is not None and len(data) > max_bytes:
            raise PhotoError(
                f"{path} grew past preprocess.max_file_mb ({max_bytes / 2**20:g}) while it was read; refused. "
                "Raise the limit if the photo is genuine."
            )
        return data


def load(path: Path, settings: PreprocessSettings | None = None) -> Photo:
    """Read and decode one photo file (see `decode`)."""
    settings = settings or PreprocessSettings()
    return decode(read_photo_bytes(Path(path), settings.max_bytes), str(path), settings)


def crop_info_bars(bgr: np.ndarray, max_fraction: float = 0.05) -> tuple[np.ndarray, tuple[int, int]]:
    """Remove the black text bars that camera traps burn into the top and bottom rows.

    A bar row is mostly pure black, 0-3 (the text is a minority of its pixels); a night scene,
    however dark, has sensor noise above that. The search is capped at ``max_fraction`` of the
    height, so even a misjudged scene loses at most that much.
    Returns the cropped view and the (top, bottom) rows removed.
    """
    height = bgr.shape[0]
    limit = max(1, int(height * max_fraction))

    def black_rows(rows: np.ndarray) -> np.ndarray:
        # Only the rows a bar may fill are looked at: no full-frame grey copy on every photo.
        # Grey as OpenCV rounds it: <= 3 after rounding is < 3.5 before.
        gray = rows if rows.ndim == 2 else rows @ LUMA_RGB[::-1]
        return (gray < 3.5).mean(axis=1) >= 0.5

    def run_length(is_black_row: np.ndarray) -> int:
        count = 0
        for is_black in is_black_row:
            if not is_black:
                break
            count += 1
        # Too thin to be a bar (a dark line of the scene): leave it.
        return count if count >= max(2, height // 100) else 0

    top = run_length(black_rows(bgr[:limit]))
    bottom = run_length(black_rows(bgr[height - limit :])[::-1])
    if top == 0 and bottom == 0:
        return bgr, (0, 0)
    return bgr[top : height - bottom], (top, bottom)


def _denoise(bgr: np.ndarray) -> np.ndarray:
    # Bilateral, not non-local means: ~1.5 ms at 448x448 against ~86 ms at 224x224 for NLM.
    return opencv().bilateralFilter(bgr, d=5, sigmaColor=30, sigmaSpace=5)


def _auto_contrast(bgr: np.ndarray) -> np.ndarray:
    cv2 = opencv()
    lab = cv2.cvtColor(bgr, cv2.COLOR_BGR2LAB)
    clahe = cv2.createCLAHE(clipLimit=2.0, tileGridSize=(8, 8))
    lab[..., 0] = clahe.apply(np.ascontiguousarray(lab[..., 0]))
    return cv2.cvtColor(lab, cv2.COLOR_LAB2BGR)


def _pixel_table(spec: InputSpec) -> np.ndarray:
    """A 256-entry lookup from pixel value to model input value (exact for any affine quantization)."""
    pixels = np.arange(256, dtype=np.float64)
    real = (pixels - spec.mean) / spec.std
    if spec.scale == 0:
        return real.astype(np.float32)
    info = np.iinfo(np.dtype(spec.dtype))
    quantized = np.clip(np.round(real / spec.scale + spec.zero_point), info.min, info.max)
    return quantized.astype(spec.dtype)


_TABLES: dict[InputSpec, np.ndarray] = {}


def to_model_input(bgr: np.ndarray, spec: InputSpec, settings: PreprocessSettings | None = None) -> np.ndarray:
    """Turn a BGR image (a whole photo or a region of it) into one input tensor row.

    Noise reduction and auto-contrast run on a copy downscaled to twice the model input, never
    on the full-resolution decode. Returns an array of shape (height, width, 3) in spec.dtype.
    """
    settings = settings or PreprocessSettings()
    image = bgr if bgr.ndim == 3 else np.repeat(bgr[..., None], 3, axis=2)
    if settings.denoise or settings.auto_contrast:
        image = _enhance(image, spec, settings)
    rgb = image[..., ::-1]  # reversing the decoder's BGR view gives back its contiguous RGB rows
    # OpenCV's choice, kept: area averaging to shrink, bilinear when either side must grow.
    shrinking = rgb.shape[1] >= spec.width and rgb.shape[0] >= spec.height
    rgb = Image.fromarray(resample(rgb, spec.width, spec.height, "area" if shrinking else "linear"))
    table = _TABLES.get(spec)
    if table is None:
        table = _TABLES[spec] = _pixel_table(spec)
    if table.dtype in (np.uint8, np.int8):
        # One table lookup per band inside Pillow; an int8 table is applied as its bytes.
        array = np.asarray(rgb.point(table.view(np.uint8).tolist() * 3)).view(table.dtype)
    else:
        array = table[np.asarray(rgb)]
    return np.ascontiguousarray(array[..., ::-1]) if spec.channels == "BGR" else array


@functools.lru_cache(maxsize=64)
def area_taps(size: int, out: int) -> tuple[np.ndarray, np.ndarray]:
    """For each output pixel, the source pixels it covers and the share of it each one covers."""
    scale = size / out
    count = int(np.ceil(scale)) + 1
    starts = np.floor(np.arange(out) * scale).astype(np.intp)
    index = np.minimum(starts[:, None] + np.arange(count), size - 1)
    left = np.maximum(index, np.arange(out)[:, None] * scale)
    right = np.minimum(index + 1, (np.arange(out)[:, None] + 1) * scale)
    weight = np.clip(right - left, 0, None) / scale
    weight[starts[:, None] + np.arange(count) >= size] = 0
    return index, weight.astype(np.float32)


@functools.lru_cache(maxsize=64)
def linear_taps(size: int, out: int) -> tuple[np.ndarray, np.ndarray]:
    """Bilinear taps with pixel centres aligned and the edge pixel repeated (OpenCV's INTER_LINEAR)."""
    position = (np.arange(out) + 0.5) * (size / out) - 0.5
    start = np.floor(position).astype(np.intp)
    fraction = position - start
    fraction[start < 0] = 0
    fraction[start >= size - 1] = 0
    start = np.clip(start, 0, size - 1)
    index = np.stack([start, np.minimum(start + 1, size - 1)], axis=1)
    return index, np.stack([1 - fraction, fraction], axis=1).astype(np.float32)


_TAPS = {"area": area_taps, "linear": linear_taps}
_BAND_ROWS = 4  # output pixels per band: small bands skip the most zeros (bench: 4 beat 8 and 16)
# Float working memory of one resample is bounded by these, whatever the shapes (issue 16: a
# 1x5000 PNG asked for a 17.9 GiB matrix): rows of the intermediate image held at once, and
# source rows cast to float at once. A normal photo fits both in one piece (same numbers).
_CHUNK_BYTES = 16 * 2**20
_SOURCE_BYTES = 8 * 2**20


@functools.lru_cache(maxsize=64)
def _bands(kind: str, size: int, out: int, channels: int = 0) -> tuple[tuple[int, int, int, int, np.ndarray], ...]:
    """The taps as dense weight blocks, each a few output pixels and the source span they read.

    Built band by band from the taps, never as the whole (out, size) matrix: memory is the
    taps' (out x taps) and the blocks' (about size + out), whatever the two lengths.
    With `channels` the block is for the right side of a product over interleaved pixels
    (a kron with the identity), so the second pass needs no transpose of the image.
    """
    index, weight = _TAPS[kind](size, out)
    bands = []
    for first in range(0, out, _BAND_ROWS):
        last = min(out, first + _BAND_ROWS)
        taps, weights = index[first:last], weight[first:last]
        used = taps[weights != 0]
        start, stop = (int(used.min()), int(used.max()) + 1) if used.size else (int(taps.min()), int(taps.min()) + 1)
        block = np.zeros((last - first, stop - start), np.float32)
        inside = weights != 0
        rows = np.broadcast_to(np.arange(last - first)[:, None], taps.shape)
        np.add.at(block, (rows[inside], taps[inside] - start), weights[inside])
        if channels:
            block = np.kron(block.T, np.eye(channels, dtype=np.float32))
        bands.append((first, last, start, stop, np.ascontiguousarray(block)))
    return tuple(bands)


def resample(image: np.ndarray, width: int, height: int, kind: str = "area") -> np.ndarray:
    """Resize a uint8 (H, W, C) image with OpenCV's INTER_AREA ("area") or INTER_LINEAR ("linear").

    The same numbers as OpenCV (test_opencv_free), without OpenCV: separable, each pass a few
    small matrix products over bands of the banded weight matrix, in float (OpenCV's fixed-point
    rounding flipped a borderline owl frame). Pillow's BOX filter is not this: it takes whole
    pixels in or out, and that shifted borderline birds of the shared camera-trap set.
    The output is made in chunks of rows, so the float intermediate stays under _CHUNK_BYTES
    (plus one band) and the source is cast to float _SOURCE_BYTES at a time: the transient
    memory is bounded by design, not by the photo's shape.
    """
    rows, columns, channels = image.shape
    flat = image.reshape(rows, columns * channels)
    vertical = _bands(kind, rows, height)
    horizontal = _bands(kind, columns, width, channels)
    row_bytes = 4 * columns * channels
    chunk = max(_BAND_ROWS, _CHUNK_BYTES // row_bytes // _BAND_ROWS * _BAND_ROWS)
    source_rows = max(1, _SOURCE_BYTES // row_bytes)
    out = np.empty((height, width * channels), np.uint8)
    tall = np.empty((min(chunk, height), columns * channels), np.float32)
    for top in range(0, height, chunk):
        bottom = min(height, top + chunk)
        part = tall[: bottom - top]
        for first, last, start, stop, block in vertical[top // _BAND_ROWS : -(-bottom // _BAND_ROWS)]:
            target = part[first - top : last - top]
            if stop - start <= source_rows:
                np.matmul(block, flat[start:stop], out=target)
                continue
            target[:] = 0
            for at in range(start, stop, source_rows):
                end = min(stop, at + source_rows)
                target += block[:, at - start : end - start] @ flat[at:end]
        wide = np.empty((bottom - top, width * channels), np.float32)
        for first, last, start, stop, block in horizontal:
            np.matmul(part[:, start * channels : stop * channels], block, out=wide[:, first * channels : last * channels])
        np.clip(np.rint(wide), 0, 255, out=wide)
        out[top:bottom] = wide
    return out.reshape(height, width, channels)


def _enhance(bgr: np.ndarray, spec: InputSpec, settings: PreprocessSettings) -> np.ndarray:
    """Noise reduction and auto-contrast on a copy at twice the model input, never the full decode."""
    cv2 = opencv()
    image = np.ascontiguousarray(bgr)
    work_w, work_h = 2 * spec.width, 2 * spec.height
    if image.shape[1] > work_w or image.shape[0] > work_h:
        image = cv2.resize(image, (work_w, work_h), interpolation=cv2.INTER_AREA)
    if settings.denoise:
        image = _denoise(image)
    if settings.auto_contrast:
        image = _auto_contrast(image)
    return image
