"""Inference with the real runtime on the real shared models."""

from __future__ import annotations

import numpy as np
import pytest

from birdtrap.errors import ModelError
from birdtrap.identify.classifier import Classifier
from birdtrap.identify.preprocess import load, to_model_input
from birdtrap.identify.tflite import TFLiteModel

from conftest import HERON, INAT, MODELS, photo


@pytest.fixture(scope="module")
def inat():
    return Classifier.from_path(INAT, delegate="cpu")


def test_outputs_are_dequantized_probabilities_from_the_interpreters_own_parameters(inat):
    image = to_model_input(load(photo("bird.bmp")).bgr, inat.spec)
    probabilities = inat.probabilities(image[None])[0]
    assert probabilities.dtype == np.float32
    # uint8 softmax in steps of 1/256: classes below one step round to 0, so some mass is lost.
    assert 0.7 <= probabilities.sum() <= 1.05
    assert set(np.unique(np.round(probabilities * 256, 4)) % 1) == {0.0}
    detail = inat.model.output_details[0]
    assert detail["quantization"][0] == pytest.approx(1 / 256)


def test_a_batch_gives_the_same_answers_as_one_at_a_time(inat):
    inputs = np.stack([to_model_input(load(p).bgr, inat.spec) for p in HERON[:3]])
    together = inat.probabilities(inputs)
    alone = np.concatenate([inat.probabilities(row[None]) for row in inputs])
    assert np.allclose(together, alone, atol=1 / 256)


def test_the_edge_tpu_delegate_fails_clearly_when_absent_and_auto_falls_back(caplog):
    with pytest.raises(ModelError, match="model.delegate is 'edgetpu' but libedgetpu.so.1 could not be loaded"):
        TFLiteModel(INAT / "model.tflite", delegate="edgetpu")
    model = TFLiteModel(INAT / "model.tflite", delegate="auto")
    assert model.delegate == "cpu"
    assert "no Edge TPU found" in caplog.text


def test_the_gate_model_loads_with_its_own_labels():
    gate = Classifier.from_path(MODELS / "imagenet_mobilenet_v2", delegate="cpu")
    assert len(gate.labels) == 1001 and gate.labels[0].text == "background"
    image = to_model_input(load(photo("cat.bmp")).bgr, gate.spec)
    best = gate.predict_batch([image])[0].best
    assert "cat" in best.label.text.lower()


def test_input_scaling_set_by_the_user_beats_the_card_and_the_cards_preprocessing_beats_the_config():
    from dataclasses import replace

    from birdtrap.identify.bundle import load_bundle, resolve_input
    from birdtrap.identify.preprocess import PreprocessSettings

    bare = load_bundle(INAT / "model.tflite")
    default = resolve_input(bare)
    assert (default.mean, default.std, default.sources["mean"]) == (127.5, 127.5, "default")
    configured = PreprocessSettings(crop_info_bars=False)
    assert resolve_input(bare, preprocessing=configured).preprocessing == configured

    card = {"input": {"mean": 0.0, "std": 255.0}, "preprocessing": {"crop_info_bars": True, "decode_min_side": 448}}
    carded = replace(bare, card=card)
    chosen = resolve_input(carded, std=128.0, preprocessing=configured)
    assert (chosen.mean, chosen.sources["mean"]) == (0.0, "model card")
    assert (chosen.std, chosen.sources["std"]) == (128.0, "config")
    assert chosen.sources["preprocessing"] == "model card"
    assert chosen.preprocessing.crop_info_bars and chosen.preprocessing.decode_min_side == 448


@pytest.mark.parametrize("claimed", ["float32", "float16"])
def test_a_card_claiming_float_over_an_integer_model_is_refused_naming_the_file(tmp_path, claimed):
    import shutil

    from birdtrap.identify.bundle import write_card

    bundle = tmp_path / "mislabelled"
    bundle.mkdir()
    shutil.copyfile(INAT / "model.tflite", bundle / "model.tflite")
    shutil.copyfile(INAT / "labels.txt", bundle / "labels.txt")
    write_card(bundle, {"format": claimed, "quantization": {"type": claimed}})  # sha256s right, claim wrong
    with pytest.raises(ModelError, match=rf"has uint8 input and uint8 output tensors but its card .*model.json says {claimed}"):
        Classifier.from_path(bundle, delegate="cpu")
    write_card(bundle, {"format": "int8", "quantization": {"type": "int8"}})
    assert Classifier.from_path(bundle, delegate="cpu").spec.dtype == "uint8", "a true card loads"
