"""SentEval transfer tasks (MR, CR, SUBJ, MPQA, SST-2, TREC, MRPC): logistic regression on frozen embeddings.

Protocol of facebookresearch/SentEval with ``usepytorch=False`` (``senteval/tools/validation.py``,
``binary.py``, ``sst.py``, ``trec.py``, ``mrpc.py``):

- MR, CR, SUBJ, MPQA (``InnerKFoldClassifier``): samples sorted by (number of tokens, label); an outer
  stratified k-fold (shuffled, ``random_state=1111``); inside each outer training part an inner stratified
  k-fold (same seed) picks the L2 penalty ``C`` in {2^-2, ..., 2^3} by mean inner accuracy (rounded to
  2 decimals, first maximum wins); a model refit on the outer training part is scored on the outer test
  fold. Test accuracy = mean of the k rounded fold accuracies, rounded to 2 decimals. SentEval hard-codes
  1111 for these folds, so ``seed`` does not move them (it seeds the classifier, as in SentEval).
- SST-2 (``SplitClassifier``): ``C`` in {2^-2, ..., 2^3} picked on the dev split; test accuracy of the model
  trained on train with that ``C``.
- TREC and MRPC (``KFoldClassifier``): ``C`` in {2^-1, ..., 2^5} picked by stratified k-fold on the train
  split (``random_state=seed``); refit on all of train; accuracy on test. (method.md lists them as
  train/dev/test tasks; SentEval itself cross-validates on train, which is what is done here.)
- MRPC features: ``[|u - v|, u * v]`` of the two sentence embeddings; F1 of the positive class on test too.

The classifier is ``sklearn.linear_model.LogisticRegression(C=c, random_state=seed)`` with the installed
scikit-learn's defaults, as SentEval constructs it. SentEval was written when the default solver was
liblinear; today it is lbfgs with ``max_iter=100``, which can stop before convergence for large ``C``:
such fits are counted in ``TransferResult.unconverged_fits`` instead of printing hundreds of warnings.

Embeddings come from :func:`~multicsr_core.evaluation.sts.encode_unique` (each distinct sentence once,
length-sorted batches); rows are then laid out in SentEval's sorted order, which decides its folds.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score
from sklearn.model_selection import StratifiedKFold
from threadpoolctl import threadpool_limits

from multicsr_core.evaluation.sts import (
    Encoder,
    ProgressCallback,
    RunningProgress,
    check_task_names,
    encode_unique,
    senteval_average,
)
from multicsr_core.io.senteval import (
    TRANSFER_TASKS,
    LabelledPairs,
    LabelledSentences,
    read_binary_task,
    read_mrpc,
    read_sst2,
    read_trec,
)

__all__ = [
    "TRANSFER_TASKS",
    "TransferResult",
    "evaluate_transfer",
    "evaluate_transfer_detailed",
    "inner_kfold_accuracy",
    "kfold_accuracy",
    "split_accuracy",
]

# SentEval's sklearn penalty grids (validation.py, usepytorch=False).
INNER_KFOLD_CS = tuple(2.0**t for t in range(-2, 4))
KFOLD_CS = tuple(2.0**t for t in range(-1, 6))
SPLIT_CS = tuple(2.0**t for t in range(-2, 4))
# SentEval's InnerKFoldClassifier seeds both fold splitters with this constant, whatever params.seed is.
_INNER_KFOLD_SPLIT_SEED = 1111


@dataclass(frozen=True)
class TransferResult:
    """One transfer task: accuracies x 100 rounded to 2 decimals as SentEval returns them."""

    task: str
    acc: float
    devacc: float
    n_train: int
    n_test: int
    best_c: tuple[float, ...]  # the chosen C (one per outer fold for the k-fold tasks)
    f1: float | None = None  # MRPC only
    unconverged_fits: int = 0


class _Fitter:
    """Builds SentEval's classifier and counts lbfgs fits that stopped at ``max_iter``."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.unconverged = 0

    def fit(self, c: float, x: np.ndarray, y: np.ndarray) -> LogisticRegression:
        clf = LogisticRegression(C=c, random_state=self.seed)
        # Hundreds of small fits: multi-threaded BLAS only adds synchronisation (measured 10-50x slower on
        # a busy 2-core machine), so each fit runs single-threaded; the solution is the same.
        with threadpool_limits(limits=1), warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ConvergenceWarning)
            clf.fit(x, y)
        self.unconverged += sum(issubclass(w.category, ConvergenceWarning) for w in caught)
        return clf


