"""What each step of the pipeline costs per photo, in process, with birdtrap's own functions.

The stage figures are shares of the bound (reduced decode + invoke of the same size): anything
that is a large fraction of it is worth removing. The decoders are compared against OpenCV's
full decode, each checked against OpenCV's reduced output so a fast but wrong decoder shows.
The daemon decodes with Pillow (`preprocess.decode_pixels`) and resizes with numpy
(`preprocess.resample`); OpenCV's rows are there to compare against.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
from PIL import Image
from sqlalchemy.orm import Session

from bench.measure import loop_once, time_each
from bench.photos import BenchPhoto, unique
from bench.report import Results
from birdtrap import store
from birdtrap.daemon.ingest import to_result
from birdtrap.errors import BirdtrapError
from birdtrap.identify import preprocess
from birdtrap.identify.decision import decide
from birdtrap.identify.exif import read_metadata
from birdtrap.identify.identifier import Identifier
from birdtrap.identify.photos import Decoded
from birdtrap.identify.preprocess import crop_info_bars, decode, read_header, read_photo_bytes, reduction_for, to_model_input
from birdtrap.identify.tflite import TFLiteModel

REDUCED = {1: cv2.IMREAD_COLOR, 2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4, 8: cv2.IMREAD_REDUCED_COLOR_8}


def reduced_decode(data: bytes, factor: int) -> np.ndarray:
    """The daemon's DCT-domain reduced decode (`preprocess.decode_pixels`: Pillow's draft mode)."""
    return preprocess.decode_pixels(data, factor)


def opencv_reduced(data: bytes, factor: int) -> np.ndarray:
    """OpenCV's DCT-domain reduced decode, for comparison (the daemon's until OpenCV left its import)."""
    return cv2.imdecode(np.frombuffer(data, np.uint8), REDUCED[factor])


def daemon_resize(bgr: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The shrink `to_model_input` does: OpenCV's area taps in numpy, on the RGB view of the decode."""
    rgb = bgr[..., ::-1]
    return preprocess.resample(rgb, *size)


def _decoders(results: Results) -> dict[str, tuple[str, Callable[[bytes, int], np.ndarray], bool] | None]:
    """name -> (label, decode(bytes, factor) returning BGR or RGB, output is RGB), or None if not installed."""

    def opencv_full(data: bytes, _factor: int) -> np.ndarray:
        return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)

    found: dict = {
        "opencv_full": ("OpenCV imdecode, full", opencv_full, False),
        "opencv_reduced": ("OpenCV IMREAD_REDUCED_COLOR_n", opencv_reduced, False),
        "pillow_full": ("Pillow, full", lambda d, _f: preprocess.decode_pixels(d, 1), False),
        "pillow_draft": ("Pillow draft mode (the daemon's)", preprocess.decode_pixels, False),
    }
    try:
        from turbojpeg import TurboJPEG

        turbo = TurboJPEG()
        found["turbojpeg_full"] = ("TurboJPEG (PyTurboJPEG), full", lambda d, _f: turbo.decode(d), False)
        found["turbojpeg_scaled"] = ("TurboJPEG scaling_factor 1/n", lambda d, f: turbo.decode(d, scaling_factor=(1, f)), False)
    except Exception as e:  # noqa: BLE001 - missing package or libturbojpeg: skip, say why
        why = f"PyTurboJPEG unavailable ({str(e).splitlines()[0][:80]}); see bench/requirements.txt"
        found["turbojpeg_full"] = found["turbojpeg_scaled"] = None
        results.notes.append(why)
    try:
        import simplejpeg

        def simple(data: bytes, factor: int, fast: bool = False) -> np.ndarray:
            height, width = simplejpeg.decode_jpeg_header(data)[:2]
            return simplejpeg.decode_jpeg(
                data, colorspace="BGR", min_height=height // factor, min_width=width // factor, fastdct=fast, fastupsample=fast
            )

        found["simplejpeg_full"] = ("simplejpeg (libjpeg-turbo), full", lambda d, _f: simple(d, 1), False)
        found["simplejpeg_scaled"] = ("simplejpeg min_height/width", simple, False)
        found["simplejpeg_fast"] = ("simplejpeg scaled, fastdct+fastupsample", lambda d, f: simple(d, f, True), False)
    except ImportError:
        found["simplejpeg_full"] = found["simplejpeg_scaled"] = found["simplejpeg_fast"] = None
        results.notes.append("simplejpeg not installed; see bench/requirements.txt")
    return found


