"""An OpenAI-compatible chat backend (ChatGPT, vLLM, Ollama, any ``base_url``) through the cache.

Design, and which library does what:

- Transport retries are the ``openai`` client's own (``max_retries``): it retries 408, 409, 429,
  5xx, connection errors and timeouts with exponential backoff (0.5 s doubling, capped at 8 s,
  with jitter) and honours ``Retry-After`` / ``retry-after-ms`` up to two minutes. Writing that
  again would only add bugs.
- tenacity is added for the one case the client does not retry: a 200 response that is not a
  usable completion (malformed JSON, no choices, no message). Those come from flaky proxies
  and gateways, and a second try usually succeeds (``invalid_reply_retries``).
- A reply that arrives fine but that the caller cannot use (``validate`` returns an error, e.g.
  an empty stage-1 generation) is not retried within the run: at temperature 0 the same
  prompt gives the same reply. It is stored as ``failed`` with the reply, and retried by the
  next run. Stage-2 scorers pass no validator: a reply that is not a score is the model's
  answer, stored ``ok`` and judged ``unparsable_score`` by the scorer (scoring/base.py).
- Concurrency is a fixed pool of ``concurrency`` worker coroutines pulling items from one
  iterator (the bounded equivalent of one task per item behind a semaphore, without
  creating 500k task objects for a full corpus). Requests- and tokens-per-minute limits are
  token buckets (``ratelimit.py``); cost and the budget cap are in ``accounting.py``.
- Every outcome is written to the :class:`~multicsr_core.llm.cache.ResponseCache` the moment it
  arrives. Items already answered are never requested again; identical requests within a
  batch are sent once.

The reply-length limit: a :class:`ChatRequest` names it ``max_tokens``; the backend sends it under
``max_tokens_field``. Reasoning models (OpenAI's o-series, gpt-5) refuse ``max_tokens`` and want
``max_completion_tokens``; many OpenAI-compatible servers (llama.cpp, Ollama, older vLLM) know only
``max_tokens`` and ignore an unknown field, i.e. would lift the cap without a word, so the default
stays ``max_tokens`` and a refusal of either name says which setting to change. The name is not
part of the response-cache key (its value is, as before): it is how the same limit is spelled on
the wire, and a model that refuses one spelling answers nothing under it.

The API key comes from ``api_key`` or the environment variable ``api_key_env``. It is held
only by the client object: it is not part of cache keys, cache rows, the fingerprint, log
lines or error messages (errors are scrubbed of it before they are stored or raised).

Errors split by what a rerun can do (:func:`permanent_error_class`):

- Retryable: 408/409/429 rate limits/5xx/timeouts/connection errors are retried by the client;
  what is still unanswered is stored ``failed`` and asked again by the next run (exit 1, "run
  the same command again"). So is a 400 we cannot attribute (a generic "bad request").
- Permanent: a rejected key (401), no permission (403), an unknown model or route (404, or a
  ``model_not_found`` code), a prompt longer than the model's context (400
  ``context_length_exceeded``), a request parameter the endpoint rejects (400 naming it) and an
  account without quota (429 ``insufficient_quota``). No rerun can fix these, so the first one
  stops the whole call: no item is requested after it, requests in flight are cancelled, and
  a :class:`PermanentAPIError` (a ``UserError``: one line, exit 2) names the key's environment
  variable (never the key), the model, or the request. The client never retries them
  (``x-should-retry: false`` is set on those responses before it decides). Replies received
  before are cached, so the run after the fix resumes.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import ssl
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Mapping, Sequence, TypeVar

import httpx2
import openai
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from multicsr_core.errors import UserError
from multicsr_core.llm.accounting import BudgetExceeded, Pricing, UsageLedger, UsageTotals, estimate_prompt_tokens
from multicsr_core.llm.cache import FAILED, OK, CachedResponse, CacheEntry, ResponseCache, cache_key
from multicsr_core.llm.ratelimit import TokenBucket
from multicsr_core.redaction import redact_text, redact_url  # redact_url re-exported: the one URL redaction helper

if TYPE_CHECKING:
    from multicsr_core.llm.batch_api import BatchAPISettings

log = logging.getLogger(__name__)

NOT_REQUESTED = "not_requested"  # the budget cap stopped the run before this item was sent
# The request-body names of the reply-length limit: the classic one, and the one reasoning models take.
MAX_TOKENS_FIELDS = ("max_tokens", "max_completion_tokens")
DEFAULT_MAX_TOKENS_ESTIMATE = 256  # for budget and TPM estimates when a request sets no max_tokens

# Validates a reply: returns None if usable, else an error message (the item is then failed).
ReplyValidator = Callable[[str, "list[dict] | None"], "str | None"]
ProgressCallback = Callable[[int, int], None]
T = TypeVar("T")


def user_messages(prompt: str, system: str | None = None) -> list[dict[str, str]]:
    """The chat messages for a single-turn prompt."""
    messages = [{"role": "system", "content": system}] if system else []
    return messages + [{"role": "user", "content": prompt}]


@dataclass(frozen=True)
class ChatRequest:
    """One chat completion to make: the messages and the decoding parameters sent with them.

    ``params`` go into the chat-completions request body as they are (``temperature``, ``top_p``,
    ``max_tokens``, ``stop``, ``logprobs``, ``top_logprobs``, ``seed``...) and into the cache key;
    ``max_tokens`` leaves under the backend's ``max_tokens_field`` (:meth:`OpenAIChatBackend.wire_params`).
    """

    messages: Sequence[Mapping[str, str]]
    params: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_prompt(cls, prompt: str, system: str | None = None, **params: Any) -> "ChatRequest":
        return cls(messages=user_messages(prompt, system), params=params)


@dataclass(frozen=True)
class ChatResult:
    """The outcome of one request: ``status`` is ``ok``, ``failed`` or ``not_requested``."""

    status: str
    text: str | None = None
    error: str | None = None
    # Per reply token: {"token": str, "logprob": float, "top": {token: logprob}}; None if absent.
    logprobs: list[dict] | None = None
    cached: bool = False  # answered from the cache, no request made
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def ok(self) -> bool:
        return self.status == OK

    @classmethod
    def from_row(cls, row: CachedResponse, cached: bool) -> "ChatResult":
        response = row.response or {}
        return cls(
            status=row.status,
            text=response.get("text", row.raw),
            error=row.error,
            logprobs=response.get("logprobs"),
            cached=cached,
            prompt_tokens=row.prompt_tokens,
            completion_tokens=row.completion_tokens,
        )


@dataclass
class BatchReport:
    """What a batch call did: results in input order, plus counts and spend for reporting."""

    results: list[ChatResult]
    usage: UsageTotals  # new spend in this call (cache hits cost nothing)
    budget_exceeded: bool = False
    budget_usd: float | None = None

    @property
    def n_ok(self) -> int:
        return sum(result.status == OK for result in self.results)

    @property
    def n_failed(self) -> int:
        return sum(result.status == FAILED for result in self.results)

    @property
    def n_not_requested(self) -> int:
        return sum(result.status == NOT_REQUESTED for result in self.results)

    @property
    def n_cached(self) -> int:
        return sum(result.cached for result in self.results)

    def first_errors(self, limit: int = 5) -> list[str]:
        errors = [result.error for result in self.results if result.status == FAILED and result.error]
        return list(dict.fromkeys(errors))[:limit]

    def summary(self) -> str:
        text = (
            f"{self.n_ok} ok ({self.n_cached} from cache), {self.n_failed} failed, "
            f"{self.n_not_requested} not requested; {self.usage.requests} requests, "
            f"{self.usage.prompt_tokens} prompt + {self.usage.completion_tokens} completion tokens, "
            f"${self.usage.cost_usd:.4f}"
        )
        if self.budget_exceeded:
            text += f"; stopped at the budget cap of ${self.budget_usd:.4f} (rerun with a larger budget to resume)"
        return text

    def raise_for_budget(self) -> None:
        """Raise :class:`BudgetExceeded` if the budget cap stopped this call."""
        if self.budget_exceeded:
            raise BudgetExceeded(self.summary())


class InvalidReply(Exception):
    """A 200 response that is not a usable completion (tenacity retries these)."""

    def __init__(self, message: str, prompt_tokens: int = 0, completion_tokens: int = 0):
        super().__init__(message)
        self.prompt_tokens = prompt_tokens
        self.completion_tokens = completion_tokens


class PermanentAPIError(UserError):
    """An API error no rerun can fix (the key, the model, a parameter, a too long prompt): the
    call stops at the first one, and the CLI prints its one line and exits 2.

    ``index`` is the position, in the failing call's requests, of the request it concerns (set
    for :class:`ContextLengthExceeded`; None for errors about the whole endpoint), so a caller
    that knows what the requests stand for (a scorer: its pairs) can name the row. It is not
    kept by pickling (Prefect, Dask rebuild the error from its message alone).
    """

    def __init__(self, message: str, *, index: int | None = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.index = index
        self.details: dict | None = None  # what OpenAIChatBackend.permanent_error built it from


class APIKeyRejected(PermanentAPIError):
    """401: the endpoint refused the API key (or wants one and none was set)."""


class APIPermissionDenied(PermanentAPIError):
    """403: the key may not use this model or endpoint."""


class APIModelNotFound(PermanentAPIError):
    """404, or a ``model_not_found`` error: the endpoint serves no such model (or no such route)."""


class ContextLengthExceeded(PermanentAPIError):
    """400 ``context_length_exceeded``: one request is longer than the model's context."""


