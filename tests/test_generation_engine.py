"""The stage-1 contrastive decoding engine on tiny random T5 and Llama models."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from multicsr_core.generation import (
    ContrastiveLogitsProcessor,
    DecodingSettings,
    SpecialTokens,
    TokenSelector,
    build_logits_processors,
    clean_generation,
    contrastive_decode,
    generate_contrastive,
    generate_texts,
    generation_fingerprint,
    length_buckets,
    load_generator,
    reject_counts,
    special_token_ids,
)
from multicsr_core.prompts import build_generation_prompts
from tiny_generators import single_thread, snli_premises, tiny_generator

pytestmark = pytest.mark.usefixtures("single_thread")

ARCHS = ["t5", "llama", "gpt2"]  # encoder-decoder; decoder-only with RoPE; with absolute positions
PREMISES = snli_premises(6)


@pytest.fixture(scope="module")
def prompts():
    return build_generation_prompts(PREMISES, seed=42)


@pytest.fixture(scope="module", params=ARCHS)
def generator(request, prompts):
    texts = [t for p in prompts for t in (p.entailment_prompt, p.contradiction_prompt)] + PREMISES
    model, tokenizer = tiny_generator(request.param, texts)
    return request.param, model, tokenizer


def _ids(tokenizer, texts):
    return [tokenizer(t)["input_ids"] for t in texts]


def _pairs(prompts):
    """Intended and opposite prompt texts for the 2P sequences of a premise list."""
    intended = [t for p in prompts for t in (p.entailment_prompt, p.contradiction_prompt)]
    opposite = [t for p in prompts for t in (p.contradiction_prompt, p.entailment_prompt)]
    return intended, opposite


def _special(model, tokenizer):
    return SpecialTokens(*special_token_ids(model, tokenizer))


def _generate_reference(model, tokenizer, ids, max_new_tokens, min_new_tokens):
    """``model.generate`` greedy on a padded batch, cut at each row's first EOS."""
    eos, pad, _ = special_token_ids(model, tokenizer)
    left = not model.config.is_encoder_decoder
    width = max(map(len, ids))
    inputs = torch.full((len(ids), width), pad)
    mask = torch.zeros_like(inputs)
    for i, r in enumerate(ids):
        span = slice(width - len(r), width) if left else slice(0, len(r))
        inputs[i, span] = torch.tensor(r)
        mask[i, span] = 1
    out = model.generate(input_ids=inputs, attention_mask=mask, do_sample=False,
                         max_new_tokens=max_new_tokens, min_new_tokens=min_new_tokens)
    new = out[:, 1:] if model.config.is_encoder_decoder else out[:, width:]
    result = []
    for row in new.tolist():
        cut = next((k for k, t in enumerate(row) if t in eos), len(row))
        result.append(row[:cut])
    return result


def _naive_contrastive(model, tokenizer, intended, opposite, omega, max_new_tokens, min_new_tokens, eos_ids):
    """Reference: one sequence at a time, no cache, no padding; both branches recomputed from
    scratch at every step on the full prefix."""
    _, _, start = special_token_ids(model, tokenizer)

    def last_logits(prompt, generated):
        if model.config.is_encoder_decoder:
            out = model(input_ids=torch.tensor([prompt]), decoder_input_ids=torch.tensor([[start] + generated]))
        else:
            out = model(input_ids=torch.tensor([prompt + generated]))
        return out.logits[0, -1].to(torch.float32)

    results = []
    with torch.no_grad():
        for a, b in zip(intended, opposite):
            generated: list[int] = []
            for step in range(max_new_tokens):
                scores = last_logits(a, generated) - omega * last_logits(b, generated)
                if step < min_new_tokens:
                    scores[eos_ids] = -float("inf")
                token = int(scores.argmax())
                if token in eos_ids:
                    break
                generated.append(token)
            results.append(generated)
    return results


