"""Applying a scorer to a corpus table: the two pairs (x, x+) and (x, x-) of every row."""

from __future__ import annotations

from typing import Callable

import pyarrow as pa

from multicsr_core.scoring.base import PairScorer


def score_corpus(table: pa.Table, scorer: PairScorer, rescore: bool = False,
                 progress: Callable[[int, int], None] | None = None, chunk_size: int = 1024) -> pa.Table:
    """Fill the score, error and reply columns of ``table``.

    Rows that already hold both scores (an existing scored corpus) are left alone unless
    ``rescore``. A pair the scorer could not score gets a null score and its error, so curation
    drops it and a later run can retry it. ``progress(done, total)`` counts rows.
    """
    cols = {name: table.column(name).to_pylist() for name in table.column_names}
    todo = [i for i in range(table.num_rows)
            if rescore or cols["entailment_score"][i] is None or cols["contradiction_score"][i] is None]
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
        if progress:
            progress(min(start + chunk_size, total), total)
    return pa.table(cols, schema=table.schema)
