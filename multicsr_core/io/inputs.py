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
- a file left with no row after cleaning (empty, blank, a header alone) is an error;
- text: UTF-8 (a BOM is allowed); a C0 control character other than tab and line breaks (a NUL
  byte, an escape sequence), raw or written as a JSON escape, is an error naming its line and
  column; lines end at ``\n``, ``\r\n`` or ``\r`` only (never at U+2028, U+0085, form feed);
- csv/tsv: every row has exactly as many fields as the header (more fields means an unquoted
  delimiter inside a sentence); quoting is strict (an unclosed quote is an error at the line it
  opens on); a row is reported at the line it starts on.

Inputs that are not regular files (``<(cmd)``, ``/dev/stdin``, a FIFO) are read once, as a stream,
into memory (later reads of the same input in this process get the same bytes), waiting at most
``MULTICSR_FIFO_TIMEOUT_S`` seconds (default 30; 0 waits without limit) for data and taking at most
``MULTICSR_STREAM_MAX_MB`` (default 2048); a terminal is refused. Their format comes from the name
when it has a known extension, else from the content (as for any name without an extension).
Parquet cannot come through a pipe (it needs a seekable file).

Every error is an ``InputError`` whose message names the file and the 1-based line (text
formats: ``file:3``) or row (Parquet: ``file: row 3``).
"""

from __future__ import annotations

import csv
import errno
import hashlib
import io
import json
import logging
import os
import re
import select
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import pyarrow as pa

from multicsr_core.errors import InputError  # noqa: F401  (re-exported: callers import it from here)
from multicsr_core.io.atomic import write_bytes_atomic
from multicsr_core.io.corpus import (COLUMNS, corpus_table, is_full_corpus, parquet_schema, read_corpus,
                                     read_parquet)

# the logger read_any_corpus warns on (skipped rows of a user's triplets)
log = logging.getLogger(__name__)

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


# ------------------------------------------------------------------------------- the bytes
FIFO_TIMEOUT_ENV = "MULTICSR_FIFO_TIMEOUT_S"
DEFAULT_FIFO_TIMEOUT_S = 30.0
STREAM_MAX_ENV = "MULTICSR_STREAM_MAX_MB"
DEFAULT_STREAM_MAX_MB = 2048
# What a stream (pipe, FIFO, device) held, by (device, inode): read once per process.
_STREAMS: dict[tuple[int, int], bytes | bytearray] = {}


def _os_error(path: Path, exc: OSError, flag: str | None = None) -> InputError:
    """An operating-system error about ``path`` as one line that says what is wrong with it."""
    check = f"check {flag}" if flag else "check the path"
    code = exc.errno
    if code == errno.ENOENT:
        if os.path.islink(path):
            return InputError(f"is a symlink to {os.readlink(path)}, which does not exist", path=path,
                              hint=f"fix the link or {check}")
        return InputError("file not found", path=path, hint=check)
    if code == errno.ELOOP:
        return InputError("symlink loop (the link leads back to itself)", path=path,
                          hint=f"point the link at a real file or {check}")
    if code == errno.ENOTDIR:
        return InputError("a part of this path is a file, not a folder", path=path, hint=check)
    if code in (errno.EACCES, errno.EPERM):
        return InputError("permission denied", path=path, hint="make it readable (chmod) or " + check)
    if code == errno.ENAMETOOLONG:
        return InputError("the path is too long", path=path, hint=check)
    if code == errno.ENXIO:
        return InputError("cannot be opened for reading (a socket, or a device that is not there)", path=path,
                          hint=check)
    return InputError(f"cannot be read ({exc.strerror or exc})", path=path, hint=check)


def input_stat(path: str | Path, flag: str | None = None) -> os.stat_result:
    """``os.stat`` of an input that can be read: a regular file, a pipe/FIFO or a character device
    (``/dev/stdin``); anything else (missing, a symlink loop or a dangling symlink, a directory, a
    socket, a block device) is an :class:`InputError` naming it."""
    path = Path(path)
    try:
        st = os.stat(path)
    except OSError as exc:
        raise _os_error(path, exc, flag) from None
    mode = st.st_mode
    if stat.S_ISDIR(mode):
        raise InputError("is a directory, not a file", path=path,
                         hint=f"give a file as {flag}" if flag else "give a file")
    if stat.S_ISSOCK(mode):
        raise InputError("is a socket, not a file", path=path, hint=f"give a file or a pipe as {flag or 'the input'}")
    if stat.S_ISBLK(mode):
        raise InputError("is a block device, not a file", path=path, hint=f"give a file as {flag or 'the input'}")
    return st


def is_stream(path: str | Path) -> bool:
    """Whether ``path`` is read as a stream (a pipe, a FIFO, a device), not a regular file."""
    try:
        return not stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return False


def _env_number(name: str, default: float) -> float:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise InputError(f"{name}={raw!r} is not a number",
                         hint=f"set {name} to a number (default {default:g})") from None
    return value


def _read_stream(path: Path, st: os.stat_result) -> bytes | bytearray:
    """The whole content of a pipe, FIFO or device, read once (then served from memory).

    Opened non-blocking (a FIFO nobody writes to does not block ``open``); waits for data with
    ``poll`` at most ``MULTICSR_FIFO_TIMEOUT_S`` seconds at a time, and stops at
    ``MULTICSR_STREAM_MAX_MB`` (an endless stream such as ``/dev/zero`` does not fill the memory)."""
    key = (st.st_dev, st.st_ino)
    if key in _STREAMS:
        return _STREAMS[key]
    timeout = _env_number(FIFO_TIMEOUT_ENV, DEFAULT_FIFO_TIMEOUT_S)
    timeout = None if timeout <= 0 else timeout
    limit = int(_env_number(STREAM_MAX_ENV, DEFAULT_STREAM_MAX_MB) * 1024 * 1024)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise _os_error(path, exc) from None
    data = bytearray()  # grown in place: no second copy of a large stream at the end
    size = 0
    try:
        if os.isatty(fd):
            raise InputError("is a terminal, not a file or a pipe", path=path,
                             hint="redirect a file into the command (... /dev/stdin < corpus.csv) or pipe one into it")
        poller = select.poll() if hasattr(select, "poll") else None
        if poller is not None:
            poller.register(fd, select.POLLIN | select.POLLPRI)
        last = time.monotonic()
        while True:
            wait = None if timeout is None else max(0.0, timeout - (time.monotonic() - last))
            if wait is not None and wait <= 0:
                ready = False
            elif poller is not None:
                ready = bool(poller.poll(None if wait is None else max(1, int(wait * 1000))))
            else:
                ready = bool(select.select([fd], [], [], wait)[0])
            if not ready:
                said = (f"nothing came through it for {timeout:g} s (is anything writing to it?)" if not size else
                        f"{size} bytes came through it, then nothing for {timeout:g} s, and it was not closed")
                raise InputError(said, path=path,
                                 hint=f"start the program that writes it (or give a file), or wait longer with "
                                      f"{FIFO_TIMEOUT_ENV}=SECONDS (0: no limit)")
            try:
                chunk = os.read(fd, 1 << 20)
            except BlockingIOError:
                continue  # woken without data (a writer came and went): wait again, within the deadline
            except OSError as exc:
                raise _os_error(path, exc) from None
            if not chunk:
                break
            size += len(chunk)
            if size > limit:
                raise InputError(f"more than {limit // (1024 * 1024)} MiB came through it (an endless stream?)",
                                 path=path, hint=f"give a file, or raise {STREAM_MAX_ENV}")
            data += chunk
            last = time.monotonic()
    finally:
        os.close(fd)
    _STREAMS[key] = data
    return data


def _read_bytes(path: Path) -> bytes | bytearray:
    """The bytes of an input: a regular file each time it is asked for; a stream once."""
    st = input_stat(path)
    if not stat.S_ISREG(st.st_mode):
        return _read_stream(path, st)
    try:
        return path.read_bytes()
    except OSError as exc:
        raise _os_error(path, exc) from None


def materialize_stream(path: str | Path, folder: str | Path) -> Path:
    """``path`` itself for a regular file; for a pipe, FIFO or device its content (read once) in a
    file under ``folder`` named by its sha256, so a run that reads its input as a stream can be
    resumed and cached like one that read a file."""
    path = Path(path)
    if not is_stream(path):
        return path
    data = bytes(_read_bytes(path))
    target = Path(folder) / f"stream-{hashlib.sha256(data).hexdigest()[:16]}"
    if not target.is_file():
        write_bytes_atomic(target, data)
    return target


# Known binary formats a text input might really be (a renamed or compressed file).
_MAGIC = ((b"\x1f\x8b", "is gzip-compressed, not text", "decompress it first (gunzip)"),
          (b"PK\x03\x04", "is a zip archive (an .xlsx workbook?), not text", "export the sheet as UTF-8 csv"),
          (b"PAR1", "is a Parquet file, not text", "give it a .parquet name"),
          (b"BZh", "is bzip2-compressed, not text", "decompress it first (bunzip2)"),
          (b"\xfd7zXZ\x00", "is xz-compressed, not text", "decompress it first (unxz)"),
          (b"\x28\xb5\x2f\xfd", "is zstd-compressed, not text", "decompress it first (unzstd)"),
          (b"\xff\xfe", "is UTF-16 text (it starts with a UTF-16 byte-order mark), not UTF-8", "save it as UTF-8"),
          (b"\xfe\xff", "is UTF-16 text (it starts with a UTF-16 byte-order mark), not UTF-8", "save it as UTF-8"))
_LINE_BREAK = re.compile(r"\r\n|\r|\n")
# C0 controls but tab, line feed and carriage return
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f]")
_NOT_CONTROL = bytes(range(0x20, 0x100)) + b"\t\n\r"
_CONTROL_NAMES = {0: "NUL", 7: "BEL", 8: "backspace", 0x0B: "vertical tab", 0x0C: "form feed", 0x1B: "ESC"}


def _control_name(char: str) -> str:
    code = ord(char)
    name = _CONTROL_NAMES.get(code)
    return f"U+{code:04X}" + (f" ({name})" if name else "")


def _control_hint(char: str) -> str:
    if char == "\x00":
        return "a NUL byte: is it UTF-16 or a binary file? save it as UTF-8 text"
    return "remove it (text may hold tabs and line breaks, no other control characters)"


def _decode(path: Path, data: bytes | bytearray) -> str:
    """UTF-8 text (a BOM is dropped) without control characters, or an error naming line and column."""
    for magic, what, todo in _MAGIC:
        if data.startswith(magic):
            raise InputError(what, path=path, line=1, hint=todo)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise InputError(f"not valid UTF-8 (byte 0x{data[exc.start]:02x} at offset {exc.start}); save the file as "
                         "UTF-8", path=path, line=line) from None
    # fast path: bytes.translate deletes every byte but the forbidden controls (a UTF-8 byte below
    # 0x20 is always that character); only when one is left is the text searched for it
    bad = _CONTROL.search(text) if data.translate(None, _NOT_CONTROL) else None
    if bad is not None:
        before = text[: bad.start()]
        breaks = list(_LINE_BREAK.finditer(before))
        column = bad.start() - (breaks[-1].end() if breaks else 0) + 1
        raise InputError(f"control character {_control_name(bad.group())} at column {column}", path=path,
                         line=len(breaks) + 1, hint=_control_hint(bad.group()))
    return text


def _read_text(path: Path) -> str:
    return _decode(path, _read_bytes(path))


def _lines(text: str) -> list[str]:
    """The lines of ``text``, split at ``\\n``, ``\\r\\n`` and ``\\r`` only (``str.splitlines`` also
    splits at U+2028, U+0085 and form feed, which shifts every later line number)."""
    if "\x85" not in text and "\u2028" not in text and "\u2029" not in text:
        return text.splitlines()  # the same split (the other breaks it knows are controls, refused by _decode)
    lines = _LINE_BREAK.split(text)
    if lines and lines[-1] == "":
        lines.pop()
    return lines


# ------------------------------------------------------------------------------- the format
def _sniff(path: Path) -> tuple[str, str]:
    """(kind, first non-blank line) of an input whose name tells no format: kind "parquet" (its
    magic bytes), "jsonl" (the first line opens a JSON object) or "table" (csv, tsv or lines:
    the caller decides from the first line)."""
    data = _read_bytes(path)
    if data.startswith(b"PAR1"):
        return "parquet", ""
    first = next((line for line in _lines(_decode(path, data)) if line.strip()), "")
    if first.lstrip().startswith("{"):
        return "jsonl", first
    return "table", first


def _table_format(first: str, wanted: list[tuple[str, ...]]) -> str | None:
    """csv or tsv: the delimiter whose split of the header line holds one of ``wanted``'s column
    sets; else the one the line holds more of; None when it holds neither."""
    split = {fmt: [f.strip().strip('"') for f in first.split(delim)] for fmt, delim in (("tsv", "\t"), ("csv", ","))}
    for naming in wanted:
        for fmt, names in split.items():
            if all(c in names for c in naming):
                return fmt
    if "\t" not in first and "," not in first:
        return None
    return "tsv" if first.count("\t") > first.count(",") else "csv"


def _premise_table_format(first: str, column: str | None) -> str:
    """A premise file without a known extension is a table (csv, tsv) when its first line is a
    header naming the sentence column (``column``, else one of ``DEFAULT_COLUMNS``); else lines."""
    wanted = [column] if column else list(DEFAULT_COLUMNS)
    for fmt, delim in (("tsv", "\t"), ("csv", ",")):
        if delim in first and any(c in [f.strip().strip('"') for f in first.split(delim)] for c in wanted):
            return fmt
    if first.strip().strip('"') in wanted:
        return "tsv"  # one column: a sentence's commas stay in it
    return "lines"


def _refuse_parquet_stream(path: Path) -> None:
    if is_stream(path):
        raise InputError("is a pipe or another stream, and Parquet cannot be read from one (it needs a file it can "
                         "seek in)", path=path, hint="write it to a file first and give that file")


def _detect_format(path: Path, column: str | None = None) -> str:
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
        _refuse_parquet_stream(path)
        return "parquet"
    if suffix == "" or is_stream(path):  # /dev/fd/63, /dev/stdin, a FIFO: told from the content
        kind, first = _sniff(path)
        if kind == "parquet":
            _refuse_parquet_stream(path)
            return "parquet"
        if kind == "jsonl":
            return "jsonl"
        return _premise_table_format(first, column)
    raise InputError(f"{path}: cannot tell the format from the extension {suffix!r}; set premises_format")


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
    # strict: a quote that opens a field must close it (else the reader silently glues text on, or
    # runs an unclosed quote to the end of the file); the lines are counted as _lines counts them
    return csv.reader(io.StringIO(_read_text(path), newline=""), delimiter="\t" if fmt == "tsv" else ",",
                      strict=True)


def _csv_error(path: Path, exc: csv.Error, start: int, line: int) -> InputError:
    """A reader error as one line at the line the record starts on (``start``) or where the
    reader stopped (``line``)."""
    text = str(exc)
    if "unexpected end of data" in text:
        return InputError("a quoted field opens in this row and is never closed (the file ends inside it)", path=path,
                          line=start, hint='close the quote; a quote inside a quoted field is written twice ("")')
    if "field larger than field limit" in text:
        return InputError(f"a field runs past {csv.field_size_limit()} characters (an unclosed quote in this row?)",
                          path=path, line=start, hint='close the quote, or shorten the field')
    if "expected after" in text:
        if line > start:
            return InputError(f"a quoted field opens in this row and runs to line {line}, where text follows its "
                              "closing quote (an unclosed quote in this row?)", path=path, line=start,
                              hint='close the quote; a quote inside a quoted field is written twice ("")')
        return InputError(f"a quoted field has text after its closing quote ({text})", path=path, line=line,
                          hint='quote the whole field, and write a quote inside it twice ("")')
    return InputError(f"malformed row ({text})", path=path, line=start)


def _csv_table(path: Path, fmt: str) -> tuple[list[str], Iterator[tuple[int, list[str]]]]:
    """(header, (line, fields) per non-blank row) of a csv/tsv file; an empty file has no header
    and no rows. ``line`` is the line the record starts on (a quoted field may hold line breaks).
    Every row has exactly the header's number of fields: more means a delimiter inside an
    unquoted sentence (the fields after it would land in the wrong columns), fewer a lost one."""
    reader = _csv_reader(path, fmt)
    try:
        header = next(reader)
    except StopIteration:
        return [], iter(())
    except csv.Error as exc:
        raise _csv_error(path, exc, 1, reader.line_num) from None
    width = len(header)
    delimiter = "tab" if fmt == "tsv" else "comma"

    def rows():
        while True:
            start = reader.line_num + 1
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                raise _csv_error(path, exc, start, reader.line_num) from None
            if not row or (width > 1 and len(row) == 1 and not row[0].strip()):
                continue  # a blank line
            if len(row) != width:
                spans = (f" (the row runs over lines {start}-{reader.line_num}: a quoted field with line breaks, or "
                         "an unclosed quote)" if reader.line_num > start else "")
                if len(row) > width:
                    why = spans or f" (an unquoted {delimiter} inside a field?)"
                    raise InputError(f"row has {len(row)} fields, the header {width}{why}", path=path, line=start,
                                     hint=f"put a field that holds a {delimiter} in double quotes, or remove the "
                                          f"extra {delimiter}")
                raise InputError(f"row has {len(row)} fields, the header {width}{spans}", path=path, line=start,
                                 hint="give every column a value (an empty one is skipped as empty)")
            yield start, row

    return header, rows()


def _iter_rows(path: Path, fmt: str, column: str | None):
    """Yield (location, text) with location = 1-based line or row number."""
    if fmt == "lines":
        for i, line in enumerate(_lines(_read_text(path)), start=1):
            yield i, line
        return
    if fmt in ("csv", "tsv", "simcse-nli"):
        header, rows = _csv_table(path, "tsv" if fmt == "tsv" else "csv")
        if not header:
            return
        col = _pick_column(path, header, "sent0" if fmt == "simcse-nli" else column)
        idx = header.index(col)
        for line, row in rows:  # every row has the header's width
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
        _refuse_parquet_stream(path)
        col = _pick_column(path, parquet_schema(path).names, column)
        table = read_parquet(path, columns=[col])
        _check_text_column(path, table, col)
        for i, value in enumerate(table.column(col).to_pylist(), start=1):
            yield i, value or ""
        return
    raise InputError(f"unknown premises format {fmt!r}", path=path)


def _iter_jsonl(path: Path) -> Iterator[tuple[int, dict | None]]:
    """(line, object) per line; a blank line gives None. A control character written as a JSON
    escape (``\\u0000``) in a top-level string value is an error, as it is raw in any text."""
    for i, line in enumerate(_lines(_read_text(path)), start=1):
        if not line.strip():
            yield i, None
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(f"not valid JSON ({exc.msg})", path=path, line=i) from None
        if not isinstance(obj, dict):
            raise InputError("expected a JSON object per line", path=path, line=i)
        for key, value in obj.items():
            bad = _CONTROL.search(value) if isinstance(value, str) else None
            if bad is not None:
                raise InputError(f"control character {_control_name(bad.group())} (a JSON escape) in {key!r} at "
                                 f"character {bad.start() + 1} of its value", path=path, line=i,
                                 hint=f"remove the \\u{ord(bad.group()):04x} escape (text may hold tabs and line "
                                      "breaks, no other control characters)")
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


def _nothing_usable(path: Path, stats: InputStats, what: str, fmt: str | None = None) -> InputError:
    stream = is_stream(path)
    if stream and not _read_bytes(path):
        found = "nothing came through it (0 bytes)"
    elif not stream and path.is_file() and path.stat().st_size == 0:
        found = "the file is empty (0 bytes)"
    elif stats.read == 0:
        table = fmt in ("csv", "tsv", "simcse-nli") if fmt else path.suffix.lower() in (".csv", ".tsv")
        found = "the file holds no rows" + (" after its header" if table else "")
    else:
        found = f"all {stats.read} rows are empty or blank"
    return InputError(f"no usable {what}: {found}", path=path, hint=f"give a file with at least one {what[:-1]}")


def read_premises(path: str | Path, fmt: str = "auto", column: str | None = None,
                  max_chars: int = 2000, limit: int | None = None) -> PremiseSet:
    """Read unlabeled sentences, stripped, non-empty, de-duplicated (first occurrence wins)."""
    path = Path(path)
    if fmt == "auto":
        fmt = _detect_format(path, column)
    stats = InputStats()
    kept = _strip_dedupe(((loc, (raw,)) for loc, raw in _iter_rows(path, fmt, column)), path, max_chars, limit, stats,
                         fmt)
    if not kept:
        raise _nothing_usable(path, stats, "sentences", fmt)
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
    """The format by the extension; a name without one (``/dev/fd/63``, ``/dev/stdin``) or a stream
    with an unknown one: by the content (Parquet by its magic, JSON lines by a leading ``{``, else
    the delimiter that splits the header into a triplet naming)."""
    fmt = TRIPLET_FORMATS.get(path.suffix.lower())
    if fmt == "parquet":
        _refuse_parquet_stream(path)
    if fmt is None and (path.suffix == "" or is_stream(path)):
        kind, first = _sniff(path)
        if kind == "parquet":
            _refuse_parquet_stream(path)
            return "parquet"
        if kind == "jsonl":
            return "jsonl"
        return _table_format(first, list(TRIPLET_NAMINGS)) or "csv"
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
    told = ("" if path.suffix.lower() in TRIPLET_FORMATS else
            f", read as {fmt}: the name has no known extension, so the format was told from the content")
    raise InputError(f"missing column(s) {missing} (columns: {', '.join(map(str, names)) or 'none'}{told})", path=path,
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
    for line, row in rows:  # every row has the header's width (checked by _csv_table)
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
        raise _nothing_usable(path, stats, "triplets", fmt)
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
        fmt = _detect_format(path, column) if fmt == "auto" else fmt
        rows = ((loc, (raw,)) for loc, raw in _iter_rows(path, fmt, column))
    else:
        fmt = triplet_format(path)
        rows = ((loc, tuple(rec.get(k) or "" for k in TRIPLET_FIELDS)) for loc, rec in _triplet_records(path, fmt))
    for _, fields in rows:
        stats.read += 1
        if all(f.strip() for f in fields):
            return
        stats.empty += 1
    raise _nothing_usable(path, stats, "sentences" if kind == "premises" else "triplets", fmt)


def check_max_chars(table: pa.Table, path: str | Path, max_chars: int) -> None:
    """The length rule on a corpus table's text columns (a corpus Parquet is not re-cleaned)."""
    for name in TRIPLET_FIELDS:
        for i, value in enumerate(table.column(name).to_pylist(), start=1):
            if value is not None and len(value) > max_chars:
                raise InputError(f"{name} of {len(value)} characters exceeds max_chars={max_chars}", path=path,
                                 row=i, hint="shorten it or raise input.max_chars")


def read_any_corpus(path: str | Path, max_chars: int = 2000) -> pa.Table:
    """A corpus entering at stage 2 or 3: a corpus Parquet multicsr wrote (every row kept, as
    written), or a user's triplets (csv/tsv/jsonl/parquet, ``sent0,sent1,hard_neg`` or
    ``premise,entailment,contradiction``) read by the input rules above. Either way a sentence
    over ``max_chars`` and a file with no row are errors naming the file."""
    path = Path(path)
    if path.suffix.lower() in (".parquet", ".pq") and is_full_corpus(parquet_schema(path).names):
        table = read_corpus(path)
        if table.num_rows == 0:
            raise InputError("no usable triplets: the corpus has no rows", path=path,
                             hint="check the stage that wrote it")
        check_max_chars(table, path, max_chars)
        return table
    table, stats = read_triplets(path, max_chars=max_chars)
    if stats.empty or stats.duplicates:  # the input rules skip these; say so, or a user's rows vanish unseen
        log.warning("warning: %s: skipped %d row(s) with an empty or null field and %d duplicate triplet(s); "
                    "%d of %d kept", path, stats.empty, stats.duplicates, stats.kept, stats.read)
    return table
