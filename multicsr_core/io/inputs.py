"""Reading what users bring: premise files (stage 1 input) and triplet corpora (stage 2 input).

Premises: one sentence per line (Wiki1M), SimCSE's NLI csv (column ``sent0``, hypotheses
ignored), or csv/tsv/jsonl/parquet with a named column. Triplets: csv/tsv/jsonl/parquet with the
columns ``sent0,sent1,hard_neg`` (the SimCSE/SynCSE naming) or ``premise,entailment,contradiction``
(ours), optional score columns, or a multicsr corpus Parquet.

One set of rules for every format:

- columns: the sentence column (premises) or the three triplet columns must exist; the error
  lists the columns the file has;
- types: text columns hold text (an integer or float column is an error, never cast to text);
  score columns hold numbers (a csv/tsv cell is parsed; a JSON or Parquet string is an error);
- nulls and blanks: whitespace is stripped; a row whose sentence (or any triplet field) is null
  or blank is skipped and counted as ``empty``;
- length: a sentence longer than ``max_chars`` is an error;
- duplicates are removed (first wins) and counted; ``limit`` keeps the first N;
- a file left with no row after cleaning (empty, blank, a header alone) is an error.

Every error is an ``InputError`` whose message names the file and the 1-based line (text
formats: ``file:3``) or row (Parquet: ``file: row 3``).
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import pyarrow as pa

from multicsr_core.errors import InputError  # noqa: F401  (re-exported: callers import it from here)
from multicsr_core.io.corpus import (COLUMNS, corpus_table, is_full_corpus, parquet_schema, read_corpus,
                                     read_parquet)

DEFAULT_COLUMNS = ("sent0", "sentence", "text", "premise")
# Score columns a triplet file may carry (ours first, then common alternatives).
SCORE_COLUMNS = {
    "entailment_score": ("entailment_score", "sent1_score", "pos_score"),
    "contradiction_score": ("contradiction_score", "hard_neg_score", "neg_score"),
}


@dataclass
class InputStats:
    read: int = 0
    empty: int = 0
    duplicates: int = 0
    limited: int = 0
    kept: int = 0

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


@dataclass
class PremiseSet:
    premises: list[str]
    source_rows: list[int]  # 1-based line (text files) or row number (tables) in the source
    stats: InputStats = field(default_factory=InputStats)


def _detect_format(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix in (".txt", ".text", ".lines"):
        return "lines"
    if suffix == ".csv":
        return "csv"
    if suffix == ".tsv":
        return "tsv"
    if suffix in (".jsonl", ".ndjson"):
        return "jsonl"
    if suffix in (".parquet", ".pq"):
        return "parquet"
    raise InputError(f"{path}: cannot tell the format from the extension {suffix!r}; set premises_format")


def _read_text(path: Path) -> str:
    if not path.exists():
        raise InputError("file not found", path=path)
    if path.is_dir():
        raise InputError("is a directory; give a file", path=path)
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise InputError(f"not valid UTF-8 (byte 0x{data[exc.start]:02x} at offset {exc.start}); save the file as "
                         "UTF-8", path=path, line=line) from None


def _where(fmt: str, loc: int) -> dict:
    """Text formats report lines (``file:3``), Parquet rows (``file: row 3``)."""
    return {"row": loc} if fmt == "parquet" else {"line": loc}


def _text_value(path: Path, fmt: str, loc: int, column: str, value) -> str:
    """A text cell: None becomes "" (skipped as empty); anything not text is an error."""
    if value is None:
        return ""
    if not isinstance(value, str):
        raise InputError(f"column {column!r} holds {type(value).__name__} {value!r}, not text", path=path,
                         **_where(fmt, loc), hint="quote it as text (it is not converted)")
    return value


def _check_text_column(path: Path, table: pa.Table, column: str) -> None:
    """A Parquet column meant to hold text must be a string column (numbers are not cast)."""
    values = table.column(column)
    typ = values.type.value_type if pa.types.is_dictionary(values.type) else values.type
    if not (pa.types.is_string(typ) or pa.types.is_large_string(typ) or pa.types.is_null(typ)):
        items = values.to_pylist()
        row = next((i for i, v in enumerate(items, start=1) if v is not None), 1)
        raise InputError(f"column {column!r} has type {values.type} ({items[row - 1]!r}), not text", path=path,
                         row=row, hint="write it as a string column (it is not converted)")


def _csv_reader(path: Path, fmt: str) -> csv.reader:
    return csv.reader(io.StringIO(_read_text(path), newline=""), delimiter="\t" if fmt == "tsv" else ",")


def _csv_table(path: Path, fmt: str) -> tuple[list[str], Iterator[tuple[int, list[str]]]]:
    """(header, (line, fields) per non-blank row) of a csv/tsv file; an empty file has no header
    and no rows. ``line`` is the line the record ends on (its line unless quoted newlines)."""
    reader = _csv_reader(path, fmt)
    try:
        header = next(reader)
    except StopIteration:
        return [], iter(())
    except csv.Error as exc:
        raise InputError(f"malformed header ({exc})", path=path, line=1) from None

    def rows():
        while True:
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                raise InputError(f"malformed row ({exc})", path=path, line=reader.line_num) from None
            if row:
                yield reader.line_num, row

    return header, rows()


def _iter_rows(path: Path, fmt: str, column: str | None):
    """Yield (location, text) with location = 1-based line or row number."""
    if fmt == "lines":
        for i, line in enumerate(_read_text(path).splitlines(), start=1):
            yield i, line
        return
    if fmt in ("csv", "tsv", "simcse-nli"):
        header, rows = _csv_table(path, "tsv" if fmt == "tsv" else "csv")
        if not header:
            return
        col = _pick_column(path, header, "sent0" if fmt == "simcse-nli" else column)
        idx = header.index(col)
        for line, row in rows:
            if idx >= len(row):
                raise InputError(f"row has {len(row)} fields, column {col!r} is field {idx + 1}", path=path, line=line)
            yield line, row[idx]
        return
    if fmt == "jsonl":
        for i, obj in _iter_jsonl(path):
            if obj is None:
                yield i, ""
                continue
            col = _pick_column(path, list(obj), column, where=f":{i}")
            yield i, _text_value(path, fmt, i, col, obj[col])
        return
    if fmt == "parquet":
        col = _pick_column(path, parquet_schema(path).names, column)
        table = read_parquet(path, columns=[col])
        _check_text_column(path, table, col)
        for i, value in enumerate(table.column(col).to_pylist(), start=1):
            yield i, value or ""
        return
    raise InputError(f"unknown premises format {fmt!r}", path=path)


def _iter_jsonl(path: Path) -> Iterator[tuple[int, dict | None]]:
    """(line, object) per line; a blank line gives None."""
    for i, line in enumerate(_read_text(path).splitlines(), start=1):
        if not line.strip():
            yield i, None
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(f"not valid JSON ({exc.msg})", path=path, line=i) from None
        if not isinstance(obj, dict):
            raise InputError("expected a JSON object per line", path=path, line=i)
        yield i, obj


def _pick_column(path: Path, names: list[str], column: str | None, where: str = "") -> str:
    if column:
        if column not in names:
            raise InputError(f"{path}{where}: no column {column!r} (columns: {', '.join(map(str, names))})")
        return column
    for candidate in DEFAULT_COLUMNS:
        if candidate in names:
            return candidate
    raise InputError(f"{path}{where}: no sentence column found (looked for {', '.join(DEFAULT_COLUMNS)}; "
                     f"columns: {', '.join(map(str, names)) or 'none'}); name one with --column")


def _strip_dedupe(items, path: Path, max_chars: int, limit: int | None, stats: InputStats,
                  fmt: str = "lines") -> list[tuple[int, tuple]]:
    """The input rules, once for premises and triplets: strip every field; skip a row with an empty
    field; reject an over-long sentence (file:line); drop exact duplicates (first wins); stop at
    ``limit``. ``items`` yields (location, fields); counts go into ``stats``."""
    seen: set[tuple] = set()
    out: list[tuple[int, tuple]] = []
    for loc, raw_fields in items:
        stats.read += 1
        fields = tuple(f.strip() for f in raw_fields)
        if not all(fields):
            stats.empty += 1
            continue
        for value in fields:
            if len(value) > max_chars:
                raise InputError(f"sentence of {len(value)} characters exceeds max_chars={max_chars}", path=path,
                                 **_where(fmt, loc), hint="shorten it or raise input.max_chars")
        if fields in seen:
            stats.duplicates += 1
            continue
        if limit is not None and len(out) >= limit:
            stats.limited += 1
            continue
        seen.add(fields)
        out.append((loc, fields))
    stats.kept = len(out)
    return out


def _nothing_usable(path: Path, stats: InputStats, what: str) -> InputError:
    if path.is_file() and path.stat().st_size == 0:
        found = "the file is empty (0 bytes)"
    elif stats.read == 0:
        found = "the file holds no rows" + (" after its header" if path.suffix.lower() in (".csv", ".tsv") else "")
    else:
        found = f"all {stats.read} rows are empty or blank"
    return InputError(f"no usable {what}: {found}", path=path, hint=f"give a file with at least one {what[:-1]}")


def read_premises(path: str | Path, fmt: str = "auto", column: str | None = None,
                  max_chars: int = 2000, limit: int | None = None) -> PremiseSet:
    """Read unlabeled sentences, stripped, non-empty, de-duplicated (first occurrence wins)."""
    path = Path(path)
    if fmt == "auto":
        fmt = _detect_format(path)
    stats = InputStats()
    kept = _strip_dedupe(((loc, (raw,)) for loc, raw in _iter_rows(path, fmt, column)), path, max_chars, limit, stats,
                         fmt)
    if not kept:
        raise _nothing_usable(path, stats, "sentences")
    premises = [fields[0] for _, fields in kept]
    rows = [loc for loc, _ in kept]
    return PremiseSet(premises, rows, stats)


# ------------------------------------------------------------------------------- triplets
# Either naming of the three text columns; the first is SimCSE/SynCSE's, the second ours.
TRIPLET_NAMINGS = (("sent0", "sent1", "hard_neg"), ("premise", "entailment", "contradiction"))
TRIPLET_FIELDS = ("premise", "entailment", "contradiction")
TRIPLET_FORMATS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet",
                   ".pq": "parquet"}


def triplet_format(path: Path) -> str:
    fmt = TRIPLET_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise InputError(f"cannot tell a triplet corpus's format from the extension {path.suffix!r}", path=path,
                         hint=f"use one of {', '.join(TRIPLET_FORMATS)}")
    return fmt


def triplet_columns(path: Path, names: list[str], fmt: str, loc: int = 1) -> tuple[str, str, str]:
    """The file's names for (premise, entailment, contradiction), under either naming."""
    for naming in TRIPLET_NAMINGS:
        if all(c in names for c in naming):
            return naming
    best = max(TRIPLET_NAMINGS, key=lambda naming: sum(c in names for c in naming))
    missing = [c for c in best if c not in names]
    where = {} if fmt == "parquet" else {"line": loc}  # a Parquet schema has no row
    raise InputError(f"missing column(s) {missing} (columns: {', '.join(map(str, names)) or 'none'})", path=path,
                     **where, hint="a triplet corpus needs sent0,sent1,hard_neg or "
                                              "premise,entailment,contradiction")


