"""Tiny random generator LLMs (T5 and Llama) whose outputs depend on their input, for the
generation tests. No generative LLM exists offline, so these stand in for Flan-T5 / chat models.

Freshly initialised tiny models emit the same token whatever the prompt, which would make every
comparison trivially true; ``scrambled`` redraws the weight matrices with a larger scale so
outputs differ per prompt and the contrast term changes tokens.
"""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from tiny_llm import LLAMA_CHAT_TEMPLATE, tiny_llama, tiny_t5, word_tokenizer

SNLI = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "nli" / "snli_devtest_for_simcse.csv"


@pytest.fixture(scope="module", autouse=False)
def single_thread():
    """Tiny models run ~20x faster on one thread when the 2 cores are shared with other test
    processes (OpenMP threads spin-wait on each other); restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def snli_premises(n: int, skip: int = 0) -> list[str]:
    """The first ``n`` distinct premises (column sent0) of the shared SNLI file, after ``skip``."""
    if not SNLI.exists():
        raise FileNotFoundError(f"shared SNLI file missing: {SNLI}")
    seen: list[str] = []
    with SNLI.open(encoding="utf-8") as f:
        for row in csv.DictReader(f):
            if row["sent0"] not in seen:
                seen.append(row["sent0"])
            if len(seen) == n + skip:
                break
    return seen[skip:]


def scrambled(model, gain: float, seed: int = 0):
    """Redraw every weight matrix as N(0, gain^2 / fan_in) (norm weights stay 1)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() >= 2:
                p.copy_(torch.randn(p.shape, generator=g) * gain / p.shape[-1] ** 0.5)
    return model


def tiny_generator(arch: str, texts: list[str], *, seed: int = 0, chat_template: bool = False,
                   dtype: torch.dtype = torch.float64):
    """(model, tokenizer) for ``arch`` in {"t5", "llama", "gpt2"}; the vocabulary covers ``texts``.

    float64 by default so the cached and naive computations round identically and no near-tie
    flips a token; the engine still scores in float32 as ``generate`` does.
    """
    tokenizer = word_tokenizer(texts, bos=(arch != "t5"))
    if arch == "t5":
        model = scrambled(tiny_t5(len(tokenizer), seed=seed), gain=4.0, seed=seed)
    elif arch == "gpt2":  # absolute position embeddings: wrong position ids under left padding show
        torch.manual_seed(seed)
        config = GPT2Config(vocab_size=len(tokenizer), n_positions=256, n_embd=32, n_layer=2, n_head=4,
                            bos_token_id=3, eos_token_id=1, pad_token_id=0)
        model = scrambled(GPT2LMHeadModel(config), gain=2.0, seed=seed)
    elif arch == "llama":
        model = scrambled(tiny_llama(len(tokenizer), seed=seed), gain=2.0, seed=seed)
        if chat_template:
            tokenizer.chat_template = LLAMA_CHAT_TEMPLATE
    else:
        raise ValueError(arch)
    return model.to(dtype).eval(), tokenizer
