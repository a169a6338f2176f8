"""STS12-16, STS-B and SICK-R evaluation, numerically identical to SentEval as forked by SimCSE.

SentEval's procedure (``SentEval/senteval/sts.py`` and SimCSE's ``evaluation.py``):

- each pair is scored with the cosine of its two embeddings, computed in numpy float32 as
  ``nan_to_num(dot(u, v) / (sqrt(dot(u, u)) * sqrt(dot(v, v))))``;
- STS12..STS16 report ONE Spearman correlation over the concatenation of all subsets' predictions and gold
  scores (SentEval's ``['all']['spearman']['all']``), not the mean over subsets;
- STS-B and SICK-R report the Spearman correlation on their test split;
- the printout is ``"%.2f" % (100 * rho)`` per task, and "Avg." is the mean of the seven printed values.

Two encoding paths give the same numbers:

- ``faithful=True`` replays SentEval: task by task, subset by subset, batches of ``batch_size`` pairs in
  SentEval's order, the first and second sentences of a batch encoded by separate calls. (SentEval also
  encodes the train and dev splits of STS-B and SICK, which cannot change the test figures; this path skips
  them, so comparisons against it understate the fast path's gain.)
- the default fast path encodes every distinct sentence of all requested tasks once, in batches of similar
  length (less padding), and looks the embeddings up. The arithmetic after encoding is the same code, so
  with an encoder whose output does not depend on batch padding the two paths are bit-identical (tested).
  A transformer's output does move with padding, by about one float32 ulp (1e-7), which leaves most
  Spearman values unchanged or within 1e-5; the exception is pairs whose cosines are ties up to that ulp:
  STS12 has 79 pairs of two identical sentences (cosine 1 +- 1 ulp), and there the two paths differ by
  about 3e-3 (x 100) for all-MiniLM-L6-v2 on CPU. All printed (2-decimal) figures agree
  (``benchmarks/bench_sts_evaluator.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import pearsonr, spearmanr

from multicsr_core.io.senteval import StsPairs, read_sick, read_sts_year, read_stsbenchmark

__all__ = [
    "STS_TASKS",
    "Encoder",
    "ProgressCallback",
    "RunningProgress",
    "SentenceTransformerEncoder",
    "StsResults",
    "StsTaskResult",
    "SubsetResult",
    "check_task_names",
    "encode_unique",
    "encoder_from_sentence_transformer",
    "evaluate_sts",
    "evaluate_sts_pairs",
    "load_sts_tasks",
    "paired_cosine",
    "senteval_average",
]

STS_TASKS: tuple[str, ...] = (
    "STS12", "STS13", "STS14", "STS15", "STS16", "STSBenchmark", "SICKRelatedness",
)

Encoder = Callable[[list[str]], np.ndarray]
"""Maps a list of sentences to a (len(sentences), dim) array of embeddings."""

ProgressCallback = Callable[[int, int], None]
"""Called as ``progress(sentences_done, sentences_total)`` after every encoded batch."""


class RunningProgress:
    """A :data:`ProgressCallback` over consecutive phases (the tasks of an evaluation) that each count
    from 0: it reports one running count, so ``done`` never goes back and ``total`` grows as each
    phase starts. Call :meth:`next_phase` when a phase ends."""

    def __init__(self, progress: ProgressCallback | None) -> None:
        self._progress = progress
        self._before = 0  # sentences of the finished phases
        self._current = 0  # the running phase's total

    def __call__(self, done: int, total: int) -> None:
        self._current = total
        if self._progress is not None:
            self._progress(self._before + done, self._before + total)

    def next_phase(self) -> None:
        self._before += self._current
        self._current = 0


@dataclass(frozen=True)
class SubsetResult:
    """Correlations (x 100, unrounded) of one subset or split, with its number of pairs."""

    spearman: float
    pearson: float
    n_pairs: int


@dataclass(frozen=True)
class StsTaskResult:
    """One task's reported Spearman (x 100, unrounded) plus its per-subset figures."""

    name: str
    spearman: float
    pearson: float
    n_pairs: int
    subsets: dict[str, SubsetResult] = field(default_factory=dict)


