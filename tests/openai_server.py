"""A real chat-completions HTTP server on 127.0.0.1 for tests and benchmarks.

It speaks enough of the OpenAI API (``POST /v1/chat/completions``) for the official ``openai``
client: ``choices[0].message.content``, ``usage`` and, when asked and enabled, ``logprobs``.
Replies are deterministic functions of the prompt (see :func:`default_reply`), so a test can
compute what the right answer is without the server. Faults are injected per prompt:

    with ChatCompletionsServer(latency_s=0.01) as server:
        server.inject("some prompt text", ["429", "500"])   # next two matching requests fail
        client = AsyncOpenAI(base_url=server.base_url, api_key="sk-test")

Fault kinds: ``429`` (with a ``Retry-After`` header of ``retry_after_s`` seconds), ``500``,
``400``, ``timeout`` (sleeps ``timeout_sleep_s`` before answering, past the client's timeout),
``malformed`` (status 200, body not JSON), ``non_numeric`` (a reply with no score in it),
``empty_choices`` (status 200, ``choices: []``), ``null_content`` (status 200, a message whose
content is null, as a refusal or a tool call gives), ``html`` (status 200, an HTML error page,
as a misconfigured proxy returns). Every request is counted by its last user
message, so tests can assert retries and that no answered item was asked twice.

Errors no rerun can fix, in OpenAI's own JSON shape (``{"error": {"message", "type", "param",
"code"}}``, see :func:`openai_error`): ``auth_401`` (``invalid_api_key``), ``forbidden_403``
(a project without access to the model), ``model_404`` (``model_not_found``), ``context_400``
(``context_length_exceeded``), ``param_400`` (an unsupported request parameter),
``quota_429`` (``insufficient_quota``: no credit left), ``max_tokens_400`` (a reasoning model refusing
``max_tokens``: "Use 'max_completion_tokens' instead"); and ``503`` (overloaded, retryable).
``refuse_max_tokens=True`` answers every request whose body carries ``max_tokens`` with that 400, as
OpenAI's reasoning models (o-series, gpt-5) do; they take ``max_completion_tokens``.
Server-wide, ``api_key="sk-..."`` answers every request without that bearer key with the 401,
and ``models=("test-model",)`` answers a request for any other model with the 404, as
api.openai.com does; both can be changed while the server runs (a test's "fix").

Only 127.0.0.1 is bound, on a free port chosen by the OS; every handler does a bounded amount of
work (one request, at most one sleep) and the server thread stops on exit.
"""

from __future__ import annotations

import hashlib
import json
import math
import threading
import time
from collections import Counter, deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

FAULTS = ("429", "500", "400", "timeout", "malformed", "non_numeric", "empty_choices", "null_content", "html",
          "auth_401", "forbidden_403", "model_404", "context_400", "param_400", "quota_429", "503", "max_tokens_400")
SCORE_TOKENS = tuple("012345")


def _digest(text: str) -> int:
    return int(hashlib.sha256(text.encode("utf-8")).hexdigest()[:12], 16)


def expected_score(prompt: str) -> int:
    """The 0-5 score the server gives a scoring prompt: a pure function of the prompt text."""
    return _digest(prompt) % 6


def expected_claif_score(prompt: str) -> float:
    """The 0-1 score the server gives a CLAIF scoring prompt."""
    return (_digest(prompt) % 11) / 10


def expected_generation(prompt: str) -> str:
    """The text the server 'generates' for any other prompt."""
    return f"generated sentence {_digest(prompt) % 100000}"


def default_reply(prompt: str) -> str:
    """Scoring prompts get a digit, CLAIF scoring prompts a 0-1 number, others a sentence."""
    if "between 0.0 and 5.0" in prompt:
        return str(expected_score(prompt))
    if "similarity score for these two sentences" in prompt:
        return f" {expected_claif_score(prompt):.1f}"
    return expected_generation(prompt)


