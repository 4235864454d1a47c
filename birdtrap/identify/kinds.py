"""What a photo is said to hold, and where a photo is in its processing: one vocabulary, defined once.

The database, the CLI, the web pages, the exports and the notifications all speak these words
(DESIGN.md, "What a photo is said to hold"). An answer never claims more than its evidence:
`blank` means nothing is there on evidence (issue 22), `unsure` means something may be there and a
person should look. Older databases and scripts said "empty" and "unknown"; `Kind.parse` still
reads those, and migration 0004 rewrites stored rows.
"""

from __future__ import annotations

from enum import StrEnum


class Kind(StrEnum):
    """What a photo (or an event) holds."""

    BIRD = "bird"  # with a taxon: species, else genus, family or order, else just "bird"
    ANIMAL = "animal"  # not a bird, seen by a detector
    PERSON = "person"
    VEHICLE = "vehicle"
    BLANK = "blank"  # nothing there, on evidence: no detector box, no motion, background agreed
    UNSURE = "unsure"  # something may be there and no model is sure: a person should look
    FAILED = "failed"  # the file could not be read

    @classmethod
    def parse(cls, text: str) -> Kind:
        """A kind from what a user or an old database wrote; raises ValueError naming the accepted words.

        "empty" (before 0004) is `blank`, "unknown" is `unsure`, "human" (Camtrap DP) is `person`.
        """
        word = text.strip().lower()
        word = LEGACY_KINDS.get(word, word)
        try:
            return cls(word)
        except ValueError:
            accepted = ", ".join(k.value for k in cls)
            raise ValueError(f"{text!r} is not a kind; use one of {accepted} (or the old names empty, unknown).") from None


# Words older birdtrap versions stored or printed, and Camtrap DP's name for a person.
LEGACY_KINDS = {"empty": Kind.BLANK.value, "unknown": Kind.UNSURE.value, "human": Kind.PERSON.value}

# Kinds a detector class can give a frame that holds no bird (the detector's "other" classes do not
# name the frame; they only stop it from being blank).
SEEN_BY_DETECTOR = (Kind.PERSON, Kind.ANIMAL, Kind.VEHICLE)


class Status(StrEnum):
    """Where a photo is in its processing (images.status)."""

    PENDING = "pending"
    DONE = "done"
    FAILED = "failed"
    DUPLICATE = "duplicate"


__all__ = ["Kind", "Status", "LEGACY_KINDS", "SEEN_BY_DETECTOR"]