def _score_value(path: Path, fmt: str, loc: int, column: str, value) -> float | None:
    """A score cell: csv/tsv text is parsed; in JSON and Parquet it must already be a number."""
    if value is None or value == "":
        return None
    if isinstance(value, str) and fmt in ("csv", "tsv"):
        try:
            return float(value)
        except ValueError:
            raise InputError(f"{column}={value!r} is not a number", path=path, **_where(fmt, loc)) from None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InputError(f"{column}={value!r} is {type(value).__name__}, not a number", path=path,
                         **_where(fmt, loc), hint="write scores as numbers")
    return float(value)


def _triplet_records(path: Path, fmt: str) -> Iterator[tuple[int, dict]]:
    """(location, record) in the corpus columns, text fields checked for type (not yet stripped)."""
    if fmt == "parquet":
        names = parquet_schema(path).names
        if is_full_corpus(names):  # a corpus multicsr wrote: every column, checked by read_corpus
            for i, row in enumerate(read_corpus(path).to_pylist(), start=1):
                yield i, {k: v for k, v in row.items() if k != "source_row"}
            return
        naming = triplet_columns(path, names, fmt)
        score_cols = {ours: next((c for c in options if c in names), None) for ours, options in SCORE_COLUMNS.items()}
        wanted = list(naming) + [c for c in score_cols.values() if c]
        table = read_parquet(path, columns=wanted)
        for col in naming:
            _check_text_column(path, table, col)
        columns = {c: table.column(c).to_pylist() for c in wanted}
        for i in range(table.num_rows):
            rec = {ours: columns[theirs][i] for ours, theirs in zip(TRIPLET_FIELDS, naming)}
            for ours, theirs in score_cols.items():
                if theirs:
                    rec[ours] = _score_value(path, fmt, i + 1, theirs, columns[theirs][i])
            yield i + 1, rec
        return
    if fmt == "jsonl":
        naming = None
        for i, obj in _iter_jsonl(path):
            if obj is None:
                yield i, {}
                continue
            if naming is None or not all(c in obj for c in naming):
                naming = triplet_columns(path, list(obj), fmt, i)
            rec = {ours: _text_value(path, fmt, i, theirs, obj[theirs]) for ours, theirs in zip(TRIPLET_FIELDS, naming)}
            for ours, options in SCORE_COLUMNS.items():
                theirs = next((c for c in options if c in obj), None)
                if theirs:
                    rec[ours] = _score_value(path, fmt, i, theirs, obj[theirs])
            yield i, rec
        return
    header, rows = _csv_table(path, fmt)
    if not header:
        return
    naming = triplet_columns(path, header, fmt)
    index = {name: header.index(name) for name in header[::-1]}  # first occurrence of a repeated name
    score_cols = {ours: next((c for c in options if c in index), None) for ours, options in SCORE_COLUMNS.items()}
    for line, row in rows:
        if len(row) < len(header):
            raise InputError(f"row has {len(row)} fields, the header {len(header)}", path=path, line=line)
        rec = {ours: row[index[theirs]] for ours, theirs in zip(TRIPLET_FIELDS, naming)}
        for ours, theirs in score_cols.items():
            if theirs:
                rec[ours] = _score_value(path, fmt, line, theirs, row[index[theirs]])
        yield line, rec