def test_omega_zero_equals_generate_greedy(generator, prompts):
    arch, model, tokenizer = generator
    intended, _ = _pairs(prompts)
    ids = _ids(tokenizer, intended)
    assert len(set(map(len, ids))) > 3  # real padding in the batch
    ours = contrastive_decode(model, ids, None, DecodingSettings(omega=0.0, max_new_tokens=12, min_new_tokens=4),
                              _special(model, tokenizer))
    reference = _generate_reference(model, tokenizer, ids, 12, 4)
    assert ours == reference
    assert len({tuple(r) for r in ours}) > len(ours) // 2  # the outputs really depend on the prompt

    # the same through the text API, in float32 as users run it, one premise per batch
    model32 = model.to(torch.float32)
    try:
        texts = generate_texts(model32, tokenizer, intended, settings=DecodingSettings(
            omega=0.0, max_new_tokens=12, min_new_tokens=4, batch_size=3, use_chat_template=False))
        reference = _generate_reference(model32, tokenizer, ids, 12, 4)
        assert [t.text for t in texts] == tokenizer.batch_decode(reference, skip_special_tokens=True)
    finally:
        model.to(torch.float64)


@pytest.mark.parametrize("omega", [0.3, -0.2, 1.0])
def test_cached_loop_equals_naive_reference(generator, prompts, omega):
    arch, model, tokenizer = generator
    intended, opposite = _pairs(prompts)
    ids_a, ids_b = _ids(tokenizer, intended), _ids(tokenizer, opposite)
    # a second EOS id that the models do emit, so rows end at different steps and get pruned
    eos_ids = special_token_ids(model, tokenizer)[0]
    plain = contrastive_decode(model, ids_a, ids_b, DecodingSettings(omega=omega, max_new_tokens=10),
                               _special(model, tokenizer))
    frequent = max(set(t for r in plain for t in r[3:]), key=lambda t: sum(r[3:].count(t) for r in plain))
    special = dataclasses.replace(_special(model, tokenizer), eos_token_ids=eos_ids + [frequent])

    ours = contrastive_decode(model, ids_a, ids_b, DecodingSettings(omega=omega, max_new_tokens=10, min_new_tokens=2),
                              special)
    reference = _naive_contrastive(model, tokenizer, ids_a, ids_b, omega, 10, 2, eos_ids + [frequent])
    assert ours == reference
    lengths = {len(r) for r in ours}
    assert len(lengths) > 1 and min(lengths) >= 2  # per-row EOS at different steps, after min_new_tokens
    # the contrast changes the output
    assert ours != contrastive_decode(model, ids_a, None,
                                      DecodingSettings(omega=0.0, max_new_tokens=10, min_new_tokens=2), special)


def test_both_branches_receive_the_same_token(generator, prompts):
    arch, model, tokenizer = generator
    intended, opposite = _pairs(prompts)
    fed = []
    key = "decoder_input_ids" if model.config.is_encoder_decoder else "input_ids"
    handle = model.register_forward_pre_hook(lambda mod, args, kwargs: fed.append(kwargs[key].clone()),
                                             with_kwargs=True)
    try:
        contrastive_decode(model, _ids(tokenizer, intended), _ids(tokenizer, opposite),
                           DecodingSettings(omega=0.3, max_new_tokens=8, do_sample=True, temperature=1.5),
                           _special(model, tokenizer), row_seeds=list(range(len(intended))))
    finally:
        handle.remove()
    # 8 new tokens: the first from the prefill, then 7 steps. Decoder-only prefills in one call, or
    # two when prompts share a prefix (the shared prefixes, then each prompt's rest)
    steps = fed[-7:]
    assert len(fed) == 8 if model.config.is_encoder_decoder else len(fed) in (8, 9)
    for tokens in steps:
        assert tokens.shape[1] == 1 and tokens.shape[0] % 2 == 0
        intended_half, opposite_half = tokens.chunk(2)
        assert torch.equal(intended_half, opposite_half)