def _pct(fraction: float) -> float:
    return round(100 * float(fraction), 2)


def inner_kfold_accuracy(
    x: np.ndarray, y: np.ndarray, kfold: int, fitter: _Fitter
) -> tuple[float, float, tuple[float, ...]]:
    """SentEval's InnerKFoldClassifier: ``(devacc, testacc, chosen C per outer fold)``."""
    outer = StratifiedKFold(n_splits=kfold, shuffle=True, random_state=_INNER_KFOLD_SPLIT_SEED)
    inner = StratifiedKFold(n_splits=kfold, shuffle=True, random_state=_INNER_KFOLD_SPLIT_SEED)
    dev_results, test_results, chosen = [], [], []
    for train_idx, test_idx in outer.split(x, y):
        x_train, y_train = x[train_idx], y[train_idx]
        inner_splits = list(inner.split(x_train, y_train))
        scores = []
        for c in INNER_KFOLD_CS:
            fold_scores = [
                fitter.fit(c, x_train[a], y_train[a]).score(x_train[b], y_train[b]) for a, b in inner_splits
            ]
            scores.append(_pct(np.mean(fold_scores)))
        best = int(np.argmax(scores))
        dev_results.append(scores[best])
        chosen.append(INNER_KFOLD_CS[best])
        clf = fitter.fit(INNER_KFOLD_CS[best], x_train, y_train)
        test_results.append(_pct(clf.score(x[test_idx], y[test_idx])))
    return round(float(np.mean(dev_results)), 2), round(float(np.mean(test_results)), 2), tuple(chosen)


def kfold_accuracy(
    x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray,
    kfold: int, fitter: _Fitter,
) -> tuple[float, float, float, np.ndarray]:
    """SentEval's KFoldClassifier: ``(devacc, testacc, chosen C, test predictions)``."""
    splitter = StratifiedKFold(n_splits=kfold, shuffle=True, random_state=fitter.seed)
    splits = list(splitter.split(x_train, y_train))
    scores = []
    for c in KFOLD_CS:
        fold_scores = [fitter.fit(c, x_train[a], y_train[a]).score(x_train[b], y_train[b]) for a, b in splits]
        scores.append(_pct(np.mean(fold_scores)))
    best = int(np.argmax(scores))
    clf = fitter.fit(KFOLD_CS[best], x_train, y_train)
    predictions = clf.predict(x_test)
    return scores[best], _pct(clf.score(x_test, y_test)), KFOLD_CS[best], predictions


def split_accuracy(
    x: dict[str, np.ndarray], y: dict[str, np.ndarray], fitter: _Fitter
) -> tuple[float, float, float]:
    """SentEval's SplitClassifier on ``train``/``dev``/``test``: ``(devacc, testacc, chosen C)``.

    SentEval refits with the chosen C; the fit is deterministic, so the model already fitted for it is reused.
    """
    models, scores = [], []
    for c in SPLIT_CS:
        clf = fitter.fit(c, x["train"], y["train"])
        models.append(clf)
        scores.append(_pct(clf.score(x["dev"], y["dev"])))
    best = int(np.argmax(scores))
    return scores[best], _pct(models[best].score(x["test"], y["test"])), SPLIT_CS[best]


