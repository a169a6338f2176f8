"""Applying a scorer to a corpus table: the two pairs (x, x+) and (x, x-) of every row."""

from __future__ import annotations

from typing import Callable

import pyarrow as pa

from multicsr_core.scoring.base import PairScorer, is_unparsable_error

SIDES = ("entailment", "contradiction")


def _side_done(cols: dict, side: str, i: int) -> bool:
    """A pair needs no scoring if it holds a score or the (final) unparsable verdict."""
    return cols[f"{side}_score"][i] is not None or is_unparsable_error(cols[f"{side}_score_error"][i])


def score_corpus(table: pa.Table, scorer: PairScorer, rescore: bool = False,
                 progress: Callable[[int, int], None] | None = None, chunk_size: int = 1024) -> pa.Table:
    """Fill the score, error, reply and score-mass columns of ``table``.

    Rows whose two pairs already hold a score or an unparsable verdict (an existing scored
    corpus) are left alone unless ``rescore``. A pair whose request failed (transport) gets a
    null score and its error, so curation drops it and a later run retries it; an unparsable
    reply gets a null score and an ``unparsable_score: ...`` error, final.
    ``progress(done, total)`` counts rows.
    """
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
        results = scorer.score_pairs(premises + premises, hypotheses)
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
    in order) and unparsable verdicts (final; curation rejects them)."""
    failed: list[str] = []
    unparsable = 0
    for side in SIDES:
        for error in table.column(f"{side}_score_error").to_pylist():
            if not error:
                continue
            if is_unparsable_error(error):
                unparsable += 1
            else:
                failed.append(error)
    return {"failed": len(failed), "unparsable": unparsable, "first_errors": failed[:5]}