@pytest.mark.parametrize("do_sample", [False, True])
def test_output_does_not_depend_on_batch_mates(generator, do_sample):
    arch, model, tokenizer = generator
    premises = snli_premises(6)
    prompts = build_generation_prompts(premises, seed=3)
    kwargs = dict(omega=0.3, max_new_tokens=8, do_sample=do_sample, temperature=1.3, top_k=20, top_p=0.95,
                  seed=11, use_chat_template=False)
    together = generate_contrastive(model, tokenizer, prompts, DecodingSettings(batch_size=6, **kwargs))
    alone = [generate_contrastive(model, tokenizer, [p], DecodingSettings(batch_size=1, **kwargs))[0]
             for p in prompts[:3]]
    reordered = generate_contrastive(model, tokenizer, prompts[::-1], DecodingSettings(batch_size=4, **kwargs))[::-1]
    assert alone == together[:3]
    assert reordered == together
    assert [r.premise for r in together] == premises  # input order


def test_sampling_is_seeded_and_reproducible(generator, prompts):
    arch, model, tokenizer = generator
    kwargs = dict(omega=0.3, max_new_tokens=10, batch_size=3, do_sample=True, temperature=1.5, use_chat_template=False)
    first = generate_contrastive(model, tokenizer, prompts, DecodingSettings(seed=5, **kwargs))
    again = generate_contrastive(model, tokenizer, prompts, DecodingSettings(seed=5, **kwargs))
    other = generate_contrastive(model, tokenizer, prompts, DecodingSettings(seed=6, **kwargs))
    greedy = generate_contrastive(model, tokenizer, prompts,
                                  DecodingSettings(omega=0.3, max_new_tokens=10, batch_size=3, use_chat_template=False))
    assert first == again
    raw = lambda rows: [(r.entailment_raw, r.contradiction_raw) for r in rows]  # noqa: E731
    assert raw(first) != raw(other)
    assert raw(first) != raw(greedy)


def test_token_selector_samples_the_softmax_distribution():
    torch.manual_seed(0)
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0, -float("inf")]]).repeat(4000, 1)
    selector = TokenSelector(True, row_seeds=list(range(4000)))
    tokens = selector(logits, torch.arange(4000))
    freq = torch.bincount(tokens, minlength=5).double() / 4000
    expected = torch.softmax(logits[0].double(), -1)
    assert freq[4] == 0  # a masked token is never drawn
    assert torch.allclose(freq, expected, atol=0.03)
    # rows are independent of order: row 7's draw is the same when drawn alone
    again = TokenSelector(True, row_seeds=list(range(4000)))
    assert again(logits[:1], torch.tensor([7])).item() == tokens[7].item()
    # warpers compose: top_k=2 keeps only the two best tokens
    warping = DecodingSettings(do_sample=True, temperature=0.5, top_k=2)
    warped = build_logits_processors(warping, [4])(None, logits.clone())
    assert set(TokenSelector(True, list(range(4000)))(warped, torch.arange(4000)).tolist()) == {0, 1}


def test_contrastive_processor_formula():
    scores = torch.tensor([[1.0, 2.0], [3.0, 5.0], [0.5, -1.0], [2.0, 2.0]])  # [intended (2 rows); opposite]
    assert torch.equal(ContrastiveLogitsProcessor(0.3)(None, scores), scores[:2] - 0.3 * scores[2:])
    assert torch.equal(ContrastiveLogitsProcessor(0.0)(None, scores), scores[:2])
    with pytest.raises(ValueError, match="even number of rows"):
        ContrastiveLogitsProcessor(0.3)(None, scores[:3])


def test_length_buckets():
    lengths = [3, 9, 1, 9, 5]
    batches = length_buckets(lengths, 2)
    assert batches == [[1, 3], [4, 0], [2]]
    with pytest.raises(ValueError):
        length_buckets(lengths, 0)


def test_generate_contrastive_rows_prompts_and_progress(generator, prompts):
    arch, model, tokenizer = generator
    calls = []
    rows = generate_contrastive(model, tokenizer, prompts,
                                DecodingSettings(omega=0.3, max_new_tokens=6, batch_size=4, use_chat_template=False),
                                progress=lambda done, total: calls.append((done, total)))
    assert calls == [(0, 6), (4, 6), (6, 6)]
    for row, p in zip(rows, prompts):
        assert row.premise == p.premise
        assert (row.entailment_prompt, row.contradiction_prompt) == (p.entailment_prompt, p.contradiction_prompt)
        assert row.entailment_prompt_id == p.entailment_prompt_id
        assert row.entailment == clean_generation(row.entailment_raw, p.premise).text
        assert row.entailment_raw and row.contradiction_raw
    assert set(rows[0].as_dict()) >= {"premise", "entailment", "contradiction", "entailment_prompt",
                                      "contradiction_prompt", "reject_reason"}
    counts = reject_counts(rows)
    assert counts["kept"] + counts["rejected"] == len(rows)


