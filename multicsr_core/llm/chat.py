"""What the OpenAI-compatible client sends and returns: requests, results, reports, completion bodies.

These types are shared by the client (``openai_backend.py``) and both of its transports (``direct.py``,
``batch_api.py``); they know nothing about HTTP, the cache or the budget.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Mapping, Sequence, TypeVar

from multicsr_core.llm.accounting import BudgetExceeded, UsageTotals
from multicsr_core.llm.cache import FAILED, OK, CachedResponse

NOT_REQUESTED = "not_requested"  # the budget cap stopped the run before this item was sent
# The request-body names of the reply-length limit: the classic one, and the one reasoning models take.
MAX_TOKENS_FIELDS = ("max_tokens", "max_completion_tokens")

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
    ``max_tokens`` leaves under the client's ``max_tokens_field`` (:func:`wire_params`).
    """

    messages: Sequence[Mapping[str, str]]
    params: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_prompt(cls, prompt: str, system: str | None = None, **params: Any) -> "ChatRequest":
        return cls(messages=user_messages(prompt, system), params=params)

    def stored(self) -> dict:
        """The request as a cache row keeps it (``{"messages", "params"}``, params as the request names them)."""
        return {"messages": [dict(m) for m in self.messages], "params": dict(self.params)}


def wire_params(params: Mapping[str, Any], max_tokens_field: str) -> dict:
    """``params`` as the request body carries them: ``max_tokens`` under ``max_tokens_field``."""
    wire = dict(params)
    if max_tokens_field != "max_tokens" and "max_tokens" in wire:
        wire[max_tokens_field] = wire.pop("max_tokens")
    return wire


def logical_params(wire: Mapping[str, Any]) -> dict:
    """A sent body's parameters as a :class:`ChatRequest` names them (``max_completion_tokens`` back
    to ``max_tokens``): the inverse of :func:`wire_params`."""
    params = dict(wire)
    if "max_completion_tokens" in params and "max_tokens" not in params:
        params["max_tokens"] = params.pop("max_completion_tokens")
    return params


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
    """A 200 response that is not a usable completion (the direct transport retries these)."""

    def __init__(self, message: str, prompt_tokens: int = 0, completion_tokens: int = 0):
        super().__init__(message)
        self.prompt_tokens = prompt_tokens
        self.completion_tokens = completion_tokens


@dataclass(frozen=True)
class Reply:
    """The fields of a chat-completion body that we use."""

    text: str
    logprobs: list[dict] | None
    finish_reason: str | None
    prompt_tokens: int
    completion_tokens: int


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


def parse_completion(data: Any) -> Reply:
    """The first choice of a chat-completion body, or InvalidReply. Direct replies and Batch API
    output lines both come through here, so a reply means the same whichever way it arrived.

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
    return Reply(message["content"], logprobs, choice.get("finish_reason"), prompt_tokens, completion_tokens)


def run_sync(coroutine: Awaitable[T]) -> T:
    """Run a coroutine to completion from synchronous code, even if a loop is running here."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)  # type: ignore[arg-type]
    # Called from inside a running loop (a notebook, an async task): use a fresh one in a thread.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="llm-sync") as pool:
        return pool.submit(asyncio.run, coroutine).result()  # type: ignore[arg-type]
