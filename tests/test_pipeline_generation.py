"""The DAG entering at stage 1: a (tiny, random) local LLM named by the config generates with
the contrastive engine, the same LLM scores (self-curation), curation writes the corpus; the
same run again is served from cache; `multicsr generate` honours its CLI contract."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter

import pyarrow.parquet as pq
import pytest
import torch

from multicsr_core.config import load_config, parse_override
from multicsr_core.io.corpus import read_corpus, read_provenance
from tests.tiny_generators import snli_premises, tiny_generator


@pytest.fixture(scope="module")
def tiny_llm_dir(tmp_path_factory):
    premises = snli_premises(24)
    model, tokenizer = tiny_generator("t5", premises, seed=3, dtype=torch.float32)
    path = tmp_path_factory.mktemp("tiny-t5")
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path, premises


def _config(llm_dir, premises_file) -> dict:
    overrides = [f"input.premises={premises_file}", "input.triplets=null", f"generation.llm={llm_dir}",
                 "generation.max_new_tokens=6", "generation.batch_size=4", "generation.shard_size=8",
                 "scoring.scorer=local", "scoring.batch_size=8", "training.enabled=false",
                 # a random tiny model puts ~6/vocab on the digits: read its argmax anyway (no mass floor)
                 "scoring.min_score_mass=0"]
    return load_config("demo-snli", [parse_override(o) for o in overrides]).to_dict()


@pytest.mark.slow
def test_dag_with_stage1_generation(prefect_server, tmp_path, tiny_llm_dir):
    from multicsr.flows.pipeline import multicsr_pipeline
    from tests.conftest import task_states

    llm_dir, premises = tiny_llm_dir
    premises_file = tmp_path / "premises.txt"
    premises_file.write_text("\n".join(premises) + "\n", encoding="utf-8")
    workdir = tmp_path / "run"
    state = multicsr_pipeline(config=_config(llm_dir, premises_file), workdir=str(workdir), return_state=True)
    assert state.is_completed(), state.message
    tasks = task_states(state.state_details.flow_run_id)
    assert tasks["load_premises"] == Counter(Completed=1)
    assert tasks["generate_shard"] == Counter(Completed=3)  # 24 premises in shards of 8
    assert tasks["materialize_generated"] == Counter(Completed=1)
    assert tasks["curate"] == Counter(Completed=1)

    corpus = read_corpus(workdir / "corpus.parquet")
    assert 0 < corpus.num_rows <= 24
    rows = corpus.to_pylist()
    for row in rows:
        assert row["premise"] in premises
        assert row["premise"] in row["entailment_prompt"] and row["premise"] in row["contradiction_prompt"]
        assert row["entailment"] and row["contradiction"]
        assert row["entailment_prompt_id"].startswith("syncse-pool/entailment/")
        # the local LLM scored both pairs on 0-5 (argmax over the score tokens: an integer)
        assert row["entailment_score"] in {0.0, 1.0, 2.0, 3.0, 4.0, 5.0}
        assert row["contradiction_score"] in {0.0, 1.0, 2.0, 3.0, 4.0, 5.0}
    assert read_provenance(workdir / "corpus.parquet")["config"]["generation"]["omega"] == 0.3

    again = multicsr_pipeline(config=_config(llm_dir, premises_file), workdir=str(workdir), return_state=True)
    assert again.is_completed()
    tasks = task_states(again.state_details.flow_run_id)
    assert all(set(c) == {"Cached"} for c in tasks.values()), tasks


def test_generate_cli_contract(tmp_path, tiny_llm_dir):
    llm_dir, premises = tiny_llm_dir
    premises_file = tmp_path / "p.txt"
    premises_file.write_text("\n".join(premises[:6]) + "\n\n" + premises[0] + "\n", encoding="utf-8")
    out = tmp_path / "gen.parquet"
    done = subprocess.run([sys.executable, "-m", "multicsr.cli", "generate", "--llm", str(llm_dir), "--premises",
                           str(premises_file), "--out", str(out), "--omega", "0.3", "--max-new-tokens", "5",
                           "--batch-size", "4", "--prompt-set", "official-2shot", "--seed", "7"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    table = pq.read_table(out)
    for column in ("premise", "entailment", "contradiction", "entailment_prompt", "contradiction_prompt"):
        assert column in table.column_names
    rows = table.to_pylist()
    assert rows and all(r["premise"] in premises[:6] for r in rows)
    assert all("entailment with" in r["entailment_prompt"] and "negative with" in r["contradiction_prompt"] for r in rows)
    prov = read_provenance(out)
    assert prov["input_stats"] == {"read": 8, "empty": 1, "duplicates": 1, "limited": 0, "kept": 6}
    assert prov["generation"]["omega"] == 0.3 and prov["generation"]["seed"] == 7
    assert sum(v for k, v in prov["generation_rejects"].items() if k in ("kept", "rejected")) == 6