def test_chat_template_is_applied_when_present(prompts):
    texts = [t for p in prompts for t in (p.entailment_prompt, p.contradiction_prompt)]
    model, tokenizer = tiny_generator("llama", texts, chat_template=True)
    rows = generate_contrastive(model, tokenizer, prompts[:2], DecodingSettings(max_new_tokens=4))
    assert rows[0].entailment_prompt == f"<s>[INST] {prompts[0].entailment_prompt} [/INST]"
    plain = generate_contrastive(model, tokenizer, prompts[:2],
                                 DecodingSettings(max_new_tokens=4, use_chat_template=False))
    assert plain[0].entailment_prompt == prompts[0].entailment_prompt
    assert [r.entailment_raw for r in rows] != [r.entailment_raw for r in plain]


def test_stop_strings_end_and_cut(generator, prompts):
    arch, model, tokenizer = generator
    intended, _ = _pairs(prompts)
    plain = DecodingSettings(omega=0.0, max_new_tokens=10, min_new_tokens=10, use_chat_template=False)
    full = generate_texts(model, tokenizer, intended, settings=plain)
    word = full[0].text.split()[2]  # a word the model writes at its third step
    cut = generate_texts(model, tokenizer, intended, settings=dataclasses.replace(plain, stop_strings=[word]))
    assert cut[0].finished and cut[0].num_tokens <= 3 < full[0].num_tokens  # stopped early, stop token kept
    for a, b in zip(full, cut):
        assert b.text == a.text.split(word, 1)[0]


def test_load_generator_roundtrip(tmp_path, generator, prompts):
    arch, model, tokenizer = generator
    model.to(torch.float32).save_pretrained(tmp_path)
    model.to(torch.float64)
    tokenizer.save_pretrained(tmp_path)
    loaded, loaded_tokenizer = load_generator(tmp_path, dtype="float32")
    assert type(loaded) is type(model) and not loaded.training
    assert loaded.dtype == torch.float32
    settings = DecodingSettings(omega=0.3, max_new_tokens=6, use_chat_template=False)
    assert (generate_contrastive(loaded, loaded_tokenizer, prompts[:2], settings)
            == generate_contrastive(model.to(torch.float32), tokenizer, prompts[:2], settings))
    model.to(torch.float64)
    bf16, _ = load_generator(tmp_path, dtype="bf16")
    assert bf16.dtype == torch.bfloat16
    rows = generate_contrastive(bf16, loaded_tokenizer, prompts[:2], settings)
    assert len(rows) == 2
    with pytest.raises(ValueError, match="unknown dtype"):
        load_generator(tmp_path, dtype="int3")


def test_fingerprint(tmp_path):
    base = generation_fingerprint("google/flan-t5-xl", "main")
    json.dumps(base)
    assert base["omega"] == 0.3 and base["prompt_set"] == "syncse-pool" and base["temperature"] is None
    # greedy ignores it
    assert generation_fingerprint("google/flan-t5-xl", "main", DecodingSettings(temperature=0.5)) == base
    for change in [dict(omega=0.2), dict(max_new_tokens=32), dict(seed=1), dict(do_sample=True),
                   dict(use_chat_template=False)]:
        assert generation_fingerprint("google/flan-t5-xl", "main", DecodingSettings(**change)) != base, change
    for change in [dict(prompt_set="official-2shot"), dict(template="{instruction}: {premise}"), dict(dtype="bf16")]:
        assert generation_fingerprint("google/flan-t5-xl", "main", **change) != base, change
    assert generation_fingerprint("google/flan-t5-xl", "other") != base
    prompt_file = tmp_path / "p.yaml"
    prompt_file.write_text("entailment: [A]\ncontradiction: [B]\n", encoding="utf-8")
    first = generation_fingerprint("m", prompt_file=prompt_file)
    prompt_file.write_text("entailment: [A2]\ncontradiction: [B]\n", encoding="utf-8")
    assert generation_fingerprint("m", prompt_file=prompt_file)["prompt_set_sha256"] != first["prompt_set_sha256"]
    with pytest.raises(ValueError, match="top_p"):
        generation_fingerprint("m", None, DecodingSettings(do_sample=True, top_p=0.0))


