"""The item-level response cache: every LLM answer, local or API, one SQLite row.

Why SQLite in WAL mode: each response is its own small transaction, committed the moment it
arrives, so a process killed with SIGKILL loses at most the requests that were still in
flight. WAL lets readers run while one writer commits, and ``busy_timeout`` makes concurrent
writers (threads of one process, or several processes on the same file) wait for the lock
instead of failing. ``synchronous=NORMAL`` is durable against a killed process (the WAL is
in the OS page cache); pass ``synchronous="FULL"`` to survive power loss too, at some cost.

The key is the SHA-256 of exactly what determines the answer: the model name, the full
prompt (a string or a list of chat messages) and the decoding parameters (which, for local
scorers, include the scoring mode). Nothing else goes in: never an API key, a base URL or a
timestamp. Rows are ``ok`` (the answer) or ``failed`` (the error and any raw reply). An ``ok``
row is final: a later write for the same key never replaces it, so two writers racing on
one item keep the first answer. A ``failed`` row is retried by the next run, and its
``attempts`` counter grows each time.

A damaged file (empty, not SQLite, failing ``PRAGMA quick_check``) is moved aside to
``responses.sqlite.corrupt-<time>`` when the cache is opened, named in a warning, and a new cache
is started (``multicsr_core.sqlite_health``); :func:`merge_quarantined` (``multicsr cache merge``)
copies the rows still stored in such a file (through SQLite, or read off its pages when a damaged
b-tree page hides them) back into a live cache, and counts the keys it lists but cannot recover.

A full disk or a read-only file system under the cache (SQLite: "database or disk is full",
"attempt to write a readonly database") is raised as ``multicsr_core.errors.MachineError`` naming
the cache file: one line, exit 2; every answer committed before it stays.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

OK = "ok"
FAILED = "failed"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (
    key TEXT PRIMARY KEY,
    model TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('ok', 'failed')),
    request TEXT NOT NULL,
    response TEXT,
    raw TEXT,
    error TEXT,
    prompt_tokens INTEGER NOT NULL DEFAULT 0,
    completion_tokens INTEGER NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 1,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
)
"""

# An ok row is final; a failed row takes the newer outcome and counts the attempt.
_UPSERT = """
INSERT INTO responses (key, model, status, request, response, raw, error,
                       prompt_tokens, completion_tokens, attempts, created_at, updated_at)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 1, ?, ?)
ON CONFLICT(key) DO UPDATE SET
    status = excluded.status, response = excluded.response, raw = excluded.raw,
    error = excluded.error, prompt_tokens = excluded.prompt_tokens,
    completion_tokens = excluded.completion_tokens, attempts = responses.attempts + 1,
    updated_at = excluded.updated_at
WHERE responses.status != 'ok'
"""

_COLUMNS = "key, model, status, response, raw, error, prompt_tokens, completion_tokens, attempts"
_SQLITE_MAX_VARS = 500  # stay well below SQLITE_MAX_VARIABLE_NUMBER on old builds


def default_cache_path(workdir: str | Path) -> Path:
    """Where a run keeps its response cache: ``WORKDIR/llm/responses.sqlite``."""
    return Path(workdir) / "llm" / "responses.sqlite"


def _canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def cache_key(model: str, prompt: str | Sequence[Mapping[str, Any]], params: Mapping[str, Any]) -> str:
    """SHA-256 of (model, full prompt or chat messages, decoding parameters), and nothing else."""
    if isinstance(prompt, str):
        prompt_value: Any = prompt
    else:
        prompt_value = [dict(message) for message in prompt]
    payload = _canonical_json({"model": model, "prompt": prompt_value, "params": dict(params)})
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class CacheEntry:
    """One response to store. ``response`` is any JSON-serialisable dict (text, logprobs...)."""

    key: str
    model: str
    request: Mapping[str, Any]  # what was asked (prompt and parameters), for inspection
    status: str  # OK or FAILED
    response: Mapping[str, Any] | None = None
    raw: str | None = None  # the reply text, also kept for failures (e.g. an unparsable score)
    error: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0


@dataclass(frozen=True)
class CachedResponse:
    """A row read back from the cache."""

    key: str
    model: str
    status: str
    response: dict[str, Any] | None
    raw: str | None
    error: str | None
    prompt_tokens: int
    completion_tokens: int
    attempts: int

    @property
    def ok(self) -> bool:
        return self.status == OK


