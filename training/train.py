"""The training loop: head first, then the top of the backbone, with checkpoints to resume from.

A run folder holds everything needed to evaluate, export or resume it: the resolved `config.yaml`
(saved before the first step, as timm saves `args.yaml`), `split.csv` and `labels.txt`,
`summary.json`, `log.csv` (one row per epoch), `checkpoints/` (last and best weights, state.json)
and, at the end, `model.weights.h5` (the best weights) and `curves.png`.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tensorflow as tf
import tf_keras as keras

from training import config as config_module
from training import data as data_module
from training.config import TrainConfig
from training.data import Dataset
from training.errors import DatasetError, TrainingError
from training.model import Trainer, build_model, freeze_backbone, set_precision, unfreeze_top

log = logging.getLogger(__name__)

CONFIG_FILE = "config.yaml"
SUMMARY_FILE = "summary.json"
LOG_FILE = "log.csv"
WEIGHTS_FILE = "model.weights.h5"
CHECKPOINTS = "checkpoints"
OPTIMIZATION_FILE = "optimization.json"
QAT_WEIGHTS_FILE = "qat.weights.h5"


@dataclass(frozen=True)
class Phase:
    name: str
    epochs: int
    learning_rate: float
    setup: Callable[[keras.Model], Any]


@dataclass
class RunResult:
    """What a finished run left behind, and how long its epochs took."""

    folder: Path
    weights: Path
    dataset: Dataset
    epochs: int
    seconds_per_epoch: list[float] = field(default_factory=list)
    best: dict[str, float] = field(default_factory=dict)


def seed_everything(seed: int, deterministic: bool) -> None:
    """Seed Python, NumPy and TensorFlow; optionally make TF ops deterministic (slower)."""
    keras.utils.set_random_seed(seed)
    if deterministic:
        tf.config.experimental.enable_op_determinism()


def make_loss(config: TrainConfig) -> keras.losses.Loss:
    settings = config.train
    if settings.loss == "focal":
        return keras.losses.CategoricalFocalCrossentropy(gamma=settings.focal_gamma, label_smoothing=settings.label_smoothing)
    return keras.losses.CategoricalCrossentropy(label_smoothing=settings.label_smoothing)


def make_optimizer(
    config: TrainConfig, peak: float, updates: int, updates_per_epoch: int
) -> tuple[keras.optimizers.Optimizer, bool]:
    """The optimizer for one phase, and whether its learning rate is a schedule (cosine) or a variable.

    `updates` is the number of optimizer updates the phase will make (steps / accumulate); the
    cosine schedule warms up over `train.warmup_epochs` of them, then decays to 1% of `peak`.
    """
    settings = config.train
    warmup = min(updates - 1, max(0, int(round(settings.warmup_epochs * updates_per_epoch))))
    rate: Any = peak
    scheduled = settings.schedule == "cosine"
    if scheduled:
        rate = keras.optimizers.schedules.CosineDecay(
            initial_learning_rate=peak * 0.01 if warmup else peak,
            decay_steps=max(1, updates - warmup),
            alpha=0.01,
            warmup_target=peak if warmup else None,
            warmup_steps=warmup,
        )
    options: dict[str, Any] = {"learning_rate": rate, "global_clipnorm": settings.clipnorm}
    if settings.optimizer == "adamw":
        optimizer = keras.optimizers.AdamW(weight_decay=settings.weight_decay, **options)
        # Decay kernels only: shrinking biases and BatchNorm scales only hurts.
        optimizer.exclude_from_weight_decay(var_names=["bias", "gamma", "beta"])
    else:
        optimizer = keras.optimizers.Adam(**options)
    return optimizer, scheduled


def current_learning_rate(optimizer: keras.optimizers.Optimizer) -> float:
    rate = optimizer.learning_rate
    try:
        return float(keras.backend.get_value(rate))
    except (TypeError, ValueError):
        return float(rate(optimizer.iterations))


class WarmUp(keras.callbacks.Callback):
    """Linear warm-up for a plain (plateau-scheduled) learning rate over the first updates."""

    def __init__(self, peak: float, steps: int) -> None:
        super().__init__()
        self.peak, self.steps, self.seen = peak, steps, 0

    def on_train_batch_begin(self, batch: int, logs: dict | None = None) -> None:
        if self.seen < self.steps:
            self.seen += 1
            keras.backend.set_value(self.model.optimizer.learning_rate, self.peak * self.seen / self.steps)


class EpochRecord(keras.callbacks.Callback):
    """Adds phase and learning rate to each epoch's logs (for log.csv) and times the epochs."""

    def __init__(self, phase: int) -> None:
        super().__init__()
        self.phase = phase
        self.seconds: list[float] = []
        self._start = 0.0

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.seconds.append(time.perf_counter() - self._start)
        if logs is not None:
            logs["phase"] = self.phase
            logs["lr"] = current_learning_rate(self.model.optimizer)
            logs["seconds"] = round(self.seconds[-1], 3)
            log.info(
                "epoch %d (phase %d): %s",
                epoch + 1,
                self.phase,
                ", ".join(f"{k} {v:.4f}" for k, v in logs.items() if isinstance(v, float)),
            )