class APIParameterRejected(PermanentAPIError):
    """400 naming a request parameter (``top_logprobs``, ``logprobs``...) the endpoint refuses."""


class APIQuotaExhausted(PermanentAPIError):
    """429 ``insufficient_quota``: the account has no credit left (not a rate limit)."""


# How servers say a prompt is too long: OpenAI ("maximum context length is N tokens"), vLLM (the
# same words, code 400), llama.cpp ("exceeds the available context size", exceed_context_size_error).
_CONTEXT_WORDS = re.compile(r"context[ _-]length|maximum context|context window|context size|exceeds? the "
                            r"(?:available )?context|too many (?:input )?tokens|prompt is too long", re.IGNORECASE)
_MODEL_MISSING = re.compile(r"\bmodel\b[^.]{0,80}?\b(?:does not exist|not found|is not served|unknown)|"
                            r"\b(?:unknown|no such|invalid) model\b", re.IGNORECASE)
# API keys as servers echo them ("Incorrect API key provided: sk-abc***wxyz"): never repeated
_KEY_LIKE = re.compile(r"\b(?:sk|rk|pk)-[A-Za-z0-9_*.\-]{2,}[A-Za-z0-9_*]")
_NO_CLIENT_RETRY = frozenset({400, 401, 403, 404})


