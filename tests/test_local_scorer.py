"""The local one-forward scorer on tiny random T5 and Llama models with offline tokenizers.

No generative LLM exists offline, so the models are built from configs (tests/tiny_llm.py); the
premise/hypothesis pairs are real SNLI rows from ../shared/data.
"""

import csv
import functools

import pytest
import torch

from multicsr_core.config import default_data_root
from multicsr_core.llm.cache import FAILED, ResponseCache
from multicsr_core.curation import curate_table, curation_funnel
from multicsr_core.io.corpus import corpus_table
from multicsr_core.llm.local import LocalLM, candidate_token_ids
from multicsr_core.prompts import format_scoring_prompt
from multicsr_core.scoring.apply import score_corpus, scoring_outcomes
from multicsr_core.scoring.base import UNPARSABLE, PairScorer
from multicsr_core.scoring.llm import ClaifScorer, LocalLLMScorer, distribution_to_score
from multicsr_core.scoring.parsing import parse_official_score
from tests.openai_server import expected_score
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from tests.tiny_llm import (
    LLAMA_CHAT_TEMPLATE,
    char_tokenizer,
    t5_style_tokenizer,
    teach_t5_to_answer,
    tiny_llama,
    tiny_t5,
    word_tokenizer,
    word_vocab,
)

SNLI = default_data_root() / "nli" / "snli_devtest_for_simcse.csv"
SCORES = list("012345")


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Tiny models gain nothing from intra-op threads, and on a shared 2-core box two spinning
    threads per op made these tests 50x slower (90 s against 1.6 s for the same training)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def pairs():
    with open(SNLI, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))[:16]
    premises = [row["sent0"] for row in rows]
    hypotheses = [row["sent1"] if i % 2 else row["hard_neg"] for i, row in enumerate(rows)]
    return premises, hypotheses


@pytest.fixture(scope="module")
def prompts(pairs):
    return [format_scoring_prompt(p, h) for p, h in zip(*pairs)]


@pytest.fixture(scope="module")
def texts(pairs):
    return [p + " " + h for p, h in zip(*pairs)]


@pytest.fixture(scope="module")
def t5_scorer_model(texts, prompts):
    """A tiny T5 taught the answer format, so greedy generate replies with one digit."""
    tokenizer = word_tokenizer(texts)
    model = teach_t5_to_answer(tiny_t5(len(tokenizer)), tokenizer, prompts,
                               [str(expected_score(p)) for p in prompts], steps=30, lr=1e-2)
    return model, tokenizer


def reference_first_step_probs(model, tokenizer, prompt, chat=False):
    """Independent reference: generate() one token for ONE prompt (no padding) and take its logits."""
    text = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                         add_generation_prompt=True) if chat else prompt
    batch = tokenizer([text], return_tensors="pt", add_special_tokens=not chat)
    out = model.generate(**batch, max_new_tokens=1, do_sample=False, output_logits=True,
                         return_dict_in_generate=True, pad_token_id=tokenizer.pad_token_id)
    probs = torch.softmax(out.logits[0][0].float(), -1)
    ids = [tokenizer.convert_tokens_to_ids(s) for s in SCORES]
    restricted = probs[ids]
    return {s: float(p) for s, p in zip(SCORES, restricted / restricted.sum())}, float(restricted.sum())


def test_t5_one_forward_matches_first_generate_step(texts, prompts, tmp_path):
    tokenizer = word_tokenizer(texts)
    model = tiny_t5(len(tokenizer), seed=1)
    lm = LocalLM(model, tokenizer, name="tiny-t5", batch_size=5, cache=ResponseCache(tmp_path / "c.sqlite"))
    results = lm.next_token_distribution(prompts, SCORES)
    for prompt, result in zip(prompts, results):
        expected, mass = reference_first_step_probs(model, tokenizer, prompt)
        assert result.distribution == pytest.approx(expected, abs=1e-5)
        assert result.mass == pytest.approx(mass, abs=1e-6)


