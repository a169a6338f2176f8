"""CLAIF mask-and-fill pair generation: masking properties on real STS-B train sentences, and
generation through the engine with a tiny random T5."""

from __future__ import annotations

import dataclasses
import math
import random
from pathlib import Path

import pytest

from multicsr_core.generation import (
    CLAIF_DECODING,
    CLAIF_MASK_RATES,
    build_claif_items,
    generate_claif_pairs,
    mask_words,
)
from multicsr_core.io.senteval import read_stsbenchmark
from multicsr_core.prompts import CLAIF_MASK_FILL_PROMPT, CLAIF_PARAPHRASE_PROMPT
from tiny_generators import single_thread, tiny_generator

pytestmark = pytest.mark.usefixtures("single_thread")

SENTEVAL = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "senteval"


@pytest.fixture(scope="module")
def stsb_sentences() -> list[str]:
    train = read_stsbenchmark(SENTEVAL, "train")
    return list(dict.fromkeys(train.sentences1[:150] + train.sentences2[:150]))


def _unmerged_and_merged(sentence, rate, seed):
    """The same draw without and with merging (merge_probability 0 vs 1 consume the rng alike)."""
    plain = mask_words(sentence, rate, random.Random(seed), merge_probability=0.0)
    merged = mask_words(sentence, rate, random.Random(seed), merge_probability=1.0)
    return plain, merged


def test_rates_and_mask_counts(stsb_sentences):
    assert CLAIF_MASK_RATES == (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8)
    for k, sentence in enumerate(stsb_sentences[:80]):
        words = sentence.split()
        for tenths, rate in enumerate(CLAIF_MASK_RATES):
            plain, merged = _unmerged_and_merged(sentence, rate, seed=k)
            plain_words = plain.split()
            assert len(plain_words) == len(words)
            assert plain_words.count("<mask>") == math.ceil(len(words) * tenths / 10)  # exact ceil
            # unmasked words stay in place
            assert all(p == w for p, w in zip(plain_words, words) if p != "<mask>")
            # merging collapses runs of masks: the merged text is the plain one with runs squeezed
            squeezed = [w for i, w in enumerate(plain_words) if not (w == "<mask>" and i and plain_words[i - 1] == "<mask>")]
            assert merged.split() == squeezed
    # the float trap: 10 words at rate 0.3 is 3 masks, not ceil(3.0000000000000004) = 4
    ten = "one two three four five six seven eight nine ten"
    assert mask_words(ten, 0.3, random.Random(0), 0.0).split().count("<mask>") == 3


def test_merge_happens_about_half_the_time(stsb_sentences):
    items = build_claif_items(stsb_sentences, seed=42, mask_rates=[0.6])  # at 0.6 nearly every draw has a run
    merged = 0
    for item in items:
        if item.masked.split().count("<mask>") < math.ceil(len(item.sentence.split()) * 0.6):
            merged += 1
            assert "<mask> <mask>" not in item.masked
    assert 0.3 < merged / len(items) < 0.7


def test_items_are_seeded_per_sentence(stsb_sentences):
    items = build_claif_items(stsb_sentences[:20], seed=7)
    assert len(items) == 20 * 9
    assert build_claif_items(stsb_sentences[:20], seed=7) == items
    alone = build_claif_items(stsb_sentences[5:6], seed=7)
    assert alone == items[5 * 9 : 6 * 9]
    assert build_claif_items(stsb_sentences[:20], seed=8) != items
    first = items[:9]
    assert first[0].mask_rate == 0.0 and first[0].masked == first[0].sentence
    assert first[0].prompt == CLAIF_PARAPHRASE_PROMPT.format(sentence=first[0].sentence)
    assert first[4].prompt == CLAIF_MASK_FILL_PROMPT.format(masked=first[4].masked)
    assert "<mask>" in first[4].masked


def test_generate_claif_pairs_with_a_local_model(stsb_sentences):
    sentences = stsb_sentences[:3]
    items = build_claif_items(sentences, seed=1)
    model, tokenizer = tiny_generator("t5", [i.prompt for i in items] + ['"'])
    settings = dataclasses.replace(CLAIF_DECODING, seed=1, max_new_tokens=8, batch_size=9)
    pairs = generate_claif_pairs(model, tokenizer, sentences, settings)
    assert len(pairs) == 27
    assert generate_claif_pairs(model, tokenizer, sentences, settings) == pairs  # seeded sampling
    assert [(p.sentence, p.mask_rate, p.masked, p.prompt) for p in pairs] == [
        (i.sentence, i.mask_rate, i.masked, i.prompt) for i in items
    ]
    for p in pairs:
        assert '"' not in p.generated  # cut at the stop string
        expected = ("empty" if not p.generated else "identical" if p.generated == p.sentence
                    else "contains_mask" if "<mask>" in p.generated else None)
        assert p.reject_reason == expected
    assert len({p.generated for p in pairs}) > 5
    greedy = generate_claif_pairs(model, tokenizer, sentences, dataclasses.replace(settings, do_sample=False))
    assert [p.generated for p in greedy] != [p.generated for p in pairs]
