"""Readers for SentEval's "downstream" data folder (STS12-16, STS-B, SICK and the transfer tasks).

Every reader reproduces the loading code of SentEval as forked by SimCSE (``SentEval/senteval/sts.py``,
``sick.py``, ``binary.py``, ``sst.py``, ``trec.py``, ``mrpc.py``) so that scores computed on what these
functions return are the published ones. Sentences come back the way SentEval's batcher hands them to a
model: tokenised with ``str.split()`` and re-joined with single spaces.

Bad input (missing file, a line with the wrong number of fields, an unparsable score) raises ``ValueError``
naming the file and the 1-based line number.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = [
    "STS_SUBSETS",
    "StsPairs",
    "read_sts_year",
    "read_stsbenchmark",
    "read_sick",
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


def _read_text(path: Path) -> str:
    if not path.is_file():
        raise ValueError(f"{path}: file not found")
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
