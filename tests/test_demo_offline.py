"""The README's demo preset, ``demo-offline``, through the real pipeline on a few premises: the
bundled SmolLM2-135M-Instruct generates (contrastive decoding, w = 0.3, SynCSE pools, its chat
template), the guide scores, curation, a two-step training, STS16 before and after; the same run
again is served from cache."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from multicsr_core.config import load_config, parse_override
from multicsr_core.io.corpus import read_corpus, read_provenance
from tests.conftest import task_states

# the preset itself, shrunk: 6 premises, short outputs, two training steps, one STS task
SMALL = ["input.limit=6", "generation.max_new_tokens=16", "generation.batch_size=6", "training.max_steps=2",
         "training.batch_size=4", "training.eval_steps=2", "evaluation.sts_tasks=[STS16]"]


def _config(preset: str = "demo-offline") -> dict:
    return load_config(preset, [parse_override(s) for s in SMALL]).to_dict()


def test_demo_presets_run_the_whole_method_on_the_bundled_llm():
    demo, self_scoring = load_config("demo-offline"), load_config("demo-offline-self-scoring")
    for cfg in (demo, self_scoring):
        assert cfg.input.premises.endswith("nli/snli_devtest_premises.txt") and cfg.input.triplets is None
        g = cfg.generation
        assert (g.llm, g.omega, g.prompt_set, g.use_chat_template) == ("bundled:smollm2-135m-instruct", 0.3,
                                                                        "syncse-pool", True)
        t = cfg.training
        assert (t.base_model, t.guide_model, t.loss) == ("bundled:all-MiniLM-L6-v2", "bundled:all-MiniLM-L6-v2", "paper")
        assert (cfg.curation.rule, cfg.evaluation.evaluate_baseline) == ("paper", True)
    assert demo.scoring.scorer == "guide"
    assert self_scoring.scoring.scorer == "local" and self_scoring.scoring.llm is None  # self-curation
    assert load_config("demo-snli").input.triplets.endswith("nli/snli_devtest_for_simcse.csv")


@pytest.mark.slow
def test_demo_offline_through_the_pipeline_then_all_cached(prefect_server, tmp_path):
    from multicsr.flows.pipeline import multicsr_pipeline

    workdir = tmp_path / "demo"
    state = multicsr_pipeline(config=_config(), workdir=str(workdir), return_state=True)
    assert state.is_completed(), state.message
    tasks = task_states(state.state_details.flow_run_id)
    assert tasks["load_premises"] == Counter(Completed=1)
    assert tasks["generate_shard"] == Counter(Completed=1)
    assert tasks["train"] == Counter(Completed=1)
    assert tasks["evaluate"] == Counter(Completed=2)  # baseline + trained

    corpus = read_corpus(workdir / "corpus.parquet")
    rows = corpus.to_pylist()
    assert rows and len({r["premise"] for r in rows}) <= 6
    for row in rows:
        assert row["premise"] in row["entailment_prompt"] and row["premise"] in row["contradiction_prompt"]
        assert "<|im_start|>assistant" in row["entailment_prompt"]  # SmolLM2's own chat template
        assert row["entailment_prompt_id"].startswith("syncse-pool/entailment/")
        assert row["entailment"] and row["contradiction"]
        assert 0.0 <= row["entailment_score"] <= 5.0 and 0.0 <= row["contradiction_score"] <= 5.0
    generation = read_provenance(workdir / "corpus.parquet")["config"]["generation"]
    assert (generation["llm"], generation["omega"], generation["max_new_tokens"]) == (
        "bundled:smollm2-135m-instruct", 0.3, 16)
    summary = json.loads((workdir / "run_summary.json").read_text())
    assert {"generate", "score", "curate", "train", "evaluate"} <= set(summary["stages"])
    results = json.loads((workdir / "results.json").read_text())
    baseline = json.loads((workdir / "baseline_results.json").read_text())
    assert round(baseline["STS16"], 2) == 78.99 and 60 < results["STS16"] < 90

    again = multicsr_pipeline(config=_config(), workdir=str(workdir), return_state=True)
    assert again.is_completed()
    tasks = task_states(again.state_details.flow_run_id)
    assert all(set(c) == {"Cached"} for c in tasks.values()), tasks