def read_triplets(path: str | Path, max_chars: int = 2000, limit: int | None = None) -> tuple[pa.Table, InputStats]:
    """Read a triplet corpus (csv/tsv/jsonl/parquet under either column naming, or our corpus
    Parquet) into the corpus schema, by the module's rules.

    Rows with an empty field are skipped and counted as empty; exact duplicate triplets are
    removed. Score columns, if present, are carried over (so a scored corpus can be re-curated);
    a multicsr corpus keeps all its columns.
    """
    path = Path(path)
    fmt = triplet_format(path)
    stats = InputStats()
    by_loc: dict[int, dict] = {}

    def texts():
        for loc, rec in _triplet_records(path, fmt):
            by_loc[loc] = rec
            yield loc, tuple(rec.get(k) or "" for k in TRIPLET_FIELDS)

    out: list[dict] = []
    for loc, fields in _strip_dedupe(texts(), path, max_chars, limit, stats, fmt):
        clean = {k: v for k, v in by_loc[loc].items() if k in COLUMNS}
        clean.update(premise=fields[0], entailment=fields[1], contradiction=fields[2], source_row=loc)
        out.append(clean)
    if not out:
        raise _nothing_usable(path, stats, "triplets")
    return corpus_table(out), stats


def column_names(path: str | Path) -> list[str]:
    """The columns of a triplet file: the Parquet schema, the csv/tsv header, the first JSON object's keys."""
    path = Path(path)
    fmt = triplet_format(path)
    if fmt == "parquet":
        return parquet_schema(path).names
    if fmt == "jsonl":
        return next((list(obj) for _, obj in _iter_jsonl(path) if obj is not None), [])
    return _csv_table(path, fmt)[0]


