"""Build `birdtrap/data/taxonomy.csv` (genus -> family -> order) from the AviList checklist.

A maintainer's tool, run once per AviList release; the daemon only reads the CSV it writes
(birdtrap.identify.taxonomy). The source is AviList: The Global Avian Checklist (CC BY 4.0), which unifies
the IOC, Clements and BirdLife lists. It reads the AviList spreadsheet saved as CSV, or the R data
file of the `avilistr` package (`data/avilist_2025.rda`, the same table; needs `pip install rdata`).

Model labels can use genus names the checklist no longer accepts (the iNat 2017 birds model says
`Chen rossii`, AviList `Anser rossii`). Each such genus is resolved through its species' English
names, which AviList gives as AviList, Clements and BirdLife names (a species split since keeps its
name with a qualifier and its epithet: "Cattle Egret", Bubulcus ibis -> "Western Cattle Egret",
Ardea ibis): every species of the old genus must land in one accepted genus, or the build stops
and names the labels. The CSV keeps the old
genus as a row of its own with the accepted genus in `accepted_genus`, so nothing is renamed in
what the model says.

    python -m training.build_taxonomy avilist_2025.rda \\
        --labels ../shared/models/inat_birds/labels.txt --version v2025 --out birdtrap/data/taxonomy.csv
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from birdtrap.errors import BirdtrapError
from birdtrap.identify.bundle import read_labels

SOURCE_NAME = "AviList: The Global Avian Checklist"
SOURCE_LICENCE = "CC BY 4.0 (https://creativecommons.org/licenses/by/4.0/)"
SOURCE_CITATION = "AviList Core Team. 2025. AviList: The Global Avian Checklist, v2025. https://doi.org/10.2173/avilist.v2025"
COLUMNS = ("genus", "family", "family_english", "order", "accepted_genus")
# English-name columns of AviList (the extended table has all three; the short one the first).
_BINOMIAL = re.compile(r"^[A-Z][a-z]+ [a-z]")
ENGLISH_COLUMNS = ("English_name_AviList", "English_name_Clements_v2024", "English_name_BirdLife_v9")


class TaxonomySourceError(BirdtrapError):
    """The checklist cannot be read or does not resolve every label."""


@dataclass(frozen=True)
class SourceTaxon:
    """One row of the checklist: its rank, names and place in the tree."""

    rank: str
    scientific: str
    family: str
    family_english: str
    order: str
    english: tuple[str, ...]


@dataclass(frozen=True)
class GenusRow:
    genus: str
    family: str
    family_english: str
    order: str
    accepted_genus: str  # "" where the genus is itself accepted


def _column_key(name: str) -> str:
    """'Taxon rank' (the spreadsheet) and 'Taxon_rank' (avilistr) are the same column."""
    return re.sub(r"[^A-Za-z0-9]+", "_", str(name).strip()).strip("_")


def _records_from_rda(path: Path) -> list[dict[str, str]]:
    try:
        import rdata
    except ImportError:
        raise TaxonomySourceError(f"{path} is an R data file; reading it needs `pip install rdata`, or give the AviList CSV.") from None
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tibble classes fall back to data.frame, as intended
        frames = rdata.read_rda(path)
    if not frames:
        raise TaxonomySourceError(f"{path} holds no data frame; give avilistr's data/avilist_2025.rda.")
    frame = next(iter(frames.values())).astype("string").fillna("")  # R's NA -> ""
    columns = [str(c) for c in frame.columns]
    return [dict(zip(columns, row, strict=True)) for row in frame.itertuples(index=False, name=None)]


def _records_from_csv(path: Path) -> list[dict[str, str]]:
    with open(path, encoding="utf-8-sig", newline="") as handle:
        return [{key: value or "" for key, value in row.items() if key is not None} for row in csv.DictReader(handle)]


def read_source(path: Path) -> list[SourceTaxon]:
    """The checklist's orders, families, genera and species, from a .csv or an avilistr .rda."""
    path = Path(path)
    if not path.is_file():
        raise TaxonomySourceError(f"{path} not found; download the AviList table (https://www.avilist.org/checklist/) and give its path.")
    raw = _records_from_rda(path) if path.suffix.lower() in (".rda", ".rdata") else _records_from_csv(path)
    records = [{_column_key(key): value.strip() for key, value in row.items()} for row in raw]
    needed = {"Taxon_rank", "Scientific_name", "Family", "Order"}
    if not records or not needed <= set(records[0]):
        found = sorted(records[0]) if records else []
        raise TaxonomySourceError(f"{path} lacks the AviList columns {sorted(needed)} (found {found[:8]}); give the AviList table.")
    return [
        SourceTaxon(
            rank=row["Taxon_rank"].lower(),
            scientific=row["Scientific_name"],
            family=row["Family"],
            family_english=row.get("Family_English_name", ""),
            order=row["Order"],
            english=tuple(row[c] for c in ENGLISH_COLUMNS if row.get(c)),
        )
        for row in records
        if row["Taxon_rank"].lower() in ("genus", "species")
    ]