@pytest.mark.parametrize("chat", [False, True])
def test_llama_left_padding_matches_unpadded_prompts(texts, prompts, tmp_path, chat):
    tokenizer = word_tokenizer(texts, bos=True)
    if chat:
        tokenizer.chat_template = LLAMA_CHAT_TEMPLATE
    model = tiny_llama(len(tokenizer), seed=2)
    lm = LocalLM(model, tokenizer, name="tiny-llama", batch_size=8, cache=ResponseCache(tmp_path / "c.sqlite"))
    assert lm.use_chat_template is chat
    # prompts of different lengths in one batch: the short ones are left-padded
    lengths = {len(tokenizer(p).input_ids) for p in prompts[:8]}
    assert len(lengths) > 1
    results = lm.next_token_distribution(prompts, SCORES)
    for prompt, result in zip(prompts, results):
        expected, _ = reference_first_step_probs(model, tokenizer, prompt, chat=chat)
        assert result.distribution == pytest.approx(expected, abs=1e-5)


def test_argmax_agrees_with_generate_and_parse(t5_scorer_model, pairs, tmp_path):
    model, tokenizer = t5_scorer_model
    cache = ResponseCache(tmp_path / "c.sqlite")
    lm = LocalLM(model, tokenizer, name="taught-t5", batch_size=6, cache=cache)
    one_forward = LocalLLMScorer(lm).score_pairs(*pairs)
    generated = LocalLLMScorer(lm, mode="generate").score_pairs(*pairs)
    parsed = [(a, b) for a, b in zip(one_forward, generated) if b.score is not None]
    assert len(parsed) >= len(pairs[0]) // 2  # the taught model answers with a digit
    assert all(a.score == b.score for a, b in parsed)
    assert len({a.score for a in one_forward}) > 1  # not one constant answer
    expected = LocalLLMScorer(lm, mode="expected").score_pairs(*pairs)
    for a, e in zip(one_forward, expected):
        assert e.score == pytest.approx(sum(int(k) * p for k, p in a.distribution.items()))
        assert e.distribution == a.distribution
    assert isinstance(LocalLLMScorer(lm), PairScorer)


def count_forwards(model):
    calls = []
    model.register_forward_hook(lambda *args: calls.append(1))
    return calls


def test_cache_answers_reruns_without_a_forward(texts, pairs, tmp_path):
    tokenizer = word_tokenizer(texts)
    model = tiny_t5(len(tokenizer), seed=3)
    calls = count_forwards(model)
    path = tmp_path / "c.sqlite"
    first = LocalLLMScorer(LocalLM(model, tokenizer, name="tiny-t5", batch_size=4, cache=ResponseCache(path)))
    scores = first.score_pairs(*pairs)
    assert len(calls) == 4  # 16 pairs in batches of 4: one forward each
    calls.clear()
    again = LocalLLMScorer(LocalLM(model, tokenizer, name="tiny-t5", cache=ResponseCache(path))).score_pairs(*pairs)
    assert calls == [] and [s.score for s in again] == [s.score for s in scores]
    assert [s.distribution for s in again] == [s.distribution for s in scores]
    # the mode is part of the key: generate is a different item, computed afresh
    LocalLLMScorer(LocalLM(model, tokenizer, name="tiny-t5", cache=ResponseCache(path)), mode="generate").score_pairs(*pairs)
    assert calls
    # so is the model name: another model's answers are never reused
    calls.clear()
    LocalLLMScorer(LocalLM(model, tokenizer, name="other", batch_size=16, cache=ResponseCache(path))).score_pairs(*pairs)
    assert len(calls) == 1


def test_low_mass_is_an_unparsable_verdict_cached_and_not_recomputed(texts, pairs, tmp_path):
    tokenizer = word_tokenizer(texts)
    model = tiny_t5(len(tokenizer), seed=4)  # random: the score tokens hold ~6/vocab of the mass
    cache = ResponseCache(tmp_path / "c.sqlite")
    scorer = LocalLLMScorer(LocalLM(model, tokenizer, name="tiny-t5", cache=cache), min_score_mass=0.5)
    scores = scorer.score_pairs(*pairs)
    assert all(s.unparsable and not s.failed and s.error.startswith(UNPARSABLE) for s in scores)
    assert all(s.distribution and 0 < s.mass < 0.5 for s in scores)
    assert cache.counts() == {"ok": len(pairs[0]), FAILED: 0}  # an answer, stored as one
    calls = count_forwards(model)
    again = scorer.score_pairs(*pairs)
    assert calls == [] and [s.mass for s in again] == [s.mass for s in scores]  # never computed again
    # the threshold is applied to the cached mass: a lower one scores the same answers, no forward
    lower = LocalLLMScorer(LocalLM(model, tokenizer, name="tiny-t5", cache=cache), min_score_mass=0.0)
    rescored = lower.score_pairs(*pairs)
    assert calls == [] and all(s.ok and s.mass == t.mass for s, t in zip(rescored, scores))
    assert [s.score for s in rescored] == [distribution_to_score(t.distribution) for t in scores]