def decoders(results: Results, size: str, photos: list[BenchPhoto], repeats: int, min_side: int) -> None:
    """Every available JPEG decoder, full and reduced, on the same photos of one size."""
    datas = [unique(p, f"decoders {size} {i}") for i, p in enumerate(photos)]
    factor = reduction_for(photos[0].width, photos[0].height, min_side)
    reference = [opencv_reduced(d, factor) for d in datas]
    base = f"decode.{size}.opencv_full"
    for name, entry in _decoders(results).items():
        key = f"decode.{size}.{name}"
        reduced = not name.endswith("_full")
        if entry is None:
            results.skip(key, f"{size} decode: {name}", "ms", "not installed", base)
            continue
        label, fn, rgb = entry
        use = factor if reduced else 1
        timing = time_each(lambda d, fn=fn, use=use: fn(d, use), datas, repeats)
        note = f"1/{factor} scale" if reduced else ""
        if reduced:
            out = fn(datas[0], factor)
            out = cv2.cvtColor(out, cv2.COLOR_RGB2BGR) if rgb else out
            if out.shape != reference[0].shape:
                note += f"; shape {out.shape[1]}x{out.shape[0]} differs from OpenCV's"
            else:
                note += f"; mean |diff| vs OpenCV {np.abs(out.astype(np.int16) - reference[0]).mean():.2f}"
        results.add(
            key,
            f"{size} decode: {label}",
            timing.ms,
            "ms",
            base if name != "opencv_full" else f"stage.{size}.bound",
            timing.samples,
            note=note,
        )


