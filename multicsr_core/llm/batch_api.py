"""The OpenAI Batch API for API scoring and generation: half the price, answers within 24 hours.

OpenAI's Batch API prices every token at 50% of the synchronous price ("50% cost discount
compared to synchronous APIs", https://platform.openai.com/docs/guides/batch) and answers
within a 24 h completion window. For a corpus of 275,601 triplets (551,202 scoring requests)
that halves stage 2's bill; what we pay for it is latency.

This is the client's second transport (``transport.py``): how one
:meth:`~multicsr_core.llm.openai_backend.OpenAIChatBackend.acomplete` call goes when its settings have
``batch_api`` set (the client has answered what the response cache holds, and owns the budget, spend and report):

1. Requests the response cache already answers were answered from it by the client.
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
   (``files.content``) and every line goes through the same parser (``chat.parse_completion``),
   validator and response cache (``transport.Replies.store_reply``) as a direct reply.
5. Lines that failed (a non-200 status, an error line, an unusable body) and lines an expired,
   failed or cancelled batch never ran are retried at once as ordinary requests
   (the direct transport, ``direct.py``: the client's retries, rate limits and budget apply). So are the
   lines of a batch the server no longer knows (404) or whose output file is gone.

A create the server refuses (a 4xx: OpenAI's limit on tokens enqueued per model) while other
batches run is not an error: the remaining batches wait for the running ones to end, then go.

Errors no rerun can fix stop the call at once with the one-line
:class:`~multicsr_core.llm.api_errors.PermanentAPIError` (exit 2), as on the direct path:
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
import sqlite3
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Iterable, Mapping, Sequence

import openai

from multicsr_core.io.atomic import atomic_path
from multicsr_core.llm.api_errors import (MODEL_MISSING, APIKeyRejected, APIModelNotFound, APIPermissionDenied,
                                          PermanentAPIError, permanent_error_class)
from multicsr_core.llm.chat import ChatRequest, InvalidReply, logical_params, parse_completion
from multicsr_core.llm.connection import Connection
from multicsr_core.llm.direct import DirectTransport
from multicsr_core.llm.settings import (MAX_BYTES_PER_BATCH, MAX_REQUESTS_PER_BATCH, OPENAI_MAX_FILE_BYTES,
                                        BatchAPISettings)
from multicsr_core.llm.transport import Replies, UncachedCall
from multicsr_core.redaction import redact_url

log = logging.getLogger(__name__)

ENDPOINT = "/v1/chat/completions"
COMPLETION_WINDOW = "24h"  # the only window OpenAI offers
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


def request_line(connection: Connection, key: str, request: ChatRequest) -> bytes:
    """One line of a batch input file (newline included): ``custom_id`` is the cache key, the body
    exactly what a direct request sends (:meth:`Connection.request_body`)."""
    line = {"custom_id": key, "method": "POST", "url": ENDPOINT, "body": connection.request_body(request)}
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
    # private (0600, as mkstemp made it here before): a copy of the prompts sent
    with atomic_path(path, private=True) as tmp:
        # level 1: a copy kept only until the output is ingested, up to 190 MB of JSON; level 9 (the default)
        # took 8x as long on this module's own text (17 s for 74 MB) for a file 22% smaller
        with open(tmp, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, compresslevel=1) as handle:
            handle.write(data)


def _stored_requests(path: Path) -> dict[str, dict]:
    """custom_id -> {"messages", "params"} from a batch's request file (empty if it is gone)."""
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
    """One call's uncached requests through the Batch API (see the module docstring for the steps)."""

    def __init__(self, connection: Connection, replies: Replies, settings: BatchAPISettings, call: UncachedCall):
        self.connection = connection
        self.replies = replies
        self.call = call
        self.requests = call.requests  # this call's uncached requests, by custom_id
        self.settings = settings
        self.base_url = redact_url(connection.base_url)
        self.store = BatchStore(settings.state_dir)
        self.reserved: dict[str, float] = {}  # custom_id -> budget reserved for it in this process
        self.retry: set[str] = set()  # custom_ids to send as ordinary requests

    def _redacted(self, err: Exception) -> str:
        return self.connection.redact(f"{type(err).__name__}: {err}")

    def _error(self, what: str, err: openai.APIError) -> Exception:
        """What a failed Batch API call raises: the permanent error (401, 403 at any step; 404 at
        create), else :class:`BatchAPIError` (the callers decide: wait, retry directly, or stop)."""
        status = getattr(err, "status_code", None)
        permanent = {401: APIKeyRejected, 403: APIPermissionDenied}.get(status)
        if status == 404 and what == "create":  # after an upload that worked: /v1/batches or the model is missing
            permanent = APIModelNotFound
        if permanent is not None:
            return self.connection.permanent_error(permanent, status, getattr(err, "body", None),
                                                   what=f"Batch API {what}")
        return BatchAPIError(f"Batch API {what} failed at {self.base_url or 'api.openai.com'}: "
                             f"{self._redacted(err)}", status)

    async def _call(self, what: str, coroutine):
        try:
            return await coroutine
        except openai.APIError as err:
            # from None: the client's exception holds the request, headers (the key) included
            raise self._error(what, err) from None

    # -- the whole call ------------------------------------------------------------------
    async def run(self, client: openai.AsyncOpenAI) -> None:
        """Pick up this call's requests an earlier run submitted, submit the rest within the budget,
        poll until every batch ends (or ``max_wait_s``); what failed is left in ``self.retry``."""
        pending = set(self.requests)
        active, covered = await self._resume_open(client, pending)
        fresh = self._reserve(covered)
        deadline = None if self.settings.max_wait_s is None else time.monotonic() + self.settings.max_wait_s
        sizes = ((key, len(request_line(self.connection, key, request))) for key, request in fresh.items())
        queue = [{key: fresh[key] for key in keys} for keys in split_request_lines(
            sizes, self.settings.max_requests_per_batch, self.settings.max_bytes_per_batch)]
        unfinished: list[str] = []
        while queue or active:
            active = await self._submit(client, queue, active)
            unfinished = await self.poll(client, active, pending, deadline)
            active = []
            if unfinished:  # max_wait_s ran out
                for chunk in queue:  # never submitted: nothing reserved stays booked for them
                    for key in chunk:
                        self.call.not_requested(key, "not submitted: the Batch API refused more batches before "
                                                     "max_wait_s ran out")
                break
        for local_id in unfinished:
            record = self.store.get(local_id)
            for key in self.store.open_batches_for(pending, self.connection.model, self.base_url).get(local_id, ()):
                self.call.not_requested(key, f"Batch API batch {record.batch_id} still {record.status} after "
                                             f"{self.settings.max_wait_s} s: run again to collect it (it is not "
                                             "resubmitted)")

    async def _resume_open(self, client: openai.AsyncOpenAI, pending: set[str]) -> tuple[list[str], set[str]]:
        """The batches of earlier runs that hold some of ``pending`` (a rerun never pays twice):
        their local ids, made pollable again, and the requests they hold."""
        active: list[str] = []
        covered: set[str] = set()
        for local_id, held in self.store.open_batches_for(pending, self.connection.model, self.base_url).items():
            if await self.resume(client, local_id):
                active.append(local_id)
                covered |= held
        return active, covered

    def _reserve(self, covered: set[str]) -> dict[str, ChatRequest]:
        """The requests to submit: those no open batch holds, each with its budget reserved at the
        Batch API price (the rest: not requested, the cap is reached)."""
        fresh: dict[str, ChatRequest] = {}
        for key, request in self.requests.items():
            if key in covered:
                continue
            estimate = self.call.reserve(request, self.settings.price_factor)
            if estimate is None:
                self.call.not_requested(key)
                continue
            self.reserved[key] = estimate
            fresh[key] = request
        return fresh

    async def _submit(self, client: openai.AsyncOpenAI, queue: list[dict[str, ChatRequest]],
                      active: list[str]) -> list[str]:
        """Submit queued batches (taken off ``queue``) until the server refuses one while others run."""
        while queue:
            try:
                active.append(await self.submit(client, queue[0]))
            except BatchAPIError as err:
                if not (err.refused and active):
                    raise
                # e.g. OpenAI's limit on tokens enqueued per model: wait for the running batches
                log.warning("Batch API: a new batch was refused (%s); %d batches wait until the running "
                            "ones end", err, len(queue))
                break
            queue.pop(0)
        return active

    def release_reservations(self) -> None:
        """Drop the reservations of lines never booked."""
        for estimate in self.reserved.values():
            self.replies.ledger.release(estimate)
        self.reserved.clear()

    # -- submitting --------------------------------------------------------------------
    async def submit(self, client: openai.AsyncOpenAI, requests: Mapping[str, ChatRequest]) -> str:
        """Record, upload and create one batch; returns its local id. Each step is committed first."""
        local_id = uuid.uuid4().hex
        lines = [request_line(self.connection, key, request) for key, request in requests.items()]
        data = b"".join(lines)
        _write_gzip_atomic(self.store.requests_path(local_id), data)
        self.store.add(BatchRecord(local_id, self.connection.model, self.base_url, len(lines), None, None, PREPARING,
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
                   deadline: float | None) -> list[str]:
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
                    self.call.report_progress()
                    continue
                if batch.status != record.status:
                    self.store.update(local_id, status=batch.status)
                    log.info("Batch API: batch %s is %s %s", batch.id, batch.status,
                             batch.request_counts.model_dump() if batch.request_counts else "")
                if batch.status in TERMINAL:
                    await self.ingest(client, local_id, batch, pending)
                    self.call.report_progress()
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
                                              self.connection.wire_params(stored[key]["params"])))
                if kind is not None and key in pending and (permanent is None or self._before(key, permanent[3])):
                    permanent = (kind, response.get("status_code"), body, key)
                continue
            try:
                reply = parse_completion(body)
            except InvalidReply as err:
                self._book(key, None, err.prompt_tokens, err.completion_tokens)
                continue
            self._book(key, None, reply.prompt_tokens, reply.completion_tokens)
            answered.add(key)
            result = self.replies.store_reply(key, stored[key], reply, self.call.validate, batch_api=True)
            if key in pending:
                self.call.record(key, result)
        for key in (pending & held) - answered:
            self.retry.add(key)
            if key in self.reserved:  # never billed: it goes out as an ordinary request
                self.replies.ledger.release(self.reserved.pop(key))
        self.store.update(local_id, ingested=1)
        path.unlink(missing_ok=True)
        n_failed = len(held - answered)
        log.info("Batch API: batch %s %s: %d answered, %d to retry as ordinary requests", batch.id, batch.status,
                 len(answered), n_failed)
        if permanent is not None:
            kind, status, body, key = permanent
            request = self.requests.get(key)
            if request is None:
                request = ChatRequest(stored[key]["messages"], stored[key]["params"])
            raise self.connection.permanent_error(kind, status, body, index=self.call.index_of(key),
                                                  total=self.call.total, request=request)
        self._raise_for_missing_model(batch)

    def _before(self, key: str, other: str) -> bool:
        """Whether ``key`` comes before ``other`` among this call's requests (the first one is reported)."""
        return self.call.index_of(key) < self.call.index_of(other)

    def _raise_for_missing_model(self, batch) -> None:
        """A batch that failed validation because its model does not exist: no retry can answer it."""
        if batch.status != "failed" or getattr(batch, "errors", None) is None:
            return
        for error in getattr(batch.errors, "data", None) or []:
            code, message = str(getattr(error, "code", "") or ""), str(getattr(error, "message", "") or "")
            if code == "model_not_found" or MODEL_MISSING.search(message):
                raise self.connection.permanent_error(APIModelNotFound, None, {"code": code, "message": message},
                                                      what=f"Batch API batch {batch.id}")

    def _book(self, key: str, body: Any, prompt_tokens: int = 0, completion_tokens: int = 0) -> None:
        """Book a line's tokens at the Batch API price (a failed line may still report usage)."""
        if isinstance(body, dict) and isinstance(body.get("usage"), dict) and not (prompt_tokens or completion_tokens):
            usage = body["usage"]
            prompt_tokens = int(usage.get("prompt_tokens") or 0)
            completion_tokens = int(usage.get("completion_tokens") or 0)
        estimate = self.reserved.pop(key, 0.0)
        if estimate or prompt_tokens or completion_tokens:
            self.replies.ledger.settle(estimate, prompt_tokens, completion_tokens, self.settings.price_factor)




