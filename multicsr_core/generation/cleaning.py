"""Output cleaning for generated hypotheses: strip quotes and whitespace, reject empties and copies."""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["CleanedText", "clean_generation", "REJECT_EMPTY", "REJECT_COPY"]

REJECT_EMPTY = "empty"
REJECT_COPY = "copy_of_premise"

# straight and typographic quotes a model wraps its answer in (the 2-shot prompt teaches '...')
_QUOTES = "\"'`\u201c\u201d\u2018\u2019\u00ab\u00bb"
_APOSTROPHES = "'\u2019"
_SPACES = re.compile(r"\s+")


@dataclass(frozen=True)
class CleanedText:
    text: str
    reject_reason: str | None  # None, REJECT_EMPTY or REJECT_COPY

    @property
    def kept(self) -> bool:
        return self.reject_reason is None


def _comparable(text: str) -> str:
    """Case, inner whitespace, surrounding quotes and final punctuation do not make a new sentence."""
    return _SPACES.sub(" ", text.strip(_QUOTES + " \t\r\n")).rstrip(" .!?;,").casefold()


def clean_generation(text: str, premise: str) -> CleanedText:
    """Strip whitespace and surrounding quotes; reject empty outputs and copies of the premise.

    Whitespace runs (newlines included) become single spaces. A copy is the premise up to case,
    whitespace, quotes and trailing punctuation.
    """
    cleaned = _SPACES.sub(" ", text).strip()
    while len(cleaned) >= 2 and cleaned[0] in _QUOTES and cleaned[-1] in _QUOTES:
        cleaned = cleaned[1:-1].strip()
    # unmatched quotes too (models often drop one of the pair), but keep a possessive "the players'"
    cleaned = cleaned.lstrip(_QUOTES + " ")
    while cleaned and cleaned[-1] in _QUOTES and (cleaned[-1] not in _APOSTROPHES or not cleaned[-2:-1].isalnum()):
        cleaned = cleaned[:-1].rstrip()
    if not cleaned:
        return CleanedText("", REJECT_EMPTY)
    if _comparable(cleaned) == _comparable(premise):
        return CleanedText(cleaned, REJECT_COPY)
    return CleanedText(cleaned, None)
