"""What ``multicsr inspect`` shows: rows, kept/rejected by reason, score summaries, provenance."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np

from multicsr_core.curation import curation_funnel
from multicsr_core.io.corpus import read_provenance
from multicsr_core.io.inputs import read_any_corpus


def _score_summary(values: list) -> dict:
    present = np.array([v for v in values if v is not None], dtype=float)
    out = {"count": int(present.size), "missing": len(values) - int(present.size)}
    if present.size:
        out.update(mean=round(float(present.mean()), 3), std=round(float(present.std()), 3),
                   min=float(present.min()), p50=float(np.median(present)), max=float(present.max()))
    return out


def corpus_summary(path: str | Path, sample_rows: int = 5, seed: int = 0) -> dict:
    table = read_any_corpus(path)  # a corpus Parquet, or a user's triplets in any format (validated)
    cols = {c: table.column(c).to_pylist() for c in ("premise", "entailment", "contradiction", "entailment_score",
                                                    "contradiction_score", "kept", "reject_reason")}
    idx = sorted(random.Random(seed).sample(range(table.num_rows), min(sample_rows, table.num_rows)))
    sample = [{"premise": cols["premise"][i], "entailment": cols["entailment"][i], "contradiction": cols["contradiction"][i],
               "a": cols["entailment_score"][i], "b": cols["contradiction_score"][i], "kept": cols["kept"][i],
               "reason": cols["reject_reason"][i]} for i in idx]
    return {
        "rows": table.num_rows,
        "sample": sample,
        "funnel": curation_funnel(table),
        "scores": {s: _score_summary(cols[s]) for s in ("entailment_score", "contradiction_score")},
        "provenance": read_provenance(path) if Path(path).suffix.lower() in (".parquet", ".pq") else {},
    }
