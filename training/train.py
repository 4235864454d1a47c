"""The training loop: head first, then the top of the backbone, with checkpoints to resume from.

A run folder holds everything needed to evaluate, export or resume it: the resolved `config.yaml`
(saved before the first step, as timm saves `args.yaml`), `split.csv` and `labels.txt`,
`summary.json`, `log.csv` (one row per epoch, learning rate included), `checkpoints/` (last and
best weights, the optimizer's state per phase, state.json; each written to a temporary name and
renamed) and, at the end, `model.weights.h5` (the best weights), `trainable.json` (trainable layers
and parameters per phase) and `curves.png`.
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
from training.model import Trainer, build_model, freeze_backbone, set_precision, trainable_counts, unfreeze_top

log = logging.getLogger(__name__)

CONFIG_FILE = "config.yaml"
SUMMARY_FILE = "summary.json"
LOG_FILE = "log.csv"
WEIGHTS_FILE = "model.weights.h5"
CHECKPOINTS = "checkpoints"
OPTIMIZATION_FILE = "optimization.json"
QAT_WEIGHTS_FILE = "qat.weights.h5"
TRAINABLE_FILE = "trainable.json"
OPTIMIZER_STATE = "optimizer"


def save_weights_atomically(network: keras.Model, path: Path) -> None:
    """Write weights to a temporary file, then rename: a kill mid-write leaves the old file whole."""
    # Same suffix: tf_keras picks the file format from it (".weights.h5" is the Keras 3 layout).
    partial = path.with_name(f"partial-{path.name}")
    network.save_weights(str(partial))
    partial.replace(path)


def write_json_atomically(path: Path, value: Any) -> None:
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(value, indent=2), encoding="utf-8")
    partial.replace(path)


def load_checkpoint(network: keras.Model, path: Path) -> None:
    """Load a checkpoint, turning a damaged file into a TrainingError that says what to do."""
    try:
        network.load_weights(str(path))
    except (OSError, ValueError, KeyError) as e:
        raise TrainingError(
            f"checkpoint {path} cannot be read ({str(e).splitlines()[0][:200]}); it was damaged (a kill mid-write "
            f"in an older version, or a full disk). Delete it and resume from {path.with_name('best.weights.h5')} "
            "by copying that over it, or start the run again."
        ) from None


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


def accuracy_metrics(classes: int) -> list[keras.metrics.Metric]:
    """Accuracy, and top-5 only when there are more than 5 classes (else it is always 1.0)."""
    metrics: list[keras.metrics.Metric] = [keras.metrics.CategoricalAccuracy(name="accuracy")]
    if classes > 5:
        metrics.append(keras.metrics.TopKCategoricalAccuracy(k=5, name="top5"))
    return metrics


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
        save_weights_atomically(self.network, self.folder / "last.weights.h5")
        save_optimizer(self.model.optimizer, self.folder, self.phase)
        score = (float(logs.get("val_accuracy", logs.get("accuracy", 0.0))), -float(logs.get("val_loss", logs.get("loss", 0.0))))
        best = self.state.get("best")
        if best is None or score > (best["accuracy"], -best["loss"]):
            save_weights_atomically(self.network, self.folder / "best.weights.h5")
            self.state["best"] = {"accuracy": score[0], "loss": -score[1], "epoch": epoch + 1, "phase": self.phase}
        done = self.state.setdefault("phase_epochs", {})
        done[self.phase] = done.get(self.phase, 0) + 1
        self.state["epoch"] = epoch + 1
        write_json_atomically(self.folder / "state.json", self.state)


def save_optimizer(optimizer: keras.optimizers.Optimizer, folder: Path, phase: str) -> None:
    """The optimizer's step count and moments, so a resumed phase continues its schedule and state.

    Written under a temporary prefix and renamed file by file; the phase name is in the prefix so a
    resumed run never restores one phase's moments into another phase's variables.
    """
    partial = folder / f"{OPTIMIZER_STATE}-{phase}.partial"
    written = Path(tf.train.Checkpoint(optimizer=optimizer).write(str(partial)))
    for file in folder.glob(f"{written.name}*"):
        file.replace(folder / file.name.replace(".partial", ""))


def restore_optimizer(optimizer: keras.optimizers.Optimizer, variables: list[tf.Variable], folder: Path, phase: str) -> bool:
    """Restore what `save_optimizer` wrote for `phase`; False when there is nothing to restore."""
    prefix = folder / f"{OPTIMIZER_STATE}-{phase}"
    if not Path(f"{prefix}.index").exists():
        return False
    inner = getattr(optimizer, "inner_optimizer", optimizer)
    inner.build(variables)
    try:
        tf.train.Checkpoint(optimizer=optimizer).read(str(prefix)).expect_partial()
    except (tf.errors.OpError, ValueError, AssertionError) as e:
        log.warning("optimizer state %s not restored (%s); the phase continues with fresh moments", prefix, e)
        return False
    return True


def prepare_run(config: TrainConfig, out: Path, resume: bool, keep_labels: tuple[str, ...] | None = None) -> Dataset:
    """Scan (or, resuming, re-read) the dataset, write the split, summary and resolved config.

    `keep_labels` (last season's classes, `train --from`) come first, in their order, so output N
    keeps its meaning; new species folders are added after them.
    """
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
        if keep_labels is not None:
            dataset = data_module.with_labels_first(dataset, keep_labels)
        data_module.write_split(dataset, out)
        summary = dataset.summary()
        (out / SUMMARY_FILE).write_text(json.dumps(summary, indent=2), encoding="utf-8")
    # Also when resuming: flags given then (more epochs, say) belong to the run's record.
    config_module.save(config, out / CONFIG_FILE)
    log.info("%s", data_module.format_summary(summary))
    return dataset


def check_resume(config: TrainConfig, state: dict[str, Any], out: Path) -> None:
    """Refuse a resume that cannot do what was asked, before anything in the run folder changes.

    A phase that ended (all its epochs, or early stopping) has spent its learning-rate schedule:
    asking it for more epochs would silently train none and still record the new count.
    """
    finished = state.get("finished_phases", {})
    done = state.get("phase_epochs", {})
    wanted = {"head": config.train.head_epochs, "fine_tune": config.train.fine_tune_epochs}
    for phase, epochs in wanted.items():
        if finished.get(phase) and epochs > int(done.get(phase, 0)) and epochs != state.get("planned", {}).get(phase):
            raise TrainingError(
                f"{out}: the {phase} phase already ended after {done.get(phase, 0)} epoch(s) "
                f"({'early stopping' if state.get('early_stopped', {}).get(phase) else 'its planned epochs'}); --resume "
                f"continues an interrupted run, it cannot add epochs to a finished phase. Start a new run from it: "
                f"python -m training train --from {out} --data PHOTOS --out NEW_RUN"
            )


def train(config: TrainConfig, out: Path, resume: bool = False, start_from: Path | None = None) -> RunResult:
    """Train a model into the run folder `out`; with `resume`, continue from its last checkpoint.

    `start_from` (a finished run folder) starts from that run's weights and classes instead of the
    backbone's (`train --from`). Raises DatasetError for an unusable dataset, WeightsError for
    unavailable backbone weights and TrainingError when there is nothing to resume.
    """
    out = Path(out)
    checkpoints = out / CHECKPOINTS
    state: dict[str, Any] = {}
    if resume:
        state_file = checkpoints / "state.json"
        if not state_file.exists():
            raise TrainingError(f"{out} has no {CHECKPOINTS}/state.json to resume from; start a new run without --resume.")
        state = json.loads(state_file.read_text(encoding="utf-8"))
        check_resume(config, state, out)
    if config.train.tensorboard:
        try:
            import tensorboard  # noqa: F401 - TensorFlow 2.21 no longer installs it
        except ImportError:
            raise TrainingError("--tensorboard needs the tensorboard package: pip install tensorboard (or leave the flag out).") from None
    checkpoints.mkdir(parents=True, exist_ok=True)
    seed_everything(config.seed, config.train.deterministic)
    policy = set_precision(config.train.mixed_precision)
    previous = None
    if start_from is not None and not resume:
        from training.season import previous_season

        previous = previous_season(start_from)
        config = config.model_copy(update={"model": previous.config.model})
    dataset = prepare_run(config, out, resume, previous.labels if previous else None)
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

    pretrained_weights = config.model.weights != "none"
    if previous is not None or (resume and state.get("from")):
        pretrained_weights = True  # last season's backbone is worth protecting like ImageNet's
    network = build_model(config.model.model_copy(update={"weights": "none"}) if previous else config.model, len(dataset.labels))
    if previous is not None:
        from training.season import carry_weights

        carry_weights(previous, network)
        state["from"] = str(previous.run)
    if resume:
        load_checkpoint(network, checkpoints / "last.weights.h5")
    trainer = Trainer(network, config.train.accumulate)
    weights = data_module.class_weights(dataset) if config.train.class_weights == "balanced" else None
    phases = [
        Phase("head", config.train.head_epochs, config.train.learning_rate, lambda model: freeze_backbone(model, pretrained_weights)),
        Phase(
            "fine_tune",
            config.train.fine_tune_epochs,
            config.train.fine_tune_learning_rate,
            lambda model: unfreeze_top(model, config.train.fine_tune_layers, pretrained_weights),
        ),
    ]
    state.setdefault("planned", {p.name: p.epochs for p in phases})
    epoch = int(state.get("epoch", 0))
    result = RunResult(out, out / WEIGHTS_FILE, dataset, epoch)
    done_per_phase = state.get("phase_epochs", {})
    for index, phase in enumerate(phases, start=1):
        remaining = phase.epochs - int(done_per_phase.get(phase.name, 0))
        if remaining <= 0 or state.get("finished_phases", {}).get(phase.name):
            continue
        phase.setup(network)
        counts = trainable_counts(network)
        state.setdefault("trainable", {})[phase.name] = counts
        log.info("phase %d (%s): %d trainable layers, %d of %d parameters", index, phase.name,
                 counts["trainable_layers"], counts["trainable_params"], counts["total_params"])  # fmt: skip
        # The schedule spans the whole phase; a resumed phase continues it at the step it reached.
        optimizer, scheduled = make_optimizer(config, phase.learning_rate, updates_per_epoch * phase.epochs, updates_per_epoch)
        trainer.compile(
            optimizer=optimizer,
            loss=make_loss(config),
            metrics=accuracy_metrics(len(dataset.labels)),
        )
        trainer.prepare()
        done_epochs = int(done_per_phase.get(phase.name, 0))
        if done_epochs and restore_optimizer(trainer.optimizer, trainer.trainable_variables, checkpoints, phase.name):
            log.info("resumed the %s phase's optimizer at update %d", phase.name, int(trainer.optimizer.iterations.numpy()))
        elif done_epochs:
            trainer.optimizer.iterations.assign(done_epochs * updates_per_epoch)
        record = EpochRecord(index)
        monitor = "val_accuracy" if val_data is not None else "accuracy"
        stopper = keras.callbacks.EarlyStopping(monitor=monitor, mode="max", patience=config.train.patience, restore_best_weights=True)
        callbacks: list[keras.callbacks.Callback] = [
            record,
            Checkpoint(network, checkpoints, phase.name, state),
            keras.callbacks.CSVLogger(str(out / LOG_FILE), append=True),
            stopper,
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
        if stopper.stopped_epoch:
            log.info(
                "early stopping: %s did not improve for %d epochs; the %s phase ends at epoch %d with the weights of its best epoch",
                monitor, config.train.patience, phase.name, epoch,
            )  # fmt: skip
            state.setdefault("early_stopped", {})[phase.name] = epoch
        # EarlyStopping has restored the phase's best weights: the next phase, or a resumed run, starts there.
        save_weights_atomically(network, checkpoints / "last.weights.h5")
        result.seconds_per_epoch += record.seconds
        state.setdefault("finished_phases", {})[phase.name] = True
        write_json_atomically(checkpoints / "state.json", state)

    if (checkpoints / "best.weights.h5").exists():
        load_checkpoint(network, checkpoints / "best.weights.h5")
    if config.train.prune or config.train.qat:
        fit_options = {"steps_per_epoch": steps, "validation_data": val_data, "class_weight": weights,
                       "verbose": 1 if config.train.progress else 0}  # fmt: skip
        epoch = _optimize_phase(network, config, train_data, fit_options, epoch, updates_per_epoch, state, out, result)
    save_weights_atomically(network, result.weights)
    state["done"] = True
    write_json_atomically(checkpoints / "state.json", state)
    write_json_atomically(out / TRAINABLE_FILE, state.get("trainable", {}))
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
    state.setdefault("trainable", {})["optimize"] = trainable_counts(network)
    epochs = config.train.optimize_epochs
    report: dict[str, Any] = {}
    before = round(float(state.get("best", {}).get("accuracy", float("nan"))), 4)
    steps = [("prune", config.train.prune), ("qat", config.train.qat)]
    for name, wanted in steps:
        if not wanted:
            continue
        if name == "prune":
            unpruned = [weights.copy() for weights in network.get_weights()]
            wrapped = optimize.prunable(network, config.train.prune_sparsity, updates_per_epoch * epochs)
            extra = optimize.pruning_callbacks()
        else:
            wrapped = optimize.quantization_aware(network)
            extra = []
        trainer = Trainer(wrapped, config.train.accumulate)
        optimizer, _ = make_optimizer(config, config.train.fine_tune_learning_rate, updates_per_epoch * epochs, updates_per_epoch)
        trainer.compile(optimizer=optimizer, loss=make_loss(config), metrics=accuracy_metrics(int(network.output_shape[-1])))
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
            settled = optimize.keep_if_not_worse(network, wrapped, unpruned, before, after)
            entry.update(target_sparsity=config.train.prune_sparsity, **settled)
            if entry["kept"]:
                state["best"] = {**state.get("best", {}), "accuracy": after, "phase": "prune"}
            else:
                log.warning("pruning lowered %s from %.4f to %.4f: kept the unpruned weights", key, before, after)
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