def openai_error(kind: str, *, model: str = "test-model", api_key: str = "", param: str = "top_logprobs"
                 ) -> tuple[int, dict]:
    """(HTTP status, JSON body) of an OpenAI API error, as api.openai.com words it."""
    if kind == "auth_401":
        shown = f"{api_key[:3]}*********{api_key[-4:]}" if len(api_key) > 8 else "sk-***"
        return 401, {"error": {"message": f"Incorrect API key provided: {shown}. You can find your API key at "
                                          "https://platform.openai.com/account/api-keys.",
                               "type": "invalid_request_error", "param": None, "code": "invalid_api_key"}}
    if kind == "forbidden_403":
        return 403, {"error": {"message": f"Project `proj_test0000` does not have access to model `{model}`",
                               "type": "invalid_request_error", "param": None, "code": "model_not_found"}}
    if kind == "model_404":
        return 404, {"error": {"message": f"The model `{model}` does not exist or you do not have access to it.",
                               "type": "invalid_request_error", "param": None, "code": "model_not_found"}}
    if kind == "context_400":
        return 400, {"error": {"message": "This model's maximum context length is 16385 tokens. However, your messages "
                                          "resulted in 20107 tokens. Please reduce the length of the messages.",
                               "type": "invalid_request_error", "param": "messages", "code": "context_length_exceeded"}}
    if kind == "param_400":
        return 400, {"error": {"message": f"Invalid value for '{param}': integer above maximum value. Expected a value "
                                          "<= 5, but got 10 instead.",
                               "type": "invalid_request_error", "param": param, "code": "integer_above_max_value"}}
    if kind == "max_tokens_400":  # OpenAI's words to a reasoning model's request with max_tokens
        return 400, {"error": {"message": "Unsupported parameter: 'max_tokens' is not supported with this model. Use "
                                          "'max_completion_tokens' instead.",
                               "type": "invalid_request_error", "param": "max_tokens", "code": "unsupported_parameter"}}
    if kind == "quota_429":
        return 429, {"error": {"message": "You exceeded your current quota, please check your plan and billing "
                                          "details. For more information on this error, read the docs: "
                                          "https://platform.openai.com/docs/guides/error-codes/api-errors.",
                               "type": "insufficient_quota", "param": None, "code": "insufficient_quota"}}
    if kind == "503":
        return 503, {"error": {"message": "The engine is currently overloaded, please try again later",
                               "type": "server_error", "param": None, "code": None}}
    raise ValueError(f"no OpenAI error shape for {kind!r}")


OPENAI_ERRORS = ("auth_401", "forbidden_403", "model_404", "context_400", "param_400", "quota_429", "503",
                 "max_tokens_400")


def _last_user_message(body: dict) -> str:
    for message in reversed(body.get("messages") or []):
        if message.get("role") == "user":
            content = message.get("content")
            return content if isinstance(content, str) else json.dumps(content)
    return ""


