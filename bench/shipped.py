"""The shipped default configuration against its own bound: decode plus the invokes it really makes.

The one-invoke drain (`daemon.per_photo` against `bound.per_photo`) says the daemon adds nothing
around a single model. What ships runs three (species model, bird gate, COCO detector), the
region search and the blank rule, and how many invokes a photo costs depends on the photo. So
the bound here is counted, not assumed: the same Identifier the daemon builds
(`daemon.wiring.build_identifier` on the shipped defaults) identifies whole bursts of the
backlog in process, in order and with the daemon's burst keys (motion sees what the daemon's
sees), and records each photo's species, gate and detector invokes (`Identification.invokes`,
`gate_invokes`, `detector_invokes`). Each model's invoke is then timed alone on real inputs,
and

    bound = reduced decode + species invokes x t_species + gate invokes x t_gate + detector invokes x t_detector

per photo. What the daemon spends above that is overhead: cropping, resizing each region,
Python around the calls, the database, and the decoder threads competing for the cores.
"""

from __future__ import annotations

import sqlite3
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.measure import time_each
from bench.report import Results
from birdtrap.identify.identifier import Identifier
from birdtrap.identify.photos import burst_key, decode_photo
from birdtrap.identify.preprocess import decode, read_photo_bytes, to_model_input
from birdtrap.identify.tflite import TFLiteModel

MODELS = ("species", "gate", "detector")


@dataclass(frozen=True)
class InvokeCounts:
    """Invokes per photo of each model, as means over the counted photos."""

    species: float
    gate: float
    detector: float
    photos: int


def count_invokes(paths: list[Path], identifier: Identifier, camera: str = "bench") -> tuple[InvokeCounts, float, float]:
    """Identify `paths` in order as the daemon does (burst keys, one photo at a time); mean invokes per photo.

    Also returns the mean seconds per photo of `identify` itself (no decode) and of the invokes
    inside it (each interpreter's invoke() timed where the pipeline calls it). Their difference
    is the finder's own work: crops, resizes, Python. Invokes inside the pipeline can cost more
    than the same invoke in a loop of its own: the three models take turns, so each starts with
    the caches full of another model's weights.
    """
    species, gate, detector, seconds = [], [], [], []
    spent = [0.0]
    models = [
        identifier.species.model,
        identifier.gate.model.model if identifier.gate else None,
        identifier.detector.model if identifier.detector else None,
    ]
    originals = []
    for model in (m for m in models if m is not None):
        bare = model.interpreter.invoke
        originals.append((model.interpreter, bare))

        def timed(bare=bare) -> None:
            began = time.perf_counter()
            bare()
            spent[0] += time.perf_counter() - began

        model.interpreter.invoke = timed  # bench-only instrumentation, removed below
    try:
        for path in paths:
            data = read_photo_bytes(path)
            decoded = decode_photo(data, str(path), path.stat().st_mtime, identifier.preprocess)
            start = time.perf_counter()
            [found] = identifier.identify([decoded.photo], [burst_key(camera, decoded.metadata)])
            seconds.append(time.perf_counter() - start)
            species.append(found.invokes)
            gate.append(found.gate_invokes)
            detector.append(found.detector_invokes)
    finally:
        for interpreter, bare in originals:
            del interpreter.invoke  # the class's own method again
            assert interpreter.invoke == bare
    counts = InvokeCounts(statistics.fmean(species), statistics.fmean(gate), statistics.fmean(detector), len(paths))
    return counts, statistics.fmean(seconds), spent[0] / len(paths)