def _normalise_english(name: str) -> str:
    """'Grey-headed' and 'Gray Headed' match: case, hyphens and the grey/gray spelling set aside."""
    name = name.lower().replace("-", " ").replace("grey", "gray")
    return re.sub(r"[^a-z ]", "", re.sub(r"\s+", " ", name)).strip()


def build(source: list[SourceTaxon], labels: Iterable[tuple[str, str | None]]) -> tuple[list[GenusRow], dict[str, str]]:
    """Every genus of the checklist, plus the label genera it lacks resolved to accepted ones.

    `labels` are (scientific name, English name) pairs. Returns the rows sorted by genus and the
    synonyms resolved (old genus -> accepted genus). Raises TaxonomySourceError naming the labels
    whose genus cannot be resolved.
    """
    genera = {t.scientific: t for t in source if t.rank == "genus"}
    species = [t for t in source if t.rank == "species"]
    by_english: dict[str, str] = {}
    for taxon in species:
        for english in taxon.english:
            by_english.setdefault(_normalise_english(english), taxon.scientific.split()[0])

    def accepted_genus(scientific: str, english: str) -> str | None:
        name = _normalise_english(english)
        if name in by_english:
            return by_english[name]
        # A species split since the labels were made keeps its old name with a qualifier
        # ("Cattle Egret" -> "Western Cattle Egret") and, in the new genus, its epithet.
        epithet = scientific.split()[1]
        found = {
            t.scientific.split()[0]
            for t in species
            if t.scientific.split()[1:2] == [epithet] and any(_normalise_english(e).endswith(" " + name) for e in t.english)
        }
        return found.pop() if len(found) == 1 else None
    unresolved: list[str] = []
    votes: dict[str, set[str]] = {}
    for scientific, english in labels:
        if not _BINOMIAL.match(scientific or ""):
            continue  # "background" and other labels that name no taxon
        genus = scientific.split()[0]
        if genus in genera:
            continue
        accepted = accepted_genus(scientific, english or "")
        if accepted is None or accepted not in genera:
            unresolved.append(f"{scientific} ({english})")
            continue
        votes.setdefault(genus, set()).add(accepted)
    split = {genus: sorted(accepted) for genus, accepted in votes.items() if len(accepted) > 1}
    if unresolved or split:
        problems = unresolved + [f"{genus} -> {' or '.join(names)}" for genus, names in split.items()]
        raise TaxonomySourceError(
            f"{len(problems)} label genera are not in the checklist and cannot be resolved by English name: "
            f"{', '.join(problems[:10])}; use a newer checklist or rename the labels."
        )
    synonyms = {genus: next(iter(accepted)) for genus, accepted in votes.items()}
    rows = [GenusRow(t.scientific, t.family, t.family_english, t.order, "") for t in genera.values()]
    for old, accepted in synonyms.items():
        target = genera[accepted]
        rows.append(GenusRow(old, target.family, target.family_english, target.order, accepted))
    return sorted(rows, key=lambda row: row.genus), synonyms


def render(rows: list[GenusRow], source_path: Path, version: str, synonyms: dict[str, str]) -> str:
    """The CSV with a '#' header that names the source, its version, licence and checksum."""
    digest = hashlib.sha256(Path(source_path).read_bytes()).hexdigest()
    out = io.StringIO()
    out.write(f"# Bird genera -> family -> order, from {SOURCE_NAME} {version}.\n")
    out.write(f"# Licence: {SOURCE_LICENCE}. Cite: {SOURCE_CITATION}\n")
    out.write(f"# Source file: {Path(source_path).name} sha256 {digest}\n")
    out.write(f"# {len(rows)} genera, {len({r.family for r in rows})} families, {len({r.order for r in rows})} orders; "
              f"{len(synonyms)} model-label genera resolved to accepted genera by English name (accepted_genus).\n")
    out.write("# Built by `python -m training.build_taxonomy`; do not edit by hand.\n")
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COLUMNS)
    for row in rows:
        writer.writerow((row.genus, row.family, row.family_english, row.order, row.accepted_genus))
    return out.getvalue()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.build_taxonomy", description=__doc__.split("\n\n")[0])
    parser.add_argument("source", type=Path, help="AviList table: its CSV, or avilistr's data/avilist_2025.rda")
    parser.add_argument("--labels", type=Path, action="append", default=[], help="A labels.txt whose genera must resolve (repeatable)")
    parser.add_argument("--version", default="v2025", help="AviList version, written into the header")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "data" / "taxonomy.csv", help="Where to write the CSV")
    args = parser.parse_args(argv)
    try:
        source = read_source(args.source)
        pairs = [(label.scientific, label.common) for path in args.labels for label in read_labels(path)]
        rows, synonyms = build(source, pairs)
    except BirdtrapError as e:
        parser.exit(2, f"error: {e}\n")
    args.out.write_text(render(rows, args.source, args.version, synonyms), encoding="utf-8")
    resolved = ", ".join(f"{old} -> {new}" for old, new in sorted(synonyms.items()))
    parser.exit(0, f"wrote {args.out}: {len(rows)} genera; resolved by English name: {resolved or 'none'}\n")
    return 0


if __name__ == "__main__":
    main()
