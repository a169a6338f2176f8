"""The OpenAI Batch API on 127.0.0.1, for tests: ``/v1/files`` and ``/v1/batches`` over the
chat-completions server of ``openai_server.py`` (which still answers direct requests).

Routes, as the official ``openai`` client calls them:

- ``POST /v1/files`` (multipart: ``file``, ``purpose``), ``GET /v1/files/{id}``,
  ``GET /v1/files/{id}/content``;
- ``POST /v1/batches``, ``GET /v1/batches/{id}``, ``GET /v1/batches`` (list, newest first).

A batch is ``validating`` at its first retrieve, ``in_progress`` until it has been retrieved
``polls_to_finish`` times (and for as long as ``hold`` is set), then ends with ``final_status``:

- ``completed``: every line answered, except lines whose prompt contains one of ``fail_match``:
  those land in the error file with status 500;
- ``expired``: only the first ``expire_after_lines`` lines are answered, the rest land in the
  error file with the error code ``batch_expired`` (as OpenAI reports them);
- ``failed``: no line ran (``errors`` says why).

Answers are the same deterministic replies as the direct endpoint (``default_reply``).
``batch_requests`` counts the lines processed inside batches by prompt; ``requests`` (the
parent's counter) counts direct requests only, so a test can tell which way an item went.
``create_delay_s`` sleeps after a batch was registered and before answering the create call, so
a client can be killed in exactly that window. With ``max_active_batches`` set, a create while
that many batches run is refused with a 400, as OpenAI's enqueued-token limit refuses it.

Errors no rerun can fix, in OpenAI's shapes (``openai_error``): with ``api_key`` set every
files/batches call without that bearer key gets the 401 (as api.openai.com answers an upload
with a bad key); ``route_faults={"upload": "auth_401", "create": "forbidden_403"}`` answers
that call (every time) with the error; ``line_faults={"some prompt text": "context_400"}`` makes
the matching lines end in the error file with that status and error body (a line whose request
failed, as OpenAI reports it); with ``models`` set, a batch whose lines name another model fails
validation (``status: failed``, ``errors`` with code ``model_not_found``). With
``refuse_max_tokens`` (the parent's), a line whose body carries ``max_tokens`` ends in the error file
with OpenAI's 400 for reasoning models.

An upload over ``max_file_bytes`` (OpenAI's 200 MB) is refused with a 400, as OpenAI refuses it.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import Counter
from email.parser import BytesParser
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler
from urllib.parse import parse_qs, urlsplit

from tests.openai_server import OPENAI_ERRORS, ChatCompletionsServer, _last_user_message, openai_error


def _form_fields(content_type: str, raw: bytes) -> dict[str, tuple[str | None, bytes]]:
    """The fields of a ``multipart/form-data`` body: name -> (file name, bytes). The parts are cut at
    the boundary with ``bytes.split`` and only their headers go through ``email``'s parser: parsing a
    190 MB upload whole with it takes about 4 s, cutting it a fraction of a second."""
    parser = BytesParser(policy=HTTP)
    boundary = parser.parsebytes(f"Content-Type: {content_type}\r\n\r\n".encode()).get_param("boundary")
    fields = {}
    for part in raw.split(b"--" + str(boundary).encode())[1:-1]:  # before the first and after the last: no part
        head, _, body = part.removeprefix(b"\r\n").partition(b"\r\n\r\n")
        headers = parser.parsebytes(head + b"\r\n\r\n", headersonly=True)
        fields[headers.get_param("name", header="content-disposition")] = (headers.get_filename(),
                                                                            body.removesuffix(b"\r\n"))
    return fields


class BatchAPIServer(ChatCompletionsServer):
    def __init__(self, *, polls_to_finish: int = 2, final_status: str = "completed", fail_match: tuple[str, ...] = (),
                 expire_after_lines: int = 0, create_delay_s: float = 0.0, max_active_batches: int | None = None,
                 route_faults: dict[str, str] | None = None, line_faults: dict[str, str] | None = None,
                 max_file_bytes: int = 200 * 10**6, **kwargs):
        super().__init__(**kwargs)
        for kind in [*(route_faults or {}).values(), *(line_faults or {}).values()]:
            if kind not in OPENAI_ERRORS:
                raise ValueError(f"unknown fault {kind!r}; choose from {OPENAI_ERRORS}")
        self.route_faults = dict(route_faults or {})  # "upload" | "create" -> error kind, every call
        self.line_faults = dict(line_faults or {})  # prompt substring -> error kind of that batch line
        if final_status not in ("completed", "expired", "failed"):
            raise ValueError(f"final_status must be completed, expired or failed, not {final_status!r}")
        self.polls_to_finish = polls_to_finish
        self.final_status = final_status
        self.fail_match = tuple(fail_match)
        self.expire_after_lines = expire_after_lines
        self.create_delay_s = min(create_delay_s, 30.0)
        self.max_file_bytes = max_file_bytes
        self.max_active_batches = max_active_batches  # more running batches: create answers 400 (token limit)
        self.batch_refusals = 0
        self.hold = False  # while True, batches stay in_progress
        self.files: dict[str, dict] = {}
        self.batches: dict[str, dict] = {}
        self.batch_creates = 0
        self.batch_retrieves = 0
        self.batch_requests: Counter[str] = Counter()
        self.batch_authorization: Counter[str] = Counter()
        self._batch_lock = threading.RLock()  # _finish adds files while holding it

    # -- routing ---------------------------------------------------------------------------
    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        path = urlsplit(handler.path).path.rstrip("/")
        if not (path.startswith("/v1/files") or path.startswith("/v1/batches")):
            super()._handle(handler)
            return
        length = int(handler.headers.get("Content-Length") or 0)
        raw = handler.rfile.read(length) if length else b""
        with self._batch_lock:
            self.batch_authorization[handler.headers.get("Authorization", "")] += 1
        parts = path.split("/")[2:]  # ["files", id, "content"] or ["batches", id]
        method = handler.command
        route = {("files", "POST"): "upload", ("batches", "POST"): "create"}.get((parts[0] if parts else "", method)) \
            if len(parts) == 1 else None
        refused = self.key_refused(handler)
        if refused is None and route in self.route_faults:
            refused = openai_error(self.route_faults[route])
        if refused is not None:
            self._send(handler, *refused)
        elif parts == ["files"] and method == "POST":
            self._send(handler, *self._upload(handler.headers.get("Content-Type", ""), raw))
        elif len(parts) == 2 and parts[0] == "files" and parts[1] in self.files:
            self._send(handler, 200, self._file_object(self.files[parts[1]]))
        elif len(parts) == 3 and parts[0] == "files" and parts[2] == "content" and parts[1] in self.files:
            self._send_bytes(handler, 200, self.files[parts[1]]["data"], "application/octet-stream")
        elif parts == ["batches"] and method == "POST":
            self._create(handler, json.loads(raw))
        elif parts == ["batches"] and method == "GET":
            query = parse_qs(urlsplit(handler.path).query)
            self._send(handler, 200, self._list(int(query.get("limit", ["20"])[0]), query.get("after", [None])[0]))
        elif len(parts) == 2 and parts[0] == "batches" and parts[1] in self.batches:
            self._send(handler, 200, self._retrieve(parts[1]))
        else:
            self._send(handler, 404, {"error": {"message": f"no route {method} {handler.path}"}})

    # -- files -----------------------------------------------------------------------------
    def _add_file(self, data: bytes, purpose: str, filename: str) -> dict:
        file = {"id": f"file-{uuid.uuid4().hex[:24]}", "data": data, "purpose": purpose, "filename": filename,
                "created_at": int(time.time())}
        with self._batch_lock:
            self.files[file["id"]] = file
        return file

    def _upload(self, content_type: str, raw: bytes) -> tuple[int, dict]:
        fields = _form_fields(content_type, raw)
        filename, data = fields["file"]
        if len(data) > self.max_file_bytes:
            return 400, {"error": {"message": f"File is too large: {len(data)} bytes; the maximum is "
                                              f"{self.max_file_bytes} bytes.", "type": "invalid_request_error",
                                   "param": "file", "code": "file_too_large"}}
        return 200, self._file_object(self._add_file(data, fields["purpose"][1].decode(), filename or "upload.jsonl"))

    @staticmethod
    def _file_object(file: dict) -> dict:
        return {"id": file["id"], "object": "file", "bytes": len(file["data"]), "created_at": file["created_at"],
                "filename": file["filename"], "purpose": file["purpose"], "status": "processed"}

    # -- batches ---------------------------------------------------------------------------
    def _create(self, handler: BaseHTTPRequestHandler, body: dict) -> None:
        if body.get("input_file_id") not in self.files:
            self._send(handler, 404, {"error": {"message": f"no file {body.get('input_file_id')}"}})
            return
        with self._batch_lock:
            running = sum(b["status"] not in ("completed", "expired", "failed") for b in self.batches.values())
            if self.max_active_batches is not None and running >= self.max_active_batches:
                self.batch_refusals += 1
                self._send(handler, 400, {"error": {"code": "token_limit_exceeded", "type": "invalid_request_error",
                                                    "message": "Enqueued token limit reached for test-model"}})
                return
        batch = {"id": f"batch_{uuid.uuid4().hex[:24]}", "object": "batch", "endpoint": body["endpoint"],
                 "input_file_id": body["input_file_id"], "completion_window": body["completion_window"],
                 "created_at": int(time.time()), "status": "validating", "metadata": body.get("metadata"),
                 "output_file_id": None, "error_file_id": None, "errors": None, "polls": 0,
                 "request_counts": {"total": 0, "completed": 0, "failed": 0}}
        with self._batch_lock:
            self.batches[batch["id"]] = batch
            self.batch_creates += 1
        if self.create_delay_s:
            time.sleep(self.create_delay_s)
        self._send(handler, 200, self._public(batch))

    @staticmethod
    def _public(batch: dict) -> dict:
        return {k: v for k, v in batch.items() if k != "polls"}

    def _list(self, limit: int, after: str | None) -> dict:
        with self._batch_lock:
            ordered = sorted(self.batches.values(), key=lambda b: b["created_at"], reverse=True)
        if after is not None:
            ids = [b["id"] for b in ordered]
            ordered = ordered[ids.index(after) + 1:] if after in ids else []
        page = ordered[:limit]
        return {"object": "list", "data": [self._public(b) for b in page], "has_more": len(ordered) > len(page),
                "first_id": page[0]["id"] if page else None, "last_id": page[-1]["id"] if page else None}

    def _retrieve(self, batch_id: str) -> dict:
        with self._batch_lock:
            self.batch_retrieves += 1
            batch = self.batches[batch_id]
            if batch["status"] not in ("completed", "expired", "failed"):
                batch["polls"] += 1
                if batch["polls"] == 1:
                    batch["status"] = "validating"
                elif batch["polls"] < self.polls_to_finish or self.hold:
                    batch["status"] = "in_progress"
                else:
                    self._finish(batch)
            return self._public(batch)

    def _finish(self, batch: dict) -> None:
        """Run every line (under the lock: batches finish one at a time) and write the output files."""
        lines = [json.loads(line) for line in self.files[batch["input_file_id"]]["data"].decode().splitlines()
                 if line.strip()]
        batch["request_counts"]["total"] = len(lines)
        if self.final_status == "failed":
            batch.update(status="failed", errors={"object": "list", "data": [
                {"code": "invalid_request", "message": "the test server was told to fail this batch"}]})
            return
        unknown = [n for n, line in enumerate(lines)
                   if self.models is not None and line["body"].get("model") not in self.models]
        if unknown:  # OpenAI validates the input file first: no line runs
            model = lines[unknown[0]]["body"].get("model")
            batch.update(status="failed", errors={"object": "list", "data": [
                {"code": "model_not_found", "message": f"The model `{model}` does not exist or you do not have "
                 "access to it.", "param": "body.model", "line": n + 1} for n in unknown[:10]]})
            return
        outputs, errors = [], []
        for number, line in enumerate(lines):
            body = line["body"]
            prompt = _last_user_message(body)
            line_id = f"batch_req_{uuid.uuid4().hex[:16]}"
            if self.final_status == "expired" and number >= self.expire_after_lines:
                errors.append({"id": line_id, "custom_id": line["custom_id"], "response": None,
                               "error": {"code": "batch_expired",
                                         "message": "This request could not be executed before the completion window expired."}})
                continue
            self.batch_requests[prompt] += 1
            fault = next((kind for match, kind in self.line_faults.items() if match in prompt), None)
            if fault is None and self.refuse_max_tokens and "max_tokens" in body:
                fault = "max_tokens_400"
            if fault is not None:
                status, error_body = openai_error(fault, model=body.get("model", ""))
                errors.append({"id": line_id, "custom_id": line["custom_id"], "error": None,
                               "response": {"status_code": status, "request_id": line_id, "body": error_body}})
                continue
            if any(match in prompt for match in self.fail_match):
                errors.append({"id": line_id, "custom_id": line["custom_id"], "error": None,
                               "response": {"status_code": 500, "request_id": line_id,
                                            "body": {"error": {"message": "internal error", "type": "server_error"}}}})
                continue
            outputs.append({"id": line_id, "custom_id": line["custom_id"], "error": None,
                            "response": {"status_code": 200, "request_id": line_id,
                                         "body": self._completion(body, self.reply_fn(prompt))}})
        for key, rows in (("output_file_id", outputs), ("error_file_id", errors)):
            if rows:
                data = "".join(json.dumps(row) + "\n" for row in rows).encode()
                batch[key] = self._add_file(data, "batch_output", f"{batch['id']}_{key}.jsonl")["id"]
        batch["request_counts"].update(completed=len(outputs), failed=len(errors))
        batch["status"] = self.final_status

    def lines_submitted(self) -> int:
        """Request lines in every batch created so far."""
        with self._batch_lock:
            return sum(len([l for l in self.files[b["input_file_id"]]["data"].splitlines() if l.strip()])
                       for b in self.batches.values())
