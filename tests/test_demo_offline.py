"""The README's demo preset, ``demo-offline``, through the real pipeline on a few premises: the
bundled SmolLM2-135M-Instruct generates (contrastive decoding, w = 0.3, SynCSE pools, its chat
template), the guide scores, curation; the same run again is served from cache."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from multicsr_core.config import load_config, parse_override
from multicsr_core.io.corpus import read_corpus, read_provenance
from multicsr_core.models import model_provenance
from tests.conftest import task_states

# the preset itself, shrunk: 6 premises, short outputs, stages 1 and 2 only
SMALL = ["input.limit=6", "generation.max_new_tokens=16", "generation.batch_size=6", "training.enabled=false"]
BUNDLED = "bundled:smollm2-135m-instruct"


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
def test_demo_offline_stages_1_and_2_through_the_pipeline_then_all_cached(prefect_server, tmp_path):
    """Stage 1 + 2 of the preset (training and evaluation off: a handful of premises rarely
    survives the paper rule, and stage 3 on MiniLM is covered by the demo-snli tests)."""
    from multicsr.flows.pipeline import multicsr_pipeline

    workdir = tmp_path / "demo"
    state = multicsr_pipeline(config=_config(), workdir=str(workdir), return_state=True)
    assert state.is_completed(), state.message
    tasks = task_states(state.state_details.flow_run_id)
    for name in ("load_premises", "generate_shard", "materialize_generated", "curate"):
        assert tasks[name] == Counter(Completed=1), (name, tasks)
    assert "train" not in tasks and "evaluate" not in tasks

    # stage 1 ran on the bundled GGUF, named by file and hash
    (shard,) = (workdir / "stages" / "generate_shard").glob("*.parquet")
    shard_provenance = read_provenance(shard)
    generation = shard_provenance["generation"]
    assert (generation["model"], generation["gguf_file"]) == (BUNDLED, "SmolLM2-135M-Instruct.Q4_1.gguf")
    assert generation["gguf_sha256"] == model_provenance(BUNDLED)["gguf_sha256"]
    assert (generation["omega"], generation["max_new_tokens"], generation["prompt_set"]) == (0.3, 16, "syncse-pool")
    rejects = shard_provenance["generation_rejects"]
    assert rejects["kept"] + rejects["rejected"] == 6

    corpus = read_corpus(workdir / "corpus.parquet")
    rows = corpus.to_pylist()
    assert len(rows) == rejects["kept"]  # every generated row is in the corpus, kept or not
    for row in rows:
        assert row["premise"] in row["entailment_prompt"] and row["premise"] in row["contradiction_prompt"]
        assert row["entailment_prompt"].endswith("<|im_start|>assistant\n")  # SmolLM2's own chat template
        assert row["entailment_prompt_id"].startswith("syncse-pool/entailment/")
        assert row["entailment"] and row["contradiction"]
        # the guide scored both pairs: 5 * clip(cosine, 0, 1)
        assert 0.0 <= row["entailment_score"] <= 5.0 and 0.0 <= row["contradiction_score"] <= 5.0
        assert row["kept"] == (row["reject_reason"] is None)
    summary = json.loads((workdir / "run_summary.json").read_text())
    assert {"load", "generate", "score", "curate"} <= set(summary["stages"])
    assert summary["funnel"]["kept"] == sum(r["kept"] for r in rows)

    again = multicsr_pipeline(config=_config(), workdir=str(workdir), return_state=True)
    assert again.is_completed()
    tasks = task_states(again.state_details.flow_run_id)
    assert all(set(c) == {"Cached"} for c in tasks.values()), tasks
