"""``multicsr estimate`` / ``run --dry-run`` (``multicsr_core/pipeline/estimate.py``): requests, tokens, cost,
cache hits and the budget, without calling any LLM or network."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from multicsr_core.config import load_config, parse_override
from multicsr_core.llm.tokens import CHARS_PER_TOKEN, MESSAGE_OVERHEAD_TOKENS, REPLY_PRIMING_TOKENS
from multicsr_core.pipeline.estimate import estimate
from multicsr_core.prompts import format_scoring_prompt
from multicsr_core.pipeline.score import score_stage
from tests.conftest import SHARED_DATA
from tests.openai_server import ChatCompletionsServer

SNLI = SHARED_DATA / "nli" / "snli_devtest_for_simcse.csv"
PRICES = ["scoring.price_input_per_1m=0.5", "scoring.price_output_per_1m=1.5"]


def _rows(n: int) -> list[dict]:
    rows, seen = [], set()
    for row in csv.DictReader(SNLI.read_text(encoding="utf-8").splitlines()):
        key = (row["sent0"], row["sent1"], row["hard_neg"])
        if key not in seen:
            seen.add(key)
            rows.append(row)
        if len(rows) == n:
            break
    return rows


def _write(rows: list[dict], path: Path) -> Path:
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["sent0", "sent1", "hard_neg"])
        writer.writeheader()
        writer.writerows({k: r[k] for k in ("sent0", "sent1", "hard_neg")} for r in rows)
    return path


def _approx_tokens(rows: list[dict]) -> int:
    """chars/4 (rounded up) of each scoring prompt, plus the chat overhead: the stated approximation."""
    prompts = [format_scoring_prompt(r["sent0"], r[side]) for side in ("sent1", "hard_neg") for r in rows]
    return sum(-(-len(p) // CHARS_PER_TOKEN) + MESSAGE_OVERHEAD_TOKENS + REPLY_PRIMING_TOKENS for p in prompts)


def _offline(cmd: list[str]) -> list[str]:
    """Run ``cmd`` in a network namespace of its own (no interface at all, not even loopback)."""
    return ["unshare", "-rn", *cmd]


@pytest.mark.slow
def test_estimate_paper_chatgpt_1000_rows_with_no_network(tmp_path):
    rows = _rows(1000)
    triplets = _write(rows, tmp_path / "triplets.csv")
    assert subprocess.run(["unshare", "-rn", "true"]).returncode == 0, "needs user namespaces (unshare -rn)"
    base = [sys.executable, "-m", "multicsr.cli"]
    common = ["--preset", "paper-chatgpt-roberta", "--workdir", str(tmp_path / "w"),
              *[a for s in PRICES for a in ("--set", s)], "--set", "scoring.budget_usd=0.05"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    runs = {
        "file": base + ["estimate", *common, "--set", f"input.triplets={triplets}", "--json"],
        "limit": base + ["estimate", *common, "--set", f"input.triplets={SNLI}", "--set", "input.limit=1000", "--json"],
        "dry-run": base + ["run", "--dry-run", *common, "--set", f"input.triplets={triplets}"],
    }
    outputs = {}
    for name, cmd in runs.items():
        done = subprocess.run(_offline(cmd), capture_output=True, text=True, timeout=300, env=env)
        assert done.returncode == 0, (name, done.stderr[-3000:])
        outputs[name] = done.stdout
    by_file, by_limit = json.loads(outputs["file"]), json.loads(outputs["limit"])
    assert by_file["input_rows"] == by_limit["input_rows"] == 1000
    [stage] = by_file["stages"]
    assert stage["stage"] == "scoring" and stage["model"] == "gpt-3.5-turbo" and stage["backend"] == "openai"
    assert stage["requests"] == 2000 and stage["requests_exact"] and stage["cached"] == 0
    assert stage["token_counter"].startswith("approximation: characters / 4")
    assert stage["prompt_tokens"] == _approx_tokens(rows)
    assert stage["completion_tokens"] == 2000 and stage["completion_tokens_max"] == 2000 * 8
    assert stage["cost_usd"] == pytest.approx((stage["prompt_tokens"] * 0.5 + 2000 * 1.5) / 1e6)
    assert stage["cost_usd_max"] == pytest.approx((stage["prompt_tokens"] * 0.5 + 16000 * 1.5) / 1e6)
    assert by_file["within_budget"] is (stage["cost_usd_max"] <= 0.05)
    assert by_limit["stages"][0]["prompt_tokens"] == stage["prompt_tokens"]
    table = outputs["dry-run"]
    assert "| scoring | gpt-3.5-turbo | openai | 2,000 |" in table and "approximation: characters / 4" in table
    assert f"{stage['prompt_tokens']:,}" in table and "budget: $0.05" in table


def test_cache_hits_use_the_backends_keys_and_the_batch_api_halves_the_cost(tmp_path, monkeypatch):
    rows = _rows(30)
    scored_part = _write(rows[:12], tmp_path / "first12.csv")
    all_rows = _write(rows, tmp_path / "all.csv")
    workdir = tmp_path / "w"
    with ChatCompletionsServer() as server:
        cfg = load_config("paper-chatgpt-roberta", [parse_override(s) for s in [
            f"input.triplets={scored_part}", f"scoring.base_url={server.base_url}", *PRICES]])
        monkeypatch.setenv("OPENAI_API_KEY", "sk-estimate-test")
        report = score_stage(cfg, scored_part, tmp_path / "scored.parquet", workdir)
        assert report["failed"] == 0 and server.total_requests() == 24
        cfg = load_config("paper-chatgpt-roberta", [parse_override(s) for s in [
            f"input.triplets={all_rows}", f"scoring.base_url={server.base_url}", *PRICES]])
        before = server.total_requests()
        direct = estimate(cfg, workdir)
        assert server.total_requests() == before  # the estimate asked nothing
    [stage] = direct.stages
    assert stage.requests == 60 and stage.cached == 24  # exactly the 24 requests scored above
    uncached = _approx_tokens(rows[12:])
    assert stage.cost_usd == pytest.approx((uncached * 0.5 + 36 * 1.5) / 1e6)
    batch = estimate(cfg.model_copy(update={"scoring": cfg.scoring.model_copy(update={"batch_api": True})}), workdir)
    assert batch.stages[0].batch_api and batch.cost_usd == pytest.approx(0.5 * direct.cost_usd)
    assert "Batch API, x0.5 price" in batch.markdown()
    tight = estimate(cfg.model_copy(update={"scoring": cfg.scoring.model_copy(update={"budget_usd": 1e-6})}), workdir)
    assert tight.within_budget is False and "does NOT cover" in tight.markdown()


@pytest.mark.slow
def test_premises_entering_at_stage_1_count_with_the_local_tokenizer(tmp_path):
    from transformers import AutoTokenizer

    from multicsr_core.generation.engine import encode_prompt
    from multicsr_core.models import resolve_model_ref
    from multicsr_core.pipeline.generate import generation_prompts

    premises = [r["sent0"] for r in _rows(40)]
    premises = list(dict.fromkeys(premises))[:10]
    path = tmp_path / "premises.txt"
    path.write_text("\n".join(premises) + "\n", encoding="utf-8")
    cfg = load_config(None, [parse_override(s) for s in [
        f"input.premises={path}", "generation.llm=bundled:smollm2-135m-instruct", "generation.max_new_tokens=32"]])
    result = estimate(cfg, tmp_path / "w")
    generation, scoring = result.stages
    tokenizer = AutoTokenizer.from_pretrained(resolve_model_ref("bundled:smollm2-135m-instruct"))
    prompts = generation_prompts(cfg, premises)
    expected = sum(len(encode_prompt(tokenizer, text)[0])
                   for p in prompts for text in (p.entailment_prompt, p.contradiction_prompt))
    assert generation.requests == 20 and generation.requests_exact and generation.backend == "local"
    assert generation.prompt_tokens == expected
    assert generation.token_counter == "tokenizer of bundled:smollm2-135m-instruct"
    assert generation.completion_tokens_max == 20 * 32 and generation.cost_usd == 0
    # stage 2 behind stage 1: at most 2 per premise, self-curation with the same local model
    assert scoring.requests == 20 and not scoring.requests_exact and scoring.cached is None
    assert scoring.model == "bundled:smollm2-135m-instruct" and scoring.backend == "local"
    assert "<= 20" in result.markdown()
