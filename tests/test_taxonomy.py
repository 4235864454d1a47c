"""The taxonomy table (genus -> family -> order) and the roll-up beyond genus it makes possible."""

from __future__ import annotations

from importlib import resources

import numpy as np
import pytest

from birdtrap.export.camtrapdp import _taxonomic
from birdtrap.identify import taxonomy
from birdtrap.identify.bundle import read_labels
from birdtrap.identify.decision import DecisionRules, decide
from birdtrap.identify.gate import bird_classes
from birdtrap.store import taxon_rank_of
from training.build_taxonomy import TaxonomySourceError, build, main, read_source

from conftest import INAT, MODELS

INAT_LABELS = read_labels(INAT / "labels.txt")
IMAGENET_LABELS = read_labels(MODELS / "imagenet_mobilenet_v2" / "labels.txt")


def _vector(**values: float) -> np.ndarray:
    """A probability vector over the real iNat labels: Ardea_alba=0.3 -> that label's output."""
    vector = np.zeros(len(INAT_LABELS), np.float32)
    by_name = {label.scientific: label.index for label in INAT_LABELS}
    for name, value in values.items():
        vector[by_name[name.replace("_", " ")]] = value
    return vector


# --- the table ------------------------------------------------------------------------------


def test_every_label_of_the_shipped_species_model_has_a_family_and_an_order():
    missing = [label.text for label in INAT_LABELS if label.text != "background" and taxonomy.label_lineage(label.scientific) is None]
    assert missing == []
    lineages = [taxonomy.label_lineage(label.scientific) for label in INAT_LABELS if label.text != "background"]
    assert all(lineage.family.endswith("idae") and lineage.order.endswith("formes") for lineage in lineages)
    assert len({lineage.family for lineage in lineages}) > 100  # 964 species of many families, not one default


def test_the_gate_uses_imagenet_labels_only_as_birds_not_as_names():
    # The ImageNet model never names a bird (its bird classes are only summed by the gate), so its
    # labels need no lineage; this guards that assumption: the gate's classes are all in its labels.
    texts = {label.text for label in IMAGENET_LABELS}
    assert {name for _, name in bird_classes()} <= texts


def test_old_genus_names_of_the_model_point_to_the_accepted_genus_in_the_same_family():
    chen = taxonomy.lineage_of("Chen")
    assert chen is not None and chen.accepted_genus == "Anser" and chen.family == taxonomy.family_of("Anser") == "Anatidae"
    synonyms = [lineage for lineage in taxonomy._table().values() if lineage.accepted_genus]
    assert synonyms, "the iNat 2017 labels use older genera"
    for lineage in synonyms:
        accepted = taxonomy.lineage_of(lineage.accepted_genus)
        assert accepted is not None and accepted.accepted_genus is None
        assert (accepted.family, accepted.order) == (lineage.family, lineage.order)


def test_the_table_names_its_source_and_licence():
    header = resources.files("birdtrap").joinpath("data/taxonomy.csv").read_text(encoding="utf-8").splitlines()[:3]
    assert "AviList" in header[0] and "CC BY 4.0" in header[1] and "sha256" in header[2]


def test_family_and_order_lookups_and_an_unknown_genus():
    assert (taxonomy.family_of("Ardea"), taxonomy.order_of("Ardea")) == ("Ardeidae", "Pelecaniformes")
    assert taxonomy.family_english("Ardeidae") == "Herons, Egrets, and Bitterns"
    assert taxonomy.family_of("Canis") is None and taxonomy.label_lineage("") is None


# --- the roll-up on the real label list ---------------------------------------------------------


def test_herons_of_two_genera_that_share_the_mass_roll_up_to_their_family():
    # The infrared heron: no species and no genus sure, the herons together are.
    vector = _vector(Egretta_thula=0.3, Ardea_alba=0.15, Ardea_herodias=0.12, Turdus_migratorius=0.1)
    decision = decide(vector, INAT_LABELS, DecisionRules())
    assert (decision.kind, decision.taxon_rank, decision.scientific_name) == ("bird", "family", "Ardeidae")
    assert decision.confidence == pytest.approx(0.57, abs=1e-5)
    assert decision.common_name == "Herons, Egrets, and Bitterns"


def test_a_genus_that_is_sure_stays_the_answer_below_the_family():
    decision = decide(_vector(Ardea_alba=0.3, Ardea_cinerea=0.25, Egretta_thula=0.2), INAT_LABELS, DecisionRules())
    assert (decision.taxon_rank, decision.scientific_name) == ("genus", "Ardea")


def test_mass_spread_over_two_families_of_one_order_rolls_up_to_the_order():
    # Herons (Ardeidae) and ibises (Threskiornithidae), both Pelecaniformes; neither family is sure.
    decision = decide(_vector(Egretta_thula=0.3, Plegadis_chihi=0.25, Turdus_migratorius=0.1), INAT_LABELS, DecisionRules())
    assert (decision.kind, decision.taxon_rank, decision.scientific_name) == ("bird", "order", "Pelecaniformes")
    assert decision.confidence == pytest.approx(0.55, abs=1e-5)


def test_mass_spread_over_orders_stays_unsure():
    decision = decide(_vector(Egretta_thula=0.3, Turdus_migratorius=0.25, Anas_platyrhynchos=0.2), INAT_LABELS, DecisionRules())
    assert decision.kind == "unsure" and decision.taxon_rank is None