def _subsample(n: int, max_examples: int | None, seed: int) -> np.ndarray:
    """Indices of a seeded random subsample, kept in their original order."""
    if max_examples is None or max_examples >= n:
        return np.arange(n)
    return np.sort(np.random.RandomState(seed).choice(n, size=max_examples, replace=False))


def _sorted_sentences(data: LabelledSentences, max_examples: int | None, seed: int) -> LabelledSentences:
    keep = _subsample(len(data), max_examples, seed)
    rows = sorted(
        ((data.sentences[i], int(data.labels[i])) for i in keep), key=lambda r: (len(r[0].split()), r[1])
    )
    return LabelledSentences([r[0] for r in rows], np.array([r[1] for r in rows], dtype=np.int64))


def _sorted_pairs(data: LabelledPairs, max_examples: int | None, seed: int) -> LabelledPairs:
    keep = _subsample(len(data), max_examples, seed)
    rows = sorted(
        ((data.sentences1[i], data.sentences2[i], int(data.labels[i])) for i in keep),
        key=lambda r: (len(r[0].split()), len(r[1].split()), r[2]),
    )
    return LabelledPairs([r[0] for r in rows], [r[1] for r in rows], np.array([r[2] for r in rows], dtype=np.int64))


def _embed(table: dict[str, np.ndarray], sentences: list[str]) -> np.ndarray:
    return np.stack([table[s] for s in sentences])


@dataclass(frozen=True)
class _TransferRun:
    """What every task of one :func:`evaluate_transfer_detailed` call shares."""

    encode: Encoder
    data_dir: str | Path
    seed: int
    kfold: int
    batch_size: int
    max_examples: int | None
    progress: RunningProgress

    def sentences(self, data: LabelledSentences) -> LabelledSentences:
        return _sorted_sentences(data, self.max_examples, self.seed)

    def embeddings(self, sentences: list[str]) -> dict[str, np.ndarray]:
        return encode_unique(self.encode, sentences, self.batch_size, self.progress)


def _binary_task(run: _TransferRun, task: str, fitter: _Fitter) -> TransferResult:
    """MR, CR, SUBJ, MPQA: one labelled file, nested k-fold cross-validation."""
    data = run.sentences(read_binary_task(run.data_dir, task))
    table = run.embeddings(data.sentences)
    devacc, acc, chosen = inner_kfold_accuracy(_embed(table, data.sentences), data.labels, run.kfold, fitter)
    return TransferResult(task, acc, devacc, len(data), len(data), chosen, None, fitter.unconverged)


def _sst2_task(run: _TransferRun, task: str, fitter: _Fitter) -> TransferResult:
    """SST2: its train/dev/test splits."""
    splits = {s: run.sentences(read_sst2(run.data_dir, s)) for s in ("train", "dev", "test")}
    table = run.embeddings([t for d in splits.values() for t in d.sentences])
    x = {s: _embed(table, d.sentences) for s, d in splits.items()}
    y = {s: d.labels for s, d in splits.items()}
    devacc, acc, c = split_accuracy(x, y, fitter)
    return TransferResult(task, acc, devacc, len(splits["train"]), len(splits["test"]), (c,), None, fitter.unconverged)


def _trec_task(run: _TransferRun, task: str, fitter: _Fitter) -> TransferResult:
    """TREC: k-fold on train for C, then the test split."""
    train = run.sentences(read_trec(run.data_dir, "train"))
    test = run.sentences(read_trec(run.data_dir, "test"))
    table = run.embeddings(train.sentences + test.sentences)
    devacc, acc, c, _ = kfold_accuracy(
        _embed(table, train.sentences), train.labels, _embed(table, test.sentences), test.labels, run.kfold, fitter,
    )
    return TransferResult(task, acc, devacc, len(train), len(test), (c,), None, fitter.unconverged)


