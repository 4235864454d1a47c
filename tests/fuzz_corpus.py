"""A fixed-seed corpus of hostile photo files, made from real photos (issue 16).

`make(folder, good)` writes a few hundred files that a camera, a card reader, a copy tool or an
attacker could put in a watch folder: shapes that ask for huge buffers (1xN, Nx1), headers that
claim billions of pixels, decompression bombs inside the limits, truncated and wrong-extension
files, every format and mode Pillow writes, animations with many frames, junk EXIF orientation,
huge metadata, zero and random bytes, odd (valid UTF-8) names and symlinks. Every file's bytes
are unique, so each ends as its own row. Returns the kinds written, kind -> file names.

Left out on purpose: names that are not UTF-8 and symlink loops (another branch of issue 16
fixes those in ingest/store); add them here once it is merged.
"""

from __future__ import annotations

import io
import random
import struct
import zlib
from collections import defaultdict
from pathlib import Path

import numpy as np
from PIL import Image

SEED = 16


class Corpus:
    def __init__(self, folder: Path, seed: int = SEED) -> None:
        self.folder = folder
        self.random = random.Random(seed)
        self.numbers = np.random.default_rng(seed)
        self.kinds: dict[str, list[str]] = defaultdict(list)
        self.count = 0

    def write(self, kind: str, suffix: str, data: bytes, stem: str | None = None) -> Path:
        self.count += 1
        path = self.folder / f"{stem or kind}-{self.count:03d}{suffix}"
        path.write_bytes(data)
        self.kinds[kind].append(path.name)
        return path

    def noise(self, width: int, height: int, mode: str = "RGB") -> Image.Image:
        bands = len(Image.new(mode, (1, 1)).getbands())
        pixels = self.numbers.integers(0, 256, (height, width, bands), dtype=np.uint8)
        return Image.fromarray(pixels[..., 0] if bands == 1 else pixels, "L" if bands == 1 else None).convert(mode)


def encoded(image: Image.Image, fmt: str, **options) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **options)
    return out.getvalue()


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