def test_rollup_can_stop_at_genus():
    rules = DecisionRules(rollup=("genus",))
    assert decide(_vector(Egretta_thula=0.3, Ardea_alba=0.15, Ardea_herodias=0.12), INAT_LABELS, rules).kind == "unsure"


def test_with_a_checklist_an_unlisted_heron_rolls_up_to_a_listed_family(tmp_path):
    from birdtrap.identify.decision import read_checklist

    checklist = tmp_path / "list.txt"
    checklist.write_text("Ardea cinerea\nCygnus olor\n")
    rules = DecisionRules(checklist=read_checklist(checklist))
    # Snowy Egret (unlisted, and no Egretta listed) with other American herons: the family.
    heron = decide(_vector(Egretta_thula=0.45, Egretta_caerulea=0.2, Ardea_cinerea=0.02), INAT_LABELS, rules)
    assert (heron.taxon_rank, heron.scientific_name) == ("family", "Ardeidae")
    assert heron.confidence == pytest.approx(0.67, abs=1e-5)
    # A flamingo: no listed family or order holds it, so it is still only "a bird".
    flamingo = decide(_vector(Phoenicopterus_ruber=0.9), INAT_LABELS, rules)
    assert (flamingo.taxon_rank, flamingo.scientific_name) == ("class", "Aves")


# --- display and export -----------------------------------------------------------------------


def test_a_family_answer_exports_at_family_rank_with_its_order():
    (family,) = _taxonomic([("Ardeidae", "family", "Herons, Egrets, and Bitterns")])
    assert family["taxonRank"] == "family" and family["order"] == "Pelecaniformes" and family["class"] == "Aves"
    assert "genus" not in family and "family" not in family
    (species,) = _taxonomic([("Ardea cinerea", "species", None)])
    assert (species["genus"], species["family"], species["order"]) == ("Ardea", "Ardeidae", "Pelecaniformes")


def test_a_person_correcting_to_a_family_or_order_gets_that_rank():
    names = ("Ardeidae", "Passeriformes", "Ardea", "Ardea cinerea")
    assert [taxon_rank_of(name) for name in names] == ["family", "order", "genus", "species"]


# --- the build command --------------------------------------------------------------------------

AVILIST_CSV = """Sequence,Taxon rank,Order,Family,Family English name,Scientific name,English name AviList,English name Clements v2024
1,order,Anseriformes,,,Anseriformes,,
2,family,Anseriformes,Anatidae,"Ducks, Geese, and Swans",Anatidae,,
3,genus,Anseriformes,Anatidae,"Ducks, Geese, and Swans",Anser,,
4,species,Anseriformes,Anatidae,"Ducks, Geese, and Swans",Anser rossii,Ross's Goose,Ross's Goose
5,genus,Pelecaniformes,Ardeidae,"Herons, Egrets, and Bitterns",Ardea,,
6,species,Pelecaniformes,Ardeidae,"Herons, Egrets, and Bitterns",Ardea ibis,Western Cattle Egret,Western Cattle-Egret
"""


def test_the_build_resolves_renamed_and_split_genera_by_english_name(tmp_path):
    source = tmp_path / "avilist.csv"
    source.write_text(AVILIST_CSV)
    labels = tmp_path / "labels.txt"
    labels.write_text("Chen rossii (Ross's Goose)\nBubulcus ibis (Cattle Egret)\nAnser rossii (Ross's Goose)\nbackground\n")
    out = tmp_path / "taxonomy.csv"
    with pytest.raises(SystemExit) as exit_info:
        main([str(source), "--labels", str(labels), "--out", str(out)])
    assert exit_info.value.code == 0
    text = out.read_text()
    assert "Chen,Anatidae,\"Ducks, Geese, and Swans\",Anseriformes,Anser" in text
    assert "Bubulcus,Ardeidae,\"Herons, Egrets, and Bitterns\",Pelecaniformes,Ardea" in text
    assert "4 genera, 2 families, 2 orders; 2 model-label genera resolved" in text


def test_the_build_refuses_a_genus_it_cannot_resolve_and_names_it(tmp_path):
    source = tmp_path / "avilist.csv"
    source.write_text(AVILIST_CSV)
    with pytest.raises(TaxonomySourceError, match=r"Dodo ineptus \(Dodo\)"):
        build(read_source(source), [("Dodo ineptus", "Dodo"), ("Anser rossii", "Ross's Goose")])


def test_the_build_refuses_a_file_without_the_checklist_columns(tmp_path):
    source = tmp_path / "other.csv"
    source.write_text("name,value\nx,1\n")
    with pytest.raises(TaxonomySourceError, match="other.csv lacks the AviList columns"):
        read_source(source)


def test_probability_spread_thin_over_a_big_order_is_not_evidence_for_it():
    # A model with no idea (a squirrel in a crop) spreads its probability; Passeriformes holds 41%
    # of the labels, so summing it is no evidence of a passerine until it beats that chance level.
    passerines = [label for label in INAT_LABELS if taxonomy.order_of(label.genus) == "Passeriformes"]
    vector = np.zeros(len(INAT_LABELS), np.float32)
    for label in passerines:
        vector[label.index] = 0.6 / len(passerines)
    assert decide(vector, INAT_LABELS, DecisionRules()).kind == "unsure"
    # The same 0.6 on two heron genera (a few percent of the labels) is a heron.
    herons = _vector(Egretta_thula=0.3, Ardea_alba=0.15, Ardea_herodias=0.15)
    assert decide(herons, INAT_LABELS, DecisionRules()).scientific_name == "Ardeidae"