def _mrpc_task(run: _TransferRun, task: str, fitter: _Fitter) -> TransferResult:
    """MRPC: pair features [|a - b|, a * b], k-fold on train for C, accuracy and F1 on test."""
    train = _sorted_pairs(read_mrpc(run.data_dir, "train"), run.max_examples, run.seed)
    test = _sorted_pairs(read_mrpc(run.data_dir, "test"), run.max_examples, run.seed)
    sentences = train.sentences1 + train.sentences2 + test.sentences1 + test.sentences2
    table = run.embeddings(sentences)

    def features(pairs: LabelledPairs) -> np.ndarray:
        a, b = _embed(table, pairs.sentences1), _embed(table, pairs.sentences2)
        return np.c_[np.abs(a - b), a * b]

    devacc, acc, c, predictions = kfold_accuracy(
        features(train), train.labels, features(test), test.labels, run.kfold, fitter
    )
    f1 = _pct(f1_score(test.labels, predictions))
    return TransferResult(task, acc, devacc, len(train), len(test), (c,), f1, fitter.unconverged)


_TASK_PROTOCOLS = {"MR": _binary_task, "CR": _binary_task, "SUBJ": _binary_task, "MPQA": _binary_task,
                   "SST2": _sst2_task, "TREC": _trec_task, "MRPC": _mrpc_task}


def evaluate_transfer_detailed(
    encode: Encoder,
    data_dir: str | Path,
    tasks: Sequence[str] | None = None,
    seed: int = 1111,
    kfold: int = 10,
    batch_size: int = 128,
    max_examples: int | None = None,
    progress: ProgressCallback | None = None,
) -> dict[str, TransferResult]:
    """Run SentEval's transfer protocol; one :class:`TransferResult` per task.

    Args:
        encode: sentences -> (n, dim) embeddings (frozen; never trained here).
        data_dir: SentEval data folder.
        tasks: subset of :data:`TRANSFER_TASKS` (default: all seven).
        seed: classifier seed and KFoldClassifier split seed (SentEval's ``params.seed``, default 1111).
        kfold: folds for cross-validation (SimCSE's "test" mode uses 10; SentEval's own default is 5).
        batch_size: sentences per ``encode`` call.
        max_examples: if set, a seeded random subsample of at most this many examples per split (for quick
            checks; the published protocol uses everything).
        progress: optional ``progress(done, total)`` callback per encoded batch, in sentences, counted over
            all tasks: ``total`` grows as each task's sentences are read, ``done`` never goes back.
    """
    if kfold < 2:
        raise ValueError(f"kfold must be >= 2, got {kfold}")
    results: dict[str, TransferResult] = {}
    # one progress count over all tasks
    run = _TransferRun(encode, data_dir, seed, kfold, batch_size, max_examples, RunningProgress(progress))
    for task in check_task_names(tasks, TRANSFER_TASKS, "transfer"):
        results[task] = _TASK_PROTOCOLS[task](run, task, _Fitter(seed))
        run.progress.next_phase()
    return results


def evaluate_transfer(
    encode: Encoder,
    data_dir: str | Path,
    tasks: Sequence[str] | None = None,
    seed: int = 1111,
    kfold: int = 10,
    batch_size: int = 128,
    max_examples: int | None = None,
    progress: ProgressCallback | None = None,
) -> dict[str, float]:
    """Test accuracy x 100 per task, as SentEval reports it, plus ``"MRPC_F1"`` and ``"avg"``.

    ``avg`` is SimCSE's transfer "Avg.": the mean of the task accuracies (MRPC accuracy, not F1), 2 decimals.
    A plain JSON-ready dict; :func:`evaluate_transfer_detailed` keeps dev accuracies and chosen penalties.
    """
    detailed = evaluate_transfer_detailed(encode, data_dir, tasks, seed, kfold, batch_size, max_examples, progress)
    out: dict[str, float] = {}
    for name, result in detailed.items():
        out[name] = result.acc
        if result.f1 is not None:
            out["MRPC_F1"] = result.f1
    out["avg"] = senteval_average(r.acc for r in detailed.values())
    return out
