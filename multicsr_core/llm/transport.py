"""What the client hands a transport: the requests of one call the cache did not answer.

The client (``openai_backend.py``) owns the cache split, the budget, the spend and the report;
a transport (``direct.py``: concurrent requests; ``batch_api.py``: the OpenAI Batch API) only
gets each :class:`UncachedCall` answered. It asks the call before it spends (:meth:`UncachedCall.reserve`),
stores every reply through :class:`Replies` the moment it arrives, and records each request's
outcome on the call (:meth:`UncachedCall.record`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Protocol, Sequence

from multicsr_core.llm.accounting import UsageLedger, estimate_prompt_tokens
from multicsr_core.llm.cache import FAILED, OK, CacheEntry, ResponseCache
from multicsr_core.llm.chat import (NOT_REQUESTED, ChatRequest, ChatResult, ProgressCallback, Reply,
                                    ReplyValidator)

DEFAULT_MAX_TOKENS_ESTIMATE = 256  # for budget and TPM estimates when a request sets no max_tokens
BUDGET_REACHED = "not requested: the budget cap was reached"


class Replies:
    """Where a transport's outcomes go: the response cache (each the moment it arrives) and the
    spend ledger (with the estimates the budget and the tokens-per-minute limit reserve)."""

    def __init__(self, model: str, cache: ResponseCache, ledger: UsageLedger):
        self.model = model
        self.cache = cache
        self.ledger = ledger

    def estimates(self, request: ChatRequest) -> tuple[int, float]:
        """(tokens, USD) a request may use at most: pessimistic, for the budget and TPM reservations."""
        chars = sum(len(str(message.get("content", ""))) for message in request.messages)
        prompt_tokens = estimate_prompt_tokens(chars)
        completion_tokens = int(request.params.get("max_tokens") or DEFAULT_MAX_TOKENS_ESTIMATE)
        return prompt_tokens + completion_tokens, self.ledger.pricing.cost(prompt_tokens, completion_tokens)

    def store_failure(self, key: str, stored_request: Mapping, error: str, prompt_tokens: int = 0,
                      completion_tokens: int = 0) -> ChatResult:
        """Store a request no reply answered (already redacted ``error``) as ``failed``: the next run asks again."""
        self.cache.put(CacheEntry(key, self.model, stored_request, FAILED, error=error,
                                  prompt_tokens=prompt_tokens, completion_tokens=completion_tokens))
        return ChatResult(FAILED, error=error, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens)

    def store_reply(self, key: str, stored_request: Mapping, reply: Reply, validate: ReplyValidator | None,
                    batch_api: bool = False) -> ChatResult:
        """Validate a reply, store it in the cache (ok, or failed with the reply kept) and return its
        result. Direct requests and Batch API output lines both come through here, so a reply means
        the same whichever way it arrived; ``batch_api`` marks the row, for cost reports (its tokens
        cost the Batch API price)."""
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


@dataclass(eq=False)
class UncachedCall:
    """The requests of one client call the cache did not answer, and their outcomes so far.

    ``requests``: each distinct request once, by cache key, in the order of the call;
    ``positions``: where each key stands in the caller's requests (errors name the first; a
    duplicate is sent once and answers all its positions).
    """

    requests: dict[str, ChatRequest]
    positions: dict[str, list[int]]
    total: int  # requests in the caller's call (errors say "request i of total")
    validate: ReplyValidator | None
    replies: Replies
    progress: ProgressCallback | None = None
    done: int = 0  # positions answered, from the cache or by an outcome
    outcomes: dict[str, ChatResult] = field(default_factory=dict)
    budget_hit: bool = False

    def index_of(self, key: str) -> int:
        return self.positions[key][0]

    def reserve(self, request: ChatRequest, price_factor: float = 1.0) -> float | None:
        """Reserve the budget for one request about to be sent; its estimate, or None once the cap
        is reached (from then on no request of this call is sent)."""
        estimate = price_factor * self.replies.estimates(request)[1]
        if self.budget_hit or not self.replies.ledger.try_reserve(estimate):
            self.budget_hit = True
            return None
        return estimate

    def record(self, key: str, result: ChatResult) -> None:
        """The final outcome of a request (the latest one counts)."""
        if key not in self.outcomes:
            self.done += len(self.positions[key])
        self.outcomes[key] = result

    def not_requested(self, key: str, error: str = BUDGET_REACHED) -> None:
        """A request that was not sent (the budget cap, a wait that ran out); an outcome it already has stays."""
        if key not in self.outcomes:
            self.record(key, ChatResult(NOT_REQUESTED, error=error))

    def report_progress(self) -> None:
        if self.progress is not None:
            self.progress(min(self.total, self.done), self.total)

    def subset(self, keys: Sequence[str]) -> "UncachedCall":
        """Some of this call's requests as a call of their own (numbered as the caller's, with a
        budget flag of its own and no progress reports)."""
        return UncachedCall({key: self.requests[key] for key in keys}, self.positions, self.total, self.validate,
                            self.replies)


class Transport(Protocol):
    """How the uncached requests of a call get answered."""

    label: str  # how the client's report line names the transport ("" or " (Batch API)")

    async def send(self, call: UncachedCall) -> None:
        """Get every request of ``call`` an outcome (:meth:`UncachedCall.record`) or raise a
        ``PermanentAPIError``; store every reply in the cache as it arrives."""