def test_score_corpus_writes_mass_and_curation_rejects_unparsable(texts, pairs, tmp_path):
    tokenizer = word_tokenizer(texts)
    model = tiny_t5(len(tokenizer), seed=4)
    premises, hypotheses = pairs
    table = corpus_table({"premise": premises[:4], "entailment": hypotheses[:4], "contradiction": hypotheses[4:8]})
    lm = LocalLM(model, tokenizer, name="tiny-t5", cache=ResponseCache(tmp_path / "c.sqlite"))
    masses = [r.mass for r in lm.next_token_distribution(
        [format_scoring_prompt(p, h) for p, h in zip(premises[:4] * 2, hypotheses[:8])], SCORES)]
    threshold = sorted(masses)[3] + 1e-9  # 4 of the 8 pairs fall below it
    scored = score_corpus(table, LocalLLMScorer(lm, min_score_mass=threshold))
    got = scored.column("entailment_score_mass").to_pylist() + scored.column("contradiction_score_mass").to_pylist()
    assert got == pytest.approx(masses)
    for side in ("entailment", "contradiction"):
        for mass, score, error in zip(*(scored.column(f"{side}_{c}").to_pylist() for c in ("score_mass", "score", "score_error"))):
            assert (score is None) == (mass < threshold) == (error is not None and error.startswith(UNPARSABLE))
    assert scoring_outcomes(scored)["failed"] == 0 and scoring_outcomes(scored)["unparsable"] == 4
    curated = curate_table(scored)
    for row in curated.to_pylist():
        if row["entailment_score"] is None or row["contradiction_score"] is None:
            assert row["reject_reason"] == UNPARSABLE and row["kept"] is False
    assert curation_funnel(curated).get(f"rejected:{UNPARSABLE}", 0) == sum(
        r["entailment_score"] is None or r["contradiction_score"] is None for r in curated.to_pylist()) > 0


def test_score_token_spellings_of_a_t5_style_tokenizer(texts, prompts, tmp_path):
    """SentencePiece has '▁3' (what T5 decodes first) and the bare piece '3': both spell 3, and
    the mass is the probability of all twelve tokens."""
    tokenizer = t5_style_tokenizer(texts)
    spellings = candidate_token_ids(tokenizer, SCORES)
    for digit, ids in spellings.items():
        assert sorted(tokenizer.convert_ids_to_tokens(ids)) == sorted([digit, "\u2581" + digit])
    model = tiny_t5(len(tokenizer), seed=8)
    lm = LocalLM(model, tokenizer, name="t5-style", cache=ResponseCache(tmp_path / "c.sqlite"))
    result = lm.next_token_distribution(prompts[:2], SCORES)[0]
    batch = tokenizer([prompts[0]], return_tensors="pt")
    out = model.generate(**batch, max_new_tokens=1, do_sample=False, output_logits=True, return_dict_in_generate=True)
    probs = torch.softmax(out.logits[0][0].float(), -1)
    per_digit = {d: float(probs[ids].sum()) for d, ids in spellings.items()}
    assert result.mass == pytest.approx(sum(per_digit.values()), abs=1e-6)
    assert result.distribution == pytest.approx({d: p / result.mass for d, p in per_digit.items()}, abs=1e-5)


def test_score_token_spellings_of_a_character_tokenizer(texts):
    tokenizer = char_tokenizer(texts)  # '3' encodes as '▁' + '3'; the bare piece '3' decodes to '3'
    assert tokenizer.tokenize("3") == ["\u2581", "3"]
    spellings = candidate_token_ids(tokenizer, SCORES)
    assert {d: tokenizer.convert_ids_to_tokens(ids) for d, ids in spellings.items()} == {d: [d] for d in SCORES}


