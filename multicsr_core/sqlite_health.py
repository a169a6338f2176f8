"""Opening a SQLite cache that may have been damaged (a full disk, a copy cut short, a bad sector).

A damaged cache must not block every later run (``database disk image is malformed``, naming no
file), and must not be silently recreated either: the response cache holds paid LLM answers.
:func:`check_or_quarantine` runs before a cache is opened: a file that is empty, is not SQLite,
or fails ``PRAGMA quick_check`` is *moved aside* (with its ``-wal``/``-shm`` companions) to
``<name>.corrupt-<UTC timestamp>``, named in a warning, and the caller builds a fresh cache.
Rows are recovered from the moved file by :func:`readable_rows` (what SQLite can still read
through the table's b-tree) and :func:`scan_rows` (every table row still stored on a page of the
file or its WAL, found by reading the pages themselves: what survives a damaged root or interior
page, which hides every row below it from SQLite); :func:`index_values` lists the keys an index
still holds, so a merge can say how many rows are lost. The response cache's
``merge_quarantined`` and ``multicsr cache merge`` use them.

The check and the creation of a new file happen under a ``filelock`` beside the file, so a second
process opening the cache at the same moment never sees (and moves aside) a half-created one.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shlex
import sqlite3
import struct
import time
from pathlib import Path
from typing import Iterator

log = logging.getLogger(__name__)

SQLITE_HEADER = b"SQLite format 3\x00"


class DamagedCache(RuntimeError):
    """A cache file was damaged and has been moved aside (``quarantined`` names where)."""


def damage_of(path: str | Path) -> str | None:
    """Why ``path`` is not a healthy SQLite database, or None when it is (or does not exist)."""
    path = Path(path)
    if not path.exists():
        return None
    size = path.stat().st_size
    if size == 0:
        return "the file is empty (0 bytes)"
    with open(path, "rb") as fh:
        if fh.read(len(SQLITE_HEADER)) != SQLITE_HEADER:
            return "the file is not a SQLite database"
    try:
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=60)) as conn:
            rows = conn.execute("PRAGMA quick_check").fetchall()
    except sqlite3.DatabaseError as err:
        return f"SQLite cannot read it ({err})"
    problems = [r[0] for r in rows if r[0] != "ok"]
    return f"PRAGMA quick_check: {'; '.join(problems[:3])}" if problems else None


def quarantine(path: str | Path, reason: str) -> Path:
    """Move ``path`` (and its -wal/-shm files) to ``<name>.corrupt-<timestamp>``; warn; return the new name."""
    path = Path(path)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    target = path.with_name(f"{path.name}.corrupt-{stamp}")
    n = 1
    while target.exists():
        n += 1
        target = path.with_name(f"{path.name}.corrupt-{stamp}-{n}")
    for suffix in ("-wal", "-shm"):
        companion = path.with_name(path.name + suffix)
        if companion.exists():
            os.replace(companion, target.with_name(target.name + suffix))
    os.replace(path, target)
    reason = " ".join(reason.split())  # one line: quick_check lists a problem per line
    if len(reason) > 300:
        reason = reason[:300] + "..."
    recover = ""
    if path.name == "responses.sqlite" and path.parent.name == "llm":  # WORKDIR/llm/responses.sqlite
        workdir = path.parent.parent
        recover = (f"; recover its rows with: multicsr cache merge {shlex.quote(str(target))} "
                   f"--workdir {shlex.quote(str(workdir))}")
    elif "responses" in path.name:
        recover = f"; recover its rows with: multicsr cache merge {shlex.quote(str(target))} --workdir WORKDIR"
    message = f"warning: cache {path} is damaged ({reason}); moved it to {target} and started a new one{recover}"
    log.warning(message)  # with no logging configured, Python's last-resort handler prints it on stderr
    return target


@contextlib.contextmanager
def checked_open(path: str | Path) -> Iterator[Path | None]:
    """Hold the file's creation lock; move a damaged file aside first. Yields the quarantined
    path (None when the file was healthy or absent); create the schema inside the block."""
    from filelock import FileLock

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path) + ".lock", timeout=120):
        reason = damage_of(path)
        yield quarantine(path, reason) if reason else None


def readable_rows(path: str | Path, table: str, columns: str, chunk: int = 256) -> tuple[list[tuple], int]:
    """Every row of ``table`` that SQLite can still read in a damaged file, row by row where a
    range fails; returns (rows, rowids that could not be read)."""
    rows: list[tuple] = []
    lost = 0
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        top = conn.execute(f"SELECT max(rowid) FROM {table}").fetchone()[0] or 0
    except sqlite3.DatabaseError:
        return rows, 0
    with contextlib.closing(conn):
        def read(lo: int, hi: int) -> None:
            nonlocal lost
            try:
                batch = conn.execute(f"SELECT {columns} FROM {table} WHERE rowid BETWEEN ? AND ?", (lo, hi)).fetchall()
            except sqlite3.DatabaseError:
                if lo == hi:
                    lost += 1
                    return
                mid = (lo + hi) // 2
                read(lo, mid)
                read(mid + 1, hi)
            else:
                rows.extend(batch)
        for lo in range(1, top + 1, chunk):
            read(lo, min(lo + chunk - 1, top))
    return rows, lost


def index_values(path: str | Path, table: str, column: str) -> list | None:
    """The values of ``column`` that an index of ``table`` in a damaged file still lists (read from
    the index alone, never the table), or None when no index on it can be read at all."""
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    except sqlite3.DatabaseError:
        return None
    with contextlib.closing(conn):
        try:
            indexes = [name for (name,) in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = ?", (table,))]
        except sqlite3.DatabaseError:
            return None
        best: list | None = None
        for name in indexes:
            try:
                if conn.execute(f"SELECT name FROM pragma_index_info('{name}')").fetchall() != [(column,)]:
                    continue
                cursor = conn.execute(f"SELECT {column} FROM {table} INDEXED BY {name}")
            except sqlite3.DatabaseError:
                continue
            values: list = []
            try:
                for row in cursor:
                    values.append(row[0])
            except sqlite3.DatabaseError:  # a damaged index page: keep what was listed before it
                pass
            if best is None or len(values) > len(best):
                best = values
        return best


# -- reading the pages themselves (https://www.sqlite.org/fileformat2.html) ----------------------------
_TABLE_LEAF = 0x0D


def _varint(buf: bytes, i: int) -> tuple[int, int]:
    value = 0
    for k in range(8):
        byte = buf[i + k]
        value = (value << 7) | (byte & 0x7F)
        if byte < 0x80:
            return value, i + k + 1
    return (value << 8) | buf[i + 8], i + 9


def _record(payload: bytes, encoding: str) -> tuple:
    header_size, i = _varint(payload, 0)
    if not 0 < header_size <= len(payload):
        raise ValueError("bad record header")
    types = []
    while i < header_size:
        serial, i = _varint(payload, i)
        types.append(serial)
    values: list = []
    pos = header_size
    widths = {1: 1, 2: 2, 3: 3, 4: 4, 5: 6, 6: 8}
    for serial in types:
        if serial == 0:
            values.append(None)
        elif serial in widths:
            n = widths[serial]
            values.append(int.from_bytes(payload[pos:pos + n], "big", signed=True))
            pos += n
        elif serial == 7:
            values.append(struct.unpack(">d", payload[pos:pos + 8])[0])
            pos += 8
        elif serial in (8, 9):
            values.append(serial - 8)
        elif serial >= 12:
            n = (serial - 12) // 2
            raw = payload[pos:pos + n]
            values.append(raw.decode(encoding) if serial % 2 else bytes(raw))  # strict: garbage is no row
            pos += n
        else:
            raise ValueError("reserved serial type")
        if pos > len(payload):
            raise ValueError("record runs past its payload")
    return tuple(values)


def _leaf_cells(page: bytes, start: int, usable: int, pages: dict[int, bytes], encoding: str) -> Iterator[tuple]:
    """The records on one table leaf page (``start``: 100 on page 1, else 0)."""
    cells = int.from_bytes(page[start + 3:start + 5], "big")
    max_local = usable - 35
    min_local = ((usable - 12) * 32 // 255) - 23
    for n in range(cells):
        try:
            offset = int.from_bytes(page[start + 8 + 2 * n:start + 10 + 2 * n], "big")
            size, i = _varint(page, offset)
            _, i = _varint(page, i)  # rowid
            if size <= max_local:
                payload = page[i:i + size]
            else:
                local = min_local + ((size - min_local) % (usable - 4))
                local = local if local <= max_local else min_local
                payload = bytearray(page[i:i + local])
                following = int.from_bytes(page[i + local:i + local + 4], "big")
                hops = 0
                while len(payload) < size and following and hops < len(pages) + 1:
                    overflow = pages[following]
                    payload += overflow[4:usable]
                    following = int.from_bytes(overflow[:4], "big")
                    hops += 1
                payload = bytes(payload[:size])
            if len(payload) != size:
                continue
            yield _record(payload, encoding)
        except (ValueError, IndexError, KeyError, UnicodeDecodeError, struct.error, OverflowError):
            continue  # a damaged cell: the others may be whole


def scan_rows(path: str | Path, columns: int) -> list[tuple]:
    """Every record of ``columns`` values stored on a table leaf page of the database file at
    ``path`` or in its ``-wal`` file, found by reading the pages, not the b-tree: what a damaged
    root or interior page hides from SQLite. Older versions of a row (an earlier WAL frame, a page
    freed after a split) may appear too: the caller keeps the newest by its own key."""
    path = Path(path)
    data = path.read_bytes()
    if len(data) < 100 or data[:len(SQLITE_HEADER)] != SQLITE_HEADER:
        return []
    page_size = int.from_bytes(data[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    if page_size < 512 or page_size & (page_size - 1):
        return []
    usable = page_size - data[20]
    encoding = {2: "utf-16-le", 3: "utf-16-be"}.get(int.from_bytes(data[56:60], "big"), "utf-8")
    images = [(n + 1, data[n * page_size:(n + 1) * page_size]) for n in range(len(data) // page_size)]
    wal = path.with_name(path.name + "-wal")
    if wal.is_file():
        frames = wal.read_bytes()
        if len(frames) >= 32 and int.from_bytes(frames[8:12], "big") == page_size:
            salts = frames[16:24]
            for at in range(32, len(frames) - 24 - page_size + 1, 24 + page_size):
                if frames[at + 8:at + 16] == salts:
                    images.append((int.from_bytes(frames[at:at + 4], "big"), frames[at + 24:at + 24 + page_size]))
    pages = dict(images)  # the newest image of each page (WAL frames come last), for overflow chains
    rows = []
    for number, page in images:
        start = 100 if number == 1 else 0
        if len(page) == page_size and page[start] == _TABLE_LEAF:
            rows.extend(r for r in _leaf_cells(page, start, usable, pages, encoding) if len(r) == columns)
    return rows
