"""Starting from last season: `train --from BUNDLE_OR_RUN` keeps its classes and adds new ones.

Each season brings more photos and sometimes a new species. Starting again from ImageNet throws
away what last season's model learnt about these cameras; starting from it instead (its backbone,
attention and head) converges in fewer epochs. Output N keeps naming the same species, so the
daemon's history stays comparable; a new species folder becomes a new output, its classifier
column freshly initialised.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tf_keras as keras

from birdtrap.identify.bundle import CARD_FILE, MODEL_FILE
from training.config import TrainConfig
from training.errors import TrainingError


@dataclass(frozen=True)
class PreviousSeason:
    """A finished run to start from: its folder, settings, classes and trained float network."""

    run: Path
    config: TrainConfig
    labels: tuple[str, ...]
    network: keras.Model


def find_run(source: Path) -> Path:
    """The run folder behind `source`: a run folder itself, or a bundle whose card names its run.

    Raises TrainingError when neither leads to a run's trained weights.
    """
    source = Path(source)
    if (source / CARD_FILE).exists() and (source / MODEL_FILE).exists():
        card = json.loads((source / CARD_FILE).read_text(encoding="utf-8"))
        run = (card.get("training") or {}).get("run")
        if not run or not Path(run).is_dir():
            raise TrainingError(
                f"--from {source}: its card {source / CARD_FILE} names no run folder that exists here ({run}); a .tflite "
                "cannot be trained further. Pass the run folder that `python -m training export` read instead."
            )
        return Path(run)
    return source


def previous_season(source: Path) -> PreviousSeason:
    """Load last season's run (or the run behind a bundle) for `train --from`."""
    from training.train import load_network

    run = find_run(source)
    network, config, dataset = load_network(run)
    return PreviousSeason(run.absolute(), config, dataset.labels, network)


def carry_weights(previous: PreviousSeason, network: keras.Model) -> int:
    """Copy every layer of last season's network into `network`; returns the new classes' count.

    The classifier's first columns are last season's (same order); the columns of new classes
    keep their fresh initialisation.
    """
    old = {layer.name: layer for layer in previous.network.layers}
    for layer in network.layers:
        source = old.get(layer.name)
        if source is None or not layer.weights:
            continue
        if layer.name == "predictions":
            kernel, bias = (w.numpy() for w in layer.weights)
            old_kernel, old_bias = source.get_weights()
            count = old_kernel.shape[1]
            kernel[:, :count], bias[:count] = old_kernel, old_bias
            layer.set_weights([kernel, bias])
        else:
            layer.set_weights(source.get_weights())
    return int(np.prod(network.output_shape[-1:])) - len(previous.labels)
