"""Where a genus sits in the tree of birds: its family and order, from the package's own table.

The decision rolls an unsure answer up to the family or order its candidates share ("a heron,
species unsure"), so it needs each label's lineage. The table (`data/taxonomy.csv`, every genus of
the AviList Global Avian Checklist, CC BY 4.0, plus the older genus names the shipped models use)
is read once, on first use, and kept. It is written by `python -m training.build_taxonomy`.
"""

from __future__ import annotations

import csv
import functools
from dataclasses import dataclass
from importlib import resources

TABLE = "data/taxonomy.csv"
CLASS_NAME = "Aves"


@dataclass(frozen=True)
class Lineage:
    """A genus's place in the tree. `accepted_genus` is the current name where the label's is older."""

    genus: str
    family: str
    family_english: str
    order: str
    accepted_genus: str | None = None


@functools.cache
def _table() -> dict[str, Lineage]:
    text = resources.files("birdtrap").joinpath(TABLE).read_text(encoding="utf-8")
    rows = csv.DictReader(line for line in text.splitlines() if not line.startswith("#"))
    return {
        row["genus"]: Lineage(row["genus"], row["family"], row["family_english"], row["order"], row["accepted_genus"] or None)
        for row in rows
    }


def lineage_of(genus: str) -> Lineage | None:
    """The family and order of `genus` ("Ardea" -> Ardeidae, Pelecaniformes); None if unknown."""
    return _table().get(genus)


def family_of(genus: str) -> str | None:
    lineage = lineage_of(genus)
    return lineage.family if lineage else None


def order_of(genus: str) -> str | None:
    lineage = lineage_of(genus)
    return lineage.order if lineage else None


def label_lineage(scientific_name: str) -> Lineage | None:
    """The lineage of a label's scientific name ("Ardea cinerea" or "Ardea"); None if unknown."""
    words = scientific_name.split()
    return lineage_of(words[0]) if words else None


def family_and_order(name: str) -> tuple[str | None, str | None]:
    """The family and order of a name of any rank ("Ardea cinerea", "Ardea", "Ardeidae",
    "Pelecaniformes"); None where the table does not say."""
    words = name.split()
    if not words:
        return None, None
    lineage = lineage_of(words[0])
    if lineage is not None:
        return lineage.family, lineage.order
    rank = rank_of(words[0])
    if rank == "family":
        return words[0], order_of_family(words[0])
    if rank == "order":
        return None, words[0]
    return None, None


def family_english(family: str) -> str | None:
    """The English name of a family ("Ardeidae" -> "Herons, Egrets, and Bitterns"); None if unknown."""
    return _families().get(family)


@functools.cache
def _families() -> dict[str, str]:
    return {lineage.family: lineage.family_english for lineage in _table().values() if lineage.family_english}


def order_of_family(family: str) -> str | None:
    """The order a family belongs to ("Ardeidae" -> "Pelecaniformes"); None if unknown."""
    return _family_orders().get(family)


@functools.cache
def _family_orders() -> dict[str, str]:
    return {lineage.family: lineage.order for lineage in _table().values()}


def rank_of(name: str) -> str | None:
    """'family' or 'order' for a name in the table (Ardeidae, Pelecaniformes), else None."""
    if name in _family_orders():
        return "family"
    if name in _orders():
        return "order"
    return None


@functools.cache
def _orders() -> frozenset[str]:
    return frozenset(lineage.order for lineage in _table().values())


def genera() -> tuple[Lineage, ...]:
    """Every genus in the table with its family and order (for name lists and autocomplete)."""
    return tuple(_table().values())
