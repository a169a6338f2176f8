"""The whole DAG on a small real slice: real Prefect run, real MiniLM, real SNLI and SentEval files.

Asserts the cache contract of issue #2: a crash in train resumes with every earlier stage from
cache; the same run again recomputes nothing; a changed training setting reruns only train and
evaluate.
"""

from __future__ import annotations

import json
from collections import Counter

import pytest
from sentence_transformers import SentenceTransformer

from multicsr_core.config import load_config, parse_override
from multicsr_core.io.corpus import read_corpus, read_provenance
from tests.conftest import small_dev_senteval, task_states

SMALL = [
    "input.limit=96",
    "training.max_steps=2",
    "training.batch_size=16",
    "training.eval_steps=2",
    "evaluation.sts_tasks=[STS16]",
    "scoring.shard_size=48",
    f"evaluation.data_dir={small_dev_senteval()}",  # STS-B dev cut to 200 pairs for checkpoint selection
]


def _config(*extra: str) -> dict:
    return load_config("demo-snli", [parse_override(s) for s in (*SMALL, *extra)]).to_dict()




def _run(config: dict, workdir):
    from multicsr.flows.pipeline import multicsr_pipeline

    state = multicsr_pipeline(config=config, workdir=str(workdir), return_state=True)
    return state, task_states(state.state_details.flow_run_id)


@pytest.mark.slow
def test_dag_crash_resume_rerun_and_partial_rerun(prefect_server, tmp_path, monkeypatch):
    workdir = tmp_path / "run"

    # 1. A crash in train (the base model cannot be loaded offline): the flow fails after
    #    load, score and curate finished.
    state, tasks = _run(_config("training.base_model=no-such-org/no-such-model"), workdir)
    assert state.is_failed()
    assert tasks["load_triplets"] == Counter(Completed=1)
    assert tasks["score_shard"] == Counter(Completed=2)
    assert tasks["curate"] == Counter(Completed=1)
    assert tasks["train"] == Counter(Failed=1)
    # the curated stage file is cached, but a failed run publishes nothing (outputs change together)
    assert len(list((workdir / "stages" / "curate").glob("*.parquet"))) == 1
    assert not (workdir / "corpus.parquet").exists() and not (workdir / "run_manifest.json").exists()

    # 2. The fixed run resumes: everything before train comes from cache.
    state, tasks = _run(_config(), workdir)
    assert state.is_completed(), state.message
    assert tasks["load_triplets"] == Counter(Cached=1)
    assert tasks["score_shard"] == Counter(Cached=2)
    assert tasks["curate"] == Counter(Cached=1)
    assert tasks["train"] == Counter(Completed=1)
    assert tasks["evaluate"] == Counter(Completed=2)  # baseline + trained

    results = json.loads((workdir / "results.json").read_text())
    baseline = json.loads((workdir / "baseline_results.json").read_text())
    assert set(results) == {"STS16", "avg", "_provenance"}
    assert 60 < baseline["STS16"] < 90 and 60 < results["STS16"] < 90
    assert round(baseline["STS16"], 2) == 78.99  # the MiniLM anchor, through the whole DAG
    assert results["_provenance"]["config_hash"] == load_config("demo-snli", [parse_override(s) for s in SMALL]).config_hash()
    corpus = read_corpus(workdir / "corpus.parquet")
    assert corpus.num_rows == 96
    assert read_provenance(workdir / "corpus.parquet")["config"]["training"]["max_steps"] == 2
    model = SentenceTransformer(str(workdir / "model"), device="cpu")
    assert model.encode(["a man plays a guitar"]).shape == (1, 384)
    assert (workdir / "reports" / "score_scatter.png").stat().st_size > 1000
    assert json.loads((workdir / "run_summary.json").read_text())["funnel"]["total"] == 96
    manifest = json.loads((workdir / "run_manifest.json").read_text())
    assert manifest["state"] == "complete" and manifest["config_hash"] == results["_provenance"]["config_hash"]

    # 3. The same run again: nothing recomputed.
    state, tasks = _run(_config(), workdir)
    assert state.is_completed()
    assert all(set(c) == {"Cached"} for c in tasks.values()), tasks

    # 4. Only a training setting changed: only train and evaluate (of the new model) run.
    state, tasks = _run(_config("training.sigma=0.8"), workdir)
    assert state.is_completed()
    assert tasks["load_triplets"] == Counter(Cached=1)
    assert tasks["score_shard"] == Counter(Cached=2)
    assert tasks["curate"] == Counter(Cached=1)
    assert tasks["train"] == Counter(Completed=1)
    assert tasks["evaluate"] == Counter(Cached=1, Completed=1)  # the baseline stays cached