def logical_params(wire: Mapping[str, Any]) -> dict:
    """A sent body's parameters as a :class:`ChatRequest` names them (``max_completion_tokens`` back
    to ``max_tokens``): the inverse of :meth:`OpenAIChatBackend.wire_params`."""
    params = dict(wire)
    if "max_completion_tokens" in params and "max_tokens" not in params:
        params["max_tokens"] = params.pop("max_completion_tokens")
    return params


def _error_fields(error: Any) -> tuple[str, str, str, str]:
    """(code, type, param, message) of an API error body (``{"error": {...}}`` or its inside)."""
    if isinstance(error, Mapping) and isinstance(error.get("error"), Mapping):
        error = error["error"]
    if not isinstance(error, Mapping):
        return "", "", "", str(error or "")
    code, kind, param, message = (str(error.get(name) or "") for name in ("code", "type", "param", "message"))
    return code, kind, param, message


def permanent_error_class(status: int | None, error: Any, params: Mapping[str, Any] = {}
                          ) -> type[PermanentAPIError] | None:
    """The :class:`PermanentAPIError` an HTTP error is, or None if a rerun may help (429, 5xx, a
    400 we cannot attribute). ``error`` is the error body; ``params`` the request's parameters
    (a 400 naming one of them is about the configuration, and every request would get it)."""
    code, kind, param, message = _error_fields(error)
    if status == 401:
        return APIKeyRejected
    if status == 403:
        return APIPermissionDenied
    if status == 404:
        return APIModelNotFound
    if status == 429:
        return APIQuotaExhausted if "insufficient_quota" in (code, kind) else None
    if status == 400:
        if code == "context_length_exceeded" or kind == "exceed_context_size_error" or _CONTEXT_WORDS.search(message):
            return ContextLengthExceeded
        if code == "model_not_found" or _MODEL_MISSING.search(message):
            return APIModelNotFound
        if code in ("unsupported_parameter", "unsupported_value") or (param and param in params):
            return APIParameterRejected
    return None


async def _no_client_retry_for_permanent_errors(response: httpx2.Response) -> None:
    """httpx response hook: the openai client decides on retries from the response headers, and an
    ``x-should-retry: false`` wins over its status rules. Set it on the permanent errors, so a
    429 ``insufficient_quota`` (which the client would retry max_retries times per request) and
    any 4xx a server marks retryable fail at once."""
    status = response.status_code
    if status in _NO_CLIENT_RETRY:
        response.headers["x-should-retry"] = "false"
    elif status == 429:
        try:
            body = json.loads(await response.aread())
        except (ValueError, UnicodeDecodeError):
            return
        code, kind, _, _ = _error_fields(body)
        if "insufficient_quota" in (code, kind):
            response.headers["x-should-retry"] = "false"


