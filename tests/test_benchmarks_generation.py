"""Smoke tests of the generation benchmarks in a tiny mode, so they cannot rot: a tiny random
Llama saved as a real model folder (with a chat template), one repeat, a few tokens."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from multicsr_core.prompts import SYNCSE_CONTRADICTION_POOL, SYNCSE_ENTAILMENT_POOL
from tiny_generators import SNLI, single_thread, snli_premises, tiny_generator  # noqa: F401

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def load_benchmark(name: str):
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    """A tiny random Llama + word tokenizer with a chat template, saved like a downloaded model."""
    texts = snli_premises(8) + list(SYNCSE_ENTAILMENT_POOL + SYNCSE_CONTRADICTION_POOL) + ["Input: Output:"]
    model, tokenizer = tiny_generator("llama", texts, chat_template=True, dtype=torch.float32)
    folder = tmp_path_factory.mktemp("tiny_llama")
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_contrastive_generation_benchmark_real_model_mode(tiny_model_dir, tmp_path, capsys, single_thread):  # noqa: F811
    bench = load_benchmark("bench_contrastive_generation")
    out = tmp_path / "bench.json"
    assert bench.main(["--model", str(tiny_model_dir), "--premises", str(SNLI), "--batch", "2", "--new-tokens", "3",
                       "--repeats", "1", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| `model.generate`, no contrast |" in printed and "| our loop, w = 0.3 |" in printed
    assert "/proc/loadavg before:" in printed
    result = json.loads(out.read_text())
    run = result["runs"][0]
    assert run["sequences"] == 4 and run["new_tokens"] == 3
    assert set(run["seconds"]) == {"plain", "ours_w0", "ours"}
    assert run["tokenizer"] == "the model's own (chat template)"
    # our loop at w = 0 is plain greedy decoding: it must equal generate on every prompt
    assert run["ours_w0_equal_prompts"] == 4 and run["ours_w0_equals_plain"] is True
    assert result["loadavg_before"] and result["loadavg_after"]


def test_contrastive_generation_benchmark_xl_path_smoke(capsys, single_thread):  # noqa: F811
    bench = load_benchmark("bench_contrastive_generation")
    assert bench.main(["--flan-t5-xl-shape", "--xl-layers", "1", "--xl-d-model", "64", "--batches", "2",
                       "--new-tokens", "3", "--repeats", "1", "--dtype", "float32", "--premises", str(SNLI)]) == 0
    printed = capsys.readouterr().out
    assert "projected_hours_275k_premises" in printed and "ours_equals_two_pass\": true" in printed


@pytest.mark.slow
def test_stage1_quality_benchmark_tiny(tiny_model_dir, tmp_path, capsys, single_thread):  # noqa: F811
    bench = load_benchmark("bench_stage1_quality")
    premises = tmp_path / "premises.txt"
    premises.write_text("\n".join(snli_premises(4)) + "\n", encoding="utf-8")
    argv = ["--llm", str(tiny_model_dir), "--premises", str(premises), "--n", "3", "--omegas", "0,0.3",
            "--max-new-tokens", "4", "--chunk", "2", "--no-self-score", "--cache-dir", str(tmp_path / "cache"),
            "--json", str(tmp_path / "q.json"), "--markdown", str(tmp_path / "q.md")]
    assert bench.main(argv) == 0
    first = capsys.readouterr().out
    assert first.count("w=0.0: 2 premises generated") == 1 and "w=0.3: 1 premises generated" in first
    table = (tmp_path / "q.md").read_text()
    assert "| w | cos(x,x+) |" in table and "| 0.3 |" in table
    results = json.loads((tmp_path / "q.json").read_text())["results"]
    for r in results.values():
        assert r["premises"] == 3 and 0 <= r["rejected"] <= 1 and 0 <= r["meta"] <= 1
    # a rerun reads every generation from the cache
    assert bench.main(argv) == 0
    assert "generated in" not in capsys.readouterr().out
    assert json.loads((tmp_path / "q.json").read_text())["results"] == results
    # --cached-only generates nothing: of 4 premises only the first chunk (2) is cached at every w
    assert bench.main([*argv[:argv.index("--n")], "--n", "4", *argv[argv.index("--n") + 2:], "--cached-only"]) == 0
    out = capsys.readouterr().out
    assert "generated in" not in out and "cached only: measuring the first 2 premises" in out
    assert (tmp_path / "q.md").read_text().startswith("2 SNLI premises")
