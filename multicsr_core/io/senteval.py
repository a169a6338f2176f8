"""Readers for SentEval's "downstream" data folder (STS12-16, STS-B, SICK and the transfer tasks).

Transfer-task readers (MR, CR, SUBJ, MPQA, SST-2, TREC, MRPC) keep SentEval's encodings (latin-1 for the
binary tasks and TREC, UTF-8 otherwise), label conventions and file order; the evaluation code applies
SentEval's length sort, since sample order decides its cross-validation folds.

Every reader reproduces the loading code of SentEval as forked by SimCSE (``SentEval/senteval/sts.py``,
``sick.py``, ``binary.py``, ``sst.py``, ``trec.py``, ``mrpc.py``) so that scores computed on what these
functions return are the published ones. Sentences come back the way SentEval's batcher hands them to a
model: tokenised with ``str.split()`` and re-joined with single spaces.

Bad input (missing file, a line with the wrong number of fields, an unparsable score) raises ``ValueError``
naming the file and the 1-based line number; a missing file raises its subclass ``DataDirError``, whose line
also says what the data root must hold and how to fetch it.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from multicsr_core.errors import DataDirError
from multicsr_core.io.download import data_root_hint

__all__ = [
    "STS_SUBSETS",
    "StsPairs",
    "read_sts_year",
    "read_stsbenchmark",
    "read_sick",
    "TRANSFER_TASKS",
    "LabelledSentences",
    "LabelledPairs",
    "read_binary_task",
    "read_sst2",
    "read_trec",
    "read_mrpc",
]

# The subsets SentEval evaluates, in SentEval's order (STS13 has no "SMT" subset: licence).
STS_SUBSETS: dict[str, tuple[str, ...]] = {
    "STS12": ("MSRpar", "MSRvid", "SMTeuroparl", "surprise.OnWN", "surprise.SMTnews"),
    "STS13": ("FNWN", "headlines", "OnWN"),
    "STS14": ("deft-forum", "deft-news", "headlines", "images", "OnWN", "tweet-news"),
    "STS15": ("answers-forums", "answers-students", "belief", "headlines", "images"),
    "STS16": ("answer-answer", "headlines", "plagiarism", "postediting", "question-question"),
}

_STSB_FILES = {"train": "sts-train.csv", "dev": "sts-dev.csv", "test": "sts-test.csv"}
_SICK_FILES = {"train": "SICK_train.txt", "dev": "SICK_trial.txt", "test": "SICK_test_annotated.txt"}


@dataclass(frozen=True)
class StsPairs:
    """Sentence pairs with gold similarity scores, in the order SentEval evaluates them."""

    sentences1: list[str]
    sentences2: list[str]
    scores: np.ndarray  # float64, one gold score per pair

    def __post_init__(self) -> None:
        if not (len(self.sentences1) == len(self.sentences2) == len(self.scores)):
            raise ValueError(
                f"StsPairs columns differ in length: {len(self.sentences1)}, "
                f"{len(self.sentences2)}, {len(self.scores)}"
            )

    def __len__(self) -> int:
        return len(self.scores)

    def head(self, n: int) -> StsPairs:
        """The first ``n`` pairs (for quick evaluations on a slice)."""
        return StsPairs(self.sentences1[:n], self.sentences2[:n], self.scores[:n])


def _rejoin(sentence: str) -> str:
    # SentEval stores sentences as str.split() token lists; SimCSE's batcher joins them with " ".
    return " ".join(sentence.split())


def _missing(path: Path) -> ValueError:
    return DataDirError("file not found", path=path, hint=data_root_hint())


def _read_text(path: Path) -> str:
    if not path.is_file():
        raise _missing(path)
    try:
        return io.open(path, encoding="utf8").read()
    except UnicodeDecodeError as err:
        line = path.read_bytes()[: err.start].count(b"\n") + 1
        raise ValueError(f"{path}:{line}: not valid UTF-8 ({err.reason})") from err


def _parse_score(text: str, path: Path, lineno: int) -> float:
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"{path}:{lineno}: score {text!r} is not a number") from None


def _normalise_year(year: int | str) -> str:
    key = str(year).upper()
    if key.isdigit():
        key = f"STS{int(key) % 100:02d}"
    if key not in STS_SUBSETS:
        raise ValueError(f"unknown STS year {year!r}; expected one of 2012..2016 or {sorted(STS_SUBSETS)}")
    return key


def read_sts_year(data_dir: str | Path, year: int | str) -> dict[str, StsPairs]:
    """Read one SemEval STS year (2012..2016, or "STS12".."STS16") as ``{subset: StsPairs}``.

    Follows SentEval's ``STSEval.loadFile``: lines split with ``str.splitlines()``, each input line split on
    tab into two sentences, pairs whose gold line is empty dropped, sentences tokenised with ``str.split()``,
    pairs sorted by ``(len(tokens1), len(tokens2), score)`` (stable), tokens re-joined with single spaces.
    The sort matters only for batching (padding), never for the Spearman of a subset.
    """
    name = _normalise_year(year)
    folder = Path(data_dir) / "STS" / f"{name}-en-test"
    out: dict[str, StsPairs] = {}
    for subset in STS_SUBSETS[name]:
        input_path = folder / f"STS.input.{subset}.txt"
        gold_path = folder / f"STS.gs.{subset}.txt"
        input_lines = _read_text(input_path).splitlines()
        gold_lines = _read_text(gold_path).splitlines()
        if len(input_lines) != len(gold_lines):
            raise ValueError(
                f"{gold_path}: {len(gold_lines)} gold lines but {input_path} has {len(input_lines)} sentence pairs"
            )
        rows: list[tuple[list[str], list[str], float]] = []
        for lineno, (pair_line, gold_line) in enumerate(zip(input_lines, gold_lines), start=1):
            fields = pair_line.split("\t")
            if len(fields) != 2:
                raise ValueError(
                    f"{input_path}:{lineno}: expected 2 tab-separated sentences, found {len(fields)} fields"
                )
            if gold_line == "":  # unscored pair: SentEval skips it
                continue
            score = _parse_score(gold_line, gold_path, lineno)
            rows.append((fields[0].split(), fields[1].split(), score))
        rows.sort(key=lambda r: (len(r[0]), len(r[1]), r[2]))
        out[subset] = StsPairs(
            sentences1=[" ".join(r[0]) for r in rows],
            sentences2=[" ".join(r[1]) for r in rows],
            scores=np.array([r[2] for r in rows], dtype=np.float64),
        )
    return out


def _read_tsv_pairs(
    path: Path, col1: int, col2: int, score_col: int, skip_header: bool
) -> StsPairs:
    # SentEval iterates the file object (universal newlines: "\r\n" and "\r" read as "\n") and does
    # line.strip().split("\t") on each line; _read_text applies the same newline translation.
    text = _read_text(path)
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    need = max(col1, col2, score_col) + 1
    s1: list[str] = []
    s2: list[str] = []
    scores: list[float] = []
    for lineno, line in enumerate(lines, start=1):
        if skip_header and lineno == 1:
            continue
        fields = line.strip().split("\t")
        if len(fields) < need:
            raise ValueError(
                f"{path}:{lineno}: expected at least {need} tab-separated fields, found {len(fields)}"
            )
        s1.append(_rejoin(fields[col1]))
        s2.append(_rejoin(fields[col2]))
        scores.append(_parse_score(fields[score_col], path, lineno))
    return StsPairs(s1, s2, np.array(scores, dtype=np.float64))


def _check_split(split: str, files: dict[str, str], what: str) -> str:
    if split not in files:
        raise ValueError(f"unknown {what} split {split!r}; expected one of {sorted(files)}")
    return files[split]


def read_stsbenchmark(data_dir: str | Path, split: str) -> StsPairs:
    """Read STS-B ``split`` ("train", "dev" or "test"): score column 4, sentences columns 5 and 6, file order."""
    name = _check_split(split, _STSB_FILES, "STS-B")
    return _read_tsv_pairs(Path(data_dir) / "STS" / "STSBenchmark" / name, 5, 6, 4, skip_header=False)


def read_sick(data_dir: str | Path, split: str) -> StsPairs:
    """Read SICK relatedness ``split`` ("train", "dev" = SICK_trial, "test" = SICK_test_annotated).

    Header skipped; sentences columns 1 and 2, relatedness score column 3; file order.
    """
    name = _check_split(split, _SICK_FILES, "SICK")
    return _read_tsv_pairs(Path(data_dir) / "SICK" / name, 1, 2, 3, skip_header=True)


# ---------------------------------------------------------------------------------------------------------
# Transfer tasks (SentEval binary.py, sst.py, trec.py, mrpc.py)

TRANSFER_TASKS: tuple[str, ...] = ("MR", "CR", "SUBJ", "MPQA", "SST2", "TREC", "MRPC")

# (folder, file with label 1, file with label 0): SentEval's BinaryClassifierEval(pos, neg). For SUBJ it
# passes the objective sentences first, so "objective" is label 1.
_BINARY_FILES = {
    "MR": ("MR", "rt-polarity.pos", "rt-polarity.neg"),
    "CR": ("CR", "custrev.pos", "custrev.neg"),
    "SUBJ": ("SUBJ", "subj.objective", "subj.subjective"),
    "MPQA": ("MPQA", "mpqa.pos", "mpqa.neg"),
}
_SST2_FILES = {"train": "sentiment-train", "dev": "sentiment-dev", "test": "sentiment-test"}
_TREC_FILES = {"train": "train_5500.label", "test": "TREC_10.label"}
_TREC_CLASSES = {"ABBR": 0, "DESC": 1, "ENTY": 2, "HUM": 3, "LOC": 4, "NUM": 5}
_MRPC_FILES = {"train": "msr_paraphrase_train.txt", "test": "msr_paraphrase_test.txt"}


@dataclass(frozen=True)
class LabelledSentences:
    """Single sentences with integer class labels, in file order."""

    sentences: list[str]
    labels: np.ndarray  # int64

    def __post_init__(self) -> None:
        if len(self.sentences) != len(self.labels):
            raise ValueError(f"{len(self.sentences)} sentences but {len(self.labels)} labels")

    def __len__(self) -> int:
        return len(self.labels)


@dataclass(frozen=True)
class LabelledPairs:
    """Sentence pairs with integer labels (MRPC: 1 = paraphrase), in file order."""

    sentences1: list[str]
    sentences2: list[str]
    labels: np.ndarray  # int64

    def __post_init__(self) -> None:
        if not (len(self.sentences1) == len(self.sentences2) == len(self.labels)):
            raise ValueError("LabelledPairs columns differ in length")

    def __len__(self) -> int:
        return len(self.labels)


def _read_lines(path: Path, encoding: str) -> list[str]:
    if not path.is_file():
        raise _missing(path)
    if encoding == "utf8":
        text = _read_text(path)
    else:
        text = io.open(path, encoding=encoding).read()
    return text.splitlines()


def read_binary_task(data_dir: str | Path, task: str) -> LabelledSentences:
    """MR, CR, SUBJ or MPQA: all sentences of the positive file (label 1), then the negative file (label 0).

    Files are read as latin-1 and split with ``str.splitlines()`` as SentEval does; empty lines stay (as
    empty sentences) because SentEval keeps them and its sample counts include them.
    """
    if task not in _BINARY_FILES:
        raise ValueError(f"unknown binary task {task!r}; expected one of {sorted(_BINARY_FILES)}")
    folder, pos_name, neg_name = _BINARY_FILES[task]
    pos = [_rejoin(line) for line in _read_lines(Path(data_dir) / folder / pos_name, "latin-1")]
    neg = [_rejoin(line) for line in _read_lines(Path(data_dir) / folder / neg_name, "latin-1")]
    return LabelledSentences(pos + neg, np.array([1] * len(pos) + [0] * len(neg), dtype=np.int64))


def _parse_label(text: str, path: Path, lineno: int, allowed: set[int]) -> int:
    try:
        label = int(text)
    except ValueError:
        raise ValueError(f"{path}:{lineno}: label {text!r} is not an integer") from None
    if label not in allowed:
        raise ValueError(f"{path}:{lineno}: label {label} not in {sorted(allowed)}")
    return label


def read_sst2(data_dir: str | Path, split: str) -> LabelledSentences:
    """SST-2 ``split`` (train/dev/test) from ``SST/binary/sentiment-*``: ``sentence<TAB>label`` per line."""
    name = _check_split(split, _SST2_FILES, "SST-2")
    path = Path(data_dir) / "SST" / "binary" / name
    sentences, labels = [], []
    for lineno, line in enumerate(_read_lines(path, "utf8"), start=1):
        fields = line.strip().split("\t")
        if len(fields) != 2:
            raise ValueError(f"{path}:{lineno}: expected 'sentence<TAB>label', found {len(fields)} fields")
        sentences.append(_rejoin(fields[0]))
        labels.append(_parse_label(fields[1], path, lineno, {0, 1}))
    return LabelledSentences(sentences, np.array(labels, dtype=np.int64))


def read_trec(data_dir: str | Path, split: str) -> LabelledSentences:
    """TREC ``split`` (train = train_5500.label, test = TREC_10.label): coarse label of ``COARSE:fine question``.

    Labels: ABBR 0, DESC 1, ENTY 2, HUM 3, LOC 4, NUM 5 (SentEval's mapping); latin-1 as SentEval reads it.
    """
    name = _check_split(split, _TREC_FILES, "TREC")
    path = Path(data_dir) / "TREC" / name
    sentences, labels = [], []
    for lineno, line in enumerate(_read_lines(path, "latin-1"), start=1):
        target, sep, rest = line.strip().partition(":")
        words = rest.split(" ", 1)
        if not sep or len(words) != 2:
            raise ValueError(f"{path}:{lineno}: expected 'COARSE:fine question', got {line[:60]!r}")
        if target not in _TREC_CLASSES:
            raise ValueError(f"{path}:{lineno}: unknown TREC class {target!r}")
        sentences.append(_rejoin(words[1]))
        labels.append(_TREC_CLASSES[target])
    return LabelledSentences(sentences, np.array(labels, dtype=np.int64))


def read_mrpc(data_dir: str | Path, split: str) -> LabelledPairs:
    """MRPC ``split`` (train/test): header skipped; label column 0, sentences columns 3 and 4."""
    name = _check_split(split, _MRPC_FILES, "MRPC")
    path = Path(data_dir) / "MRPC" / name
    s1, s2, labels = [], [], []
    for lineno, line in enumerate(_read_lines(path, "utf8"), start=1):
        if lineno == 1:
            continue
        fields = line.strip().split("\t")
        if len(fields) < 5:
            raise ValueError(f"{path}:{lineno}: expected 5 tab-separated fields, found {len(fields)}")
        s1.append(_rejoin(fields[3]))
        s2.append(_rejoin(fields[4]))
        labels.append(_parse_label(fields[0], path, lineno, {0, 1}))
    return LabelledPairs(s1, s2, np.array(labels, dtype=np.int64))
