"""The official-code presets hold the official values, and `multicsr config --diff` shows paper vs official."""

from __future__ import annotations

import subprocess
import sys

import pytest

from multicsr_core.config import config_diff, load_config, parse_override


@pytest.mark.parametrize("backbone,guide", [("bert", "princeton-nlp/unsup-simcse-bert-base-uncased"),
                                            ("roberta", "princeton-nlp/unsup-simcse-roberta-base")])
def test_official_presets_hold_the_official_values(backbone, guide):
    cfg = load_config(f"official-flan-t5-xl-{backbone}")
    g, s, c, t = cfg.generation, cfg.scoring, cfg.curation, cfg.training
    assert (g.llm, g.omega, g.prompt_set, g.do_sample, g.dtype, g.batch_size) == (
        "google/flan-t5-xl", 0.0, "official-2shot", False, "float32", 16)
    assert g.max_new_tokens == 255  # generate(max_length=256) on T5: the decoder start token counts
    assert (s.scorer, s.mode, s.prompt, s.dtype) == ("local", "generate", "official-verbatim", "float32")
    assert (c.rule, c.alpha, c.beta) == ("official", 3.0, 3.0)
    assert (t.loss, t.phi, t.tau, t.batch_size, t.eval_steps, t.seed, t.precision) == (
        "official", 0.95, 0.05, 128, 25, 42, "fp16")
    assert (t.learning_rate, t.epochs, t.max_seq_length, t.pooling, t.mlp_only_train) == (5e-5, 3.0, 32, "cls", True)
    assert t.base_model == ("bert-base-uncased" if backbone == "bert" else "roberta-base") and t.guide_model == guide
    # the paper preset of the same backbone differs only in the commented deviations
    paper = load_config(f"paper-flan-t5-xl-{backbone}")
    assert {key for key, _, _ in config_diff(paper, cfg)} == {
        "name", "generation.omega", "generation.prompt_set", "generation.use_chat_template",
        "generation.max_new_tokens", "generation.dtype", "scoring.mode", "scoring.prompt", "curation.rule",
        "training.loss", "training.guide_pooling", "training.batch_size", "training.eval_steps"}


def test_config_diff_lists_leaves_that_differ_and_nothing_else():
    a = load_config("demo-offline")
    b = load_config("demo-offline", [parse_override("training.sigma=0.8"), parse_override("evaluation.tasks=[sts,transfer]")])
    assert config_diff(a, b) == [("training.sigma", 0.9, 0.8), ("evaluation.tasks", ["sts"], ["sts", "transfer"])]
    assert config_diff(a, a) == []


def test_cli_config_diff_prints_key_and_both_values():
    done = subprocess.run([sys.executable, "-m", "multicsr.cli", "config", "--diff", "paper-flan-t5-xl-bert",
                           "official-flan-t5-xl-bert"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = {line.split()[0]: line.split()[1:] for line in done.stdout.splitlines() if line and not line.startswith("#")}
    assert rows["key"] == ["paper-flan-t5-xl-bert", "official-flan-t5-xl-bert"]
    assert rows["generation.omega"] == ["0.3", "0.0"]
    assert rows["training.loss"] == ['"paper"', '"official"']
    assert rows["training.batch_size"] == ["256", "128"]
    assert "# 13 differing keys" in done.stdout
    bad = subprocess.run([sys.executable, "-m", "multicsr.cli", "config", "--diff", "paper-flan-t5-xl-bert", "nope"],
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "unknown preset 'nope'" in bad.stderr and "Traceback" not in bad.stderr
