"""The names a person may give an event: the models' labels and the taxonomy's genera, families and
orders, or an explicit site-specific name ("other: ...").

A review must not store a name nothing else knows ("Xyzzy plugh", "Burowing owl" would then be
counted in `birdtrap stats` as species, issue 18). The same list feeds the form's autocomplete.
"""

from __future__ import annotations

import difflib
import functools
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from birdtrap.errors import ModelError
from birdtrap.identify import taxonomy
from birdtrap.identify.bundle import LABELS_FILE, Label, read_labels

OTHER = "other:"
_RANK_ORDER = {"species": 0, "subspecies": 0, "genus": 1, "family": 2, "order": 3, "other": 4}


@dataclass(frozen=True)
class Name:
    """A name as it is stored with a review: the label, its scientific and common names, its rank."""

    label: str
    scientific_name: str
    common_name: str | None
    rank: str

    def as_dict(self) -> dict[str, str | None]:
        return {"label": self.label, "scientific_name": self.scientific_name, "common_name": self.common_name, "rank": self.rank}


def other_name(text: str) -> Name | None:
    """An explicit site-specific name ("other: fence-post owl"), stored as typed; None if `text` is not one."""
    if not text.lower().startswith(OTHER):
        return None
    rest = " ".join(text[len(OTHER) :].split())
    if len(rest) < 2:
        return None
    stored = f"{OTHER} {rest}"
    return Name(stored, stored, None, "other")


class NameIndex:
    """Every name a review may use, looked up by label, scientific or common name, any case."""

    def __init__(self, labels: Iterable[Label], background: Iterable[str] = ()) -> None:
        skip = {b.lower() for b in background}
        names: list[Name] = []
        for label in labels:
            if label.text.lower() in skip or label.scientific.lower() in skip:
                continue
            rank = "species" if len(label.scientific.split()) >= 2 else taxonomy.rank_of(label.scientific) or "genus"
            names.append(Name(label.text, label.scientific, label.common, rank))
        families: dict[str, str] = {}
        orders: set[str] = set()
        for lineage in taxonomy.genera():
            names.append(Name(lineage.genus, lineage.genus, None, "genus"))
            families.setdefault(lineage.family, lineage.family_english)
            orders.add(lineage.order)
        for family, english in sorted(families.items()):
            names.append(Name(f"{family} ({english})" if english else family, family, english or None, "family"))
        names.extend(Name(order, order, None, "order") for order in sorted(orders))
        self.names = names
        self._by_key: dict[str, Name] = {}
        for name in names:  # the models' labels first: their spelling wins
            for key in (name.label, name.scientific_name, name.common_name):
                if key:
                    self._by_key.setdefault(key.lower(), name)

    def resolve(self, text: str) -> Name | None:
        """The known (or explicitly other) name `text` stands for; None when nothing knows it."""
        wanted = " ".join(text.split())
        return other_name(wanted) or self._by_key.get(wanted.lower())

    def close_to(self, text: str, count: int = 3) -> list[str]:
        """Known names spelt like `text`, for the message that refuses it."""
        matches = difflib.get_close_matches(" ".join(text.split()).lower(), list(self._by_key), n=count, cutoff=0.75)
        return list(dict.fromkeys(self._by_key[m].label for m in matches))

    def suggest(self, query: str, limit: int = 20) -> list[Name]:
        """Names for an autocomplete: words starting with `query` first, species before genera."""
        wanted = " ".join(query.split()).lower()
        if not wanted:
            return []
        found: list[tuple[int, int, str, Name]] = []
        for name in self.names:
            keys = [k.lower() for k in (name.label, name.scientific_name, name.common_name) if k]
            if any(k.startswith(wanted) for k in keys):
                place = 0
            elif any(f" {wanted}" in f" {k}" for k in keys):
                place = 1
            elif any(wanted in k for k in keys):
                place = 2
            else:
                continue
            found.append((place, _RANK_ORDER.get(name.rank, 5), name.label, name))
        found.sort(key=lambda item: item[:3])
        return [name for *_, name in found[:limit]]


@functools.lru_cache(maxsize=4)
def configured_labels(model: Path, labels: Path | None) -> tuple[Label, ...]:
    """The species model's labels read from its labels file (model.labels, else beside the model),
    so names can be checked while the model itself still loads; () when the file cannot be read
    (the model's own loading then says why)."""
    path = Path(labels) if labels else (Path(model) if Path(model).is_dir() else Path(model).parent) / LABELS_FILE
    try:
        return read_labels(path)
    except ModelError:
        return ()


@functools.lru_cache(maxsize=4)
def name_index(labels: tuple[Label, ...], background: tuple[str, ...]) -> NameIndex:
    """The index for one species model (built once per model: about 4,000 names)."""
    return NameIndex(labels, background)