@dataclass(frozen=True)
class StsResults:
    """Results of :func:`evaluate_sts`; ``as_dict()`` is the project's results-JSON shape."""

    tasks: dict[str, StsTaskResult]

    @property
    def avg(self) -> float:
        return senteval_average(t.spearman for t in self.tasks.values())

    def as_dict(self) -> dict[str, float]:
        """``{"STS12": .., ..., "SICKRelatedness": .., "avg": ..}``: Spearman x 100 unrounded; ``avg`` as SentEval prints it."""
        out = {name: task.spearman for name, task in self.tasks.items()}
        out["avg"] = self.avg
        return out

    def subsets_dict(self) -> dict[str, dict[str, dict[str, float]]]:
        """Per-subset figures for reports: ``{task: {subset: {"spearman", "pearson", "n_pairs"}}}``."""
        return {
            name: {
                sub: {"spearman": r.spearman, "pearson": r.pearson, "n_pairs": r.n_pairs}
                for sub, r in task.subsets.items()
            }
            for name, task in self.tasks.items()
        }


def _printed(value: float) -> float:
    # SentEval/SimCSE print "%.2f"; float("%.2f" % x) is that printed number.
    return float("%.2f" % value)


def senteval_average(values: Iterable[float]) -> float:
    """Mean of the values each rounded to 2 decimals, rounded to 2 decimals (SimCSE's "Avg." column)."""
    printed = [_printed(v) for v in values]
    if not printed:
        raise ValueError("cannot average zero task results")
    return _printed(sum(printed) / len(printed))


def paired_cosine(emb1: np.ndarray, emb2: np.ndarray) -> np.ndarray:
    """Row-wise cosine exactly as SentEval computes it, one ``np.dot`` per pair in float32.

    A vectorised einsum sums in a different order and can differ in the last bit; SentEval's own loop is cheap
    next to encoding, so it is kept for bit-identical scores.
    """
    a = np.nan_to_num(np.asarray(emb1, dtype=np.float32))
    b = np.nan_to_num(np.asarray(emb2, dtype=np.float32))
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"embedding arrays must be 2-D and the same shape, got {a.shape} and {b.shape}")
    out = np.empty(len(a), dtype=np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):
        for i, (u, v) in enumerate(zip(a, b)):
            out[i] = np.nan_to_num(np.dot(u, v) / (np.sqrt(np.dot(u, u)) * np.sqrt(np.dot(v, v))))
    return out


def _correlations(predictions: np.ndarray, gold: np.ndarray) -> tuple[float, float]:
    spearman = float(spearmanr(predictions, gold)[0]) * 100
    pearson = float(pearsonr(predictions.astype(np.float64), gold)[0]) * 100
    return spearman, pearson


def load_sts_tasks(
    data_dir: str | Path, tasks: Sequence[str] | None = None
) -> dict[str, dict[str, StsPairs]]:
    """``{task: {subset_or_split: StsPairs}}`` for the evaluated data (test splits for STS-B and SICK-R)."""
    names = check_task_names(tasks, STS_TASKS, "STS")
    out: dict[str, dict[str, StsPairs]] = {}
    for name in names:
        if name == "STSBenchmark":
            out[name] = {"test": read_stsbenchmark(data_dir, "test")}
        elif name == "SICKRelatedness":
            out[name] = {"test": read_sick(data_dir, "test")}
        else:
            out[name] = read_sts_year(data_dir, name)
    return out


def check_task_names(tasks: Sequence[str] | None, known: Sequence[str], kind: str) -> tuple[str, ...]:
    """``tasks`` validated against ``known`` (``None`` means all), duplicates dropped, order kept."""
    if tasks is None:
        return tuple(known)
    if isinstance(tasks, str):
        raise ValueError(f"tasks must be a list of task names, got the string {tasks!r}")
    unknown = [t for t in tasks if t not in known]
    if unknown or not tasks:
        raise ValueError(f"unknown {kind} task(s) {unknown or list(tasks)}; expected names from {list(known)}")
    return tuple(dict.fromkeys(tasks))