def stage_costs(results: Results, size: str, photos: list[BenchPhoto], folder: Path, identifier: Identifier, repeats: int) -> None:
    """Each pipeline stage per photo at one size, as a share of that size's bound."""
    settings = identifier.preprocess
    spec = identifier.species.spec
    model = identifier.species.model
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index, photo in enumerate(photos):
        path = folder / f"{size}-{index}.jpg"
        path.write_bytes(unique(photo, f"stages {size} {index}"))
        paths.append(path)
    datas = [p.read_bytes() for p in paths]
    factor = reduction_for(photos[0].width, photos[0].height, settings.decode_min_side)
    reduced = [reduced_decode(d, factor) for d in datas]
    cropped = [crop_info_bars(r, settings.max_bar_fraction)[0] for r in reduced]
    working = [cv2.resize(np.ascontiguousarray(c), (2 * spec.width, 2 * spec.height), interpolation=cv2.INTER_AREA) for c in cropped]
    rgb = [daemon_resize(c, (spec.width, spec.height)) for c in cropped]
    # Private helpers, timed on their own: the public to_model_input hides which part costs what.
    table = preprocess._pixel_table(spec)
    inputs = [table[x] for x in rgb]
    point_table = table.view(np.uint8).tolist() * 3 if table.dtype in (np.uint8, np.int8) else None

    def lut(x: np.ndarray) -> np.ndarray:
        # What to_model_input does: Pillow's per-band table for 8-bit inputs, numpy for float ones.
        return np.asarray(Image.fromarray(x).point(point_table)) if point_table else table[x]

    decoded = [decode(d, str(p), settings) for d, p in zip(datas, paths, strict=True)]
    probabilities = [identifier.species.predict_batch([x])[0].probabilities for x in inputs]
    labels = identifier.species.labels

    bound_key = f"stage.{size}.bound"
    decode_t = time_each(lambda d: reduced_decode(d, factor), datas, repeats)
    invoke_t = time_each(lambda x: model.invoke(x[None]), inputs, repeats)
    results.add(
        bound_key,
        f"{size} bound: reduced decode + invoke",
        decode_t.ms + invoke_t.ms,
        "ms",
        f"decode.{size}.opencv_full",
        min(decode_t.samples, invoke_t.samples),
        note=f"decode {decode_t.ms:.1f} + invoke {invoke_t.ms:.1f} ms; 1/{factor} scale",
    )
    archive = folder / f"archive-{size}"

    def move(path: Path) -> None:
        # The daemon's after-action `move` (Daemon.move): resolve, make the folder, rename.
        destination = archive / path.resolve().relative_to(folder.resolve())
        destination.parent.mkdir(parents=True, exist_ok=True)
        destination.exists()
        shutil.move(path, destination)
        shutil.move(destination, path)  # back, for the next repeat; half of the time is this

    stages: list[tuple[str, str, Callable, list, str]] = [
        ("read", "read file (warm page cache)", lambda p: read_photo_bytes(p), paths, ""),
        ("sha256", "sha256 of the bytes", lambda d: hashlib.sha256(d).hexdigest(), datas, ""),
        ("header", "header (Pillow)", lambda d: read_header(d, "x", settings.max_pixels), datas, ""),
        ("decode", "preprocess.decode (all of it)", lambda d: decode(d, "x", settings), datas, "header, EOI check, reduced decode, crop"),
        ("exif", "EXIF (read_metadata)", lambda d: read_metadata(d, 0.0), datas, ""),
        ("crop", "crop info bars", lambda r: crop_info_bars(r, settings.max_bar_fraction), reduced, "on the reduced decode"),
        (
            "resize",
            f"resize to {spec.width}x{spec.height} (numpy, area)",
            lambda c: daemon_resize(c, (spec.width, spec.height)),
            cropped,
            "the daemon's (preprocess.resample): OpenCV's INTER_AREA numbers without OpenCV",
        ),
        (
            "resize_opencv",
            f"resize to {spec.width}x{spec.height} (OpenCV INTER_AREA)",
            lambda c: cv2.resize(np.ascontiguousarray(c), (spec.width, spec.height), interpolation=cv2.INTER_AREA),
            cropped,
            "for comparison",
        ),
        ("color", "BGR -> RGB (OpenCV)", lambda s: cv2.cvtColor(s, cv2.COLOR_RGB2BGR), rgb, "for comparison: Pillow's path needs none"),
        ("dtype", f"dtype conversion, Pillow point -> {spec.dtype}", lut, rgb, "the daemon's"),
        ("dtype_numpy", "dtype conversion, numpy table indexing", lambda x: table[x], rgb, "for comparison"),
        (
            "denoise",
            "denoise (bilateral)",
            preprocess._denoise,
            working,
            f"on the {2 * spec.width}x{2 * spec.height} working copy; off by default",
        ),
        (
            "clahe",
            "auto-contrast (CLAHE)",
            preprocess._auto_contrast,
            working,
            f"on the {2 * spec.width}x{2 * spec.height} working copy; off by default",
        ),
        ("to_model_input", "to_model_input (defaults)", lambda c: to_model_input(c, spec, settings), cropped, "resize + colour + dtype"),
        ("invoke", "invoke, batch of 1", lambda x: model.invoke(x[None]), inputs, ""),
        ("rank", "top-k ranking (predict_batch less invoke)", identifier.species._rank, probabilities, "argsort + Score objects"),
        ("decision", "decision (decide)", lambda p: decide(p, labels, identifier.rules), probabilities, "genus roll-up, background"),
        ("identify", "Identifier.identify, one photo", lambda ph: identifier.identify([ph]), decoded, "to_model_input + invoke + decision"),
        ("move", "after-action move (rename there and back)", move, paths, "two renames"),
    ]
    for name, label, fn, items, note in stages:
        timing = time_each(fn, items, repeats)
        results.add(f"stage.{size}.{name}", f"{size} {label}", timing.ms, "ms", bound_key, timing.samples, note=note)