class ResponseCache:
    """A SQLite response cache, safe for concurrent threads and processes.

    Each thread gets its own connection (sqlite3 connections must not be shared across
    threads); each process opens its own. Use as a context manager or call :meth:`close`.
    """

    def __init__(self, path: str | Path, *, busy_timeout_s: float = 60.0, synchronous: str = "NORMAL"):
        if synchronous.upper() not in {"NORMAL", "FULL", "EXTRA"}:
            raise ValueError(f"synchronous must be NORMAL, FULL or EXTRA, not {synchronous!r}")
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._busy_timeout_s = busy_timeout_s
        self._synchronous = synchronous.upper()
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._connections_lock = threading.Lock()
        from multicsr_core.sqlite_health import checked_open

        with checked_open(self.path) as quarantined:  # a damaged file is moved aside, never deleted
            self.quarantined = quarantined
            self._connection()  # create the file and schema now, so errors surface here

    # -- connections -------------------------------------------------------------------
    def _connection(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            try:
                # isolation_level=None: autocommit, so every single-statement write is its own
                # committed transaction; multi-row writes use an explicit BEGIN IMMEDIATE.
                conn = sqlite3.connect(self.path, timeout=self._busy_timeout_s, isolation_level=None)
                conn.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout_s * 1000)}")
                conn.execute("PRAGMA journal_mode = WAL")
                conn.execute(f"PRAGMA synchronous = {self._synchronous}")
                conn.execute(_SCHEMA)
            except sqlite3.DatabaseError as err:
                from multicsr_core.errors import machine_error_of

                machine = machine_error_of(err, self.path)
                if machine is not None:
                    raise machine from err
                raise RuntimeError(f"{self.path}: cannot open the response cache: {err}") from err
            self._local.conn = conn
            with self._connections_lock:
                self._connections.append(conn)
        return conn

    def close(self) -> None:
        with self._connections_lock:
            for conn in self._connections:
                try:
                    conn.close()
                except sqlite3.ProgrammingError:  # closed from another thread already
                    pass
            self._connections.clear()
        self._local = threading.local()

    def __enter__(self) -> "ResponseCache":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- reads -------------------------------------------------------------------------
    @staticmethod
    def _row(row: tuple) -> CachedResponse:
        key, model, status, response, raw, error, prompt_tokens, completion_tokens, attempts = row
        return CachedResponse(
            key=key,
            model=model,
            status=status,
            response=json.loads(response) if response is not None else None,
            raw=raw,
            error=error,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            attempts=attempts,
        )

    def get(self, key: str) -> CachedResponse | None:
        row = self._connection().execute(f"SELECT {_COLUMNS} FROM responses WHERE key = ?", (key,)).fetchone()
        return self._row(row) if row else None

    def get_many(self, keys: Iterable[str]) -> dict[str, CachedResponse]:
        """All stored rows (ok and failed) among ``keys``, by key."""
        unique = list(dict.fromkeys(keys))
        found: dict[str, CachedResponse] = {}
        conn = self._connection()
        for start in range(0, len(unique), _SQLITE_MAX_VARS):
            chunk = unique[start : start + _SQLITE_MAX_VARS]
            marks = ",".join("?" * len(chunk))
            for row in conn.execute(f"SELECT {_COLUMNS} FROM responses WHERE key IN ({marks})", chunk):
                entry = self._row(row)
                found[entry.key] = entry
        return found

    def counts(self) -> dict[str, int]:
        """Number of rows per status, e.g. ``{"ok": 10, "failed": 2}``."""
        rows = self._connection().execute("SELECT status, COUNT(*) FROM responses GROUP BY status").fetchall()
        return {OK: 0, FAILED: 0, **{status: n for status, n in rows}}

    def token_totals(self, model: str | None = None, batch_api: bool | None = None) -> tuple[int, int]:
        """(prompt_tokens, completion_tokens) summed over stored rows, for cost reports across runs.

        ``batch_api`` True / False: only the rows that came (not) through the OpenAI Batch API,
        whose tokens cost less (``batch_api.py`` marks them in ``response``)."""
        sql = "SELECT COALESCE(SUM(prompt_tokens), 0), COALESCE(SUM(completion_tokens), 0) FROM responses"
        where, args = [], []
        if model is not None:
            where.append("model = ?")
            args.append(model)
        if batch_api is not None:
            where.append("COALESCE(json_extract(response, '$.batch_api'), 0) = ?")
            args.append(int(batch_api))
        if where:
            sql += " WHERE " + " AND ".join(where)
        prompt_tokens, completion_tokens = self._connection().execute(sql, tuple(args)).fetchone()
        return int(prompt_tokens), int(completion_tokens)

    # -- writes ------------------------------------------------------------------------
    @staticmethod
    def _values(entry: CacheEntry, now: float) -> tuple:
        if entry.status not in (OK, FAILED):
            raise ValueError(f"cache status must be {OK!r} or {FAILED!r}, not {entry.status!r}")
        return (
            entry.key,
            entry.model,
            entry.status,
            _canonical_json(entry.request),
            _canonical_json(entry.response) if entry.response is not None else None,
            entry.raw,
            entry.error,
            int(entry.prompt_tokens),
            int(entry.completion_tokens),
            now,
            now,
        )

    def _writing(self):
        from multicsr_core.errors import machine_errors

        return machine_errors(self.path)  # a full disk or read-only mount: one line naming the cache

    def put(self, entry: CacheEntry) -> None:
        """Store one response, committed before returning. An existing ok row is kept."""
        with self._writing():
            self._connection().execute(_UPSERT, self._values(entry, time.time()))

    def put_many(self, entries: Sequence[CacheEntry]) -> None:
        """Store a batch (e.g. one local forward pass) in one committed transaction."""
        if not entries:
            return
        now = time.time()
        values = [self._values(entry, now) for entry in entries]
        conn = self._connection()
        with self._writing():
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.executemany(_UPSERT, values)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise


def _newer(row: tuple, other: tuple | None) -> bool:
    """Whether ``row`` (merge column order) should replace ``other`` for the same key: an ok row
    over a failed one, else the one updated last."""
    if other is None:
        return True
    if (row[2] == OK) != (other[2] == OK):
        return row[2] == OK
    return (row[11] or 0) > (other[11] or 0)


def _is_response_row(row: tuple) -> bool:
    key, model, status, request = row[:4]
    return (isinstance(key, str) and isinstance(model, str) and status in (OK, FAILED) and isinstance(request, str)
            and all(isinstance(v, (int, float)) for v in row[10:12])
            and all(isinstance(v, int) for v in row[7:10]))


def merge_quarantined(source: str | Path, target: ResponseCache) -> dict[str, int]:
    """Copy every row still stored in a damaged (quarantined) response cache into ``target``: what
    SQLite reads through the table, plus what is read off the file's pages (and its WAL) when a
    damaged b-tree page hides rows from SQLite. An ok row of ``target`` stays as it is; a recovered
    ok row replaces a failed one. Returns counts: recovered (distinct keys read back), merged (rows
    written), unreadable (keys the file's index still lists, or rows its table counts, that could
    not be read back: lost)."""
    from multicsr_core.sqlite_health import index_values, readable_rows, scan_rows

    columns = ("key, model, status, request, response, raw, error, prompt_tokens, completion_tokens, attempts, "
               "created_at, updated_at")
    through_sql, lost = readable_rows(source, "responses", columns)
    best: dict[str, tuple] = {}
    for row in [*through_sql, *scan_rows(source, 12)]:
        if _is_response_row(row) and _newer(row, best.get(row[0])):
            best[row[0]] = row
    listed = index_values(source, "responses", "key")
    unreadable = len(set(listed) - set(best)) if listed is not None else lost
    conn = target._connection()
    before = conn.total_changes
    with target._writing():
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.executemany(
                f"INSERT INTO responses ({columns}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT(key) DO UPDATE SET status = excluded.status, response = excluded.response, "
                "raw = excluded.raw, error = excluded.error, prompt_tokens = excluded.prompt_tokens, "
                "completion_tokens = excluded.completion_tokens, updated_at = excluded.updated_at "
                "WHERE responses.status != 'ok' AND excluded.status = 'ok'",
                list(best.values()))
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
    return {"recovered": len(best), "merged": conn.total_changes - before, "unreadable": unreadable}