def _first_permanent(error: BaseException) -> PermanentAPIError | None:
    """The first :class:`PermanentAPIError` in an exception group (a TaskGroup's), else None."""
    if isinstance(error, PermanentAPIError):
        return error
    for inner in getattr(error, "exceptions", ()):
        found = _first_permanent(inner)
        if found is not None:
            return found
    return None


def run_sync(coroutine: Awaitable[T]) -> T:
    """Run a coroutine to completion from synchronous code, even if a loop is running here."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)  # type: ignore[arg-type]
    # Called from inside a running loop (a notebook, an async task): use a fresh one in a thread.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="llm-sync") as pool:
        return pool.submit(asyncio.run, coroutine).result()  # type: ignore[arg-type]


def _logprobs_of(choice: Mapping[str, Any]) -> list[dict] | None:
    logprobs = choice.get("logprobs")
    content = logprobs.get("content") if isinstance(logprobs, dict) else None
    if not content:
        return None
    return [
        {
            "token": item["token"],
            "logprob": float(item["logprob"]),
            "top": {top["token"]: float(top["logprob"]) for top in (item.get("top_logprobs") or [])},
        }
        for item in content
    ]


@dataclass(frozen=True)
class _Reply:
    """The fields of a chat-completion body that we use."""

    text: str
    logprobs: list[dict] | None
    finish_reason: str | None
    prompt_tokens: int
    completion_tokens: int


def _parse_completion(data: Any) -> _Reply:
    """The first choice of a chat-completion body, or InvalidReply.

    The usage counts are read first, so a 200 that is unusable still reports what it cost."""
    if not isinstance(data, dict):
        raise InvalidReply(f"response body is not a JSON object ({type(data).__name__})")
    usage = data.get("usage") if isinstance(data.get("usage"), dict) else {}
    try:
        prompt_tokens = int(usage.get("prompt_tokens") or 0)
        completion_tokens = int(usage.get("completion_tokens") or 0)
    except (TypeError, ValueError):
        raise InvalidReply(f"malformed usage in the response: {usage!r}") from None
    choices = data.get("choices")
    if not choices or not isinstance(choices, list):
        raise InvalidReply("response has no choices", prompt_tokens, completion_tokens)
    choice = choices[0]
    message = choice.get("message") if isinstance(choice, dict) else None
    if not isinstance(message, dict) or not isinstance(message.get("content"), str):
        raise InvalidReply("response choice has no message content", prompt_tokens, completion_tokens)
    try:
        logprobs = _logprobs_of(choice)
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        raise InvalidReply(f"malformed logprobs in the response ({type(err).__name__}: {err})",
                           prompt_tokens, completion_tokens) from None
    return _Reply(message["content"], logprobs, choice.get("finish_reason"), prompt_tokens, completion_tokens)


class OpenAIChatBackend:
    """Cached, concurrent, rate-limited, budgeted chat completions against one model.

    Args:
        model: the model name the endpoint expects (``gpt-3.5-turbo``, a vLLM served name...).
        cache: the response cache every outcome goes to.
        base_url: the endpoint (``http://host:8000/v1``); None means api.openai.com.
        api_key: the key itself; if None it is read from ``api_key_env``. A local server
            (``base_url`` set) may need none: the placeholder ``"EMPTY"`` is sent then.
        concurrency: requests in flight at once.
        timeout_s: per-request timeout (each attempt).
        max_retries: the openai client's transport retries (429, 5xx, timeouts, connection).
        invalid_reply_retries: extra attempts for 200 responses that are not a completion.
        requests_per_minute, tokens_per_minute: client-side limits (None: unlimited).
        pricing: USD per million prompt / completion tokens, for cost accounting.
        budget_usd: stop starting requests once this much would be spent (None: no cap).
        max_tokens_field: the body field the reply-length limit is sent as: ``max_tokens``, or
            ``max_completion_tokens`` (reasoning models); see the module docstring.
    """

    def __init__(
        self,
        model: str,
        *,
        cache: ResponseCache,
        base_url: str | None = None,
        api_key: str | None = None,
        api_key_env: str = "OPENAI_API_KEY",
        concurrency: int = 16,
        timeout_s: float = 60.0,
        max_retries: int = 5,
        invalid_reply_retries: int = 2,
        requests_per_minute: float | None = None,
        tokens_per_minute: float | None = None,
        pricing: Pricing = Pricing(),
        budget_usd: float | None = None,
        batch_api: "BatchAPISettings | None" = None,
        max_tokens_field: str = "max_tokens",
    ):
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, not {concurrency}")
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be positive, not {timeout_s}")
        if max_retries < 0 or invalid_reply_retries < 0:
            raise ValueError("max_retries and invalid_reply_retries must not be negative")
        if max_tokens_field not in MAX_TOKENS_FIELDS:
            raise ValueError(f"max_tokens_field must be one of {MAX_TOKENS_FIELDS}, not {max_tokens_field!r}")
        key = api_key if api_key is not None else os.environ.get(api_key_env)
        self.api_key_env = api_key_env  # the variable's NAME (error messages say it; never the value)
        self._key_source = "given" if api_key is not None else ("env" if key else "unset")
        if not key:
            if base_url is None:
                raise ValueError(f"no API key: set the environment variable {api_key_env} or pass api_key")
            key = "EMPTY"  # vLLM / Ollama convention: the server does not check it
        self.model = model
        self.cache = cache
        self.base_url = base_url
        self.concurrency = concurrency
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.invalid_reply_retries = invalid_reply_retries
        self._api_key = key
        self._requests_bucket = TokenBucket(requests_per_minute) if requests_per_minute else None
        self._tokens_bucket = TokenBucket(tokens_per_minute) if tokens_per_minute else None
        self.ledger = UsageLedger(pricing, budget_usd)
        self._ssl_context: ssl.SSLContext | None = None
        self.batch_api = batch_api  # set: acomplete goes through the OpenAI Batch API (batch_api.py)
        self.max_tokens_field = max_tokens_field

    def __repr__(self) -> str:  # never show the key
        return f"OpenAIChatBackend(model={self.model!r}, base_url={redact_url(self.base_url)!r})"

    def fingerprint(self) -> dict:
        return {"backend": "openai-compatible", "model": self.model, "base_url": redact_url(self.base_url)}

    @property
    def usage(self) -> UsageTotals:
        """Everything this backend object has spent so far (all calls)."""
        return self.ledger.totals()

    def key_for(self, request: ChatRequest) -> str:
        # the request's own params: the limit's value is in the key, its wire name is not
        return cache_key(self.model, request.messages, request.params)

    def wire_params(self, params: Mapping[str, Any]) -> dict:
        """``params`` as the request body carries them: ``max_tokens`` under ``max_tokens_field``."""
        wire = dict(params)
        if self.max_tokens_field != "max_tokens" and "max_tokens" in wire:
            wire[self.max_tokens_field] = wire.pop("max_tokens")
        return wire

    def request_body(self, request: ChatRequest) -> dict:
        """The chat-completions body of ``request``, the same for a direct request and a Batch API line."""
        return {"model": self.model, "messages": [dict(message) for message in request.messages],
                **self.wire_params(request.params)}

    def _redact(self, text: str) -> str:
        return text.replace(self._api_key, "***") if self._api_key != "EMPTY" else text

    @property
    def endpoint(self) -> str:
        """The endpoint as messages name it: the redacted base URL, or api.openai.com."""
        return redact_url(self.base_url) or "https://api.openai.com/v1"

    def new_client(self) -> openai.AsyncOpenAI:
        """A client for one call (its connection pool belongs to the call's event loop), with the
        client's retries for the retryable errors only (see the module docstring)."""
        return openai.AsyncOpenAI(
            api_key=self._api_key, base_url=self.base_url, max_retries=self.max_retries, timeout=self.timeout_s,
            http_client=openai.DefaultAsyncHttpxClient(
                verify=self._shared_ssl_context(),
                event_hooks={"response": [_no_client_retry_for_permanent_errors]}))

    def _server_says(self, message: str, limit: int = 200) -> str:
        """A server's error message fit for ours: one line, no key (ours or one it echoes), short."""
        text = _KEY_LIKE.sub("<key>", redact_text(self._redact(" ".join(message.split()))))
        return text if len(text) <= limit else text[: limit - 3] + "..."

    def _key_words(self) -> str:
        if self._key_source == "given":
            return f"the API key given to the client (scoring.api_key_secret_block, else ${self.api_key_env})"
        return f"the API key in ${self.api_key_env}"

    def permanent_error(self, cls: type[PermanentAPIError], status: int | None, error: Any, *,
                        index: int | None = None, total: int | None = None,
                        request: ChatRequest | None = None, what: str = "") -> PermanentAPIError:
        """The one-line error for a permanent API failure: what failed, then what to do. ``what``
        names the call when it is not a chat completion (``"Batch API upload"``). The arguments
        are kept on the error (``details``), so a caller can number the request anew."""
        exc = self._permanent_error(cls, status, error, index, total, request, what)
        exc.details = {"cls": cls, "status": status, "error": error, "request": request, "what": what}
        return exc

    def _permanent_error(self, cls: type[PermanentAPIError], status: int | None, error: Any, index: int | None,
                         total: int | None, request: ChatRequest | None, what: str) -> PermanentAPIError:
        code, kind, param, message = _error_fields(error)
        said = self._server_says(message)
        detail = ", ".join(part for part in (str(status) if status else "", code or kind) if part)
        inside = f"{detail}: {said}" if detail and said else (detail or said)
        because = f"({inside})" if inside else ""
        at = f"{what + ' at ' if what else ''}{self.endpoint}"

        def text(*parts: str) -> str:
            return " ".join(part for part in parts if part)

        if cls is APIKeyRejected:
            if self._key_source == "unset":
                return cls(text(f"{at} requires an API key", because, f"and ${self.api_key_env} is not set"),
                           hint=f"set {self.api_key_env} to your key, then rerun (replies so far are cached)")
            fix = ("put a valid key in the Prefect Secret block scoring.api_key_secret_block names"
                   if self._key_source == "given" else f"set {self.api_key_env} to a valid key for this endpoint")
            return cls(text(f"{at} rejected {self._key_words()}", because),
                       hint=f"{fix}, then rerun (replies so far are cached)")
        if cls is APIPermissionDenied:
            return cls(text(f"{at} refused model {self.model!r} to {self._key_words()}", because),
                       hint="use a key whose project may use this model, or another model (--llm)")
        if cls is APIModelNotFound:
            if code == "model_not_found" or _MODEL_MISSING.search(message):
                return cls(text(f"{at} does not serve model {self.model!r}", because),
                           hint="name a model this endpoint serves (--llm), or check --base-url")
            return cls(text(f"{at} answered 404 Not Found for model {self.model!r}", because),
                       hint="check --base-url (an OpenAI-compatible endpoint usually ends in /v1) and the model "
                            "name (--llm)")
        if cls is APIQuotaExhausted:
            return cls(text(f"{at}: the account of {self._key_words()} has no quota left", because),
                       hint="add credit or use another key, then rerun (replies so far are cached); this is no "
                            "rate limit")
        if cls is APIParameterRejected:
            value = self.wire_params(request.params).get(param) if request is not None and param else None
            shown = f" = {value!r}" if value is not None else ""
            hint = ("change the setting behind it (e.g. --set scoring.top_logprobs=N, or scoring.mode=generate "
                    "for an endpoint without logprobs)")
            if param in MAX_TOKENS_FIELDS:  # reasoning models want max_completion_tokens; older servers max_tokens
                other = next(name for name in MAX_TOKENS_FIELDS if name != param)
                hint = f"send the reply-length limit as {other}: --set scoring.max_tokens_field={other}"
            return cls(text(f"{at}: model {self.model!r} rejects the request parameter {param or '(unnamed)'}{shown}",
                            because), hint=hint)
        if cls is ContextLengthExceeded:
            where = f"request {index + 1}{f' of {total}' if total else ''}" if index is not None else "a request"
            prompt = ""
            if request is not None:
                user = " ".join(str(m.get("content", "")) for m in request.messages if m.get("role") == "user")
                flat = " ".join(user.split())  # the start and the end: a template's words, then the input's
                shown = repr(flat) if len(flat) <= 100 else f"{flat[:40]!r} ... {flat[-50:]!r}"
                prompt = f" (its prompt {shown}, {len(user)} characters)"
            return cls(text(f"{at}: {where}{prompt} is longer than model {self.model!r} accepts", because),
                       hint="shorten or drop that input (input.max_chars caps a sentence), or use a model with a "
                            "longer context", index=index)
        return cls(text(f"{at}: the request failed for good", because))

    def _shared_ssl_context(self) -> ssl.SSLContext:
        """One SSL context for every batch call. Each call needs a new client (its connection pool
        belongs to that call's event loop), and a new client would otherwise load the CA bundle
        again: about 40 ms, paid per scoring shard. httpx2's own default (certifi, SSL_CERT_FILE)."""
        if self._ssl_context is None:
            self._ssl_context = httpx2.create_ssl_context()
        return self._ssl_context

    # -- one request -------------------------------------------------------------------
    def _estimates(self, request: ChatRequest) -> tuple[int, float]:
        chars = sum(len(str(message.get("content", ""))) for message in request.messages)
        prompt_tokens = estimate_prompt_tokens(chars)
        completion_tokens = int(request.params.get("max_tokens") or DEFAULT_MAX_TOKENS_ESTIMATE)
        return prompt_tokens + completion_tokens, self.ledger.pricing.cost(prompt_tokens, completion_tokens)

    async def _create(self, client: openai.AsyncOpenAI, request: ChatRequest) -> _Reply:
        """One completion with the invalid-reply retries; its token counts add up every attempt that
        reported usage (a failing InvalidReply carries the same totals).

        The request goes through the client's documented low-level ``post`` (its retries, backoff,
        Retry-After, timeouts and error types are all the same as ``chat.completions.create``) and
        comes back as the plain JSON object (``cast_to=object``). Why not the typed method: it
        returns a bare ``str`` for a 200 that is not JSON (a proxy's HTML page), which would escape
        the per-item error handling; and transforming the request through its TypedDicts and
        building the pydantic response (with per-token logprobs) costs about 20% more client CPU per
        request (median of 12 side-by-side points, ``benchmarks/bench_api_scoring.py --compare-typed``). We read five fields and check
        them ourselves.
        """
        spent = [0, 0]
        body = self.request_body(request)
        retrying = AsyncRetrying(
            stop=stop_after_attempt(1 + self.invalid_reply_retries),
            wait=wait_exponential(multiplier=0.25, max=4.0),
            retry=retry_if_exception_type(InvalidReply),
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                try:
                    reply = _parse_completion(await client.post("/chat/completions", body=body, cast_to=object))
                except (json.JSONDecodeError, UnicodeDecodeError) as err:
                    raise InvalidReply(f"malformed response body ({type(err).__name__}: {err})", *spent) from None
                except InvalidReply as err:
                    spent = [spent[0] + err.prompt_tokens, spent[1] + err.completion_tokens]
                    raise InvalidReply(str(err), *spent) from None
                return replace(reply, prompt_tokens=spent[0] + reply.prompt_tokens,
                                completion_tokens=spent[1] + reply.completion_tokens)
        raise AssertionError("unreachable: tenacity reraises the last error")

    async def _request(
        self, client: openai.AsyncOpenAI, key: str, request: ChatRequest, validate: ReplyValidator | None,
        index: int | None = None, total: int | None = None,
    ) -> ChatResult:
        """One item: its result (stored in the cache), or :class:`PermanentAPIError` raised."""
        token_estimate, cost_estimate = self._estimates(request)
        if self._requests_bucket is not None:
            await self._requests_bucket.acquire(1)
        if self._tokens_bucket is not None:
            await self._tokens_bucket.acquire(token_estimate)
        stored_request = {"messages": [dict(m) for m in request.messages], "params": dict(request.params)}
        prompt_tokens = completion_tokens = 0
        try:
            reply = await self._create(client, request)
            prompt_tokens, completion_tokens = reply.prompt_tokens, reply.completion_tokens
        except openai.APIStatusError as err:
            permanent = permanent_error_class(err.status_code, err.body, self.wire_params(request.params))
            if permanent is None:
                return self._store_failure(key, stored_request, err)
            # from None: the client's exception holds the request and its headers (the key)
            raise self.permanent_error(permanent, err.status_code, err.body, index=index, total=total,
                                       request=request) from None
        except (openai.APIError, InvalidReply) as err:
            if isinstance(err, InvalidReply):
                prompt_tokens, completion_tokens = err.prompt_tokens, err.completion_tokens
            error = self._redact(f"{type(err).__name__}: {err}")
            self.cache.put(
                CacheEntry(key, self.model, stored_request, FAILED, error=error,
                           prompt_tokens=prompt_tokens, completion_tokens=completion_tokens)
            )
            return ChatResult(FAILED, error=error, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens)
        finally:
            self.ledger.settle(cost_estimate, prompt_tokens, completion_tokens)
            if self._tokens_bucket is not None and (prompt_tokens or completion_tokens):
                self._tokens_bucket.adjust(prompt_tokens + completion_tokens - token_estimate)

        return self.store_reply(key, stored_request, reply, validate)

    def _store_failure(self, key: str, stored_request: Mapping[str, Any], err: Exception) -> ChatResult:
        error = self._redact(f"{type(err).__name__}: {err}")
        self.cache.put(CacheEntry(key, self.model, stored_request, FAILED, error=error))
        return ChatResult(FAILED, error=error)

    def store_reply(self, key: str, stored_request: Mapping[str, Any], reply: _Reply,
                    validate: ReplyValidator | None, batch_api: bool = False) -> ChatResult:
        """Validate a reply, store it in the cache (ok, or failed with the reply kept) and return its
        result. Direct requests and Batch API output lines (``batch_api.py``) both come through here,
        so a reply means the same whichever way it arrived; ``batch_api`` marks the row, for cost
        reports (its tokens cost the Batch API price)."""
        text, logprobs = reply.text, reply.logprobs
        problem = validate(text, logprobs) if validate is not None else None
        status = OK if problem is None else FAILED
        response = {"text": text, "logprobs": logprobs, "finish_reason": reply.finish_reason}
        if batch_api:
            response["batch_api"] = True
        self.cache.put(
            CacheEntry(key, self.model, stored_request, status, response=response, raw=text, error=problem,
                       prompt_tokens=reply.prompt_tokens, completion_tokens=reply.completion_tokens)
        )
        return ChatResult(status, text=text, error=problem, logprobs=logprobs,
                          prompt_tokens=reply.prompt_tokens, completion_tokens=reply.completion_tokens)

    # -- batches -----------------------------------------------------------------------
    async def acomplete(
        self,
        requests: Sequence[ChatRequest],
        *,
        validate: ReplyValidator | None = None,
        progress: ProgressCallback | None = None,
        direct: bool = False,
    ) -> BatchReport:
        """Answer every request, from the cache where possible; results come in input order.

        With ``batch_api`` set the uncached requests go through the OpenAI Batch API instead
        (``direct=True`` skips it: the Batch API module retries its failed lines that way)."""
        if self.batch_api is not None and not direct:
            from multicsr_core.llm.batch_api import acomplete_with_batch_api

            return await acomplete_with_batch_api(self, requests, validate=validate, progress=progress)
        keys = [self.key_for(request) for request in requests]
        stored = self.cache.get_many(keys)
        results: list[ChatResult | None] = [None] * len(requests)
        pending: dict[str, list[int]] = {}  # each distinct request is sent once
        for index, key in enumerate(keys):
            row = stored.get(key)
            if row is not None and row.ok:
                results[index] = ChatResult.from_row(row, cached=True)
            else:
                pending.setdefault(key, []).append(index)

        before = self.ledger.totals()
        budget_hit = False
        done = len(requests) - sum(len(indices) for indices in pending.values())
        if progress is not None:
            progress(done, len(requests))
        if pending:
            work = iter(pending.items())
            client = self.new_client()
            stopped = False  # a permanent error: no worker starts another request

            async def worker() -> None:
                nonlocal budget_hit, done, stopped
                for key, indices in work:  # the shared iterator hands each item to one worker
                    if stopped:
                        return
                    request = requests[indices[0]]
                    if budget_hit or not self.ledger.try_reserve(self._estimates(request)[1]):
                        budget_hit = True
                        outcome = ChatResult(NOT_REQUESTED, error="not requested: the budget cap was reached")
                    else:
                        try:
                            outcome = await self._request(client, key, request, validate, indices[0], len(requests))
                        except PermanentAPIError:
                            stopped = True  # raising cancels the other workers (their requests in flight)
                            raise
                    for index in indices:
                        results[index] = outcome
                    done += len(indices)
                    if progress is not None:
                        progress(done, len(requests))

            try:
                async with asyncio.TaskGroup() as group:
                    for _ in range(min(self.concurrency, len(pending))):
                        group.create_task(worker())
            except BaseExceptionGroup as group_error:
                permanent = _first_permanent(group_error)
                if permanent is None:
                    raise
                log.debug("%s: stopped at a permanent API error; replies received so far are cached", self.model)
                raise permanent from None
            finally:
                await client.close()

        after = self.ledger.totals()
        spent = UsageTotals(
            requests=after.requests - before.requests,
            prompt_tokens=after.prompt_tokens - before.prompt_tokens,
            completion_tokens=after.completion_tokens - before.completion_tokens,
            cost_usd=after.cost_usd - before.cost_usd,
        )
        report = BatchReport([r for r in results if r is not None], spent, budget_hit, self.ledger.budget_usd)
        assert len(report.results) == len(requests)
        log.info("%s: %s", self.model, report.summary())
        return report

    def complete(
        self,
        requests: Sequence[ChatRequest],
        *,
        validate: ReplyValidator | None = None,
        progress: ProgressCallback | None = None,
    ) -> BatchReport:
        """Synchronous facade over :meth:`acomplete` (runs its own event loop)."""
        return run_sync(self.acomplete(requests, validate=validate, progress=progress))