class Checkpoint(keras.callbacks.Callback):
    """Saves the network's last and best weights and the resume state after every epoch.

    Best is the highest validation accuracy (lower validation loss breaks a tie), across phases.
    """

    def __init__(self, network: keras.Model, folder: Path, phase: str, state: dict[str, Any]) -> None:
        super().__init__()
        self.network, self.folder, self.phase, self.state = network, folder, phase, state

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        logs = logs or {}
        self.network.save_weights(str(self.folder / "last.weights.h5"))
        score = (float(logs.get("val_accuracy", logs.get("accuracy", 0.0))), -float(logs.get("val_loss", logs.get("loss", 0.0))))
        best = self.state.get("best")
        if best is None or score > (best["accuracy"], -best["loss"]):
            self.network.save_weights(str(self.folder / "best.weights.h5"))
            self.state["best"] = {"accuracy": score[0], "loss": -score[1], "epoch": epoch + 1, "phase": self.phase}
        done = self.state.setdefault("phase_epochs", {})
        done[self.phase] = done.get(self.phase, 0) + 1
        self.state["epoch"] = epoch + 1
        (self.folder / "state.json").write_text(json.dumps(self.state, indent=2), encoding="utf-8")


def prepare_run(config: TrainConfig, out: Path, resume: bool) -> Dataset:
    """Scan (or, resuming, re-read) the dataset, write the split, summary and resolved config."""
    out.mkdir(parents=True, exist_ok=True)
    if resume:
        dataset = data_module.read_split(out)
        summary = json.loads((out / SUMMARY_FILE).read_text(encoding="utf-8"))
    else:
        if config.data.root is None:
            raise DatasetError("no dataset given; pass --data FOLDER (with one sub-folder of photos per species).")
        dataset = data_module.scan(
            config.data.root,
            config.preprocess.settings(),
            config.seed,
            config.data.val_fraction,
            config.data.test_fraction,
            config.data.extensions,
        )
        data_module.write_split(dataset, out)
        summary = dataset.summary()
        (out / SUMMARY_FILE).write_text(json.dumps(summary, indent=2), encoding="utf-8")
    # Also when resuming: flags given then (more epochs, say) belong to the run's record.
    config_module.save(config, out / CONFIG_FILE)
    log.info("%s", data_module.format_summary(summary))
    return dataset