class ChatCompletionsServer:
    """Start with ``with ChatCompletionsServer(...) as server:``; ``server.base_url`` ends in ``/v1``."""

    def __init__(
        self,
        *,
        latency_s: float = 0.0,
        reply_fn: Callable[[str], str] = default_reply,
        logprobs: bool = True,
        retry_after_s: float = 0.2,
        timeout_sleep_s: float = 2.0,
        api_key: str | None = None,
        models: tuple[str, ...] | None = None,
        refuse_max_tokens: bool = False,
    ):
        self.latency_s = latency_s
        self.reply_fn = reply_fn
        self.logprobs = logprobs  # whether the endpoint supports logprobs at all
        self.retry_after_s = retry_after_s
        self.timeout_sleep_s = min(timeout_sleep_s, 30.0)  # a handler never sleeps longer
        self.api_key = api_key  # set: requests without "Bearer <api_key>" get the 401
        self.models = models  # set: requests for another model get the 404
        self.refuse_max_tokens = refuse_max_tokens  # set: a body with max_tokens gets max_tokens_400
        self.status_counts: Counter[int] = Counter()  # HTTP status of every chat-completions answer
        self.requests: Counter[str] = Counter()  # last user message -> requests received
        self.arrivals: list[tuple[float, str]] = []  # (monotonic time, last user message)
        self.authorization: Counter[str] = Counter()  # Authorization headers seen
        self.bodies: list[dict] = []
        self.in_flight = 0
        self.max_in_flight = 0  # the most requests handled at once (checks client concurrency)
        self._faults: list[tuple[str, deque[str]]] = []
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- fault injection -----------------------------------------------------------------
    def inject(self, match: str, faults: list[str]) -> None:
        """The next ``len(faults)`` requests whose last user message contains ``match`` fail, in order.

        ``"ok"`` in the list answers normally once. After the list is used up, answers are normal.
        """
        unknown = [fault for fault in faults if fault not in FAULTS and fault != "ok"]
        if unknown:
            raise ValueError(f"unknown faults {unknown}; choose from {FAULTS} or 'ok'")
        with self._lock:
            self._faults.append((match, deque(faults)))

    def _next_fault(self, prompt: str) -> str | None:
        with self._lock:
            for match, queue in self._faults:
                if match in prompt and queue:
                    return queue.popleft()
        return None

    def count(self, match: str) -> int:
        """Requests received whose last user message contains ``match``."""
        with self._lock:
            return sum(n for prompt, n in self.requests.items() if match in prompt)

    def total_requests(self) -> int:
        with self._lock:
            return sum(self.requests.values())

    def reset_counts(self) -> None:
        with self._lock:
            self.requests.clear()
            self.arrivals.clear()
            self.bodies.clear()
            self.status_counts.clear()
            self.max_in_flight = self.in_flight

    # -- responses -----------------------------------------------------------------------
    def _completion(self, body: dict, reply: str) -> dict:
        prompt = _last_user_message(body)
        message = {"role": "assistant", "content": reply}
        choice: dict = {"index": 0, "message": message, "finish_reason": "stop", "logprobs": None}
        if self.logprobs and body.get("logprobs"):
            choice["logprobs"] = {"content": self._logprobs(reply, int(body.get("top_logprobs") or 0))}
        return {
            "id": f"chatcmpl-{_digest(prompt) % 10**8}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", "test-model"),
            "choices": [choice],
            "usage": {
                "prompt_tokens": max(1, len(prompt.split())),
                "completion_tokens": max(1, len(reply.split())),
                "total_tokens": max(1, len(prompt.split())) + max(1, len(reply.split())),
            },
        }

    @staticmethod
    def _logprobs(reply: str, top: int) -> list[dict]:
        """One entry per character of the reply. For a digit, the top alternatives are the score
        digits with probability 0.7 on the reply's digit and the rest spread evenly."""
        entries = []
        for char in reply:
            if char in SCORE_TOKENS:
                probs = {token: (0.7 if token == char else 0.06) for token in SCORE_TOKENS}
            else:
                probs = {char: 1.0}
            ranked = sorted(probs.items(), key=lambda item: -item[1])[: max(top, 1)]
            entries.append(
                {
                    "token": char,
                    "logprob": math.log(probs[char]),
                    "bytes": list(char.encode()),
                    "top_logprobs": [
                        {"token": token, "logprob": math.log(p), "bytes": list(token.encode())} for token, p in ranked
                    ]
                    if top
                    else [],
                }
            )
        return entries

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        raw_body = handler.rfile.read(length) if length else b""
        if handler.path.rstrip("/") != "/v1/chat/completions":
            self._send(handler, 404, {"error": {"message": f"no route {handler.path}"}})
            return
        try:
            body = json.loads(raw_body)
        except json.JSONDecodeError:
            self._send(handler, 400, {"error": {"message": "request body is not JSON"}})
            return
        prompt = _last_user_message(body)
        with self._lock:
            self.requests[prompt] += 1
            self.arrivals.append((time.monotonic(), prompt))
            self.authorization[handler.headers.get("Authorization", "")] += 1
            self.bodies.append(body)
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            self._respond(handler, body, prompt)
        finally:
            with self._lock:
                self.in_flight -= 1

    def key_refused(self, handler: BaseHTTPRequestHandler) -> tuple[int, dict] | None:
        """The 401 for a request without the server's key (None: the key is right, or none is needed)."""
        if self.api_key is None:
            return None
        sent = handler.headers.get("Authorization", "")
        if sent == f"Bearer {self.api_key}":
            return None
        return openai_error("auth_401", api_key=sent.removeprefix("Bearer "))

    def _respond(self, handler: BaseHTTPRequestHandler, body: dict, prompt: str) -> None:
        fault = self._next_fault(prompt)
        if self.latency_s:
            time.sleep(self.latency_s)
        model = str(body.get("model", ""))
        refused = self.key_refused(handler)
        if refused is None and self.models is not None and model not in self.models:
            refused = openai_error("model_404", model=model)
        if refused is None and self.refuse_max_tokens and "max_tokens" in body:
            refused = openai_error("max_tokens_400")
        if refused is None and fault in OPENAI_ERRORS:
            refused = openai_error(fault, model=model, api_key=handler.headers.get("Authorization", "")[7:])
        if refused is not None:
            self._send(handler, *refused)
        elif fault == "429":
            error = {"error": {"message": "rate limited", "type": "rate_limit_exceeded"}}
            self._send(handler, 429, error, {"Retry-After": f"{self.retry_after_s:g}"})
        elif fault == "500":
            self._send(handler, 500, {"error": {"message": "internal error"}})
        elif fault == "400":
            self._send(handler, 400, {"error": {"message": "bad request"}})
        elif fault == "timeout":
            time.sleep(self.timeout_sleep_s)
            self._send(handler, 200, self._completion(body, self.reply_fn(prompt)))
        elif fault == "malformed":
            self._send_bytes(handler, 200, b'{"id": "chatcmpl-1", "choices": [', "application/json")
        elif fault == "non_numeric":
            self._send(handler, 200, self._completion(body, "I would rather not say."))
        elif fault == "empty_choices":
            completion = self._completion(body, "")
            completion["choices"] = []
            self._send(handler, 200, completion)
        elif fault == "null_content":
            completion = self._completion(body, "")
            completion["choices"][0]["message"]["content"] = None
            self._send(handler, 200, completion)
        elif fault == "html":
            self._send_bytes(handler, 200, b"<html><body>502 Bad Gateway</body></html>", "text/html")
        else:
            self._send(handler, 200, self._completion(body, self.reply_fn(prompt)))

    def _send(self, handler: BaseHTTPRequestHandler, status: int, payload: dict, headers: dict | None = None) -> None:
        self._send_bytes(handler, status, json.dumps(payload).encode(), "application/json", headers)

    def _send_bytes(self, handler, status: int, data: bytes, content_type: str, headers: dict | None = None) -> None:
        with self._lock:
            self.status_counts[status] += 1
        try:
            handler.send_response(status)
            handler.send_header("Content-Type", content_type)
            handler.send_header("Content-Length", str(len(data)))
            for name, value in (headers or {}).items():
                handler.send_header(name, value)
            handler.end_headers()
            handler.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (a timeout fault): nothing to answer

    # -- lifecycle -----------------------------------------------------------------------
    def start(self) -> "ChatCompletionsServer":
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as the openai client expects
            # Headers and body leave in one TCP segment: written separately, Nagle's algorithm
            # and the client's delayed ACK add ~40 ms to every response.
            wbufsize = 64 * 1024
            disable_nagle_algorithm = True

            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                server._handle(self)

            def do_GET(self) -> None:  # noqa: N802 (subclasses route GETs, e.g. openai_batch_server.py)
                server._handle(self)

            def log_message(self, format: str, *args) -> None:  # keep test output quiet
                pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            block_on_close = False
            request_queue_size = 256  # a burst of concurrent connections must not hit SYN retries

        self._httpd = Server(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="chat-server", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    @property
    def port(self) -> int:
        assert self._httpd is not None, "server is not running"
        return self._httpd.server_address[1]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def __enter__(self) -> "ChatCompletionsServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


if __name__ == "__main__":  # a manual server for trying the CLI by hand
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency", type=float, default=0.0)
    args = parser.parse_args()
    with ChatCompletionsServer(latency_s=args.latency) as running:
        print(running.base_url, flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
