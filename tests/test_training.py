"""Training, for real: TensorFlow on real photos from ../shared/images, bundles run by the daemon's runtime.

Datasets are folders of symbolic links to the shared photos (the `<root>/<label>/*.jpg` layout,
read in place, nothing copied). Models are tiny (64 px, a few steps, `--weights none`: ImageNet
weights cannot be downloaded here), so the numbers are meaningless but every path is the real one.
"""

from __future__ import annotations

import csv
import json
import shutil
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
    assert "--weights none" in message


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
    assert 0.2 < optimization["prune"]["sparsity"] <= 0.5
    assert {"val_accuracy_before", "val_accuracy_after"} <= set(optimization["prune"]) & set(optimization["qat"])
    assert card["quantization"]["quantization_aware"] is True
    assert 0 < card["sizes"]["int8"]["gzip_bytes"] < card["sizes"]["int8"]["bytes"]
    classifier = Classifier.from_path(out / "int8", delegate="cpu")
    settings = classifier.card_preprocessing
    [prediction] = classifier.predict_batch([to_model_input(load(OWL, settings).bgr, classifier.spec, settings)])
    assert prediction.best.label.text in ("Ardea cinerea (Grey Heron)", "Athene cunicularia (Burrowing Owl)", "background")