def test_decoding_settings_fingerprint_is_its_fields():
    settings = DecodingSettings(omega=0, max_new_tokens=32, do_sample=True, temperature=0.7)
    fields = {f.name for f in dataclasses.fields(DecodingSettings)}
    # every field but those that do not change a premise's output, in one type whatever was passed
    assert set(settings.fingerprint()) == fields - {"batch_size", "stop_strings"}
    assert settings.fingerprint()["omega"] == 0.0 and isinstance(settings.fingerprint()["omega"], float)
    assert dataclasses.replace(settings, batch_size=3).fingerprint() == settings.fingerprint()
    assert dataclasses.replace(settings, top_p=0.5).fingerprint() != settings.fingerprint()
    # omega is checked by the processor that applies it, when the settings are built
    with pytest.raises(ValueError, match="omega must be a number"):
        DecodingSettings(omega=float("nan"))
    with pytest.raises(ValueError, match="omega must be a number"):
        ContrastiveLogitsProcessor("0.3")


@pytest.mark.parametrize(
    "text, cleaned, reason",
    [
        ('  "A dog runs in the park."  ', "A dog runs in the park.", None),
        ("'They have no information at all.'", "They have no information at all.", None),
        ("No one is here.'", "No one is here.", None),
        ("the players'", "the players'", None),
        ("A   man\nsleeps", "A man sleeps", None),
        ('""', "", "empty"),
        ("   ", "", "empty"),
        ("a MAN is sleeping", "a MAN is sleeping", "copy_of_premise"),
        ('"A man is sleeping."', "A man is sleeping.", "copy_of_premise"),
    ],
)
def test_clean_generation(text, cleaned, reason):
    result = clean_generation(text, "A man is sleeping.")
    assert (result.text, result.reject_reason) == (cleaned, reason)


def test_bad_arguments(generator, prompts):
    arch, model, tokenizer = generator
    with pytest.raises(ValueError, match="max_new_tokens"):
        generate_contrastive(model, tokenizer, prompts, DecodingSettings(max_new_tokens=0))
    with pytest.raises(ValueError, match="temperature"):
        generate_contrastive(model, tokenizer, prompts, DecodingSettings(do_sample=True, temperature=0))
    with pytest.raises(ValueError, match="opposite"):
        generate_texts(model, tokenizer, ["a"], settings=DecodingSettings(omega=0.3))


def test_shared_prefix_lengths():
    from multicsr_core.generation.decoding import shared_prefix_lengths

    base = list(range(100, 130))
    prompts = [base[:20] + [1, 2, 3], base[:20] + [4, 5], base[:12] + [6, 7, 8], [9] * 15,
               base[:20] + [1, 2, 3, 4], base[:5] + [7]]
    # the longest prefix shared with any other prompt, leaving one token of its own; under 8 -> none
    assert shared_prefix_lengths(prompts) == [22, 20, 12, 0, 23, 0]
    assert shared_prefix_lengths(prompts, min_length=4) == [22, 20, 12, 0, 23, 5]
    # shared by at least three prompts: base[:20] (three prompts), base[:12] (four)
    assert shared_prefix_lengths(prompts, min_prompts=3) == [20, 20, 12, 0, 20, 0]
    assert shared_prefix_lengths(prompts, min_prompts=4) == [12, 12, 12, 0, 12, 0]
    assert shared_prefix_lengths(prompts, min_prompts=5) == [0, 0, 0, 0, 0, 0]


