"""The one small interface every stage-2 scorer implements, and what its outcomes mean.

A scorer rates sim(x, h) for a list of (premise, hypothesis) pairs on the 0-5 scale of the
paper (CLAIF scorers use 0-1). Every pair comes back as a :class:`PairScore`, never as an
exception that aborts the batch. There are four outcomes, and one rule for every backend:

- **scored**: ``score`` holds the number.
- **unparsable** (a verdict): the model answered, but its answer is not a score (prose, an
  empty reply, a number outside the scale, or, for one-forward scoring, too little probability
  on the score tokens). The paper drops such a triplet, so this is final: the answer is cached
  as an ordinary answer, curation rejects the triplet with the reason ``unparsable_score``,
  and no later run asks again (at temperature 0 it would get the same answer).
  ``error`` starts with :data:`UNPARSABLE` (that is how the corpus file records it).
- **prompt too long** (a verdict): the pair's prompt, measured in tokens before it is run,
  does not fit the model's context (a local model's ``max_position_embeddings``, less the new
  tokens when it generates; an API model's ``scoring.context_tokens`` less ``max_tokens``). It is
  never run or sent: final like an unparsable answer (no rerun can make it fit), curation
  rejects the triplet with the reason ``prompt_too_long``, and the run does not fail for it.
  ``error`` reads ``"prompt_too_long: <n> tokens > <limit>"`` (:data:`PROMPT_TOO_LONG`).
- **failed** (transport): no answer arrived (HTTP error, timeout, the budget cap). ``score``
  and the error are kept; the next run asks again, and the run exits non-zero meanwhile.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, Sequence, runtime_checkable

# The prompt-too-long verdict is measured where prompts are counted (llm/tokens.py, LocalLM); re-exported
# here with the other verdicts, so scorers, curation and the corpus read them from one place.
from multicsr_core.llm.tokens import PROMPT_TOO_LONG, prompt_too_long_error  # noqa: F401

#: The reason curation gives for a triplet with an unparsable score, and the prefix of the
#: error text such a pair carries in the corpus (``entailment_score_error``...).
UNPARSABLE = "unparsable_score"


def unparsable_error(detail: str) -> str:
    """The stored error text of an unparsable verdict: ``"unparsable_score: <detail>"``."""
    return f"{UNPARSABLE}: {detail}"


def is_unparsable_error(error: str | None) -> bool:
    """Whether a stored error is an unparsable verdict (final) rather than a transport failure."""
    return bool(error) and error.startswith(UNPARSABLE)


def is_prompt_too_long_error(error: str | None) -> bool:
    """Whether a stored error is the prompt-too-long verdict (final: never run, never retried)."""
    return bool(error) and error.startswith(PROMPT_TOO_LONG)


def is_verdict_error(error: str | None) -> bool:
    """Whether a stored error is a final verdict (unparsable, prompt too long), not a failure."""
    return is_unparsable_error(error) or is_prompt_too_long_error(error)


@dataclass(frozen=True)
class PairScore:
    """The outcome of scoring one (premise, hypothesis) pair (see the module docstring)."""

    score: float | None
    raw: str | None = None  # the model's reply text, when there was one
    error: str | None = None  # why ``score`` is None
    distribution: dict[str, float] | None = field(default=None, compare=False)  # P(score token), renormalised
    mass: float | None = None  # one-forward scoring: probability on all score tokens together

    @property
    def ok(self) -> bool:
        return self.score is not None

    @property
    def unparsable(self) -> bool:
        """The model answered with no score: a final verdict, never asked again."""
        return self.score is None and is_unparsable_error(self.error)

    @property
    def too_long(self) -> bool:
        """The prompt does not fit the model's context: never run, a final verdict."""
        return self.score is None and is_prompt_too_long_error(self.error)

    @property
    def failed(self) -> bool:
        """No answer arrived (transport, budget): the next run asks again."""
        return self.score is None and not is_verdict_error(self.error)


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
