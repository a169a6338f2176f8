"""Stage 2b: the keep rules of self-curation (method.md, stage 2).

Two rules, both pure functions of the two scores a = sim(x, x+) and b = sim(x, x-):

* ``paper`` (default, MultiCSR 3.2): keep (x, x+, x-) iff ``a >= alpha``, ``b <= beta`` and
  ``a >= b + gamma`` (alpha = 3, beta = 3, gamma = 1).
* ``official`` (the public code): first a swap step, then its ``filter15`` filter, keep iff
  ``b <= beta and a >= alpha and a != b`` (its "gap" is ``a != b``, not a margin).
  The swap step has two forms in the official code, chosen by where the triplets came from:
  - ``generation`` (triplets the LLM just wrote): with c = b and e = a, if ``c <= 4 and e >= c``
    keep as is; elif ``e <= 4 and e <= c`` swap x+ and x-; else drop.
  - ``corpus`` (an existing corpus such as SynCSE or NLI): swap iff ``a <= beta and b >= alpha``.

A triplet with either score missing is never kept. Its reason says why: ``prompt_too_long``
when a side's prompt does not fit the scoring model's context (measured before it was run or
sent, never run: a final verdict, scoring/base.py), ``unparsable_score`` when the model answered
something that is not a score (a final verdict; the reply stays in ``entailment_reply`` /
``contradiction_reply``), ``unscored`` when a request failed and the next run will retry it. A
side with a verdict decides, even if the other side's request failed: no retry can make that
triplet kept; of the two verdicts, ``prompt_too_long`` (the input's length) is named first.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Literal

import pyarrow as pa

from multicsr_core.scoring.base import PROMPT_TOO_LONG, UNPARSABLE, is_prompt_too_long_error, is_unparsable_error

REASON_UNSCORED = "unscored"
REASON_UNPARSABLE = UNPARSABLE  # "unparsable_score"
REASON_PROMPT_TOO_LONG = PROMPT_TOO_LONG  # "prompt_too_long"
REASON_LOW_ENTAILMENT = "entailment_below_alpha"
REASON_HIGH_CONTRADICTION = "contradiction_above_beta"
REASON_SMALL_MARGIN = "margin_below_gamma"
REASON_EQUAL_SCORES = "equal_scores"
REASON_OFFICIAL_DROP = "official_swap_drop"
REASON_DISABLED = None  # curation off: every scored triplet is kept


@dataclass(frozen=True)
class Decision:
    kept: bool
    reason: str | None = None
    swapped: bool = False


def paper_rule(a: float | None, b: float | None, alpha: float = 3.0, beta: float = 3.0, gamma: float = 1.0) -> Decision:
    """MultiCSR's rule: a >= alpha, b <= beta, a >= b + gamma. The first failed condition is the reason."""
    if a is None or b is None:
        return Decision(False, REASON_UNSCORED)
    if a < alpha:
        return Decision(False, REASON_LOW_ENTAILMENT)
    if b > beta:
        return Decision(False, REASON_HIGH_CONTRADICTION)
    if a < b + gamma:
        return Decision(False, REASON_SMALL_MARGIN)
    return Decision(True)


def official_rule(a: float | None, b: float | None, alpha: float = 3.0, beta: float = 3.0,
                  swap_mode: Literal["generation", "corpus"] = "generation") -> Decision:
    """The official code: the swap step (see module docstring), then filter15 on the swapped scores."""
    if a is None or b is None:
        return Decision(False, REASON_UNSCORED)
    swapped = False
    if swap_mode == "generation":
        c, e = b, a
        if c <= 4.0 and e >= c:
            pass
        elif e <= 4.0 and e <= c:
            swapped = True
        else:
            return Decision(False, REASON_OFFICIAL_DROP)
    elif swap_mode == "corpus":
        swapped = a <= beta and b >= alpha
    else:
        raise ValueError(f"unknown swap_mode {swap_mode!r}")
    if swapped:
        a, b = b, a
    if a < alpha:
        return Decision(False, REASON_LOW_ENTAILMENT, swapped)
    if b > beta:
        return Decision(False, REASON_HIGH_CONTRADICTION, swapped)
    if a == b:
        return Decision(False, REASON_EQUAL_SCORES, swapped)
    return Decision(True, None, swapped)


def curate_table(table: pa.Table, rule: Literal["paper", "official"] = "paper", alpha: float = 3.0,
                 beta: float = 3.0, gamma: float = 1.0, enabled: bool = True,
                 swap_mode: Literal["generation", "corpus"] = "generation") -> pa.Table:
    """Fill ``kept``, ``reject_reason`` and ``swapped`` of a scored corpus table.

    A swap (official rule) exchanges the entailment and contradiction columns together with
    their scores, replies, errors and prompts, so the row stays self-consistent. Re-curating an
    already curated table first undoes earlier swaps, so curation is idempotent.
    """
    cols = {name: table.column(name).to_pylist() for name in table.column_names}
    n = table.num_rows
    pairs = [("entailment", "contradiction"), ("entailment_score", "contradiction_score"),
             ("entailment_score_error", "contradiction_score_error"), ("entailment_reply", "contradiction_reply"),
             ("entailment_prompt_id", "contradiction_prompt_id"), ("entailment_prompt", "contradiction_prompt"),
             ("entailment_score_mass", "contradiction_score_mass"), ("entailment_raw", "contradiction_raw")]
    pairs = [(left, right) for left, right in pairs if left in cols and right in cols]

    def swap_row(i: int) -> None:
        for left, right in pairs:
            cols[left][i], cols[right][i] = cols[right][i], cols[left][i]

    kept, reasons, swapped = [], [], []
    for i in range(n):
        if cols["swapped"][i]:
            swap_row(i)  # back to the order the scores were computed in
        a, b = cols["entailment_score"][i], cols["contradiction_score"][i]
        errors = [cols[f"{side}_score_error"][i] for side in ("entailment", "contradiction")]
        if (a is None or b is None) and any(is_prompt_too_long_error(error) for error in errors):
            decision = Decision(False, REASON_PROMPT_TOO_LONG)
        elif (a is None or b is None) and any(is_unparsable_error(error) for error in errors):
            decision = Decision(False, REASON_UNPARSABLE)
        elif not enabled:
            decision = Decision(a is not None and b is not None, None if (a is not None and b is not None) else REASON_UNSCORED)
        elif rule == "paper":
            decision = paper_rule(a, b, alpha, beta, gamma)
        elif rule == "official":
            decision = official_rule(a, b, alpha, beta, swap_mode)
        else:
            raise ValueError(f"unknown curation rule {rule!r}")
        if decision.swapped:
            swap_row(i)
        kept.append(decision.kept)
        reasons.append(decision.reason)
        swapped.append(decision.swapped)
    cols["kept"], cols["reject_reason"], cols["swapped"] = kept, reasons, swapped
    out = pa.table(cols, schema=table.schema)
    return out


def curation_funnel(table: pa.Table) -> dict[str, int]:
    """Counts for the report: total, scored (both scores present), kept, and each reject reason."""
    a = table.column("entailment_score").to_pylist()
    b = table.column("contradiction_score").to_pylist()
    kept = table.column("kept").to_pylist()
    reasons = Counter(r for r in table.column("reject_reason").to_pylist() if r)
    funnel = {
        "total": table.num_rows,
        "scored": sum(1 for x, y in zip(a, b) if x is not None and y is not None),
        "kept": sum(1 for k in kept if k),
        "swapped": sum(1 for s in table.column("swapped").to_pylist() if s),
    }
    funnel.update({f"rejected:{k}": v for k, v in sorted(reasons.items())})
    return funnel