class ShippedBound:
    """Decode + counted invokes for the shipped Identifier; `measure` before each shipped drain.

    Taken again before every drain, so bound and daemon share the machine's load (the box is
    shared; absolute times drift by tens of percent between minutes).
    """

    def __init__(self, paths: list[Path], identifier: Identifier) -> None:
        if identifier.gate is None or identifier.detector is None:
            raise ValueError("the shipped configuration has a gate and a detector; this identifier lacks one")
        self.identifier = identifier
        self.paths = paths
        self.datas = [p.read_bytes() for p in paths]
        frames = [decode(data, str(path), identifier.preprocess).bgr for data, path in zip(self.datas, paths, strict=True)]
        detector = identifier.detector
        # Real inputs for each model: the frames as each model sees them (one per distinct photo).
        self.inputs: dict[str, tuple[TFLiteModel, list[np.ndarray]]] = {
            "species": (
                identifier.species.model,
                [to_model_input(f, identifier.species.spec, identifier.preprocess)[None] for f in frames],
            ),
            "gate": (identifier.gate.model.model, [to_model_input(f, identifier.gate.spec, identifier.preprocess)[None] for f in frames]),
            "detector": (detector.model, [to_model_input(f, detector.spec, detector._plain)[None] for f in frames]),
        }
        self.samples: dict[str, list[float]] = {name: [] for name in ("decode", *MODELS)}
        self.counts: InvokeCounts | None = None
        self.identify_s: list[float] = []
        self.pipeline_invoke_s: list[float] = []

    def count(self) -> InvokeCounts:
        """Invokes per photo on the sample (deterministic: the same every time for the same photos)."""
        counts, seconds, invoking = count_invokes(self.paths, self.identifier)
        self.counts = counts
        self.identify_s.append(seconds)
        self.pipeline_invoke_s.append(invoking)
        return counts

    def measure(self, repeats: int) -> None:
        """Time the decode and each model's invoke alone, `repeats` rounds over the sample."""
        if self.counts is None:
            self.count()
        settings = self.identifier.preprocess
        self.samples["decode"].append(time_each(lambda d: decode(d, "x", settings), self.datas, repeats).median)
        for name in MODELS:
            model, inputs = self.inputs[name]
            self.samples[name].append(time_each(model.invoke, inputs, repeats).median)

    def per_photo_ms(self) -> dict[str, float]:
        """decode, each model's share (count x invoke time) and the bound, in ms per photo."""
        assert self.counts is not None
        median = {name: 1000 * statistics.median(values) for name, values in self.samples.items()}
        shares = {name: getattr(self.counts, name) * median[name] for name in MODELS}
        return {
            "decode": median["decode"],
            **{f"{n}_invoke": median[n] for n in MODELS},
            **shares,
            "bound": median["decode"] + sum(shares.values()),
        }

    def add_figures(self, results: Results) -> None:
        assert self.counts is not None
        counts, ms = self.counts, self.per_photo_ms()
        n = len(self.samples["decode"])
        sample = f"{counts.photos} backlog photos: whole bursts, one per source, in order"
        for name in MODELS:
            results.add(
                f"shipped.invokes.{name}",
                f"shipped: {name} invokes per photo",
                getattr(counts, name),
                "/photo",
                None,
                counts.photos,
                note=sample if name == "species" else "",
            )
            results.add(
                f"shipped.invoke_ms.{name}",
                f"shipped: one {name} invoke alone",
                ms[f"{name}_invoke"],
                "ms",
                None,
                n,
                note=f"{self.inputs[name][0].path.parent.name}, batch 1, real inputs",
            )
        results.add(
            "shipped.decode",
            "shipped: reduced decode per photo",
            ms["decode"],
            "ms",
            "shipped.bound.per_photo",
            n,
            note="preprocess.decode: header, reduced decode, info-bar crop",
        )
        for name in MODELS:
            results.add(
                f"shipped.bound.{name}",
                f"shipped: {name} invokes x invoke time",
                ms[name],
                "ms",
                "shipped.bound.per_photo",
                n,
            )
        results.add(
            "shipped.bound.per_photo",
            "shipped bound: decode + the invokes it makes",
            ms["bound"],
            "ms",
            None,
            n,
            note="reference for the shipped drain; taken before each drain",
        )
        results.add(
            "shipped.identify_per_photo",
            "shipped: Identifier.identify in process",
            1000 * statistics.median(self.identify_s),
            "ms",
            "shipped.bound.per_photo",
            counts.photos,
            note="mean over the counted photos; no decode",
        )
        results.add(
            "shipped.identify_invokes_per_photo",
            "shipped: the invokes inside identify",
            1000 * statistics.median(self.pipeline_invoke_s),
            "ms",
            "shipped.identify_per_photo",
            counts.photos,
            note="interpreter invoke() timed where the pipeline calls it",
        )
        invokes_alone = ms["species"] + ms["gate"] + ms["detector"]
        results.add(
            "shipped.pipeline_invoke_cost",
            "shipped: those invokes against the same invokes alone",
            1000 * statistics.median(self.pipeline_invoke_s) / invokes_alone if invokes_alone else float("nan"),
            "x",
            None,
            counts.photos,
            note="> 1: models taking turns (cold caches) and the load; in the bound, each model is timed alone",
        )


def stored_species_invokes(database: Path) -> float | None:
    """Mean species invokes per done photo as the daemon stored them (images.invokes): the count's cross-check."""
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as connection:
        value = connection.execute("select avg(invokes) from images where status = 'done'").fetchone()[0]
    return None if value is None else float(value)


