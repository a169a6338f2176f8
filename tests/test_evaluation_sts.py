"""STS evaluation: SentEval arithmetic, fast path == faithful path, and the public all-MiniLM-L6-v2 anchor."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy.stats import spearmanr

from multicsr_core.evaluation.sts import (
    STS_TASKS,
    encoder_from_sentence_transformer,
    evaluate_sts,
    evaluate_sts_pairs,
    load_sts_tasks,
    paired_cosine,
    senteval_average,
)
from multicsr_core.io.senteval import read_stsbenchmark

DATA_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "senteval"

# Published figures for all-MiniLM-L6-v2 under SentEval (SimCSE fork): the acceptance anchor.
ANCHOR = {"STS12": 72.37, "STS13": 80.60, "STS14": 75.59, "STS15": 85.39, "STS16": 78.99, "STSBenchmark": 82.03}


@pytest.fixture(scope="module")
def minilm(minilm_path):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(minilm_path, device="cpu", local_files_only=True)


@pytest.fixture(scope="module")
def token_embedding_encoder(minilm):
    """Mean of MiniLM's input word embeddings: a real bag-of-words encoder whose output cannot depend on
    batch composition or padding, so the fast and faithful paths must agree bit for bit."""
    table = minilm[0].auto_model.get_input_embeddings().weight.detach().numpy()
    tokenizer = minilm.tokenizer

    def encode(sentences: list[str]) -> np.ndarray:
        ids = tokenizer(list(sentences), add_special_tokens=False)["input_ids"]
        return np.stack([table[i].mean(0) if i else np.zeros(table.shape[1], np.float32) for i in ids])

    return encode


def test_senteval_average_rounds_each_task_first():
    # Raw mean 70.0065 would print 70.01; SentEval averages the printed 70.00, 70.00, 70.00, 70.01 -> 70.00.
    assert senteval_average([70.004, 70.004, 70.004, 70.014]) == 70.0
    assert senteval_average([72.366, 80.6032]) == float("%.2f" % ((72.37 + 80.60) / 2))
    with pytest.raises(ValueError):
        senteval_average([])


def test_paired_cosine_matches_senteval_formula_and_zero_vectors():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(5, 16)).astype(np.float32)
    b = rng.normal(size=(5, 16)).astype(np.float32)
    a[3] = 0.0
    got = paired_cosine(a, b)
    assert got.dtype == np.float32
    for i in range(5):
        u, v = a[i], b[i]
        with np.errstate(invalid="ignore"):
            want = np.nan_to_num(np.dot(u, v) / (np.sqrt(np.dot(u, u)) * np.sqrt(np.dot(v, v))))
        assert got[i] == want
    assert got[3] == 0.0
    with pytest.raises(ValueError, match="same shape"):
        paired_cosine(a, b[:4])


def test_fast_and_faithful_paths_identical_on_all_tasks(token_embedding_encoder):
    fast = evaluate_sts(token_embedding_encoder, DATA_DIR)
    faithful = evaluate_sts(token_embedding_encoder, DATA_DIR, faithful=True)
    assert list(fast.as_dict()) == [*STS_TASKS, "avg"]
    assert fast.as_dict() == faithful.as_dict()
    assert fast.subsets_dict() == faithful.subsets_dict()
    assert 20 < fast.as_dict()["STSBenchmark"] < 80  # a weak but real baseline


def test_sts_year_is_one_spearman_over_concatenated_subsets(token_embedding_encoder):
    result = evaluate_sts(token_embedding_encoder, DATA_DIR, tasks=["STS14"])
    task = result.tasks["STS14"]
    subsets = load_sts_tasks(DATA_DIR, ["STS14"])["STS14"]
    preds, gold = [], []
    for pairs in subsets.values():
        preds.append(paired_cosine(token_embedding_encoder(pairs.sentences1), token_embedding_encoder(pairs.sentences2)))
        gold.append(pairs.scores)
    expected = spearmanr(np.concatenate(preds), np.concatenate(gold))[0] * 100
    assert task.spearman == pytest.approx(expected, abs=1e-9)
    mean_of_subsets = np.mean([r.spearman for r in task.subsets.values()])
    assert abs(task.spearman - mean_of_subsets) > 0.1  # the two definitions really differ here
    assert task.n_pairs == 3750 and sum(r.n_pairs for r in task.subsets.values()) == 3750
    assert list(result.as_dict()) == ["STS14", "avg"]


def test_minilm_fast_path_equals_faithful_on_a_slice(minilm):
    encode = encoder_from_sentence_transformer(minilm)
    pairs = read_stsbenchmark(DATA_DIR, "test").head(384)
    fast = evaluate_sts_pairs(encode, pairs)
    faithful = evaluate_sts_pairs(encode, pairs, faithful=True)
    assert fast == pytest.approx(faithful, abs=1e-6)
    assert 75 < fast < 95


def test_bad_arguments_and_encoder_output_are_reported(token_embedding_encoder):
    with pytest.raises(ValueError, match="unknown STS task"):
        evaluate_sts(token_embedding_encoder, DATA_DIR, tasks=["STS17"])
    with pytest.raises(ValueError, match="list of task names"):
        evaluate_sts(token_embedding_encoder, DATA_DIR, tasks="STS12")
    with pytest.raises(ValueError, match=r"shape \(6,\) for 6 sentences; expected \(6, dim\)"):
        evaluate_sts_pairs(lambda s: np.zeros(len(s)), read_stsbenchmark(DATA_DIR, "dev").head(3))
    with pytest.raises(ValueError, match="file not found"):
        evaluate_sts(token_embedding_encoder, DATA_DIR / "nowhere", tasks=["STS13"])


def test_progress_reports_every_batch_up_to_total(token_embedding_encoder):
    seen: list[tuple[int, int]] = []
    evaluate_sts(token_embedding_encoder, DATA_DIR, tasks=["STS13"], progress=lambda d, t: seen.append((d, t)))
    total = seen[-1][1]
    assert seen[-1][0] == total and [d for d, _ in seen] == sorted(d for d, _ in seen)
    assert len(seen) == -(-total // 128)


@pytest.mark.slow
def test_public_anchor_all_minilm_l6_v2(minilm):
    """Acceptance check: all-MiniLM-L6-v2 reproduces the published SentEval figures to 0.01."""
    results = evaluate_sts(encoder_from_sentence_transformer(minilm), DATA_DIR).as_dict()
    assert {task: round(results[task], 2) for task in ANCHOR} == ANCHOR
    assert round(results["SICKRelatedness"], 2) == 77.15  # measured here; no published figure
    assert results["avg"] == 78.87