class BatchAPITransport:
    """The uncached requests of a call through the OpenAI Batch API; lines that failed or never ran
    go out through ``direct`` (the client's direct transport) before the call returns."""

    label = " (Batch API)"

    def __init__(self, connection: Connection, replies: Replies, settings: BatchAPISettings,
                 direct: DirectTransport):
        self.connection = connection
        self.replies = replies
        self.settings = settings
        self.direct = direct

    async def send(self, call: UncachedCall) -> None:
        run = _BatchRun(self.connection, self.replies, self.settings, call)
        client = self.connection.new_client()
        try:
            await run.run(client)
        finally:
            run.release_reservations()
            await client.close()
            run.store.close()
        if run.retry:
            retry_keys = sorted(run.retry)
            log.info("Batch API: %d failed or expired lines go out as ordinary requests", len(retry_keys))
            retried = call.subset(retry_keys)  # numbered as the caller's requests in any error
            await self.direct.send(retried)
            call.budget_hit = call.budget_hit or retried.budget_hit
            for key in retry_keys:
                call.record(key, retried.outcomes[key])
        call.report_progress()


__all__ = ["BatchAPISettings", "BatchAPIError", "BatchAPITransport", "BatchStore", "OPENAI_MAX_FILE_BYTES",
           "default_state_dir", "request_line", "split_request_lines"]