def shipped_figures(results: Results, runs: list, stored_invokes: float | None) -> None:
    """The shipped drains against the shipped bound; `runs` are endtoend.DaemonRun."""
    n = len(runs)
    photos = runs[0].photos
    results.add(
        "shipped.daemon.per_photo",
        f"shipped daemon drain per photo, {photos} x 12mp",
        1000 * statistics.median([r.drain_s / r.photos for r in runs]),
        "ms",
        "shipped.bound.per_photo",
        n,
        goal="ratio <= 1.2",
        note="default config: species + gate + detector + search + blank rule",
    )
    steady = [r.steady_per_photo_s for r in runs if r.steady_per_photo_s is not None]
    if steady:
        results.add(
            "shipped.daemon.steady_per_photo",
            "shipped daemon per photo, batch to batch",
            1000 * statistics.median(steady),
            "ms",
            "shipped.bound.per_photo",
            n,
            note="median gap between batch commits / batch size",
        )
    results.add(
        "shipped.daemon.cpu_per_photo",
        "shipped daemon CPU per photo",
        1000 * statistics.median([r.drain_cpu_s / r.photos for r in runs]),
        "ms CPU",
        "shipped.bound.per_photo",
        n,
        note="all threads",
    )
    results.add(
        "shipped.daemon.rss_ready_mb",
        "shipped daemon RSS at READY=1",
        statistics.median([r.rss_ready_mb for r in runs]),
        "MB",
        None,
        n,
        note="three models loaded",
    )
    results.add(
        "shipped.daemon.peak_rss_mb",
        "shipped daemon peak RSS (VmHWM)",
        statistics.median([r.peak_rss_mb for r in runs]),
        "MB",
        "shipped.daemon.rss_ready_mb",
        n,
        goal="<= 150 MB",
    )
    if stored_invokes is not None:
        results.add(
            "shipped.daemon.species_invokes",
            "shipped daemon: species invokes per photo, stored",
            stored_invokes,
            "/photo",
            "shipped.invokes.species",
            photos,
            note="images.invokes over the whole backlog; ~1.00x: the counted sample is representative",
        )


# --- a Raspberry Pi 4 estimate -------------------------------------------------------------

# Published per-invoke times (ms) for the shipped models' architectures. Neither source ran our
# exact files through our runtime, and each figure's caveat is in the note beside it.
PUBLISHED_MS: dict[str, dict[str, tuple[float, str]]] = {
    "cpu": {
        # Coral's table, "Embedded CPU" column (a Cortex-A53-class chip), MobileNet v2 int8 TFLite:
        # a Pi 4's Cortex-A72 is faster, so this is an upper figure for species and gate.
        "classifier": (150.0, "https://coral.ai/docs/edgetpu/benchmarks/ (MobileNet v2, Embedded CPU: an upper figure for a Pi 4)"),
        # Alasdair Allan, Raspberry Pi 4 + TensorFlow Lite, COCO SSD MobileNet v1 (0.75 depth) at 300x300:
        # the shipped detector is the 1.0-depth one, so a lower figure.
        "detector": (82.7, "https://github.com/aallan/benchmarking-ml-on-the-edge (Pi 4, TF Lite, SSD MobileNet v1 0.75: a lower figure)"),
    },
    "coral": {
        # Coral's table: MobileNet v2 on the USB Accelerator (USB 3.0) with a desktop host; a Pi 4 has USB 3.0.
        "classifier": (2.3, "https://coral.ai/docs/edgetpu/benchmarks/ (MobileNet v2, USB Accelerator, USB 3.0)"),
        # Coral's detection models page: SSD MobileNet V1, 300x300, compiled for the Edge TPU.
        "detector": (6.5, "https://coral.ai/models/object-detection/ (SSD MobileNet V1, 300x300)"),
    },
}


def pi4_estimate(counts: InvokeCounts) -> dict[str, float]:
    """Invokes alone, per photo, on a Pi 4's CPU and with a Coral USB Accelerator (ms): counts x published times."""
    estimate = {}
    for where, times in PUBLISHED_MS.items():
        classifier, detector = times["classifier"][0], times["detector"][0]
        estimate[where] = (counts.species + counts.gate) * classifier + counts.detector * detector
    return estimate


def pi4_figures(results: Results, counts: InvokeCounts) -> None:
    """The Pi 4 estimate as figures (not measured here: computed from this run's invoke counts)."""
    estimate = pi4_estimate(counts)
    mix = f"{counts.species:.2f} species + {counts.gate:.2f} gate + {counts.detector:.2f} detector invokes"
    for where, label in (("cpu", "Pi 4 CPU"), ("coral", "Pi 4 + Coral USB Accelerator")):
        times = PUBLISHED_MS[where]
        results.add(
            f"pi4.{where}.invokes_per_photo",
            f"estimate: invokes per photo on a {label}",
            estimate[where],
            "ms",
            None,
            counts.photos,
            note=f"{mix} x published {times['classifier'][0]:g} / {times['detector'][0]:g} ms (bench/README.md); no decode",
        )
