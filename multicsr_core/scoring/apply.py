"""Applying a scorer to a corpus table: the two pairs (x, x+) and (x, x-) of every row."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import pyarrow as pa

from multicsr_core.scoring.base import PairScorer, is_prompt_too_long_error, is_unparsable_error, is_verdict_error

SIDES = ("entailment", "contradiction")


def _side_done(cols: dict, side: str, i: int) -> bool:
    """A pair needs no scoring if it holds a score or a final verdict (unparsable, prompt too long)."""
    return cols[f"{side}_score"][i] is not None or is_verdict_error(cols[f"{side}_score_error"][i])


def _context_error_at_row(err, rows: list[int], path: str | Path | None, row_offset: int):
    """A prompt over the context that the server refused, re-raised naming the corpus row of its pair
    (``path: row N``, 1-based, as :class:`~multicsr_core.errors.UserError` formats it)."""
    from multicsr_core.llm.api_errors import ContextLengthExceeded

    j = err.index % len(rows)  # the call's pairs: every row's entailment, then every row's contradiction
    named = ContextLengthExceeded(str(err), path=path if path is not None else "corpus",
                                  row=row_offset + rows[j] + 1, index=err.index)
    named.details = err.details
    return named


def score_corpus(table: pa.Table, scorer: PairScorer, rescore: bool = False,
                 progress: Callable[[int, int], None] | None = None, chunk_size: int = 1024,
                 path: str | Path | None = None, row_offset: int = 0) -> pa.Table:
    """Fill the score, error, reply and score-mass columns of ``table``.

    Rows whose two pairs already hold a score or a final verdict (an existing scored corpus) are
    left alone unless ``rescore``. A pair whose request failed (transport) gets a null score and
    its error, so curation drops it and a later run retries it; an unparsable reply gets a null
    score and an ``unparsable_score: ...`` error, final; a prompt over the model's context,
    measured before it is run or sent, a null score and a ``prompt_too_long: ...`` error, final.
    ``progress(done, total)`` counts rows.

    A prompt the server refuses as longer than the model's context (``ContextLengthExceeded``, no
    rerun can answer it) stops scoring with that error naming the pair's row: row ``row_offset +
    i + 1`` of ``path`` (the file ``table`` was read from, or a slice of it starting at
    ``row_offset``; ``"corpus"`` when not given).
    """
    from multicsr_core.llm.api_errors import ContextLengthExceeded

    cols = {name: table.column(name).to_pylist() for name in table.column_names}
    n = table.num_rows
    for side in SIDES:  # an older table may lack the mass columns
        cols.setdefault(f"{side}_score_mass", [None] * n)
    todo = [i for i in range(n) if rescore or not all(_side_done(cols, side, i) for side in SIDES)]
    total = len(todo)
    if progress:
        progress(0, total)
    for start in range(0, total, chunk_size):
        rows = todo[start:start + chunk_size]
        premises = [cols["premise"][i] for i in rows]
        hypotheses = [cols["entailment"][i] for i in rows] + [cols["contradiction"][i] for i in rows]
        try:
            results = scorer.score_pairs(premises + premises, hypotheses)
        except ContextLengthExceeded as err:
            if err.index is None or not 0 <= err.index < 2 * len(rows):
                raise
            raise _context_error_at_row(err, rows, path, row_offset) from None
        for side, offset in (("entailment", 0), ("contradiction", len(rows))):
            for j, i in enumerate(rows):
                result = results[offset + j]
                cols[f"{side}_score"][i] = result.score
                cols[f"{side}_score_error"][i] = result.error
                cols[f"{side}_reply"][i] = result.raw
                cols[f"{side}_score_mass"][i] = getattr(result, "mass", None)
        if progress:
            progress(min(start + chunk_size, total), total)
    schema = table.schema
    for side in SIDES:
        if f"{side}_score_mass" not in schema.names:
            schema = schema.append(pa.field(f"{side}_score_mass", pa.float64()))
    return pa.table({name: cols[name] for name in schema.names}, schema=schema)


def scoring_outcomes(table: pa.Table) -> dict:
    """What scoring left in a table: transport failures (retried by the next run; their errors
    in order), unparsable verdicts and, where there are any, prompts over the model's context
    (``prompt_too_long``; both final: curation rejects them).

    ``prompt_too_long`` is left out when 0, so a shard without any has the provenance (and so the
    content hash, the key of the stages after it) it had before the count existed."""
    failed: list[str] = []
    unparsable = too_long = 0
    for side in SIDES:
        for error in table.column(f"{side}_score_error").to_pylist():
            if not error:
                continue
            if is_unparsable_error(error):
                unparsable += 1
            elif is_prompt_too_long_error(error):
                too_long += 1
            else:
                failed.append(error)
    outcomes = {"failed": len(failed), "unparsable": unparsable, "first_errors": failed[:5]}
    if too_long:
        outcomes["prompt_too_long"] = too_long
    return outcomes
