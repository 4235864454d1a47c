"""Magnitude pruning with tensorflow-model-optimization (an optional third training phase).

Pruning zeroes the smallest weights of every Conv2D, DepthwiseConv2D and Dense layer, ramping to
`train.prune_sparsity` while training goes on so accuracy can recover. The `.tflite` keeps its
shape (TFLite stores dense tensors), so the gain is in the compressed size: what a bundle costs to
copy to a device over a slow link. The export reports both sizes and the accuracy beside the
unpruned float model.
"""

from __future__ import annotations

import numpy as np
import tf_keras as keras

from training.model import annotate


def prunable(network: keras.Model, sparsity: float, updates: int) -> keras.Model:
    """The network with its weight layers wrapped for pruning to `sparsity` over `updates` steps."""
    import tensorflow_model_optimization as tfmot

    end = max(1, int(updates * 0.8))  # reach the target, then let the last steps recover at it
    schedule = tfmot.sparsity.keras.PolynomialDecay(
        initial_sparsity=0.0, final_sparsity=sparsity, begin_step=0, end_step=end, frequency=max(1, end // 10)
    )
    return annotate(network, lambda layer: tfmot.sparsity.keras.prune_low_magnitude(layer, pruning_schedule=schedule))


def pruning_callbacks() -> list[keras.callbacks.Callback]:
    import tensorflow_model_optimization as tfmot

    return [tfmot.sparsity.keras.UpdatePruningStep()]


def strip(model: keras.Model) -> keras.Model:
    """The pruned network with the pruning wrappers removed (the architecture `build_model` makes)."""
    import tensorflow_model_optimization as tfmot

    return tfmot.sparsity.keras.strip_pruning(model)


def keep_if_not_worse(
    network: keras.Model, pruned: keras.Model, unpruned: list[np.ndarray], before: float, after: float
) -> dict[str, object]:
    """Leave the pruned weights in `network` only when validation accuracy did not drop.

    A smaller download is not worth a worse model. The pruning wrappers reuse `network`'s own
    layers, so pruning has already changed its weights in place: undoing it means writing back
    `unpruned`, the weights taken before the phase. `before` may be NaN (no validation to
    compare with), and then the pruned weights are kept. Returns the report's `kept` and `sparsity`.
    """
    kept = bool(np.isnan(before) or after >= before)
    network.set_weights(strip(pruned).get_weights() if kept else unpruned)
    return {"kept": kept, "sparsity": round(sparsity(network), 4)}


def sparsity(network: keras.Model) -> float:
    """Share of zero weights across the Conv2D, DepthwiseConv2D and Dense kernels."""
    kinds = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D, keras.layers.Dense)
    zeros = total = 0
    for layer in network.layers:
        if isinstance(layer, kinds):
            kernel = np.asarray(layer.weights[0])
            zeros += int(np.sum(kernel == 0))
            total += kernel.size
    return zeros / total if total else 0.0


def quantization_aware(network: keras.Model) -> keras.Model:
    """The network with fake-quantization on its Conv2D, DepthwiseConv2D and Dense layers.

    Training it lets the weights adapt to int8 rounding before the int8 export; the other layers
    stay float and are calibrated as usual.
    """
    import tensorflow_model_optimization as tfmot

    annotated = annotate(network, tfmot.quantization.keras.quantize_annotate_layer)
    with tfmot.quantization.keras.quantize_scope():
        return tfmot.quantization.keras.quantize_apply(annotated)
