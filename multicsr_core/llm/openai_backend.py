"""The OpenAI-compatible chat client (ChatGPT, vLLM, Ollama, any ``base_url``) through the cache.

One client, two transports. :class:`OpenAIChatBackend` owns what every call needs whichever way
its requests go: the split of a call into requests the response cache answers and requests to
send (identical requests within a call are sent once), the budget (each request reserves its
estimate before it is sent, ``accounting.py``), the spend and the :class:`BatchReport`. The
uncached requests go to one transport (``transport.py``):

- direct (``direct.py``): concurrent chat-completion requests with the ``openai`` client's
  retries, tenacity for 200 replies that are no completion, and rate limits;
- the OpenAI Batch API (``batch_api.py``) when the settings name ``batch_api``: half the price,
  answers within 24 hours; the lines it could not answer go out directly.

Both write every outcome to the :class:`~multicsr_core.llm.cache.ResponseCache` the moment it
arrives, with the same request body, cache key and row. Items already answered are never
requested again.

- A reply that arrives fine but that the caller cannot use (``validate`` returns an error, e.g.
  an empty stage-1 generation) is not retried within the run: at temperature 0 the same
  prompt gives the same reply. It is stored as ``failed`` with the reply, and retried by the
  next run. Stage-2 scorers pass no validator: a reply that is not a score is the model's
  answer, stored ``ok`` and judged ``unparsable_score`` by the scorer (scoring/base.py).
- An error no rerun can fix (``api_errors.py``: the key, the model, a parameter, a prompt over the
  context, no quota) stops the whole call as a one-line :class:`PermanentAPIError` (exit 2) that
  names the key's environment variable (never the key), the model, or the request (its position
  in the call). Replies received before are cached, so the run after the fix resumes.

The reply-length limit: a :class:`ChatRequest` names it ``max_tokens``; the client sends it under
``max_tokens_field``. Reasoning models (OpenAI's o-series, gpt-5) refuse ``max_tokens`` and want
``max_completion_tokens``; many OpenAI-compatible servers (llama.cpp, Ollama, older vLLM) know only
``max_tokens`` and ignore an unknown field, i.e. would lift the cap without a word, so the default
stays ``max_tokens`` and a refusal of either name says which setting to change. The name is not
part of the response-cache key (its value is, as before): it is how the same limit is spelled on
the wire, and a model that refuses one spelling answers nothing under it.

The API key comes from ``api_key`` or the environment variable ``api_key_env``; it is held by the
client's :class:`~multicsr_core.llm.connection.Connection` only (``connection.py``).
"""

from __future__ import annotations

import logging
from typing import Any, Mapping, Sequence

from multicsr_core.llm.accounting import UsageLedger, UsageTotals
from multicsr_core.llm.api_errors import (APIKeyRejected, APIModelNotFound, APIParameterRejected,
                                          APIPermissionDenied, APIQuotaExhausted, ContextLengthExceeded,
                                          PermanentAPIError, permanent_error_class)
from multicsr_core.llm.batch_api import BatchAPITransport
from multicsr_core.llm.cache import CachedResponse, ResponseCache, cache_key
from multicsr_core.llm.chat import (MAX_TOKENS_FIELDS, NOT_REQUESTED, BatchReport, ChatRequest,
                                    ChatResult, ProgressCallback, ReplyValidator, logical_params, run_sync,
                                    user_messages)
from multicsr_core.llm.connection import Connection
from multicsr_core.llm.direct import DirectTransport
from multicsr_core.llm.settings import APISettings, BatchAPISettings
from multicsr_core.llm.transport import Replies, Transport, UncachedCall
from multicsr_core.redaction import redact_url  # redact_url re-exported: the one URL redaction helper

log = logging.getLogger(__name__)


