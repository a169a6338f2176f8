"""The one small interface every stage-2 scorer implements.

A scorer rates sim(x, h) for a list of (premise, hypothesis) pairs on the 0-5 scale of the
paper (CLAIF scorers use 0-1). A pair whose score cannot be obtained is not an exception that
aborts the batch: it comes back as a ``PairScore`` with ``score=None`` and the error (and the
raw reply, if any) kept, so curation can drop it and the next run can retry it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, Sequence, runtime_checkable


@dataclass(frozen=True)
class PairScore:
    """The outcome of scoring one (premise, hypothesis) pair."""

    score: float | None
    raw: str | None = None  # the model's reply text, when there was one
    error: str | None = None  # why ``score`` is None
    distribution: dict[str, float] | None = field(default=None, compare=False)  # P(score token)

    @property
    def ok(self) -> bool:
        return self.score is not None


@runtime_checkable
class PairScorer(Protocol):
    """Anything that scores (premise, hypothesis) pairs.

    ``name`` and ``fingerprint`` identify the scorer for provenance and cache keys: the
    fingerprint must change whenever the scores could (model id and revision, prompt, decoding
    parameters), and must never contain secrets.
    """

    name: str

    def fingerprint(self) -> dict: ...

    def score_pairs(self, premises: Sequence[str], hypotheses: Sequence[str]) -> list[PairScore]: ...