def png_claiming(width: int, height: int, salt: int) -> bytes:
    """A PNG whose IHDR claims width x height, with one tiny IDAT: a header-only bomb."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(bytes(64) + salt.to_bytes(4, "big"))
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")


def jpeg_claiming(data: bytes, width: int, height: int) -> bytes:
    """A real JPEG with its SOF frame size patched to width x height."""
    at = 2
    while at < len(data) - 9:
        marker, length = data[at + 1], struct.unpack(">H", data[at + 2 : at + 4])[0]
        if marker in (0xC0, 0xC1, 0xC2):
            return data[: at + 5] + struct.pack(">HH", height, width) + data[at + 9 :]
        at += 2 + length
    raise ValueError("no SOF marker")


# The daemon's watch.patterns must include these for every file to be looked at.
SUFFIXES = (
    "*.jpg",
    "*.jpeg",
    "*.png",
    "*.bmp",
    "*.webp",
    "*.tif",
    "*.gif",
    "*.ppm",
    "*.tga",
    "*.ico",
    "*.pcx",
    "*.sgi",
    "*.jp2",
    "*.dds",
    "*.qoi",
    "*.im",
)


def make(folder: Path, good: list[Path]) -> dict[str, list[str]]:
    folder.mkdir(parents=True, exist_ok=True)
    corpus = Corpus(folder)
    originals = [path.read_bytes() for path in good]
    for path, data in zip(good, originals, strict=True):
        corpus.write("good", path.suffix.lower(), data, stem=f"good-{path.stem}")
    jpeg = next(d for d in originals if d[:2] == b"\xff\xd8")
    small = Image.open(io.BytesIO(jpeg)).reduce(8).convert("RGB")

    # Shapes that asked for huge resampling buffers (the 1x5000 PNG: a 17.9 GiB matrix).
    for length in (21, 300, 5000, 30000):
        for width, height in ((1, length), (length, 1), (2, length), (length, 3)):
            for fmt, suffix in (("PNG", ".png"), ("GIF", ".gif"), ("BMP", ".bmp")):
                corpus.write("extreme-shape", suffix, encoded(corpus.noise(width, height), fmt))
    for width, height in ((17, 16), (16, 320), (6000, 1000), (320, 16)):  # odd but inside the bounds
        corpus.write("odd-shape-inside-bounds", ".png", encoded(corpus.noise(width, height), "PNG"))

    # Headers that claim more pixels than anyone has.
    for index, (width, height) in enumerate(((100_000, 100_000), (2**31 - 1, 1), (65_535, 65_535), (50_000, 2_500))):
        corpus.write("huge-claimed-header", ".png", png_claiming(width, height, index))
        corpus.write("huge-claimed-header", ".jpg", jpeg_claiming(jpeg, width & 0xFFFF or 1, height & 0xFFFF or 1) + bytes([index]))
    gif = bytearray(encoded(corpus.noise(8, 8), "GIF"))
    gif[6:10] = struct.pack("<HH", 65_535, 65_535)
    corpus.write("huge-claimed-header", ".gif", bytes(gif))
    bmp = bytearray(encoded(corpus.noise(8, 8), "BMP"))
    bmp[18:26] = struct.pack("<ii", 60_000, -60_000)
    corpus.write("huge-claimed-header", ".bmp", bytes(bmp))

    # Decompression bombs inside the limits: a few KB that decode to tens of MB.
    for width, height in ((3400, 3400), (4000, 3000)):
        flat = Image.new("L", (width, height), corpus.random.randrange(256))
        corpus.write("decompression-bomb-inside-limits", ".png", encoded(flat, "PNG", optimize=True))
    # ... and past preprocess.max_full_decode_pixels: a PNG cannot shrink while decoding.
    for width, height in ((6000, 6000), (9000, 4000)):
        flat = Image.new("L", (width, height), corpus.random.randrange(256))
        corpus.write("full-decode-too-large", ".png", encoded(flat, "PNG", optimize=True))

    # Truncated and corrupted copies of real photos.
    for data in originals:
        for fraction in (0.01, 0.1, 0.5, 0.9, 0.999):
            suffix = ".jpg" if data[:2] == b"\xff\xd8" else ".bmp"
            corpus.write("truncated", suffix, data[: max(1, int(len(data) * fraction))])
        for _ in range(3):
            broken = bytearray(data)
            for _ in range(20):
                broken[corpus.random.randrange(64, len(broken))] = corpus.random.randrange(256)
            corpus.write("bytes-flipped", ".jpg", bytes(broken))
    png = encoded(corpus.noise(64, 48), "PNG")
    corpus.write("truncated", ".png", png[: len(png) // 2])

    # Wrong extension, no image at all.
    corpus.write("wrong-extension", ".jpg", encoded(corpus.noise(64, 48), "PNG"))
    corpus.write("wrong-extension", ".png", encoded(corpus.noise(64, 48), "JPEG"))
    corpus.write("wrong-extension", ".jpg", b"<html><body>404 Not Found</body></html>\n")
    corpus.write("wrong-extension", ".jpeg", b"PK\x03\x04" + corpus.numbers.bytes(2000))
    corpus.write("zero-bytes", ".jpg", b"")
    for size in (1, 2, 16, 1000, 100_000):
        corpus.write("random-bytes", ".jpg", corpus.numbers.bytes(size))
    corpus.write("magic-only", ".jpg", b"\xff\xd8\xff\xe0")
    corpus.write("magic-only", ".png", b"\x89PNG\r\n\x1a\n")

    # Every format Pillow writes, in the modes cameras and editors produce.
    formats = {
        "JPEG": (".jpg", ("RGB", "L", "CMYK")),
        "PNG": (".png", ("RGB", "RGBA", "L", "LA", "P", "1", "I;16", "I")),
        "GIF": (".gif", ("P", "L", "RGB")),
        "BMP": (".bmp", ("RGB", "L", "P", "1")),
        "TIFF": (".tif", ("RGB", "CMYK", "L", "I;16", "F", "1", "RGBA", "LA")),
        "WEBP": (".webp", ("RGB", "RGBA")),
        "PPM": (".ppm", ("RGB", "L")),
        "TGA": (".tga", ("RGB", "RGBA", "L")),
        "ICO": (".ico", ("RGBA",)),
        "PCX": (".pcx", ("RGB", "L")),
        "SGI": (".sgi", ("RGB", "L")),
        "JPEG2000": (".jp2", ("RGB",)),
        "DDS": (".dds", ("RGBA",)),
        "QOI": (".qoi", ("RGB",)),
    }
    for fmt, (suffix, modes) in formats.items():
        for mode in modes:
            base = (
                small.resize((96, 64)).convert(mode)
                if mode not in ("I;16", "I", "F")
                else Image.fromarray(corpus.numbers.integers(0, 65535, (64, 96), dtype=np.uint16)).convert(mode)
            )
            base.putpixel(
                (0, 0), corpus.count % 200 if base.mode not in ("CMYK", "RGB", "RGBA") else (corpus.count % 200,) * len(base.mode)
            )
            try:
                data = encoded(base, fmt)
            except (OSError, KeyError, ValueError):
                continue  # this Pillow cannot write the pair; it cannot be a hostile file either
            corpus.write(f"format-{fmt.lower()}", suffix, data, stem=f"{fmt.lower()}-{mode.replace(';', '')}")

    # Animations: many frames, only the first is decoded.
    frames = [corpus.noise(64, 48) for _ in range(300)]
    corpus.write("animated", ".gif", encoded(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=10))
    corpus.write("animated", ".webp", encoded(frames[0], "WEBP", save_all=True, append_images=frames[1:150], duration=10))
    corpus.write("animated", ".png", encoded(frames[0], "PNG", save_all=True, append_images=frames[1:100]))
    corpus.write("animated", ".tif", encoded(frames[0], "TIFF", save_all=True, append_images=frames[1:50]))

    # EXIF: junk orientation values, huge maker data, junk dates.
    for orientation in (0, 1, 5, 8, 9, 255, 65535):
        exif = Image.Exif()
        exif[0x0112] = orientation
        corpus.write("exif-orientation", ".jpg", encoded(small, "JPEG", exif=exif.tobytes()), stem=f"orientation-{orientation}")
    exif = Image.Exif()
    exif[0x927C] = corpus.numbers.bytes(60_000)  # MakerNote near the APP1 limit
    exif[0x9003] = "9999:99:99 99:99:99"
    corpus.write("huge-exif", ".jpg", encoded(small, "JPEG", exif=exif.tobytes()))
    big_text = png_chunk(b"zTXt", b"Comment\0\0" + zlib.compress(bytes(50_000_000)))
    plain = encoded(corpus.noise(64, 48), "PNG")
    corpus.write("huge-metadata", ".png", plain[:-12] + big_text + plain[-12:])
    icc = png_chunk(b"iCCP", b"icc\0\0" + zlib.compress(bytes(50_000_000)))
    corpus.write("huge-metadata", ".png", plain[:33] + icc + plain[33:])

    # Noise photos in random shapes and formats, each a real (tiny) decode and identification.
    for _ in range(40):
        width, height = corpus.random.randint(16, 700), corpus.random.randint(16, 700)
        fmt, suffix = corpus.random.choice((("JPEG", ".jpg"), ("PNG", ".png"), ("BMP", ".bmp"), ("WEBP", ".webp")))
        corpus.write("random-noise-photo", suffix, encoded(corpus.noise(width, height), fmt))

    # Names: spaces, quotes, non-Latin scripts, leading dashes and dots (all valid UTF-8).
    for name in (
        "a photo with spaces",
        'quote\'s "and" more',
        "eichelhäher-Ünïcödé",
        "鳥の写真",
        "-starts-with-dash",
        "dots..in..name",
        "semi;colon&amp",
    ):
        corpus.write("odd-name", ".jpg", encoded(corpus.noise(64, 48), "JPEG"), stem=name)

    # Symlinks: to a good photo outside the folder, and one that points nowhere.
    outside = folder.parent / "outside-the-inbox.jpg"
    outside.write_bytes(encoded(corpus.noise(80, 60), "JPEG"))
    (folder / "link-to-outside.jpg").symlink_to(outside)
    corpus.kinds["symlink"].append("link-to-outside.jpg")
    (folder / "dangling-link.jpg").symlink_to(folder / "no-such-photo.jpg")
    corpus.kinds["symlink-dangling"].append("dangling-link.jpg")
    return dict(corpus.kinds)
