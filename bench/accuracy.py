"""Does the daemon's speed cost answers? The labelled real photos, with the reduced decode and without.

The reduced decode is the one shortcut of the fast pipeline that changes the pixels the models see
(the resize is OpenCV's INTER_AREA to within a grey level; no step drops a photo). The backlog's
photos are real photos upscaled to 12 MP, so a reduced decode of them loses only what the
upscaling invented. Here the photos of ../shared/data/labels.csv are decoded at their own size,
where a reduced decode throws away real detail, and scored by the shipped pipeline (gate,
detector, region search) as `birdtrap evaluate` scores them: once with the daemon's reduced
decode and once with every pixel.

A top-1 compared on its own is a poor test: on a frame with no bird, or a bird the model barely
knows, the top-1 of a 965-way softmax at 7% is noise that any pixel change reorders. So the
whole-frame top-1 is compared twice, on every photo and on those where either side reaches the
decision threshold. What a user sees is the decision (a named bird, an empty frame, an animal, a
person), so the other figures are the decisions: named right, false birds, and how many are the same.

    python -m bench.accuracy            # about 15 s: reduced against full decode, the shipped finder
    python -m bench.accuracy --naive    # about 3 minutes more: the naive pipeline's NLM pixels too

`python -m bench` runs the same comparison (`--accuracy-naive` for the naive arm).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

from bench.report import ROOT, Results, add_output_options
from birdtrap import evaluate as evaluation
from birdtrap.config import Config
from birdtrap.daemon.wiring import build_identifier
from birdtrap.identify.classifier import Score
from birdtrap.identify.decision import BIRD
from birdtrap.identify.identifier import Identification, Identifier
from birdtrap.identify.preprocess import Photo, opencv


@dataclass(frozen=True)
class Scored:
    """One pipeline's outcomes on the labelled photos, their summary, and each photo's whole-frame top-1."""

    outcomes: list[evaluation.PhotoOutcome]
    summary: evaluation.Summary
    top1: list[Score]


class Recording:
    """An Identifier that also keeps each frame's whole-frame top-1, optionally on the naive pipeline's pixels.

    Stands in for an Identifier where `birdtrap evaluate` takes one (it reads `preprocess` and
    calls `identify`), so every arm is scored by the same counting. The top-1 is the species
    model's on the whole frame, what the one-invoke drain stores, whatever region the finder
    ends on. With `denoise` every frame first goes through full-resolution non-local means.
    """

    def __init__(self, identifier: Identifier, denoise: bool = False) -> None:
        self.identifier = identifier
        self.preprocess = identifier.preprocess
        self.denoise = denoise
        self.top1: list[Score] = []

    def identify(self, photos: list[Photo], burst_keys: list[object] | None = None) -> list[Identification]:
        if self.denoise:
            cv2 = opencv()
            photos = [replace(p, bgr=cv2.fastNlMeansDenoisingColored(p.bgr)) for p in photos]
        # The frame inputs are made once and handed on: identify() would make the same ones.
        frames = [self.identifier.frame_inputs(p) for p in photos]
        self.top1.extend(prediction.best for prediction in self.identifier.species.predict_batch([f.species for f in frames]))
        return self.identifier.identify(photos, burst_keys, frames)


def score(config: Config, photos: list[evaluation.LabelledPhoto], reduced: bool, denoise: bool = False) -> Scored:
    """Every labelled photo through a fresh Identifier (its own burst memory), as `birdtrap evaluate` runs it."""
    preprocess = config.preprocess.model_copy(update={"reduced_decode": reduced})
    recording = Recording(build_identifier(config.model_copy(update={"preprocess": preprocess})), denoise)
    outcomes = evaluation.evaluate(photos, recording)
    if len(recording.top1) != len(outcomes):
        raise SystemExit("bench.accuracy: a labelled photo could not be read; run `birdtrap evaluate --verbose` to see which")
    return Scored(outcomes, evaluation.summarise(outcomes), recording.top1)


def _decision(outcome: evaluation.PhotoOutcome) -> tuple[str, str | None]:
    """What a user sees: the kind, and the name where a bird is named (an empty frame is empty, whatever its label)."""
    return outcome.decided, outcome.label if outcome.decided == BIRD else None


def _same_decisions(pairs: list[tuple[evaluation.PhotoOutcome, evaluation.PhotoOutcome]]) -> int:
    return sum(_decision(a) == _decision(b) for a, b in pairs)


def _same_top1(pairs: list[tuple[Score, Score]]) -> int:
    return sum(a.label.index == b.label.index for a, b in pairs)


def reduced_against_full(
    results: Results, config: Config, labels: Path, root: Path, limit: int | None = None, naive: bool = False
) -> None:
    """Figures for the reduced decode against a full-size decode (and the naive pixels) on the labelled photos."""
    photos = evaluation.read_labels(labels, root)
    if limit is not None:  # a spread over the file (birds and no-birds), not its first rows
        photos = photos[:: max(1, len(photos) // limit)][:limit]
    arms = {"reduced": score(config, photos, reduced=True), "full": score(config, photos, reduced=False)}
    if naive:
        arms["naive"] = score(config, photos, reduced=False, denoise=True)
    how = {"reduced": "reduced decode", "full": "full decode", "naive": "full decode + NLM (naive)"}
    for key, scored in arms.items():
        summary = scored.summary
        birds = summary.bird_photos
        results.add(
            f"accuracy.{key}.named_right",
            f"bird photos named right, {how[key]}",
            summary.named_right / birds if birds else None,
            "fraction",
            None if key == "full" else "accuracy.full.named_right",
            birds,
            note=f"{summary.named_right} of {birds}; species or genus as `birdtrap evaluate` counts",
        )
        results.add(
            f"accuracy.{key}.false_birds",
            f"no-bird photos called birds, {how[key]}",
            summary.false_birds,
            "photos",
            None,
            summary.no_bird_photos,
            note=f"of {summary.no_bird_photos}",
        )
    reduced = arms["reduced"].outcomes
    for key, other in arms.items():
        if key == "reduced":
            continue
        suffix = "" if key == "full" else f".{key}"
        pairs = list(zip(reduced, other.outcomes, strict=True))
        named = [(a, b) for a, b in pairs if BIRD in (a.decided, b.decided)]
        tops = list(zip(arms["reduced"].top1, other.top1, strict=True))
        threshold = config.decision.threshold
        sure = [(a, b) for a, b in tops if max(a.probability, b.probability) >= threshold]
        kept = "; the kind, and the name of a bird"
        for figure, label, subset, same, what in (
            ("decision_agreement", f"reduced decode decision = {how[key]} decision", pairs, _same_decisions, "photos" + kept),
            ("bird_agreement", f"same decision where either names a bird, vs {how[key]}", named, _same_decisions, "with a bird" + kept),
            ("top1_agreement", f"whole-frame top-1, reduced = {how[key]}", tops, _same_top1, "labelled photos"),
            (
                "sure_top1_agreement",
                f"whole-frame top-1, reduced = {how[key]}, sure ones",
                sure,
                _same_top1,
                f"where either top-1 reaches the decision threshold ({threshold:g})",
            ),
        ):
            count = same(subset)
            results.add(
                f"accuracy.{figure}{suffix}",
                label,
                count / len(subset) if subset else None,
                "fraction",
                None,
                len(subset),
                required=bool(subset),  # a handful of photos may hold no bird, or no sure top-1
                note=f"{count} of {len(subset)} {what}",
            )
        changed = [
            f"{Path(a.path).name}: {' '.join(filter(None, _decision(a)))} -> {' '.join(filter(None, _decision(b)))}"
            for a, b in pairs
            if _decision(a) != _decision(b)
        ]
        if changed:
            results.notes.append(f"decisions the {how[key]} changes (reduced -> {key}): " + "; ".join(changed))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.accuracy", description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--naive", action="store_true", help="score the naive pipeline's pixels too (NLM: about 4 s a photo)")
    parser.add_argument("--photos", type=int, help="score this many labelled photos, spread over the file [all]")
    parser.add_argument("--config", type=Path, help="a birdtrap config to score [the bench's: shipped defaults, shared models, finder on]")
    parser.add_argument("--shared", type=Path, default=ROOT.parent / "shared", help="the shared photos and models [../shared]")
    parser.add_argument("--labels", type=Path, help="the labels CSV, paths relative to --shared [SHARED/data/labels.csv]")
    add_output_options(parser, "accuracy")
    args = parser.parse_args(argv)
    if args.photos is not None and args.photos < 1:
        parser.error("--photos must be at least 1")
    args.labels = args.labels or args.shared / "data" / "labels.csv"
    return args


def main(argv: list[str] | None = None) -> int:
    """Score both decodes (and the naive pixels) and report; returns the exit status."""
    args = parse_args(argv)
    if not args.labels.exists():
        print(f"bench.accuracy: no labels file {args.labels}; pass --shared PATH or --labels FILE", file=sys.stderr)
        return 2
    from bench import endtoend
    from bench.report import publish, run_settings
    from birdtrap.config import load

    results = Results()
    results.settings = run_settings(args)
    config_path = args.config
    if config_path is None:
        config_path = endtoend.write_config(Path(tempfile.mkdtemp(prefix="birdtrap-bench-accuracy-")), args.shared.resolve(), finder=True)
    began = time.perf_counter()
    reduced_against_full(results, load(config_path), args.labels, args.shared, args.photos, args.naive)
    results.settings["seconds"] = round(time.perf_counter() - began, 1)
    results.finish()
    publish(results, args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