def test_shared_prefix_lengths_are_the_longest_prefix_that_enough_prompts_start_with():
    """Against the definition, counted by brute force on random prompts with common heads."""
    import random

    from multicsr_core.generation.decoding import shared_prefix_lengths

    def by_definition(prompts, min_length, min_prompts):
        out = []
        for p in prompts:
            n = max((n for n in range(len(p) + 1)
                     if sum(tuple(q[:n]) == tuple(p[:n]) for q in prompts) >= max(min_prompts, 2)), default=0)
            out.append(min(n, len(p) - 1) if n >= min_length else 0)
        return out

    rng = random.Random(1)
    for _ in range(200):
        heads = [[rng.randrange(5) for _ in range(rng.randrange(1, 20))] for _ in range(4)]
        prompts = [rng.choice(heads) + [rng.randrange(3) for _ in range(rng.randrange(1, 12))]
                   for _ in range(rng.randrange(0, 30))]
        for min_prompts in (2, 3, 7, 40):
            for min_length in (1, 8):
                assert (shared_prefix_lengths(prompts, min_length, min_prompts)
                        == by_definition(prompts, min_length, min_prompts))


def test_cheapest_prefix_lengths_weigh_a_deeper_prefix_against_how_many_share_it():
    from multicsr_core.generation.decoding import cheapest_prefix_lengths

    header = list(range(100, 160))  # a 60-token instruction every prompt starts with
    deeper = [header + [7, 8, 9] + [i] for i in range(3)]  # three prompts go on alike for 3 tokens
    others = [header + [200 + i, 1] for i in range(13)]
    # computing the 63-token prefix of three prompts costs 63 slots and saves them 3 each: not worth it
    assert cheapest_prefix_lengths(deeper + others) == [60] * 16
    # shared by 16 prompts it saves 48: still not
    many = [header + [7, 8, 9] + [i] for i in range(16)]
    assert cheapest_prefix_lengths(many + others) == [60] * 29
    # a long common continuation is worth its own prefix for the prompts that share it
    long_tail = [header + list(range(300, 340)) + [i] for i in range(8)]
    assert cheapest_prefix_lengths(long_tail + others) == [100] * 8 + [60] * 13


def _prefix_prompts(model):
    vocab = model.config.vocab_size
    g = torch.Generator().manual_seed(3)
    base = torch.randint(5, vocab, (30,), generator=g).tolist()
    other = lambda n: torch.randint(5, vocab, (n,), generator=g).tolist()  # noqa: E731
    intended = [base[:20] + other(3), base[:20] + other(7), base[:12] + other(9), other(14), base[:25], base[:24]]
    opposite = [base[:12] + other(5), other(11), base[:20] + other(2), base[:20] + other(3), other(6), base[:25]]
    return intended, opposite


@pytest.mark.parametrize("generator", ["llama", "gpt2"], indirect=True)  # T5's encoder sees whole prompts
@pytest.mark.parametrize("omega", [0.0, 0.3])
def test_prompts_sharing_prefixes_of_several_lengths_equal_the_naive_reference(generator, omega):
    """Shared prefixes run once and each prompt's rest on top ([pad][prefix][pad][rest]): the tokens
    are those of each prompt decoded alone, unpadded, recomputed from scratch."""
    calls = []
    arch, model, tokenizer = generator
    handle = model.register_forward_pre_hook(lambda mod, args, kwargs: calls.append(kwargs["input_ids"].shape),
                                             with_kwargs=True)
    intended, opposite = _prefix_prompts(model)
    eos = special_token_ids(model, tokenizer)[0]
    try:
        ours = contrastive_decode(model, intended, opposite if omega else None,
                                  DecodingSettings(omega=omega, max_new_tokens=8), _special(model, tokenizer))
    finally:
        handle.remove()
    # two prefill calls (prefixes, then rests), each narrower than the longest prompt, then steps of one token
    longest = max(map(len, intended + (opposite if omega else [])))
    assert calls[1][1] > 1 and calls[0][1] < longest and calls[1][1] < longest and calls[2][1] == 1
    reference = _naive_contrastive(model, tokenizer, intended, opposite, omega, 8, 0, eos)
    assert ours == reference
    assert len({tuple(r) for r in ours}) > 3