def test_scores_without_a_single_token_fall_back_to_generate_and_parse(texts, pairs, tmp_path, caplog):
    vocab = {token: i for i, token in enumerate(t for t in word_vocab(texts) if t != "4")}  # no token spells 4
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")
    model = tiny_t5(len(tokenizer), seed=5)
    lm = LocalLM(model, tokenizer, name="no-4-t5", cache=ResponseCache(tmp_path / "c.sqlite"))
    assert lm.candidate_token_ids(SCORES) is None
    with pytest.raises(ValueError, match="single token"):
        lm.next_token_distribution(["x"], SCORES)
    scorer = LocalLLMScorer(lm)
    assert scorer.mode == "generate" and scorer.fingerprint()["mode"] == "generate"
    assert "not single tokens" in caplog.text
    scores = scorer.score_pairs(*pairs)
    replies = [r.text for r in lm.generate([format_scoring_prompt(p, h) for p, h in zip(*pairs)], max_new_tokens=8)]
    for score, reply in zip(scores, replies):
        assert score.raw == reply
        assert score.score == parse_official_score(reply)
        assert score.unparsable == (score.score is None) and not score.failed


def test_generate_mode_unparsable_replies_are_cached_verdicts(texts, pairs, tmp_path):
    tokenizer = word_tokenizer(texts)
    model = tiny_t5(len(tokenizer), seed=9)  # untaught: it replies with words, not a digit
    cache = ResponseCache(tmp_path / "c.sqlite")
    scorer = LocalLLMScorer(LocalLM(model, tokenizer, name="tiny-t5", cache=cache), mode="generate")
    scores = scorer.score_pairs(*pairs)
    prose = [s for s in scores if s.score is None]
    assert prose and all(s.unparsable and s.raw is not None and repr(s.raw.strip()[:20])[1:-1] in s.error for s in prose)
    assert cache.counts()[FAILED] == 0
    calls = count_forwards(model)
    assert [s.raw for s in scorer.score_pairs(*pairs)] == [s.raw for s in scores] and calls == []


def test_claif_scorer_with_a_local_model(texts, tmp_path):
    tokenizer = word_tokenizer(texts)
    model = tiny_t5(len(tokenizer), seed=6)
    scorer = ClaifScorer(LocalLM(model, tokenizer, name="tiny-t5", cache=ResponseCache(tmp_path / "c.sqlite")))
    scores = scorer.score_pairs(["a man sleeps"], ["a woman runs"])
    assert scores[0].raw is not None
    assert (scores[0].score is None) == (scores[0].error is not None)
    assert scores[0].ok or scores[0].unparsable  # a reply without a number in [0, 1] is a verdict


def test_from_pretrained_loads_a_saved_folder(texts, prompts, tmp_path):
    tokenizer = word_tokenizer(texts, bos=True)
    model = tiny_llama(len(tokenizer), seed=7)
    model.save_pretrained(tmp_path / "model")
    tokenizer.save_pretrained(tmp_path / "model")
    lm = LocalLM.from_pretrained(str(tmp_path / "model"), cache=ResponseCache(tmp_path / "c.sqlite"), batch_size=4)
    assert not lm.is_seq2seq and lm.fingerprint()["dtype"] == "float32"
    direct = LocalLM(model, tokenizer, name="direct").next_token_distribution(prompts[:4], SCORES)
    loaded = lm.next_token_distribution(prompts[:4], SCORES)
    for a, b in zip(direct, loaded):
        assert a.distribution == pytest.approx(b.distribution, abs=1e-6)


def test_bad_arguments_are_rejected(texts):
    tokenizer = word_tokenizer(texts)
    model = tiny_t5(len(tokenizer))
    with pytest.raises(ValueError, match="batch_size"):
        LocalLM(model, tokenizer, name="t5", batch_size=0)
    with pytest.raises(ValueError, match="chat template"):
        LocalLM(model, tokenizer, name="t5", use_chat_template=True)
    lm = LocalLM(model, tokenizer, name="t5")
    with pytest.raises(ValueError, match="mode"):
        LocalLLMScorer(lm, mode="sample")
    with pytest.raises(ValueError, match="premises"):
        LocalLLMScorer(lm).score_pairs(["a"], [])


# -- the real SmolLM2-135M-Instruct (bundled GGUF, converted once per machine) -------------------


@pytest.fixture(scope="module")
def smollm2():
    from multicsr_core.models import resolve_model_ref

    return resolve_model_ref("bundled:smollm2-135m-instruct")


@functools.lru_cache(maxsize=1)
def _plain_hf_model(folder: str):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(folder).eval(), AutoTokenizer.from_pretrained(folder)


