"""Reading what users bring: premise files (stage 1 input) and triplet corpora (stage 2 input).

Premises: one sentence per line (Wiki1M), SimCSE's NLI csv (column ``sent0``, hypotheses
ignored), or csv/tsv/jsonl/parquet with a named column. Triplets: ``sent0,sent1,hard_neg`` csv/tsv
(the SimCSE/SynCSE format, optional score columns) or a multicsr corpus Parquet.

Whitespace is stripped, empty lines skipped and duplicates removed; each is counted. Anything
that cannot be read raises ``InputError`` naming the file and the 1-based line (or row).
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from multicsr_core.io.corpus import COLUMNS, corpus_table, read_corpus

DEFAULT_COLUMNS = ("sent0", "sentence", "text", "premise")
# Score columns a triplet file may carry (ours first, then common alternatives).
SCORE_COLUMNS = {
    "entailment_score": ("entailment_score", "sent1_score", "pos_score"),
    "contradiction_score": ("contradiction_score", "hard_neg_score", "neg_score"),
}


class InputError(ValueError):
    """An input file that cannot be used; the message names the file and line."""


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
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise InputError(f"{path}:{line}: not valid UTF-8 (byte 0x{data[exc.start]:02x} at offset {exc.start})") from None


def _iter_rows(path: Path, fmt: str, column: str | None):
    """Yield (location, text) with location = 1-based line or row number."""
    if fmt == "lines":
        for i, line in enumerate(_read_text(path).splitlines(), start=1):
            yield i, line
        return
    if fmt in ("csv", "tsv", "simcse-nli"):
        text = _read_text(path)
        reader = csv.reader(io.StringIO(text, newline=""), delimiter="\t" if fmt == "tsv" else ",")
        try:
            header = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise InputError(f"{path}:1: malformed header ({exc})") from None
        col = _pick_column(path, header, "sent0" if fmt == "simcse-nli" else column)
        idx = header.index(col)
        while True:
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                raise InputError(f"{path}:{reader.line_num}: malformed row ({exc})") from None
            if not row:
                continue
            if idx >= len(row):
                raise InputError(f"{path}:{reader.line_num}: row has {len(row)} fields, column {col!r} is field {idx + 1}")
            yield reader.line_num, row[idx]
        return
    if fmt == "jsonl":
        for i, line in enumerate(_read_text(path).splitlines(), start=1):
            if not line.strip():
                yield i, ""
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise InputError(f"{path}:{i}: not valid JSON ({exc.msg})") from None
            if not isinstance(obj, dict):
                raise InputError(f"{path}:{i}: expected a JSON object per line")
            col = _pick_column(path, list(obj), column, where=f":{i}")
            value = obj[col]
            if value is not None and not isinstance(value, str):
                raise InputError(f"{path}:{i}: column {col!r} is {type(value).__name__}, not text")
            yield i, value or ""
        return
    if fmt == "parquet":
        if not path.is_file():
            raise InputError(f"{path}: file not found")
        schema = pq.read_schema(path)
        col = _pick_column(path, schema.names, column)
        values = pq.read_table(path, columns=[col]).column(col)
        if not (pa.types.is_string(values.type) or pa.types.is_large_string(values.type)):
            raise InputError(f"{path}: column {col!r} has type {values.type}, not text")
        for i, value in enumerate(values.to_pylist(), start=1):
            yield i, value or ""
        return
    raise InputError(f"{path}: unknown premises format {fmt!r}")


def _pick_column(path: Path, names: list[str], column: str | None, where: str = "") -> str:
    if column:
        if column not in names:
            raise InputError(f"{path}{where}: no column {column!r} (columns: {', '.join(map(str, names))})")
        return column
    for candidate in DEFAULT_COLUMNS:
        if candidate in names:
            return candidate
    raise InputError(f"{path}{where}: no sentence column found (looked for {', '.join(DEFAULT_COLUMNS)}; "
                     f"columns: {', '.join(map(str, names))}); name one with --column")


def _strip_dedupe(items, path: Path, max_chars: int, limit: int | None, stats: InputStats) -> list[tuple[int, tuple]]:
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
                raise InputError(f"{path}:{loc}: sentence of {len(value)} characters exceeds max_chars={max_chars}")
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


def read_premises(path: str | Path, fmt: str = "auto", column: str | None = None,
                  max_chars: int = 2000, limit: int | None = None) -> PremiseSet:
    """Read unlabeled sentences, stripped, non-empty, de-duplicated (first occurrence wins)."""
    path = Path(path)
    if fmt == "auto":
        fmt = _detect_format(path)
    stats = InputStats()
    kept = _strip_dedupe(((loc, (raw,)) for loc, raw in _iter_rows(path, fmt, column)), path, max_chars, limit, stats)
    premises = [fields[0] for _, fields in kept]
    rows = [loc for loc, _ in kept]
    return PremiseSet(premises, rows, stats)


def read_triplets(path: str | Path, max_chars: int = 2000, limit: int | None = None) -> tuple[pa.Table, InputStats]:
    """Read an existing triplet corpus (SimCSE/SynCSE csv or tsv, or our Parquet) into the corpus schema.

    Rows with an empty field are skipped and counted as empty; exact duplicate triplets are
    removed. Score columns, if present, are carried over (so a scored corpus can be re-curated).
    """
    path = Path(path)
    stats = InputStats()
    if path.suffix.lower() in (".parquet", ".pq"):
        table = read_corpus(path)
        rows = table.to_pylist()
        locs = list(range(1, len(rows) + 1))
    else:
        text = _read_text(path)
        delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
        reader = csv.DictReader(io.StringIO(text, newline=""), delimiter=delimiter)
        needed = ("sent0", "sent1", "hard_neg")
        header = reader.fieldnames or []
        missing = [c for c in needed if c not in header]
        if missing:
            raise InputError(f"{path}:1: missing column(s) {missing} (header: {', '.join(header)}); "
                             "a triplet corpus needs sent0,sent1,hard_neg")
        rows, locs = [], []
        try:
            for rec in reader:
                row = {"premise": rec["sent0"], "entailment": rec["sent1"], "contradiction": rec["hard_neg"]}
                for ours, options in SCORE_COLUMNS.items():
                    for name in options:
                        if name in rec and rec[name] not in (None, ""):
                            try:
                                row[ours] = float(rec[name])
                            except ValueError:
                                raise InputError(f"{path}:{reader.line_num}: {name}={rec[name]!r} is not a number") from None
                            break
                if None in rec.values():
                    raise InputError(f"{path}:{reader.line_num}: row has fewer fields than the header")
                rows.append(row)
                locs.append(reader.line_num)  # the line the record ends on (= its line unless quoted newlines)
        except csv.Error as exc:
            raise InputError(f"{path}:{reader.line_num}: malformed row ({exc})") from None
    texts = ((loc, tuple(row.get(k) or "" for k in ("premise", "entailment", "contradiction")))
             for loc, row in zip(locs, rows))
    by_loc = dict(zip(locs, rows))
    out: list[dict] = []
    for loc, fields in _strip_dedupe(texts, path, max_chars, limit, stats):
        clean = {k: v for k, v in by_loc[loc].items() if k in COLUMNS}
        clean.update(premise=fields[0], entailment=fields[1], contradiction=fields[2], source_row=loc)
        out.append(clean)
    return corpus_table(out), stats
