"""CLAIF pair generation (Cheng et al. 2023, "Improving Contrastive Learning of Sentence
Embeddings from AI Feedback", section 3.1; method.md "CLAIF and CLHAIF").

For each original sentence and each of nine mask rates r in 0.0, 0.1, ..., 0.8, ``ceil(len * r)``
random word positions (words = ``str.split()``) become ``<mask>``; with probability 0.5 runs of
adjacent masks are merged into one. The model then fills the masks (rate > 0) or writes a
paraphrase (rate 0) with the two CLAIF prompts of ``multicsr_core.prompts``. Here the generator
is a local model run through the stage-1 engine with ``omega = 0`` (plain decoding); API models
come with the LLM backends. Scoring the pairs is stage 2's job.

The prompts end in an open quote and the official API call stops at ``"``; we stop a sequence at
the first token containing ``"`` and cut the text there. They are completion prompts, so chat
templates are off by default.

``ceil(len * r)`` is computed exactly (``Fraction(str(r))``): with floats ``10 * 0.3`` is
``3.0000000000000004`` and would mask 4 words instead of 3.

Post-processing (official): pairs whose output is identical to the original, contains
``<mask>``, or is empty are rejected (kept in the output with ``reject_reason``).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from fractions import Fraction
from typing import Sequence

from ..prompts import CLAIF_MASK_TOKEN, format_claif_generation_prompt
from .cleaning import clean_generation
from .engine import ProgressCallback, generate_texts
from .processors import row_seed
from .settings import DecodingSettings

__all__ = [
    "CLAIF_DECODING",
    "CLAIF_MASK_RATES",
    "ClaifItem",
    "ClaifPair",
    "mask_words",
    "build_claif_items",
    "generate_claif_pairs",
    "CLAIF_REJECT_EMPTY",
    "CLAIF_REJECT_IDENTICAL",
    "CLAIF_REJECT_MASK",
]

CLAIF_MASK_RATES: tuple[float, ...] = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8)
CLAIF_REJECT_EMPTY = "empty"
CLAIF_REJECT_IDENTICAL = "identical"
CLAIF_REJECT_MASK = "contains_mask"

#: CLAIF's decoding: plain (w = 0), the official temperature 0.7 and top_p 0.9; the official max_tokens
#: 256 lowered to 64 since the output stops at the closing quote of the completion prompt (stop string
#: ``"``); completion prompts, so no chat template. ``seed`` also seeds the masking.
CLAIF_DECODING = DecodingSettings(omega=0.0, max_new_tokens=64, batch_size=32, do_sample=True, temperature=0.7,
                                  top_p=0.9, use_chat_template=False, stop_strings=('"',))


def _masked_count(n_words: int, rate: float) -> int:
    if not 0 <= rate <= 1:
        raise ValueError(f"mask rate must be in [0, 1], got {rate}")
    return math.ceil(n_words * Fraction(str(rate)))


def mask_words(sentence: str, rate: float, rng: random.Random, merge_probability: float = 0.5) -> str:
    """Replace ``ceil(len(words) * rate)`` random words by ``<mask>``; with ``merge_probability``
    merge each run of adjacent masks into a single one. Words are ``sentence.split()``."""
    words = sentence.split()
    positions = rng.sample(range(len(words)), _masked_count(len(words), rate))
    for i in positions:
        words[i] = CLAIF_MASK_TOKEN
    if rng.random() < merge_probability:
        merged: list[str] = []
        for word in words:
            if not (word == CLAIF_MASK_TOKEN and merged and merged[-1] == CLAIF_MASK_TOKEN):
                merged.append(word)
        words = merged
    return " ".join(words)


@dataclass(frozen=True)
class ClaifItem:
    sentence: str
    mask_rate: float
    masked: str  # the sentence with masks (the sentence itself at rate 0)
    prompt: str  # the CLAIF prompt for this item


def build_claif_items(
    sentences: Sequence[str], seed: int = 42, mask_rates: Sequence[float] = CLAIF_MASK_RATES,
    merge_probability: float = 0.5,
) -> list[ClaifItem]:
    """One item per (sentence, rate), sentence-major. Each item's masking is seeded by
    (seed, sentence, rate) only, so it does not change when other sentences are added."""
    items = []
    for sentence in sentences:
        for rate in mask_rates:
            rng = random.Random(row_seed(seed, f"claif-mask\x00{rate!r}\x00{sentence}"))
            masked = sentence if rate == 0 else mask_words(sentence, rate, rng, merge_probability)
            items.append(ClaifItem(sentence, float(rate), masked, format_claif_generation_prompt(sentence, masked, rate)))
    return items


@dataclass(frozen=True)
class ClaifPair:
    sentence: str
    generated: str  # cleaned model output
    mask_rate: float
    masked: str
    prompt: str  # exact text fed to the model
    reject_reason: str | None  # None, "empty", "identical" or "contains_mask"

    @property
    def kept(self) -> bool:
        return self.reject_reason is None


def generate_claif_pairs(
    model,
    tokenizer,
    sentences: Sequence[str],
    settings: DecodingSettings = CLAIF_DECODING,
    *,
    mask_rates: Sequence[float] = CLAIF_MASK_RATES,
    progress: ProgressCallback | None = None,
) -> list[ClaifPair]:
    """Mask-and-fill pairs from a local model, decoded as ``settings`` say (default ``CLAIF_DECODING``;
    change a field with ``dataclasses.replace(CLAIF_DECODING, ...)``); ``settings.seed`` also seeds
    the masking."""
    items = build_claif_items(sentences, seed=settings.seed, mask_rates=mask_rates)
    outputs = generate_texts(model, tokenizer, [item.prompt for item in items], settings=settings,
                             sample_keys=[f"claif\x00{item.mask_rate!r}\x00{item.prompt}" for item in items],
                             progress=progress)
    pairs = []
    for item, out in zip(items, outputs):
        cleaned = clean_generation(out.text, item.sentence)
        if not cleaned.text:
            reason = CLAIF_REJECT_EMPTY
        elif cleaned.text == item.sentence.strip():
            reason = CLAIF_REJECT_IDENTICAL
        elif CLAIF_MASK_TOKEN in cleaned.text:
            reason = CLAIF_REJECT_MASK
        else:
            reason = None
        pairs.append(ClaifPair(item.sentence, cleaned.text, item.mask_rate, item.masked, out.prompt, reason))
    return pairs
