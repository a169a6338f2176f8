"""The OpenAI Batch API for API scoring and generation: half the price, answers within 24 hours.

OpenAI's Batch API prices every token at 50% of the synchronous price ("50% cost discount
compared to synchronous APIs", https://platform.openai.com/docs/guides/batch) and answers
within a 24 h completion window. For a corpus of 275,601 triplets (551,202 scoring requests)
that halves stage 2's bill; what we pay for it is latency.

How one :meth:`OpenAIChatBackend.acomplete` call goes when the backend has ``batch_api`` set:

1. Requests the response cache already answers are answered from it (as a direct call).
2. Requests that an earlier, killed run already submitted are found in the batch store (below)
   and their batch is polled again: a rerun never pays twice for the same request.
3. The rest are written as JSONL (one ``/v1/chat/completions`` body per line, ``custom_id`` =
   our cache key), uploaded with ``files.create(purpose="batch")`` and submitted with
   ``batches.create(completion_window="24h")``, at most ``max_requests_per_batch`` requests and
   ``max_bytes_per_batch`` bytes per input file (:func:`split_request_lines`; OpenAI's limits are
   50,000 lines and 200 MB, and at ``input.max_chars=2000`` a scoring line is about 4.4 kB, so
   50,000 of them would be 218 MB: the bytes bind first). Every step is committed to the batch
   store before the next starts, so the batch id is on disk BEFORE polling starts.
4. All batches are polled every ``poll_interval_s`` (``batches.retrieve``) until each is
   ``completed``, ``expired``, ``failed`` or ``cancelled``. Their output file is downloaded
   (``files.content``) and every line goes through the same parser (``_parse_completion``),
   validator and response cache (``OpenAIChatBackend.store_reply``) as a direct reply.
5. Lines that failed (a non-200 status, an error line, an unusable body) and lines an expired,
   failed or cancelled batch never ran are retried at once as ordinary requests
   (``acomplete(direct=True)``: the client's retries, rate limits and budget apply). So are the
   lines of a batch the server no longer knows (404) or whose output file is gone.

A create the server refuses (a 4xx: OpenAI's limit on tokens enqueued per model) while other
batches run is not an error: the remaining batches wait for the running ones to end, then go.

Errors no rerun can fix stop the call at once with the backend's one-line
:class:`~multicsr_core.llm.openai_backend.PermanentAPIError` (exit 2), as on the direct path:
a call refused with 401 (the key) or 403 (permission) at any step, a create answered 404, a
batch that failed validation because the model does not exist, and an output line whose request
failed with a permanent error (401, 403, 404, a prompt longer than the context, a rejected
parameter): its batch is ingested first (every answered line is cached), then the error names
the request; nothing is retried directly. Other batches still running stay in the batch store,
and the run after the fix picks them up.

The batch store is ``STATE_DIR/batches.sqlite`` (the workdir's ``.multicsr/batches/``): one row
per batch (local id, model, redacted base URL, uploaded file id, batch id, last status, whether
its output was ingested) and one row per request in it (``custom_id``). Beside it,
``<local id>.jsonl.gz`` keeps the submitted request bodies until the output is ingested (the
cache stores each reply with its request). The API key is in neither: it is held by the client
object only. The window between ``batches.create`` returning and its id being committed is
closed by the batch's ``metadata`` (``multicsr_local_id``): a rerun that finds an uploaded file
but no batch id lists the account's batches and adopts the one carrying its local id.

Cost accounting: every token of a batch line costs ``price_factor`` (0.5) times the configured
price; the budget cap reserves that much per request before a batch is submitted.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import logging
import os
import sqlite3
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Sequence

import openai

from multicsr_core.llm.accounting import UsageTotals
from multicsr_core.llm.openai_backend import PermanentAPIError

if TYPE_CHECKING:
    from multicsr_core.llm.openai_backend import (BatchReport, ChatRequest, ChatResult, OpenAIChatBackend,
                                                  ProgressCallback, ReplyValidator)

log = logging.getLogger(__name__)

ENDPOINT = "/v1/chat/completions"
COMPLETION_WINDOW = "24h"  # the only window OpenAI offers
MAX_REQUESTS_PER_BATCH = 50_000  # OpenAI's limit per batch input file
# OpenAI: an input file "can be up to 200 MB". 190 * 10**6 stays under it whether a MB is 10**6
# or 2**20 bytes, with 5% to spare.
OPENAI_MAX_FILE_BYTES = 200 * 10**6
MAX_BYTES_PER_BATCH = 190 * 10**6
TERMINAL = frozenset({"completed", "expired", "failed", "cancelled"})
METADATA_KEY = "multicsr_local_id"
_SQLITE_MAX_VARS = 500

# Local record states before the batch exists on the server.
PREPARING = "preparing"  # items recorded, nothing uploaded yet: no batch can exist
UPLOADED = "uploaded"  # input file uploaded: a batch may exist (killed right after create)
ABANDONED = "abandoned"  # superseded before any batch was created


def default_state_dir(workdir: str | Path) -> Path:
    """Where a workdir keeps its Batch API state: ``WORKDIR/.multicsr/batches``."""
    return Path(workdir) / ".multicsr" / "batches"


@dataclass(frozen=True)
class BatchAPISettings:
    """Where batch state lives and how batches are run.

    Args:
        state_dir: the workdir's ``.multicsr/batches`` folder (batch store and request files).
        poll_interval_s: seconds between two status checks of the running batches.
        max_wait_s: stop waiting after this long (None: until every batch ends, at most the 24 h
            window); unfinished requests come back ``not_requested`` and the next run picks the
            same batches up again.
        price_factor: the Batch API's price as a fraction of the synchronous one (0.5).
        max_requests_per_batch: requests per submitted batch (at most OpenAI's 50,000).
        max_bytes_per_batch: bytes per submitted input file (at most 200 MB; default 190 MB).
    """

    state_dir: Path
    poll_interval_s: float = 30.0
    max_wait_s: float | None = None
    price_factor: float = 0.5
    max_requests_per_batch: int = MAX_REQUESTS_PER_BATCH
    max_bytes_per_batch: int = MAX_BYTES_PER_BATCH

    def __post_init__(self) -> None:
        if self.poll_interval_s <= 0:
            raise ValueError(f"poll_interval_s must be positive, not {self.poll_interval_s}")
        if not 1 <= self.max_requests_per_batch <= MAX_REQUESTS_PER_BATCH:
            raise ValueError(f"max_requests_per_batch must be in 1..{MAX_REQUESTS_PER_BATCH}")
        if not 1 <= self.max_bytes_per_batch <= OPENAI_MAX_FILE_BYTES:
            raise ValueError(f"max_bytes_per_batch must be in 1..{OPENAI_MAX_FILE_BYTES}")
        if not 0 <= self.price_factor <= 1:
            raise ValueError(f"price_factor must be in [0, 1], not {self.price_factor}")


class BatchAPIError(RuntimeError):
    """The endpoint refused a Batch API call (upload, create, retrieve); the message holds no key.

    Raised ``from None``: the client's exception holds the request, headers (the key) included."""

    def __init__(self, message: str, status_code: int | None = None):
        super().__init__(message)
        self.status_code = status_code  # the HTTP status when the server answered; None: no answer

    @property
    def not_found(self) -> bool:
        return self.status_code == 404

    @property
    def refused(self) -> bool:
        """The server answered no (a 4xx other than 404, e.g. the enqueued-token limit): the call
        made nothing on the server."""
        return self.status_code is not None and 400 <= self.status_code < 500 and self.status_code != 404


_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS batches (
        local_id TEXT PRIMARY KEY,
        model TEXT NOT NULL,
        base_url TEXT,
        n_requests INTEGER NOT NULL,
        input_file_id TEXT,
        batch_id TEXT,
        status TEXT NOT NULL,
        ingested INTEGER NOT NULL DEFAULT 0,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS batch_items (
        custom_id TEXT NOT NULL,
        local_id TEXT NOT NULL REFERENCES batches(local_id),
        PRIMARY KEY (custom_id, local_id))""",
    "CREATE INDEX IF NOT EXISTS batch_items_by_local_id ON batch_items(local_id)",
)


@dataclass(frozen=True)
class BatchRecord:
    local_id: str
    model: str
    base_url: str | None
    n_requests: int
    input_file_id: str | None
    batch_id: str | None
    status: str
    ingested: bool


class BatchStore:
    """The submitted batches of one workdir (SQLite, every change its own committed transaction)."""

    def __init__(self, state_dir: str | Path):
        self.dir = Path(state_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.path = self.dir / "batches.sqlite"
        self._conn = sqlite3.connect(self.path, timeout=60, isolation_level=None, check_same_thread=False)
        self._conn.execute("PRAGMA busy_timeout = 60000")
        self._conn.execute("PRAGMA journal_mode = WAL")
        for statement in _SCHEMA:
            self._conn.execute(statement)

    def close(self) -> None:
        self._conn.close()

    def requests_path(self, local_id: str) -> Path:
        return self.dir / f"{local_id}.jsonl.gz"

    def add(self, record: BatchRecord, custom_ids: Sequence[str]) -> None:
        now = time.time()
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            self._conn.execute(
                "INSERT INTO batches (local_id, model, base_url, n_requests, input_file_id, batch_id, status, "
                "ingested, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, 0, ?, ?)",
                (record.local_id, record.model, record.base_url, record.n_requests, record.input_file_id,
                 record.batch_id, record.status, now, now))
            self._conn.executemany("INSERT INTO batch_items (custom_id, local_id) VALUES (?, ?)",
                                   [(custom_id, record.local_id) for custom_id in custom_ids])
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")

    def update(self, local_id: str, **fields: Any) -> None:
        assert set(fields) <= {"input_file_id", "batch_id", "status", "ingested"}, fields
        assignments = ", ".join(f"{name} = ?" for name in fields)
        self._conn.execute(f"UPDATE batches SET {assignments}, updated_at = ? WHERE local_id = ?",
                           (*fields.values(), time.time(), local_id))

    def get(self, local_id: str) -> BatchRecord:
        row = self._conn.execute(
            "SELECT local_id, model, base_url, n_requests, input_file_id, batch_id, status, ingested "
            "FROM batches WHERE local_id = ?", (local_id,)).fetchone()
        return BatchRecord(*row[:7], bool(row[7]))

    def open_batches_for(self, keys: Iterable[str], model: str, base_url: str | None) -> dict[str, set[str]]:
        """The batches not yet ingested (of this model and endpoint) holding any of ``keys``:
        local id -> which of ``keys`` it holds."""
        keys = list(keys)
        found: dict[str, set[str]] = {}
        for start in range(0, len(keys), _SQLITE_MAX_VARS):
            chunk = keys[start:start + _SQLITE_MAX_VARS]
            rows = self._conn.execute(
                "SELECT i.local_id, i.custom_id FROM batch_items i JOIN batches b ON b.local_id = i.local_id "
                f"WHERE b.ingested = 0 AND b.status != ? AND b.model = ? AND b.base_url IS ? "
                f"AND i.custom_id IN ({','.join('?' * len(chunk))})",
                (ABANDONED, model, base_url, *chunk))
            for local_id, custom_id in rows:
                found.setdefault(local_id, set()).add(custom_id)
        return found

    def created_at(self, local_id: str) -> float:
        return self._conn.execute("SELECT created_at FROM batches WHERE local_id = ?", (local_id,)).fetchone()[0]

    def items(self, local_id: str) -> set[str]:
        rows = self._conn.execute("SELECT custom_id FROM batch_items WHERE local_id = ?", (local_id,))
        return {custom_id for (custom_id,) in rows}

    def records(self) -> list[BatchRecord]:
        rows = self._conn.execute("SELECT local_id, model, base_url, n_requests, input_file_id, batch_id, status, "
                                  "ingested FROM batches ORDER BY created_at").fetchall()
        return [BatchRecord(*row[:7], bool(row[7])) for row in rows]


def request_line(backend: "OpenAIChatBackend", key: str, request: "ChatRequest") -> bytes:
    """One line of a batch input file (newline included): ``custom_id`` is the cache key, the body
    exactly what a direct request sends (:meth:`OpenAIChatBackend.request_body`)."""
    line = {"custom_id": key, "method": "POST", "url": ENDPOINT, "body": backend.request_body(request)}
    return (json.dumps(line, ensure_ascii=False) + "\n").encode("utf-8")


def split_request_lines(line_bytes: Iterable[tuple[str, int]], max_requests: int, max_bytes: int) -> list[list[str]]:
    """Cut ``(custom_id, bytes of its line)`` in order into input files of at most ``max_requests``
    lines and ``max_bytes`` bytes. A line longer than ``max_bytes`` on its own gets a file of its own
    (no cut can make it smaller; the server answers for it)."""
    files: list[list[str]] = []
    current: list[str] = []
    size = 0
    for key, n_bytes in line_bytes:
        if current and (len(current) >= max_requests or size + n_bytes > max_bytes):
            files.append(current)
            current, size = [], 0
        current.append(key)
        size += n_bytes
    if current:
        files.append(current)
    return files


def _write_gzip_atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        # level 1: a copy kept only until the output is ingested, up to 190 MB of JSON; level 9 (the default)
        # took 8x as long on this module's own text (17 s for 74 MB) for a file 22% smaller
        with os.fdopen(fd, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, compresslevel=1) as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _stored_requests(path: Path) -> dict[str, dict]:
    """custom_id -> {"messages", "params"} from a batch's request file (empty if it is gone)."""
    from multicsr_core.llm.openai_backend import logical_params

    if not path.is_file():
        return {}
    out = {}
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        for line in handle:
            item = json.loads(line)
            body = dict(item["body"])
            body.pop("model", None)
            out[item["custom_id"]] = {"messages": body.pop("messages"), "params": logical_params(body)}
    return out


def _jsonl(content: bytes) -> list[dict]:
    lines = []
    for raw in content.decode("utf-8").splitlines():
        if raw.strip():
            try:
                lines.append(json.loads(raw))
            except json.JSONDecodeError:
                log.warning("skipping a Batch API output line that is not JSON: %.200s", raw)
    return lines


class _BatchRun:
    """One acomplete call through the Batch API (see the module docstring for the steps)."""

    def __init__(self, backend: "OpenAIChatBackend", settings: BatchAPISettings, validate: "ReplyValidator | None",
                 requests: Mapping[str, "ChatRequest"]):
        from multicsr_core.llm.openai_backend import redact_url

        self.backend = backend
        self.requests = requests  # this call's uncached requests, by custom_id
        self.settings = settings
        self.validate = validate
        self.base_url = redact_url(backend.base_url)
        self.store = BatchStore(settings.state_dir)
        self.reserved: dict[str, float] = {}  # custom_id -> budget reserved for it in this process
        self.outcomes: dict[str, "ChatResult"] = {}  # custom_id -> final result from a batch line
        self.retry: set[str] = set()  # custom_ids to send as ordinary requests
        self.index_of: dict[str, int] = {}  # custom_id -> its first position in the call's requests
        self.total = 0  # requests in the call (errors say "request i of total")

    def _redacted(self, err: Exception) -> str:
        return self.backend._redact(f"{type(err).__name__}: {err}")

    def _error(self, what: str, err: openai.APIError) -> Exception:
        """What a failed Batch API call raises: the permanent error (401, 403 at any step; 404 at
        create), else :class:`BatchAPIError` (the callers decide: wait, retry directly, or stop)."""
        from multicsr_core.llm.openai_backend import APIKeyRejected, APIModelNotFound, APIPermissionDenied

        status = getattr(err, "status_code", None)
        permanent = {401: APIKeyRejected, 403: APIPermissionDenied}.get(status)
        if status == 404 and what == "create":  # after an upload that worked: /v1/batches or the model is missing
            permanent = APIModelNotFound
        if permanent is not None:
            return self.backend.permanent_error(permanent, status, getattr(err, "body", None),
                                                what=f"Batch API {what}")
        return BatchAPIError(f"Batch API {what} failed at {self.base_url or 'api.openai.com'}: "
                             f"{self._redacted(err)}", status)

    async def _call(self, what: str, coroutine):
        try:
            return await coroutine
        except openai.APIError as err:
            # from None: the client's exception holds the request, headers (the key) included
            raise self._error(what, err) from None

    # -- submitting --------------------------------------------------------------------
    async def submit(self, client: openai.AsyncOpenAI, requests: Mapping[str, "ChatRequest"]) -> str:
        """Record, upload and create one batch; returns its local id. Each step is committed first."""
        local_id = uuid.uuid4().hex
        lines = [request_line(self.backend, key, request) for key, request in requests.items()]
        data = b"".join(lines)
        _write_gzip_atomic(self.store.requests_path(local_id), data)
        self.store.add(BatchRecord(local_id, self.backend.model, self.base_url, len(lines), None, None, PREPARING,
                                   False), list(requests))
        uploaded = await self._call("upload", client.files.create(
            file=(f"multicsr-{local_id}.jsonl", data, "application/jsonl"), purpose="batch"))
        self.store.update(local_id, input_file_id=uploaded.id, status=UPLOADED)
        try:
            await self._create(client, local_id, uploaded.id)
        except (BatchAPIError, PermanentAPIError) as err:
            if isinstance(err, PermanentAPIError) or err.refused:  # no batch exists: not in flight
                self.store.update(local_id, status=ABANDONED)
            raise  # else (no answer) it may exist: a rerun finds it by its metadata
        return local_id

    async def _create(self, client: openai.AsyncOpenAI, local_id: str, input_file_id: str) -> None:
        batch = await self._call("create", client.batches.create(
            input_file_id=input_file_id, endpoint=ENDPOINT, completion_window=COMPLETION_WINDOW,
            metadata={METADATA_KEY: local_id}))
        self.store.update(local_id, batch_id=batch.id, status=batch.status)
        log.info("Batch API: submitted batch %s (%s requests, local id %s)", batch.id,
                 self.store.get(local_id).n_requests, local_id)

    async def resume(self, client: openai.AsyncOpenAI, local_id: str) -> bool:
        """Make an earlier run's batch pollable again; False if it never reached the server."""
        record = self.store.get(local_id)
        if record.batch_id is not None:
            log.info("Batch API: picking up batch %s from an earlier run (%s)", record.batch_id, record.status)
            return True
        if record.status == PREPARING or record.input_file_id is None:
            self.store.update(local_id, status=ABANDONED)  # nothing was uploaded, so no batch exists
            self.store.requests_path(local_id).unlink(missing_ok=True)
            return False
        # Uploaded, and maybe created just before the earlier run died: find it by its metadata among
        # the batches created since (the list is newest first; a margin for clock skew).
        since = self.store.created_at(local_id) - 3600
        try:
            async for batch in client.batches.list(limit=100):
                if batch.created_at < since:
                    break
                if (batch.metadata or {}).get(METADATA_KEY) == local_id:
                    self.store.update(local_id, batch_id=batch.id, status=batch.status)
                    log.info("Batch API: adopted batch %s created by an earlier run", batch.id)
                    return True
        except openai.APIError as err:
            raise self._error("list", err) from None
        try:
            await self._create(client, local_id, record.input_file_id)
        except PermanentAPIError:
            self.store.update(local_id, status=ABANDONED)  # refused: no batch; the next run uploads anew
            raise
        return True

    # -- polling and ingesting -----------------------------------------------------------
    async def poll(self, client: openai.AsyncOpenAI, local_ids: Sequence[str], pending: set[str],
                   progress, deadline: float | None) -> list[str]:
        """Poll until every batch ends (or the monotonic ``deadline``); ingest each as it ends.
        Returns the local ids still running when the wait ran out."""
        running = list(local_ids)
        while running:
            still = []
            for local_id in running:
                record = self.store.get(local_id)
                try:
                    batch = await self._call("retrieve", client.batches.retrieve(record.batch_id))
                except BatchAPIError as err:
                    if not err.not_found:
                        raise
                    # gone from the server (deleted, another account): its requests go out directly
                    log.warning("Batch API: batch %s is unknown to the server; its requests go out as ordinary "
                                "requests", record.batch_id)
                    batch = SimpleNamespace(id=record.batch_id, status="missing", output_file_id=None,
                                            error_file_id=None, request_counts=None)
                if batch.status == "missing":
                    self.store.update(local_id, status="missing")
                    await self.ingest(client, local_id, batch, pending)
                    progress()
                    continue
                if batch.status != record.status:
                    self.store.update(local_id, status=batch.status)
                    log.info("Batch API: batch %s is %s %s", batch.id, batch.status,
                             batch.request_counts.model_dump() if batch.request_counts else "")
                if batch.status in TERMINAL:
                    await self.ingest(client, local_id, batch, pending)
                    progress()
                else:
                    still.append(local_id)
            running = still
            if running:
                if deadline is not None and time.monotonic() >= deadline:
                    return running
                await asyncio.sleep(self.settings.poll_interval_s)
        return []

    async def _download(self, client: openai.AsyncOpenAI, file_id: str | None) -> list[dict]:
        if not file_id:
            return []
        try:
            content = await client.files.content(file_id)
        except openai.NotFoundError:  # output files expire (30 days at OpenAI): retry its lines directly
            log.warning("Batch API: file %s is gone; its lines go out as ordinary requests", file_id)
            return []
        except openai.APIError as err:
            raise self._error("download", err) from None
        return _jsonl(content.content)

    async def ingest(self, client: openai.AsyncOpenAI, local_id: str, batch, pending: set[str]) -> None:
        """Store every answered line in the response cache; queue the rest of ``pending`` for retry.
        A line of ``pending`` that failed for good (or a batch whose model does not exist) raises
        :class:`PermanentAPIError` once the batch is ingested: no retry can answer it."""
        from multicsr_core.llm.openai_backend import InvalidReply, _parse_completion, permanent_error_class

        path = self.store.requests_path(local_id)
        held = self.store.items(local_id)
        stored = _stored_requests(path)
        for key, request in self.requests.items():  # the request file is gone only after an ingest
            stored.setdefault(key, {"messages": [dict(m) for m in request.messages], "params": dict(request.params)})
        answered: set[str] = set()
        permanent: tuple | None = None  # (error class, status, error body, key) of the first line failed for good
        lines = await self._download(client, batch.output_file_id) + await self._download(client, batch.error_file_id)
        for line in lines:
            key = line.get("custom_id")
            if key not in held or key not in stored or key in answered:
                continue
            response = line.get("response") if isinstance(line.get("response"), dict) else {}
            body = response.get("body")
            if line.get("error") or response.get("status_code") != 200:
                self._book(key, body)
                log.debug("Batch API line %s failed: %s", key, line.get("error") or response.get("status_code"))
                kind = (None if line.get("error") or not isinstance(body, dict) else
                        permanent_error_class(response.get("status_code"), body,
                                              self.backend.wire_params(stored[key]["params"])))
                if kind is not None and key in pending and (permanent is None or self._before(key, permanent[3])):
                    permanent = (kind, response.get("status_code"), body, key)
                continue
            try:
                reply = _parse_completion(body)
            except InvalidReply as err:
                self._book(key, None, err.prompt_tokens, err.completion_tokens)
                continue
            self._book(key, None, reply.prompt_tokens, reply.completion_tokens)
            answered.add(key)
            result = self.backend.store_reply(key, stored[key], reply, self.validate, batch_api=True)
            if key in pending:
                self.outcomes[key] = result
        for key in (pending & held) - answered:
            self.retry.add(key)
            if key in self.reserved:  # never billed: it goes out as an ordinary request
                self.backend.ledger.release(self.reserved.pop(key))
        self.store.update(local_id, ingested=1)
        path.unlink(missing_ok=True)
        n_failed = len(held - answered)
        log.info("Batch API: batch %s %s: %d answered, %d to retry as ordinary requests", batch.id, batch.status,
                 len(answered), n_failed)
        if permanent is not None:
            kind, status, body, key = permanent
            request = self.requests.get(key)
            if request is None:
                from multicsr_core.llm.openai_backend import ChatRequest

                request = ChatRequest(stored[key]["messages"], stored[key]["params"])
            raise self.backend.permanent_error(kind, status, body, index=self.index_of.get(key), total=self.total,
                                               request=request)
        self._raise_for_missing_model(batch)

    def _before(self, key: str, other: str) -> bool:
        """Whether ``key`` comes before ``other`` among this call's requests (the first one is reported)."""
        return self.index_of.get(key, self.total) < self.index_of.get(other, self.total)

    def _raise_for_missing_model(self, batch) -> None:
        """A batch that failed validation because its model does not exist: no retry can answer it."""
        from multicsr_core.llm.openai_backend import _MODEL_MISSING, APIModelNotFound

        if batch.status != "failed" or getattr(batch, "errors", None) is None:
            return
        for error in getattr(batch.errors, "data", None) or []:
            code, message = str(getattr(error, "code", "") or ""), str(getattr(error, "message", "") or "")
            if code == "model_not_found" or _MODEL_MISSING.search(message):
                raise self.backend.permanent_error(APIModelNotFound, None, {"code": code, "message": message},
                                                   what=f"Batch API batch {batch.id}")

    def _book(self, key: str, body: Any, prompt_tokens: int = 0, completion_tokens: int = 0) -> None:
        """Book a line's tokens at the Batch API price (a failed line may still report usage)."""
        if isinstance(body, dict) and isinstance(body.get("usage"), dict) and not (prompt_tokens or completion_tokens):
            usage = body["usage"]
            prompt_tokens = int(usage.get("prompt_tokens") or 0)
            completion_tokens = int(usage.get("completion_tokens") or 0)
        estimate = self.reserved.pop(key, 0.0)
        if estimate or prompt_tokens or completion_tokens:
            self.backend.ledger.settle(estimate, prompt_tokens, completion_tokens, self.settings.price_factor)


async def acomplete_with_batch_api(
    backend: "OpenAIChatBackend",
    requests: Sequence["ChatRequest"],
    *,
    validate: "ReplyValidator | None" = None,
    progress: "ProgressCallback | None" = None,
) -> "BatchReport":
    """:meth:`OpenAIChatBackend.acomplete` through the Batch API; results come in input order."""
    from multicsr_core.llm.openai_backend import NOT_REQUESTED, BatchReport, ChatResult

    settings = backend.batch_api
    assert settings is not None
    keys = [backend.key_for(request) for request in requests]
    stored = backend.cache.get_many(keys)
    by_key: dict[str, ChatRequest] = {}
    for key, request in zip(keys, requests):
        row = stored.get(key)
        if not (row is not None and row.ok):
            by_key.setdefault(key, request)
    before = backend.ledger.totals()
    run = _BatchRun(backend, settings, validate, by_key)
    run.total = len(requests)
    for index, key in enumerate(keys):
        run.index_of.setdefault(key, index)
    budget_hit = False
    not_requested: dict[str, ChatResult] = {}
    done = [len(requests) - sum(1 for key in keys if key in by_key)]

    def report_progress() -> None:
        if progress is not None:
            answered = sum(1 for key in keys if key in run.outcomes or key in not_requested)
            progress(min(len(requests), done[0] + answered), len(requests))

    report_progress()
    if by_key:
        client = backend.new_client()
        try:
            pending = set(by_key)
            active: list[str] = []
            covered: set[str] = set()
            for local_id, held in run.store.open_batches_for(pending, backend.model, run.base_url).items():
                if await run.resume(client, local_id):
                    active.append(local_id)
                    covered |= held
            fresh: dict[str, ChatRequest] = {}
            for key, request in by_key.items():
                if key in covered:
                    continue
                estimate = settings.price_factor * backend._estimates(request)[1]
                if budget_hit or not backend.ledger.try_reserve(estimate):
                    budget_hit = True
                    not_requested[key] = ChatResult(NOT_REQUESTED, error="not requested: the budget cap was reached")
                    continue
                run.reserved[key] = estimate
                fresh[key] = request
            deadline = None if settings.max_wait_s is None else time.monotonic() + settings.max_wait_s
            sizes = ((key, len(request_line(backend, key, request))) for key, request in fresh.items())
            queue = [{key: fresh[key] for key in keys} for keys in
                     split_request_lines(sizes, settings.max_requests_per_batch, settings.max_bytes_per_batch)]
            unfinished: list[str] = []
            while queue or active:
                while queue:
                    try:
                        active.append(await run.submit(client, queue[0]))
                    except BatchAPIError as err:
                        if not (err.refused and active):
                            raise
                        # e.g. OpenAI's limit on tokens enqueued per model: wait for the running batches
                        log.warning("Batch API: a new batch was refused (%s); %d batches wait until the running "
                                    "ones end", err, len(queue))
                        break
                    queue.pop(0)
                unfinished = await run.poll(client, active, pending, report_progress, deadline)
                active = []
                if unfinished:  # max_wait_s ran out
                    for chunk in queue:  # never submitted: nothing reserved stays booked for them
                        for key in chunk:
                            not_requested[key] = ChatResult(NOT_REQUESTED, error="not submitted: the Batch API "
                                                            "refused more batches before max_wait_s ran out")
                    break
            for local_id in unfinished:
                record = run.store.get(local_id)
                for key in run.store.open_batches_for(pending, backend.model, run.base_url).get(local_id, ()):
                    not_requested[key] = ChatResult(
                        NOT_REQUESTED, error=f"Batch API batch {record.batch_id} still {record.status} after "
                                             f"{settings.max_wait_s} s: run again to collect it (it is not resubmitted)")
        finally:
            for estimate in run.reserved.values():  # reservations of lines never booked
                backend.ledger.release(estimate)
            run.reserved.clear()
            await client.close()
            run.store.close()
        if run.retry:
            retry_keys = sorted(run.retry)
            log.info("Batch API: %d failed or expired lines go out as ordinary requests", len(retry_keys))
            try:
                direct = await backend.acomplete([by_key[key] for key in retry_keys], validate=validate, direct=True)
            except PermanentAPIError as err:  # number the request as the caller's, not in the retried list
                if err.index is None or err.details is None:
                    raise
                key = retry_keys[err.index]
                raise backend.permanent_error(err.details["cls"], err.details["status"], err.details["error"],
                                              index=run.index_of[key], total=run.total,
                                              request=err.details["request"]) from None
            budget_hit = budget_hit or direct.budget_exceeded
            run.outcomes.update(zip(retry_keys, direct.results))
        report_progress()

    results = []
    for key in keys:
        if key in run.outcomes:
            results.append(run.outcomes[key])
        elif key in not_requested:
            results.append(not_requested[key])
        else:
            row = stored.get(key)
            assert row is not None and row.ok, "every request is answered, cached or not requested"
            results.append(ChatResult.from_row(row, cached=True))
    after = backend.ledger.totals()
    spent = UsageTotals(requests=after.requests - before.requests,
                        prompt_tokens=after.prompt_tokens - before.prompt_tokens,
                        completion_tokens=after.completion_tokens - before.completion_tokens,
                        cost_usd=after.cost_usd - before.cost_usd)
    report = BatchReport(results, spent, budget_hit, backend.ledger.budget_usd)
    log.info("%s (Batch API): %s", backend.model, report.summary())
    return report


__all__ = ["BatchAPISettings", "BatchAPIError", "BatchStore", "acomplete_with_batch_api", "default_state_dir",
           "request_line", "split_request_lines"]