def encode_unique(
    encode: Encoder,
    sentences: Iterable[str],
    batch_size: int = 128,
    progress: ProgressCallback | None = None,
) -> dict[str, np.ndarray]:
    """Encode each distinct sentence once, longest first in batches of ``batch_size``; ``{sentence: embedding}``.

    Sorting groups sentences of similar length, so batches carry little padding. If ``encode`` has a
    ``token_lengths(sentences)`` method (as :class:`SentenceTransformerEncoder` does) the sort uses the model's
    own token counts; otherwise character length, a rougher proxy (on the full STS data with all-MiniLM-L6-v2,
    character-sorted batches push 45% more tokens through the model than the sentences hold, token-sorted
    batches 2% more).
    """
    unique = list(set(sentences))
    token_lengths = getattr(encode, "token_lengths", None)
    lengths = token_lengths(unique) if callable(token_lengths) else [len(s) for s in unique]
    unique = [s for _, s in sorted(zip(lengths, unique), key=lambda ls: (-ls[0], ls[1]))]
    table: dict[str, np.ndarray] = {}
    for start in range(0, len(unique), batch_size):
        batch = unique[start : start + batch_size]
        emb = _checked(encode(batch), len(batch))
        table.update(zip(batch, emb))
        if progress is not None:
            progress(min(start + batch_size, len(unique)), len(unique))
    return table


def _checked(embeddings: Any, n: int) -> np.ndarray:
    if hasattr(embeddings, "detach"):  # a torch tensor from a custom encoder
        embeddings = embeddings.detach().cpu().numpy()
    arr = np.asarray(embeddings, dtype=np.float32)
    if arr.ndim != 2 or arr.shape[0] != n:
        raise ValueError(f"encode returned an array of shape {arr.shape} for {n} sentences; expected ({n}, dim)")
    return arr


def _score_faithful(
    encode: Encoder, pairs: StsPairs, batch_size: int, done: list[int], total: int,
    progress: ProgressCallback | None,
) -> np.ndarray:
    scores = []
    for start in range(0, len(pairs), batch_size):
        batch1 = pairs.sentences1[start : start + batch_size]
        batch2 = pairs.sentences2[start : start + batch_size]
        enc1 = _checked(encode(batch1), len(batch1))
        enc2 = _checked(encode(batch2), len(batch2))
        scores.append(paired_cosine(enc1, enc2))
        done[0] += len(batch1) + len(batch2)
        if progress is not None:
            progress(done[0], total)
    return np.concatenate(scores) if scores else np.empty(0, dtype=np.float32)


def evaluate_sts_pairs(
    encode: Encoder,
    pairs: StsPairs,
    batch_size: int = 128,
    faithful: bool = False,
) -> float:
    """Spearman x 100 of one pair set (e.g. STS-B dev for model selection), same arithmetic as :func:`evaluate_sts`."""
    if faithful:
        predictions = _score_faithful(encode, pairs, batch_size, [0], 2 * len(pairs), None)
    else:
        table = encode_unique(encode, pairs.sentences1 + pairs.sentences2, batch_size)
        predictions = _lookup_scores(table, pairs)
    return _correlations(predictions, pairs.scores)[0]


def _lookup_scores(table: dict[str, np.ndarray], pairs: StsPairs) -> np.ndarray:
    if not len(pairs):
        return np.empty(0, dtype=np.float32)
    emb1 = np.stack([table[s] for s in pairs.sentences1])
    emb2 = np.stack([table[s] for s in pairs.sentences2])
    return paired_cosine(emb1, emb2)