class Bound:
    """Bare reduced-decode and bare invoke() loops over the daemon's own backlog photos.

    Their sum per photo is what the daemon cannot go below on one core; a daemon that overlaps
    decoding with inference on the second core can. `measure` is called before every daemon
    run, so on a shared machine the bound and the daemon are taken under the same load.
    """

    def __init__(self, paths: list[Path], identifier: Identifier) -> None:
        settings = identifier.preprocess
        spec = identifier.species.spec
        self.model = identifier.species.model
        self.datas = [p.read_bytes() for p in paths]
        header = read_header(self.datas[0], str(paths[0]), settings.max_pixels)
        self.factor = reduction_for(header[1], header[2], settings.decode_min_side)
        self.inputs = np.stack([to_model_input(crop_info_bars(reduced_decode(d, self.factor))[0], spec, settings) for d in self.datas])
        self.samples: dict[str, list[float]] = {"decode": [], "decode_cpu": [], "invoke": [], "invoke_cpu": []}

    def _decode_all(self) -> None:
        for data in self.datas:
            reduced_decode(data, self.factor)

    def _invoke_each(self) -> None:
        for row in self.inputs:
            self.model.invoke(row[None])

    def measure(self, repeats: int) -> None:
        """Add `repeats` timed rounds of each loop (after one untimed round each)."""
        count = len(self.datas)
        for fn, name, per in ((self._decode_all, "decode", count), (self._invoke_each, "invoke", count)):
            fn()
            for _ in range(repeats):
                wall, cpu = loop_once(fn, per)
                self.samples[name].append(wall)
                self.samples[name + "_cpu"].append(cpu)

    def add_figures(self, results: Results) -> None:
        median = {name: 1000 * statistics.median(values) for name, values in self.samples.items()}
        n = len(self.samples["decode"])
        model = self.model
        results.add(
            "bound.decode",
            f"bare reduced-decode loop, 12mp (1/{self.factor})",
            median["decode"],
            "ms",
            "decode.12mp.opencv_full",
            n,
            note=f"{len(self.datas)} backlog photos, each source as often as in the backlog",
        )
        results.add(
            "bound.invoke",
            "bare invoke() loop, batch 1",
            median["invoke"],
            "ms",
            "bound.per_photo",
            n,
            note=f"{model.runtime.name}, {model.delegate}",
        )
        results.add(
            "bound.per_photo",
            "bound: reduced decode + invoke",
            median["decode"] + median["invoke"],
            "ms",
            None,
            n,
            note="reference for the daemon; taken before each daemon run",
        )
        results.add(
            "bound.cpu_per_photo",
            "bound CPU: decode + invoke",
            median["decode_cpu"] + median["invoke_cpu"],
            "ms CPU",
            "bound.per_photo",
            n,
            note="CPU-seconds, all threads",
        )