def has_score_columns(path: str | Path) -> bool:
    """Whether a triplet file carries both scores (under any of the names ``SCORE_COLUMNS`` lists)."""
    names = column_names(path)
    return all(any(c in names for c in options) for options in SCORE_COLUMNS.values())


def check_has_rows(path: str | Path, kind: str, fmt: str = "auto", column: str | None = None) -> None:
    """Preflight: raise the reader's :class:`InputError` unless the file yields at least one usable
    row (columns, types and encoding checked on the way). Stops at the first usable row, so a large
    file is not read twice; an error further down surfaces when the load stage reads the file."""
    path = Path(path)
    stats = InputStats()
    if kind == "premises":
        fmt = _detect_format(path) if fmt == "auto" else fmt
        rows = ((loc, (raw,)) for loc, raw in _iter_rows(path, fmt, column))
    else:
        fmt = triplet_format(path)
        rows = ((loc, tuple(rec.get(k) or "" for k in TRIPLET_FIELDS)) for loc, rec in _triplet_records(path, fmt))
    for _, fields in rows:
        stats.read += 1
        if all(f.strip() for f in fields):
            return
        stats.empty += 1
    raise _nothing_usable(path, stats, "sentences" if kind == "premises" else "triplets")


def check_max_chars(table: pa.Table, path: str | Path, max_chars: int) -> None:
    """The length rule on a corpus table's text columns (a corpus Parquet is not re-cleaned)."""
    for name in TRIPLET_FIELDS:
        for i, value in enumerate(table.column(name).to_pylist(), start=1):
            if value is not None and len(value) > max_chars:
                raise InputError(f"{name} of {len(value)} characters exceeds max_chars={max_chars}", path=path,
                                 row=i, hint="shorten it or raise input.max_chars")