def reference_digit_mass(folder: str, prompt: str) -> float:
    """Independent of LocalLM: one unpadded prompt in SmolLM2's chat template, softmax of the last
    position, summed over the vocabulary entries "0".."5" (SmolLM2's only single-token digits)."""
    model, tokenizer = _plain_hf_model(folder)
    text = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True)
    batch = tokenizer(text, return_tensors="pt", add_special_tokens=False)
    with torch.inference_mode():
        probs = torch.softmax(model(**batch).logits[0, -1].float(), -1)
    return float(probs[[tokenizer.convert_tokens_to_ids(d) for d in SCORES]].sum())


@pytest.mark.slow
def test_real_smollm2_prose_and_low_mass_are_rejected_cached_verdicts_and_exit_zero(smollm2, tmp_path):
    """SmolLM2 answers the zero-shot prompt with prose: with one forward its digits hold a few
    percent of the probability (below min_score_mass), with generate its reply does not parse.
    Both runs exit 0, store the mass / the reply, curate to unparsable_score, and a second run
    computes nothing."""
    from typer.testing import CliRunner

    from multicsr.cli import app
    import pyarrow.parquet as pq

    from multicsr_core.config import ScoringConfig

    with open(SNLI, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))[:2]
    corpus = tmp_path / "triplets.csv"
    corpus.write_text("sent0,sent1,hard_neg\n" + "".join(
        f'"{r["sent0"]}","{r["sent1"]}","{r["hard_neg"]}"\n' for r in rows), encoding="utf-8")
    workdir = tmp_path / "w"
    runner = CliRunner()

    def score(out, *extra):
        result = runner.invoke(app, ["score", "--corpus", str(corpus), "--scorer", "local", "--llm",
                                     "bundled:smollm2-135m-instruct", "--workdir", str(workdir), "--out", str(out),
                                     *extra])
        assert result.exit_code == 0, result.output
        return pq.read_table(out).to_pylist()

    threshold = ScoringConfig().min_score_mass
    one_forward = score(tmp_path / "a.parquet")
    cache = ResponseCache(workdir / "llm" / "responses.sqlite")
    assert cache.counts() == {"ok": 4, FAILED: 0}
    for row in one_forward:
        for side in ("entailment", "contradiction"):
            mass = row[f"{side}_score_mass"]
            assert mass == pytest.approx(reference_digit_mass(smollm2, format_scoring_prompt(row["premise"], row[side])),
                                         abs=1e-4)
            assert mass < threshold  # SmolLM2 was going to write prose
            assert row[f"{side}_score"] is None and row[f"{side}_score_error"].startswith(UNPARSABLE)
    assert score(tmp_path / "a2.parquet") == one_forward and cache.counts() == {"ok": 4, FAILED: 0}

    # a floor of 0 reads the argmax from the cached distributions: no new forward, every pair scored
    floor0 = score(tmp_path / "b.parquet", "--set", "scoring.min_score_mass=0")
    assert cache.counts() == {"ok": 4, FAILED: 0}
    assert all(r[f"{s}_score"] in (0, 1, 2, 3, 4, 5) for r in floor0 for s in ("entailment", "contradiction"))
    assert [r["entailment_score_mass"] for r in floor0] == [r["entailment_score_mass"] for r in one_forward]

    generated = score(tmp_path / "c.parquet", "--mode", "generate")
    assert cache.counts() == {"ok": 8, FAILED: 0}  # the replies are answers, cached as such
    for row in generated:
        for side in ("entailment", "contradiction"):
            reply = row[f"{side}_reply"]
            assert reply and parse_official_score(reply) is None  # prose
            assert row[f"{side}_score"] is None and row[f"{side}_score_error"].startswith(UNPARSABLE)
            assert row[f"{side}_score_mass"] is None
    curated = runner.invoke(app, ["curate", "--corpus", str(tmp_path / "c.parquet"), "--out", str(tmp_path / "d.parquet")])
    assert curated.exit_code == 0, curated.output
    assert {r["reject_reason"] for r in pq.read_table(tmp_path / "d.parquet").to_pylist()} == {UNPARSABLE}


def test_smollm2_tokenizer_digit_spellings(smollm2):
    """SmolLM2 (byte-level BPE) has the bare digits as tokens; ' 3' is 'Ġ' + '3', no single token."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(smollm2)
    spellings = candidate_token_ids(tokenizer, SCORES)
    assert {d: tokenizer.convert_ids_to_tokens(ids) for d, ids in spellings.items()} == {d: [d] for d in SCORES}
    assert len(tokenizer.encode(" 3", add_special_tokens=False)) == 2
