"""Transfer tasks with SentEval's protocol, on real data (subsampled) and real encoders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from multicsr_core.evaluation.sts import encoder_from_sentence_transformer, senteval_average
from multicsr_core.evaluation.transfer import (
    INNER_KFOLD_CS,
    KFOLD_CS,
    TRANSFER_TASKS,
    _Fitter,
    evaluate_transfer,
    evaluate_transfer_detailed,
    inner_kfold_accuracy,
    kfold_accuracy,
)

# The real MiniLM and its bag-of-token-embeddings encoder, shared with the STS tests.
from tests.test_evaluation_sts import minilm, token_embedding_encoder  # noqa: E402,F401  (pytest fixtures)

DATA_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "senteval"


def test_minilm_on_mr_subsample_learns_sentiment(minilm):
    result = evaluate_transfer_detailed(
        encoder_from_sentence_transformer(minilm), DATA_DIR, tasks=["MR"], max_examples=1000, kfold=5
    )["MR"]
    assert result.n_train == result.n_test == 1000
    assert result.acc > 70.0 and result.devacc > 70.0
    assert len(result.best_c) == 5 and set(result.best_c) <= set(INNER_KFOLD_CS)


def test_all_seven_tasks_report_in_senteval_shape(token_embedding_encoder):
    scores = evaluate_transfer(token_embedding_encoder, DATA_DIR, max_examples=300, kfold=3)
    assert list(scores) == [*TRANSFER_TASKS, "MRPC_F1", "avg"]
    for task in TRANSFER_TASKS:
        assert 0 < scores[task] <= 100 and scores[task] == round(scores[task], 2)
    assert scores["TREC"] > 40  # six classes: chance is about 20
    assert scores["avg"] == senteval_average(scores[t] for t in TRANSFER_TASKS)
    assert 0 < scores["MRPC_F1"] <= 100


def test_binary_folds_ignore_seed_like_senteval(token_embedding_encoder):
    # SentEval's InnerKFoldClassifier hard-codes random_state=1111 for its folds; lbfgs ignores the classifier
    # seed, so a different seed gives the same MR figure, while KFoldClassifier (TREC) reshuffles its folds.
    # (max_examples subsamples with the seed too, so the full sets are used here.)
    a = evaluate_transfer_detailed(token_embedding_encoder, DATA_DIR, tasks=["MR", "TREC"], kfold=3)
    b = evaluate_transfer_detailed(token_embedding_encoder, DATA_DIR, tasks=["MR", "TREC"], kfold=3, seed=7)
    assert a["MR"] == b["MR"]
    assert (a["MR"].n_train, a["TREC"].n_train, a["TREC"].n_test) == (10662, 5452, 500)
    assert a["TREC"].best_c[0] in KFOLD_CS and b["TREC"].best_c[0] in KFOLD_CS


def test_classifier_protocols_on_separable_features():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 8))
    y = (x[:, 0] > 0).astype(int)
    x[:, 0] += np.where(y == 1, 3.0, -3.0)  # a wide margin: every fold must be perfect
    devacc, acc, chosen = inner_kfold_accuracy(x, y, 4, _Fitter(1111))
    assert (devacc, acc, len(chosen)) == (100.0, 100.0, 4)
    assert chosen == (INNER_KFOLD_CS[0],) * 4  # ties resolve to the first (smallest) C, as np.argmax does
    devacc, acc, c, predictions = kfold_accuracy(x[:150], y[:150], x[150:], y[150:], 5, _Fitter(1111))
    assert (devacc, acc, c) == (100.0, 100.0, KFOLD_CS[0])
    assert np.array_equal(predictions, y[150:])


def test_bad_arguments(token_embedding_encoder):
    with pytest.raises(ValueError, match="unknown transfer task"):
        evaluate_transfer(token_embedding_encoder, DATA_DIR, tasks=["SST5"])
    with pytest.raises(ValueError, match="list of task names"):
        evaluate_transfer(token_embedding_encoder, DATA_DIR, tasks="MR")
    with pytest.raises(ValueError, match="kfold must be >= 2"):
        evaluate_transfer(token_embedding_encoder, DATA_DIR, tasks=["MR"], kfold=1)
    with pytest.raises(ValueError, match="file not found"):
        evaluate_transfer(token_embedding_encoder, DATA_DIR / "missing", tasks=["CR"])
