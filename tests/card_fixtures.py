"""A real tiny run for the card and export tests: 40 SNLI triplets scored by the real MiniLM guide,
curated with the paper rule, MiniLM trained one step with the paper loss (session-scoped)."""

from __future__ import annotations

import pytest

from tests.conftest import SHARED_DATA

MINILM = "bundled:all-MiniLM-L6-v2"


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    """(corpus path, model folder) of a real one-step run on 40 SNLI triplets (no STS-B dev
    selection: the evaluation data dir is empty, which keeps this under a few seconds of training)."""
    from multicsr_core.config import load_config
    from multicsr_core.curation import curate_table, curation_funnel
    from multicsr_core.io.corpus import read_corpus, with_provenance, write_parquet_atomic
    from multicsr_core.pipeline.score import score_stage
    from multicsr_core.pipeline.train import train_stage

    tmp = tmp_path_factory.mktemp("tiny-run")
    lines = (SHARED_DATA / "nli" / "snli_devtest_for_simcse.csv").read_text(encoding="utf-8").splitlines()
    triplets = tmp / "snli_devtest_for_simcse.csv"  # the real file's name: the card names its source and license
    triplets.write_text("\n".join(lines[:41]) + "\n", encoding="utf-8")
    cfg = load_config("demo-snli", [{"input": {"triplets": str(triplets)},
                                        "scoring": {"llm": MINILM},
                                        "training": {"max_steps": 1, "batch_size": 8},
                                        "evaluation": {"data_dir": str(tmp / "no-senteval")}}])
    score_stage(cfg, triplets, tmp / "scored.parquet", tmp / "work")
    curated = curate_table(read_corpus(tmp / "scored.parquet"), "paper", 3.0, 3.0, 1.0, True, "corpus")
    corpus = tmp / "corpus.parquet"
    write_parquet_atomic(with_provenance(curated, {"stage": "curate", "config": cfg.to_dict(),
                                                   "config_hash": cfg.config_hash(),
                                                   "funnel": curation_funnel(curated)}), corpus)
    train_stage(cfg, corpus, tmp / "model", tmp / "cache")
    return corpus, tmp / "model", cfg, curation_funnel(curated)