def train(config: TrainConfig, out: Path, resume: bool = False) -> RunResult:
    """Train a model into the run folder `out`; with `resume`, continue from its last checkpoint.

    Raises DatasetError for an unusable dataset, WeightsError for unavailable backbone weights and
    TrainingError when there is nothing to resume.
    """
    out = Path(out)
    checkpoints = out / CHECKPOINTS
    state: dict[str, Any] = {}
    if resume:
        state_file = checkpoints / "state.json"
        if not state_file.exists():
            raise TrainingError(f"{out} has no {CHECKPOINTS}/state.json to resume from; start a new run without --resume.")
        state = json.loads(state_file.read_text(encoding="utf-8"))
    checkpoints.mkdir(parents=True, exist_ok=True)
    seed_everything(config.seed, config.train.deterministic)
    policy = set_precision(config.train.mixed_precision)
    dataset = prepare_run(config, out, resume)
    log.info("compute policy %s; backbone %s at %d px", policy, config.model.backbone, config.model.size)

    spec = data_module.model_spec(config.model.size)
    settings = config.preprocess.settings()
    batch = config.data.batch_size
    cache = data_module.cache_target(len(dataset.train), config.model.size, config.data.cache, out / "cache")
    if cache and not resume:
        for stale in (out / "cache").glob("photos*"):
            stale.unlink()
    train_data = data_module.pipeline(
        dataset.train, len(dataset.labels), spec, settings, batch, True, config.data.augment, config.seed, cache
    )
    val_examples = dataset.val or dataset.test
    val_data = data_module.pipeline(val_examples, len(dataset.labels), spec, settings, batch) if val_examples else None
    steps = math.ceil(len(dataset.train) / batch)
    if config.train.steps_per_epoch:
        steps = min(steps, config.train.steps_per_epoch)
    steps = max(steps, config.train.accumulate)
    updates_per_epoch = max(1, steps // config.train.accumulate)

    network = build_model(config.model, len(dataset.labels))
    if resume:
        network.load_weights(str(checkpoints / "last.weights.h5"))
    trainer = Trainer(network, config.train.accumulate)
    weights = data_module.class_weights(dataset) if config.train.class_weights == "balanced" else None
    top_k = min(5, len(dataset.labels))
    phases = [
        Phase("head", config.train.head_epochs, config.train.learning_rate, freeze_backbone),
        Phase(
            "fine_tune",
            config.train.fine_tune_epochs,
            config.train.fine_tune_learning_rate,
            lambda model: unfreeze_top(model, config.train.fine_tune_layers),
        ),
    ]
    epoch = int(state.get("epoch", 0))
    result = RunResult(out, out / WEIGHTS_FILE, dataset, epoch)
    done_per_phase = state.get("phase_epochs", {})
    for index, phase in enumerate(phases, start=1):
        remaining = phase.epochs - int(done_per_phase.get(phase.name, 0))
        if remaining <= 0 or state.get("finished_phases", {}).get(phase.name):
            continue
        phase.setup(network)
        optimizer, scheduled = make_optimizer(config, phase.learning_rate, updates_per_epoch * remaining, updates_per_epoch)
        trainer.compile(
            optimizer=optimizer,
            loss=make_loss(config),
            metrics=[
                keras.metrics.CategoricalAccuracy(name="accuracy"),
                keras.metrics.TopKCategoricalAccuracy(k=top_k, name="top5"),
            ],
        )
        trainer.prepare()
        record = EpochRecord(index)
        monitor = "val_accuracy" if val_data is not None else "accuracy"
        callbacks: list[keras.callbacks.Callback] = [
            record,
            Checkpoint(network, checkpoints, phase.name, state),
            keras.callbacks.CSVLogger(str(out / LOG_FILE), append=True),
            keras.callbacks.EarlyStopping(monitor=monitor, mode="max", patience=config.train.patience, restore_best_weights=True),
        ]
        if not scheduled:
            warmup = int(round(config.train.warmup_epochs * steps))
            if warmup:
                callbacks.append(WarmUp(phase.learning_rate, warmup))
            callbacks.append(
                keras.callbacks.ReduceLROnPlateau(
                    monitor="val_loss" if val_data is not None else "loss", factor=0.2, patience=max(1, config.train.patience // 2)
                )
            )
        if config.train.tensorboard:
            callbacks.append(keras.callbacks.TensorBoard(log_dir=str(out / "tensorboard")))
        log.info("phase %d (%s): %d epochs at learning rate %g", index, phase.name, remaining, phase.learning_rate)
        history = trainer.fit(
            train_data,
            epochs=epoch + remaining,
            initial_epoch=epoch,
            steps_per_epoch=steps,
            validation_data=val_data,
            class_weight=weights,
            callbacks=callbacks,
            verbose=1 if config.train.progress else 0,
        )
        epoch += len(history.epoch)
        # EarlyStopping has restored the phase's best weights: the next phase, or a resumed run, starts there.
        network.save_weights(str(checkpoints / "last.weights.h5"))
        result.seconds_per_epoch += record.seconds
        state.setdefault("finished_phases", {})[phase.name] = True
        (checkpoints / "state.json").write_text(json.dumps(state, indent=2), encoding="utf-8")

    if (checkpoints / "best.weights.h5").exists():
        network.load_weights(str(checkpoints / "best.weights.h5"))
    if config.train.prune or config.train.qat:
        fit_options = {"steps_per_epoch": steps, "validation_data": val_data, "class_weight": weights,
                       "verbose": 1 if config.train.progress else 0}  # fmt: skip
        epoch = _optimize_phase(network, config, train_data, fit_options, epoch, updates_per_epoch, state, out, result)
    network.save_weights(str(result.weights))
    result.epochs = epoch
    result.best = dict(state.get("best", {}))
    try:
        from training.evaluate import plot_curves

        plot_curves(out / LOG_FILE, out / "curves.png")
    except (OSError, ValueError, KeyError) as e:
        log.warning("could not draw the training curves (%s)", e)
    log.info("saved %s (best: %s)", result.weights, result.best)
    return result


def _optimize_phase(
    network: keras.Model,
    config: TrainConfig,
    train_data: tf.data.Dataset,
    fit_options: dict[str, Any],
    epoch: int,
    updates_per_epoch: int,
    state: dict[str, Any],
    out: Path,
    result: RunResult,
) -> int:
    """Phase 3: pruning and/or quantization-aware training of the best float network.

    The whole network trains (BatchNorm still frozen). Pruning writes its sparse weights back into
    `network`; QAT saves its own weights (qat.weights.h5) for the int8 export, leaving `network`
    the float model. The effect is written to optimization.json and later to the model card.
    Returns the epoch count after the phase(s).
    """
    from training import optimize

    for layer in network.layers:
        layer.trainable = not isinstance(layer, keras.layers.BatchNormalization)
    epochs = config.train.optimize_epochs
    report: dict[str, Any] = {}
    before = round(float(state.get("best", {}).get("accuracy", float("nan"))), 4)
    steps = [("prune", config.train.prune), ("qat", config.train.qat)]
    for name, wanted in steps:
        if not wanted:
            continue
        if name == "prune":
            wrapped = optimize.prunable(network, config.train.prune_sparsity, updates_per_epoch * epochs)
            extra = optimize.pruning_callbacks()
        else:
            wrapped = optimize.quantization_aware(network)
            extra = []
        trainer = Trainer(wrapped, config.train.accumulate)
        optimizer, _ = make_optimizer(config, config.train.fine_tune_learning_rate, updates_per_epoch * epochs, updates_per_epoch)
        top_k = min(5, int(network.output_shape[-1]))
        trainer.compile(
            optimizer=optimizer,
            loss=make_loss(config),
            metrics=[keras.metrics.CategoricalAccuracy(name="accuracy"), keras.metrics.TopKCategoricalAccuracy(k=top_k, name="top5")],
        )
        trainer.prepare()
        record = EpochRecord(3)
        log.info("phase 3 (%s): %d epochs", name, epochs)
        history = trainer.fit(
            train_data,
            epochs=epoch + epochs,
            initial_epoch=epoch,
            callbacks=[record, *extra, keras.callbacks.CSVLogger(str(out / LOG_FILE), append=True)],
            **fit_options,
        )
        epoch += len(history.epoch)
        result.seconds_per_epoch += record.seconds
        key = "val_accuracy" if "val_accuracy" in history.history else "accuracy"
        after = round(float(history.history[key][-1]), 4)
        entry: dict[str, Any] = {"epochs": len(history.epoch), f"{key}_before": before, f"{key}_after": after}
        if name == "prune":
            network.set_weights(optimize.strip(wrapped).get_weights())
            entry.update(target_sparsity=config.train.prune_sparsity, sparsity=round(optimize.sparsity(network), 4))
        else:
            wrapped.save_weights(str(out / QAT_WEIGHTS_FILE))
        report[name] = entry
        log.info("%s: %s", name, entry)
        state.setdefault("finished_phases", {})[name] = True
    (out / OPTIMIZATION_FILE).write_text(json.dumps(report, indent=2), encoding="utf-8")
    return epoch


def load_network(run: Path) -> tuple[keras.Model, TrainConfig, Dataset]:
    """The trained float network of a run folder, with its config and split.

    Rebuilt from the run's config with its saved weights (no download: the backbone's starting
    weights no longer matter). Raises TrainingError when the run has not finished.
    """
    run = Path(run)
    config_file = run / CONFIG_FILE
    weights = run / WEIGHTS_FILE
    if not config_file.exists() or not weights.exists():
        raise TrainingError(
            f"{run} is not a finished training run (needs {CONFIG_FILE} and {WEIGHTS_FILE}); "
            "run `python -m training train --out` first, or --resume it."
        )
    config = config_module.load(config_file)
    dataset = data_module.read_split(run)
    set_precision("off")
    network = build_model(config.model.model_copy(update={"weights": "none"}), len(dataset.labels))
    network.load_weights(str(weights))
    return network, config, dataset
