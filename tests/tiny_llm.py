"""Tiny randomly initialised LLMs with offline tokenizers, for tests and benchmarks.

No generative LLM exists offline, so tests build T5 (encoder-decoder) and Llama (decoder-only)
models from small configs, with tokenizers made by the ``tokenizers`` library whose vocabulary
holds the score tokens ``0``..``5`` as single tokens (or, for the fallback path, a
character-level SentencePiece-style tokenizer where ``3`` becomes ``▁`` + ``3``).
"""

from __future__ import annotations

import re

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast, T5Config, T5ForConditionalGeneration

from multicsr_core.prompts import SCORING_PROMPT

SPECIALS = ["<pad>", "</s>", "<unk>", "<s>"]
LLAMA_CHAT_TEMPLATE = "{% for m in messages %}<s>[INST] {{ m['content'] }} [/INST]{% endfor %}"


def word_vocab(texts: list[str]) -> dict[str, int]:
    """Specials, the digits and '.', then every word of ``texts`` and of the scoring prompt."""
    words = list(SPECIALS) + list("0123456789.")
    for text in [SCORING_PROMPT, "INST [ ] /", *texts]:
        words.extend(re.findall(r"\w+|[^\w\s]+", text))
    return {word: i for i, word in enumerate(dict.fromkeys(words))}


def word_tokenizer(texts: list[str], *, bos: bool = False) -> PreTrainedTokenizerFast:
    """A word-level tokenizer: every digit is its own single token."""
    tokenizer = Tokenizer(models.WordLevel(vocab=word_vocab(texts), unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    if bos:
        tokenizer.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 3)])
    else:
        tokenizer.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token="<pad>", eos_token="</s>",
                                   unk_token="<unk>", bos_token="<s>")


def char_tokenizer(texts: list[str]) -> PreTrainedTokenizerFast:
    """A character-level SentencePiece-style tokenizer: '3' encodes as '▁' + '3' (two tokens)."""
    chars = sorted({c for text in [SCORING_PROMPT, *texts] for c in text.replace(" ", "")} | set("0123456789."))
    vocab = {token: i for i, token in enumerate(SPECIALS + ["▁"] + chars)}
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
    tokenizer.decoder = decoders.Metaspace()
    tokenizer.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token="<pad>", eos_token="</s>",
                                   unk_token="<unk>", bos_token="<s>")


def t5_style_tokenizer(texts: list[str]) -> PreTrainedTokenizerFast:
    """A SentencePiece-Unigram tokenizer laid out like T5's: word pieces ``▁word``, the digits both
    as ``▁3`` (a digit starting a word, what T5 decodes first) and as the bare piece ``3`` (a digit
    inside a word), single characters as a fallback."""
    words = {w for text in [SCORING_PROMPT, *texts] for w in re.findall(r"\S+", text)}
    chars = sorted({c for w in words for c in w} | set("0123456789."))
    pieces = [(tok, 0.0) for tok in SPECIALS] + [("\u2581", -2.0)]
    pieces += [("\u2581" + d, -1.0) for d in "0123456789"] + [(c, -5.0) for c in chars]
    pieces += [("\u2581" + w, -1.5) for w in sorted(words) if not w.isdigit()]
    tokenizer = Tokenizer(models.Unigram(pieces, unk_id=SPECIALS.index("<unk>")))
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
    tokenizer.decoder = decoders.Metaspace()
    tokenizer.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token="<pad>", eos_token="</s>",
                                   unk_token="<unk>", bos_token="<s>")


def tiny_t5(vocab_size: int, seed: int = 0, d_model: int = 32, layers: int = 2) -> T5ForConditionalGeneration:
    torch.manual_seed(seed)
    config = T5Config(vocab_size=vocab_size, d_model=d_model, d_kv=8, d_ff=2 * d_model, num_layers=layers,
                      num_heads=4, decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)
    return T5ForConditionalGeneration(config).eval()


def tiny_llama(vocab_size: int, seed: int = 0, hidden: int = 32, layers: int = 2) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=vocab_size, hidden_size=hidden, intermediate_size=2 * hidden,
                         num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=512, pad_token_id=0, bos_token_id=3, eos_token_id=1)
    return LlamaForCausalLM(config).eval()


def teach_t5_to_answer(model: T5ForConditionalGeneration, tokenizer, prompts: list[str], answers: list[str],
                       steps: int = 60, lr: float = 3e-3, seed: int = 0) -> T5ForConditionalGeneration:
    """A few optimiser steps so the random T5 answers in the scorer's format (one digit, then EOS).

    A random model almost never starts its reply with a digit, so generate + parse would fail on
    nearly every pair and there would be nothing to compare; after this it answers like a terse
    scorer (which digit it picks is not the point).
    """
    torch.manual_seed(seed)
    batch = tokenizer(prompts, return_tensors="pt", padding=True)
    labels = tokenizer(answers, return_tensors="pt", padding=True).input_ids
    labels[labels == tokenizer.pad_token_id] = -100
    optimiser = torch.optim.AdamW(model.parameters(), lr=lr)
    model.train()
    for _ in range(steps):
        loss = model(**batch, labels=labels).loss
        loss.backward()
        optimiser.step()
        optimiser.zero_grad()
    return model.eval()
