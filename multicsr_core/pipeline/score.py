"""Stage 2a from the typed config: ``score_stage`` (``multicsr score``: a corpus file in, a scored
Parquet out) and ``score_shard`` (rows of one shard of a flow run). Scorers are built from the
config in ``pipeline.components``; the scoring itself lives in ``scoring/``.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from multicsr_core.config import PipelineConfig
from multicsr_core.io.corpus import make_provenance, read_provenance, with_provenance, write_parquet_atomic
from multicsr_core.io.inputs import read_any_corpus
from multicsr_core.pipeline.components import build_scorer
from multicsr_core.progress import Progress
from multicsr_core.scoring.apply import score_corpus, scoring_outcomes


def scoring_chunk_rows(cfg: PipelineConfig, rows: int) -> int:
    """Rows per scorer call. Through the Batch API all ``rows`` go in one call, so every batch
    (one per ``scoring.shard_size`` rows) is submitted at once and they run side by side;
    otherwise small chunks, for progress."""
    return max(1, rows) if cfg.scoring.batch_api and cfg.scoring.scorer == "openai" else cfg.scoring.batch_size * 8


def score_shard(cfg: PipelineConfig, table: pa.Table, scorer, progress: Progress | None = None,
                path: str | Path | None = None, row_offset: int = 0) -> tuple[pa.Table, dict]:
    """Score every pair of ``table`` not yet scored with ``scorer`` (:func:`build_scorer`); returns
    the scored rows and their outcomes (``scoring.apply.scoring_outcomes``: failed requests, to be
    retried; unparsable replies and prompts over the context, final). ``path`` and ``row_offset``
    name a row of the source file in an error."""
    scored = score_corpus(table, scorer, progress=progress, chunk_size=scoring_chunk_rows(cfg, table.num_rows),
                          path=path, row_offset=row_offset)
    return scored, scoring_outcomes(scored)


def score_stage(cfg: PipelineConfig, corpus: str | Path, out_path: str | Path, workdir: str | Path,
                progress: Progress | None = None) -> dict:
    """``multicsr score``: score every pair not yet scored; LLM replies are cached under ``workdir``."""
    table = read_any_corpus(corpus, cfg.input.max_chars)
    scorer = build_scorer(cfg, workdir)
    # failed: requests that got no answer (retried by the next run); unparsable: replies that are
    # not a score (final verdicts, rejected by curation as unparsable_score)
    scored, outcomes = score_shard(cfg, table, scorer, progress, path=corpus)
    input_prov = read_provenance(corpus) if Path(corpus).suffix.lower() in (".parquet", ".pq") else {}
    prov = make_provenance("score", config=cfg.to_dict(), config_hash=cfg.config_hash(), scorer=scorer.fingerprint(),
                           input=str(corpus), input_provenance=input_prov, **outcomes)
    write_parquet_atomic(with_provenance(scored, prov), out_path)
    return {"out": str(out_path), "rows": scored.num_rows, **outcomes}
