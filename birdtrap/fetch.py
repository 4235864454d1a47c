"""Download the public models birdtrap runs, verify them against pinned sha256s, install them.

Offline sites use a mirror (a folder or URL laid out as `<mirror>/<folder>/<file>`, the layout of
the shared models folder), given by `--mirror` or `BIRDTRAP_MODEL_MIRROR`. A file is only ever
installed by an atomic rename after its checksum matched, so a cut download leaves nothing half
written where the daemon looks.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from birdtrap.errors import FetchError
from birdtrap.identify.bundle import sha256_file

log = logging.getLogger(__name__)

CORAL = "https://github.com/google-coral/test_data/raw/master/"
TF_HOSTED = "https://storage.googleapis.com/download.tensorflow.org/models/tflite/"


@dataclass(frozen=True)
class RemoteFile:
    name: str  # installed name
    url: str
    sha256: str  # of the installed file (the member, for one taken from a zip archive)
    member: str | None = None  # the file inside the zip at `url`; a mirror holds it unzipped


@dataclass(frozen=True)
class Installed:
    """One installed file, and whether this call downloaded it (else it was there, verified)."""

    path: Path
    downloaded: bool


@dataclass(frozen=True)
class CatalogEntry:
    key: str
    description: str
    mirror_folder: str
    files: tuple[RemoteFile, ...]


CATALOG: dict[str, CatalogEntry] = {
    entry.key: entry
    for entry in (
        CatalogEntry(
            "inat-birds",
            "Coral iNaturalist birds MobileNetV2 (uint8, 964 species + background)",
            "inat_birds",
            (
                RemoteFile(
                    "model.tflite",
                    CORAL + "mobilenet_v2_1.0_224_inat_bird_quant.tflite",
                    "350fcd8cf1df1560060d464595dfed8b174b05792788052896004848d9ad04f9",
                ),
                RemoteFile(
                    "labels.txt",
                    CORAL + "inat_bird_labels.txt",
                    "a16108dfe3f8daff015b87a97ab6a17e717b9b1bccd719f6d8f747746d7b9277",
                ),
            ),
        ),
        CatalogEntry(
            "imagenet-mobilenet-v2",
            "Coral ImageNet MobileNetV2 (uint8, 1001 classes): the bird gate",
            "imagenet_mobilenet_v2",
            (
                RemoteFile(
                    "model.tflite",
                    CORAL + "mobilenet_v2_1.0_224_quant.tflite",
                    "7aad0c74c5e3c06e5eb3c827e13304fdd68a83da6087d92ee169c24ff9fd4776",
                ),
                RemoteFile(
                    "labels.txt",
                    CORAL + "imagenet_labels.txt",
                    "b8aaeb5630c62626a7d124a05c0e14230a7ffdd2136a31d0190a4fb71c1d82f1",
                ),
            ),
        ),
        CatalogEntry(
            "coco-ssd-mobilenet-v1",
            "Google's COCO SSD MobileNet v1 quantized detector (300x300): where the animals are",
            "coco_ssd_mobilenet_v1",
            (
                RemoteFile(
                    "model.tflite",
                    TF_HOSTED + "coco_ssd_mobilenet_v1_1.0_quant_2018_06_29.zip",
                    "e4b118e5e4531945de2e659742c7c590f7536f8d0ed26d135abcfe83b4779d13",
                    member="detect.tflite",
                ),
                RemoteFile(
                    "labels.txt",
                    CORAL + "coco_labels.txt",
                    "dc183f003fc753c4c43fae6fdf7f387559449573f13fa32e517fb7453fd380f1",
                ),
            ),
        ),
    )
}


def _source(entry: CatalogEntry, remote: RemoteFile, mirror: str | None) -> str:
    if not mirror:
        return remote.url + (f"#{remote.member}" if remote.member else "")
    if "://" in mirror:
        return mirror.rstrip("/") + f"/{entry.mirror_folder}/{urllib.parse.quote(remote.name)}"
    return str(Path(mirror) / entry.mirror_folder / remote.name)


def _download(source: str, target: Path, expected: str, progress: bool) -> None:
    if "#" in source:
        return _download_member(source, target, expected, progress)
    digest = hashlib.sha256()
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    try:
        with os.fdopen(handle, "wb") as out:
            if "://" in source:
                try:
                    response = urllib.request.urlopen(source, timeout=60)  # noqa: S310 - https or a mirror the user named
                except (urllib.error.URLError, OSError) as e:
                    reason = getattr(e, "reason", e)
                    raise FetchError(
                        f"cannot download {source} ({reason}). On an offline site pass --mirror DIR_OR_URL "
                        "or set BIRDTRAP_MODEL_MIRROR."
                    ) from None
                total = int(response.headers.get("Content-Length") or 0) or None
                stream = response
            else:
                try:
                    stream = open(source, "rb")
                except OSError as e:
                    raise FetchError(f"mirror file {source} cannot be read ({e.strerror}); check --mirror.") from None
                total = os.fstat(stream.fileno()).st_size
            with stream, tqdm(total=total, unit="B", unit_scale=True, desc=target.name, disable=not progress) as bar:
                for chunk in iter(lambda: stream.read(1 << 16), b""):
                    digest.update(chunk)
                    out.write(chunk)
                    bar.update(len(chunk))
        if expected and digest.hexdigest() != expected:
            raise FetchError(
                f"{source} has sha256 {digest.hexdigest()}, not the pinned {expected}; refusing to install it. "
                "The download was corrupted or the file was replaced upstream."
            )
        os.replace(temporary, target)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)


def _download_member(source: str, target: Path, expected: str, progress: bool) -> None:
    """Download a zip archive to a temporary file and install one verified member of it."""
    url, member = source.split("#", 1)
    with tempfile.TemporaryDirectory(dir=target.parent if target.parent.exists() else None) as folder:
        archive = Path(folder) / "archive.zip"
        _download(url, archive, "", progress)
        try:
            with zipfile.ZipFile(archive) as bundle, bundle.open(member) as stream:
                data = stream.read()
        except (zipfile.BadZipFile, KeyError) as e:
            raise FetchError(f"{url} is not a zip archive holding {member} ({e}); use --mirror with the unzipped files.") from None
        actual = hashlib.sha256(data).hexdigest()
        if actual != expected:
            raise FetchError(f"{member} in {url} has sha256 {actual}, not the pinned {expected}; refusing to install it.")
        partial = target.with_name(f".{target.name}.part")
        partial.write_bytes(data)
        os.replace(partial, target)


def fetch(key: str, destination: Path, mirror: str | None = None, progress: bool = False) -> list[Installed]:
    """Install catalogue model `key` into `destination` (a folder); returns the installed files.

    Files already there with the right sha256 are kept (`downloaded` False), so running it
    again changes nothing and says so once, in the caller's words. Raises FetchError on any failure, with
    nothing half-written in `destination`.
    """
    entry = CATALOG.get(key)
    if entry is None:
        raise FetchError(f"unknown model {key!r}; choose one of: {', '.join(CATALOG)}.")
    installed = []
    for remote in entry.files:
        target = Path(destination) / remote.name
        if target.exists() and sha256_file(target) == remote.sha256:
            installed.append(Installed(target, downloaded=False))
            continue
        source = _source(entry, remote, mirror)
        log.debug("fetching %s", source)
        _download(source, target, remote.sha256, progress)
        installed.append(Installed(target, downloaded=True))
    return installed