def db_writes(results: Results, folder: Path, identifier: Identifier, photo: BenchPhoto, batch_size: int, batches: int) -> None:
    """Registering and storing a photo: one transaction per batch (daemon) vs one per photo (naive)."""
    settings = identifier.preprocess
    data = unique(photo, "db")
    decoded = Decoded(decode(data, "db.jpg", settings), read_metadata(data, time.time()))
    result = to_result(identifier.identify([decoded.photo])[0], decoded, None)
    bundle = identifier.species.bundle
    figures = {}
    for mode in ("batched", "per_photo"):
        sessions = store.open_store(f"sqlite:///{folder / f'db-{mode}.db'}")
        with sessions.begin() as session:
            model_id = store.record_model(session, bundle.model_sha256, bundle.name, bundle.version, str(bundle.model_path))
        samples = []
        wchar = _self_wchar()
        group = batch_size if mode == "batched" else 1
        total = batches * batch_size
        serial = 0
        def register(session: Session, names: list[str]) -> list[int]:
            return [
                store.register_photo(session, f"/inbox/{n}.jpg", hashlib.sha256(n.encode()).hexdigest(), len(data), 0.0, "bench").image_id
                for n in names
            ]

        pending: list[int] = []
        if mode == "batched":  # as the daemon: the first batch is registered on its own ...
            with sessions.begin() as session:
                pending = register(session, [f"{mode}-{i}" for i in range(group)])
            serial = group
        for _ in range(total // group):
            names = [f"{mode}-{serial + i}" for i in range(group)]
            serial += group
            start = time.perf_counter()
            with sessions.begin() as session:
                if mode == "per_photo":
                    store.record_result(session, register(session, names)[0], result, model_id)
                else:  # ... then each commit stores one batch's results and registers the next
                    for image_id in pending:
                        store.record_result(session, image_id, result, model_id)
                    pending = register(session, names)
            samples.append((time.perf_counter() - start) / group)
        figures[mode] = (sorted(samples)[len(samples) // 2], len(samples), (_self_wchar() - wchar) / total)
        sessions.kw["bind"].dispose()
    per_ms, per_n, per_bytes = figures["per_photo"]
    batch_ms, batch_n, batch_bytes = figures["batched"]
    results.add("db.per_photo_commit", "DB write, one commit per photo", 1000 * per_ms, "ms", None, per_n, note="WAL, synchronous=FULL")
    results.add(
        "db.batched",
        f"DB write per photo, batch of {batch_size}",
        1000 * batch_ms,
        "ms",
        "db.per_photo_commit",
        batch_n,
        note="the daemon's one transaction per batch: results, and the next batch's registration",
    )
    results.add(
        "db.per_photo_commit_bytes", "DB bytes written, commit per photo", per_bytes, "B", None, 1, note="write() calls of this process"
    )
    results.add("db.batched_bytes", f"DB bytes written per photo, batch of {batch_size}", batch_bytes, "B", "db.per_photo_commit_bytes", 1)


def _self_wchar() -> int:
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("wchar:"):
            return int(line.split()[1])
    return 0


def model_invokes(results: Results, shared: Path, repeats: int) -> None:
    """Invoke time of every model in ../shared/models at batch 1; broken ones are reported as skipped."""
    base = "models.inat_birds"
    for folder in sorted(p for p in (shared / "models").iterdir() if p.is_dir()):
        for path in sorted(folder.glob("*.tflite")):
            key = f"models.{folder.name}" + ("" if path.stem == "model" else f".{path.stem}")
            label = f"invoke {folder.name}" + ("" if path.stem == "model" else f"/{path.name}")
            try:
                model = TFLiteModel(path, threads=2, delegate="cpu")
                height, width, channels = model.input_shape
                rng = np.random.default_rng(0)
                sample = rng.integers(0, 255, (1, height, width, channels)).astype(model.input_dtype)
                timing = time_each(lambda _, m=model, x=sample: m.invoke(x), [0], repeats, warmup=2)
            except BirdtrapError as e:
                results.skip(key, label, "ms", f"skipped: {str(e).splitlines()[0][:100]}", base)
                continue
            size_mb = path.stat().st_size / 1e6
            results.add(
                key,
                label,
                timing.ms,
                "ms",
                None if key == base else base,
                timing.samples,
                note=f"{width}x{height} {model.input_dtype}, {size_mb:.1f} MB, 2 threads",
            )
    inat = shared / "models" / "inat_birds" / "model.tflite"
    if inat.exists():
        # The daemon's default is 2 threads; 1 shows what the second core buys, cpu_count what more do.
        for threads in sorted({1, os.cpu_count() or 1} - {2}):
            model = TFLiteModel(inat, threads=threads, delegate="cpu")
            sample = np.zeros((1, *model.input_shape), dtype=model.input_dtype)
            timing = time_each(lambda _, m=model, x=sample: m.invoke(x), [0], repeats, warmup=2)
            results.add(
                f"models.inat_birds.threads{threads}", f"invoke inat_birds, {threads} thread(s)", timing.ms, "ms", base, timing.samples
            )
