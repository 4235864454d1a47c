"""One shape of an identification for every output: `classify --format json`, the API's
`POST /classify` and its cache. One field name for one fact (`taxon_rank`, `top`)."""

from __future__ import annotations

from typing import Any

import numpy as np

from birdtrap.identify.bundle import Label
from birdtrap.identify.identifier import Identification

ANSWER_FIELDS = ("kind", "label", "scientific_name", "common_name", "taxon_rank", "confidence", "box", "source", "invokes", "top")
TOP_LABELS = 5  # what `classify` prints; the API keeps more for its top_k


def answer(identification: Identification, labels: tuple[Label, ...], top: int = TOP_LABELS) -> dict[str, Any]:
    """The decision, where it was found and the model's `top` labels, as plain JSON values."""
    decision = identification.decision
    probabilities = np.asarray(identification.prediction.probabilities)
    order = np.argsort(-probabilities, kind="stable")[:top]
    return {
        "kind": decision.kind,
        "label": decision.label,
        "scientific_name": decision.scientific_name,
        "common_name": decision.common_name,
        "taxon_rank": decision.taxon_rank,
        "confidence": round(float(decision.confidence), 6),
        "box": [round(float(v), 6) for v in identification.box] if identification.box else None,
        "source": identification.source,
        "invokes": identification.invokes,
        "top": [
            {
                "label_index": int(i),
                "label": labels[i].text,
                "scientific_name": labels[i].scientific,
                "common_name": labels[i].common,
                "probability": round(float(probabilities[i]), 6),
            }
            for i in order
        ],
    }