def evaluate_sts(
    encode: Encoder,
    data_dir: str | Path,
    tasks: Sequence[str] | None = None,
    batch_size: int = 128,
    faithful: bool = False,
    progress: ProgressCallback | None = None,
) -> StsResults:
    """Evaluate ``encode`` on STS12-16, STS-B test and SICK-R test the way SentEval (SimCSE fork) does.

    Args:
        encode: sentences -> (n, dim) embeddings; see :func:`encoder_from_sentence_transformer`.
        data_dir: SentEval data folder (holding ``STS/`` and ``SICK/``).
        tasks: subset of :data:`STS_TASKS` (default: all seven).
        batch_size: sentences per ``encode`` call (SentEval: 128).
        faithful: replay SentEval's batching exactly instead of the deduplicated, length-sorted fast path.
        progress: optional ``progress(done, total)`` callback, counted in sentences encoded.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    data = load_sts_tasks(data_dir, tasks)
    all_pairs = [p for subsets in data.values() for p in subsets.values()]

    predictions: dict[str, dict[str, np.ndarray]] = {}
    if faithful:
        total = sum(2 * len(p) for p in all_pairs)
        done = [0]
        for name, subsets in data.items():
            predictions[name] = {
                sub: _score_faithful(encode, p, batch_size, done, total, progress) for sub, p in subsets.items()
            }
    else:
        table = encode_unique(
            encode, (s for p in all_pairs for s in (*p.sentences1, *p.sentences2)), batch_size, progress
        )
        predictions = {
            name: {sub: _lookup_scores(table, p) for sub, p in subsets.items()} for name, subsets in data.items()
        }

    results: dict[str, StsTaskResult] = {}
    for name, subsets in data.items():
        per_subset = {}
        for sub, pairs in subsets.items():
            spearman, pearson = _correlations(predictions[name][sub], pairs.scores)
            per_subset[sub] = SubsetResult(spearman, pearson, len(pairs))
        # SentEval "all": one correlation over the concatenated subsets (a single split for STS-B / SICK-R).
        all_pred = np.concatenate([predictions[name][sub] for sub in subsets])
        all_gold = np.concatenate([p.scores for p in subsets.values()])
        spearman, pearson = _correlations(all_pred, all_gold)
        results[name] = StsTaskResult(name, spearman, pearson, len(all_gold), per_subset)
    return StsResults(results)


class SentenceTransformerEncoder:
    """The :data:`Encoder` of a ``SentenceTransformer``: float32 numpy embeddings, no progress bar.

    The model's own modules (pooling, normalisation) apply unchanged. Inputs are read up to
    ``max_seq_length`` tokens; the default ``None`` means untruncated, up to the backbone's own limit
    (:func:`multicsr_core.evaluation.lengths.untruncated_length`), as SentEval's batcher
    (``tokenizer(batch, padding=True)``, no truncation) does, whatever length the model folder was
    saved or trained with. The model's ``max_seq_length`` is set for each call and restored after.
    A call with at most ``batch_size`` sentences is one forward pass, padded to its longest sentence.
    ``token_lengths`` lets :func:`encode_unique` sort by the model's token counts.
    """

    def __init__(self, model: Any, batch_size: int = 128, max_seq_length: int | None = None) -> None:
        from multicsr_core.evaluation.lengths import untruncated_length

        self.model = model
        self.batch_size = batch_size
        self.max_seq_length = max_seq_length if max_seq_length is not None else untruncated_length(model)

    def __call__(self, sentences: list[str]) -> np.ndarray:
        from multicsr_core.evaluation.lengths import encoding_length

        with encoding_length(self.model, self.max_seq_length):
            emb = self.model.encode(
                list(sentences), batch_size=self.batch_size, show_progress_bar=False, convert_to_numpy=True
            )
        return np.asarray(emb, dtype=np.float32)

    def token_lengths(self, sentences: list[str]) -> list[int]:
        """Tokens per sentence (special tokens included), capped at the encoding length."""
        tokenizer = getattr(self.model, "tokenizer", None)
        if tokenizer is None:  # a model without a text tokenizer: fall back to characters
            return [len(s) for s in sentences]
        cap = self.max_seq_length or 10**9
        ids = tokenizer(list(sentences), truncation=False, verbose=False)["input_ids"]  # verbose: no length warning
        return [min(len(row), cap) for row in ids]


def encoder_from_sentence_transformer(model: Any, batch_size: int = 128,
                                      max_seq_length: int | None = None) -> SentenceTransformerEncoder:
    """The :data:`Encoder` for a ``SentenceTransformer`` (see :class:`SentenceTransformerEncoder`);
    ``max_seq_length=None`` encodes untruncated, as SentEval does."""
    return SentenceTransformerEncoder(model, batch_size, max_seq_length)
