"""Opening a SQLite cache that may have been damaged (a full disk, a copy cut short, a bad sector).

A damaged cache must not block every later run (``database disk image is malformed``, naming no
file), and must not be silently recreated either: the response cache holds paid LLM answers.
:func:`check_or_quarantine` runs before a cache is opened: a file that is empty, is not SQLite,
or fails ``PRAGMA quick_check`` is *moved aside* (with its ``-wal``/``-shm`` companions) to
``<name>.corrupt-<UTC timestamp>``, named in a warning, and the caller builds a fresh cache.
Rows SQLite can still read are recovered from the moved file by :func:`readable_rows` (the
response cache's ``merge_quarantined`` and ``multicsr cache merge`` use it).

The check and the creation of a new file happen under a ``filelock`` beside the file, so a second
process opening the cache at the same moment never sees (and moves aside) a half-created one.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
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
    message = (f"warning: cache {path} is damaged ({reason}); moved it to {target} and started a new one"
               + (f"; recover its rows with: multicsr cache merge {target} --workdir DIR" if "responses" in path.name
                  else ""))
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