@pytest.mark.parametrize("generator", ["llama"], indirect=True)
def test_a_call_wide_prefix_cache_serves_every_batch_and_frees_each_prefix_after_its_last_prompt(generator):
    """Stage 1 computes the prefixes many prompts share once for the whole call: batches after the first
    prefill only their prompts' rests, the tokens stay those of each prompt decoded alone, and a prefix's
    keys and values are dropped once every prompt starting with it has been prefilled."""
    from multicsr_core.generation.decoding import SharedPrefixCache

    arch, model, tokenizer = generator
    intended, opposite = _prefix_prompts(model)
    special, settings = _special(model, tokenizer), DecodingSettings(omega=0.3, max_new_tokens=8)
    prefixes = SharedPrefixCache(model, intended + opposite, special.pad_token_id, settings.max_new_tokens)
    # base[:20] starts five distinct prompts, base[:12] eight, base[:24] two (cheapest: base[:20])
    assert sorted(set(prefixes.prefix_length.values())) == [12, 20]
    calls = []
    handle = model.register_forward_pre_hook(lambda mod, args, kwargs: calls.append(kwargs["input_ids"].shape),
                                             with_kwargs=True)
    ours = []
    try:
        for batch in ([0, 1, 2], [3, 4, 5]):
            ours += contrastive_decode(model, [intended[i] for i in batch], [opposite[i] for i in batch], settings,
                                       special, prefixes=prefixes)
            if batch[0] == 0:
                first_batch_calls = len(calls)
    finally:
        handle.remove()
    eos = special_token_ids(model, tokenizer)[0]
    assert ours == _naive_contrastive(model, tokenizer, intended, opposite, 0.3, 8, 0, eos)
    # the first batch ran the prefixes' forward, then its rests; the second only its rests
    prefills = [shape for shape in calls if shape[1] > 1]
    assert len([s for s in calls[:first_batch_calls] if s[1] > 1]) == 2 and len(prefills) == 3
    assert prefixes._layers == {}  # every prefix freed after its last prompt


def test_a_sliding_window_model_whose_prompts_reach_the_window_prefills_whole_prompts():
    """A sliding window counts cache slots: the pads between a shared prefix and a prompt's rest would
    hide keys the unpadded prompt still sees. Where prompt and new tokens can reach the window, the
    prompts are prefilled whole (left padding only), and the tokens equal each prompt decoded alone."""
    from transformers import MistralConfig, MistralForCausalLM

    from multicsr_core.generation.decoding import SharedPrefixCache
    from tiny_generators import scrambled

    torch.manual_seed(0)
    config = MistralConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                           num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                           sliding_window=16, bos_token_id=3, eos_token_id=1, pad_token_id=0)
    model = scrambled(MistralForCausalLM(config), gain=2.0).to(torch.float64).eval()
    g = torch.Generator().manual_seed(5)
    base = torch.randint(5, 64, (12,), generator=g).tolist()
    other = lambda n: torch.randint(5, 64, (n,), generator=g).tolist()  # noqa: E731
    intended = [base + other(3), base + other(1), other(6)]
    opposite = [base + other(1), other(2), base + other(4)]
    special = SpecialTokens([1], 0)
    # 12 prefix slots + up to 6 rest slots + 6 new tokens reach the 16-slot window: no prefix is shared
    assert SharedPrefixCache(model, intended + opposite, 0, new_tokens=6).prefix_length == {}
    # under a 32-slot window the same prompts share their prefix
    wider = MistralForCausalLM(MistralConfig(**{**config.to_dict(), "sliding_window": 32}))
    assert set(SharedPrefixCache(wider, intended + opposite, 0, new_tokens=6).prefix_length.values()) == {12}
    ours = contrastive_decode(model, intended, opposite, DecodingSettings(omega=0.3, max_new_tokens=6), special)
    assert ours == _naive_contrastive(model, None, intended, opposite, 0.3, 6, 0, [1])