class OpenAIChatBackend:
    """Cached, budgeted chat completions against one model, sent directly or through the Batch API.

    Args:
        model: the model name the endpoint expects (``gpt-3.5-turbo``, a vLLM served name...).
        cache: the response cache every outcome goes to.
        settings: the endpoint, limits, prices, budget and transport (:class:`APISettings`).
        api_key: the key itself; if None it is read from ``settings.api_key_env``. Held by the
            client's connection only, never by the settings.
    """

    def __init__(self, model: str, *, cache: ResponseCache, settings: APISettings = APISettings(),
                 api_key: str | None = None):
        self.model = model
        self.cache = cache
        self.settings = settings
        self.connection = Connection(model, settings, api_key)
        self.ledger = UsageLedger(settings.pricing, settings.budget_usd)
        self.replies = Replies(model, cache, self.ledger)
        direct = DirectTransport(self.connection, self.replies)
        self.transport: Transport = (direct if settings.batch_api is None else
                                     BatchAPITransport(self.connection, self.replies, settings.batch_api, direct))

    def __repr__(self) -> str:  # never show the key
        return f"OpenAIChatBackend(model={self.model!r}, base_url={redact_url(self.base_url)!r})"

    @property
    def base_url(self) -> str | None:
        return self.settings.base_url

    @property
    def batch_api(self) -> BatchAPISettings | None:
        """Set: uncached requests go through the OpenAI Batch API."""
        return self.settings.batch_api

    @property
    def endpoint(self) -> str:
        """The endpoint as messages name it: the redacted base URL, or api.openai.com."""
        return self.connection.endpoint

    def fingerprint(self) -> dict:
        return {"backend": "openai-compatible", "model": self.model, "base_url": redact_url(self.base_url)}

    @property
    def usage(self) -> UsageTotals:
        """Everything this client has spent so far (all calls)."""
        return self.ledger.totals()

    def key_for(self, request: ChatRequest) -> str:
        # the request's own params: the limit's value is in the key, its wire name is not
        return cache_key(self.model, request.messages, request.params)

    def wire_params(self, params: Mapping[str, Any]) -> dict:
        """``params`` as the request body carries them: ``max_tokens`` under ``max_tokens_field``."""
        return self.connection.wire_params(params)

    def request_body(self, request: ChatRequest) -> dict:
        """The chat-completions body of ``request``, the same for a direct request and a Batch API line."""
        return self.connection.request_body(request)

    def error_detail(self, status: int | None, error: Any, limit: int = 200) -> str:
        """An API error as messages quote it: ``400, context_length_exceeded: <the server's words, no keys>``."""
        return self.connection.error_detail(status, error, limit)

    # -- calls -------------------------------------------------------------------------
    async def acomplete(self, requests: Sequence[ChatRequest], *, validate: ReplyValidator | None = None,
                        progress: ProgressCallback | None = None) -> BatchReport:
        """Answer every request, from the cache where possible; results come in input order."""
        keys = [self.key_for(request) for request in requests]
        stored = self.cache.get_many(keys)
        call = self._uncached(requests, keys, stored, validate, progress)
        before = self.ledger.totals()
        call.report_progress()
        if call.requests:
            await self.transport.send(call)
        results = []
        for key in keys:
            if key in call.outcomes:
                results.append(call.outcomes[key])
            else:
                row = stored.get(key)
                assert row is not None and row.ok, "every request is answered, cached or not requested"
                results.append(ChatResult.from_row(row, cached=True))
        after = self.ledger.totals()
        spent = UsageTotals(requests=after.requests - before.requests,
                            prompt_tokens=after.prompt_tokens - before.prompt_tokens,
                            completion_tokens=after.completion_tokens - before.completion_tokens,
                            cost_usd=after.cost_usd - before.cost_usd)
        report = BatchReport(results, spent, call.budget_hit, self.ledger.budget_usd)
        log.info("%s%s: %s", self.model, self.transport.label, report.summary())
        return report

    def _uncached(self, requests: Sequence[ChatRequest], keys: Sequence[str], stored: Mapping[str, CachedResponse],
                  validate: ReplyValidator | None, progress: ProgressCallback | None) -> UncachedCall:
        """The requests the cache does not answer (each distinct one once), as one call for the transport."""
        by_key: dict[str, ChatRequest] = {}
        positions: dict[str, list[int]] = {}
        for index, (key, request) in enumerate(zip(keys, requests)):
            row = stored.get(key)
            if row is None or not row.ok:
                by_key.setdefault(key, request)
                positions.setdefault(key, []).append(index)
        cached = len(requests) - sum(len(indices) for indices in positions.values())
        return UncachedCall(by_key, positions, len(requests), validate, self.replies, progress, done=cached)

    def complete(self, requests: Sequence[ChatRequest], *, validate: ReplyValidator | None = None,
                 progress: ProgressCallback | None = None) -> BatchReport:
        """Synchronous facade over :meth:`acomplete` (runs its own event loop)."""
        return run_sync(self.acomplete(requests, validate=validate, progress=progress))


# The client, and the names its callers use with it (defined in chat.py, api_errors.py, settings.py).
__all__ = ["APIKeyRejected", "APIModelNotFound", "APIParameterRejected", "APIPermissionDenied", "APIQuotaExhausted",
           "APISettings", "BatchAPISettings", "BatchReport", "ChatRequest", "ChatResult", "ContextLengthExceeded",
           "MAX_TOKENS_FIELDS", "NOT_REQUESTED", "OpenAIChatBackend", "PermanentAPIError", "logical_params",
           "permanent_error_class", "redact_url", "run_sync", "user_messages"]
