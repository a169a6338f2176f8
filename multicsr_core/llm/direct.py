"""The direct transport: the uncached requests of a call as concurrent chat-completion requests.

Which library does what:

- Transport retries are the ``openai`` client's own (``max_retries``): it retries 408, 409, 429,
  5xx, connection errors and timeouts with exponential backoff (0.5 s doubling, capped at 8 s,
  with jitter) and honours ``Retry-After`` / ``retry-after-ms`` up to two minutes. Writing that
  again would only add bugs.
- tenacity is added for the one case the client does not retry: a 200 response that is not a
  usable completion (malformed JSON, no choices, no message). Those come from flaky proxies
  and gateways, and a second try usually succeeds (``invalid_reply_retries``).
- Concurrency is a fixed pool of ``concurrency`` worker coroutines pulling items from one
  iterator (the bounded equivalent of one task per item behind a semaphore, without
  creating 500k task objects for a full corpus). Requests- and tokens-per-minute limits are
  token buckets (``ratelimit.py``), shared by every call of one client.
- A permanent error (``api_errors.py``) stops the call: no item is requested after it, requests
  in flight are cancelled, and the error is raised. Replies received before are cached.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import replace

import openai
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from multicsr_core.llm.api_errors import PermanentAPIError, first_permanent, permanent_error_class
from multicsr_core.llm.chat import ChatRequest, ChatResult, InvalidReply, Reply, parse_completion
from multicsr_core.llm.connection import Connection
from multicsr_core.llm.ratelimit import TokenBucket
from multicsr_core.llm.transport import Replies, UncachedCall

log = logging.getLogger(__name__)


class DirectTransport:
    """Concurrent, rate-limited chat-completion requests; every outcome goes to the cache at once."""

    label = ""

    def __init__(self, connection: Connection, replies: Replies):
        settings = connection.settings
        self.connection = connection
        self.replies = replies
        self.concurrency = settings.concurrency
        self.invalid_reply_retries = settings.invalid_reply_retries
        rpm, tpm = settings.requests_per_minute, settings.tokens_per_minute
        self._requests_bucket = TokenBucket(rpm) if rpm else None
        self._tokens_bucket = TokenBucket(tpm) if tpm else None

    async def send(self, call: UncachedCall) -> None:
        work = iter(call.requests.items())  # the shared iterator hands each item to one worker
        client = self.connection.new_client()
        stopped = False  # a permanent error: no worker starts another request

        async def worker() -> None:
            nonlocal stopped
            for key, request in work:
                if stopped:
                    return
                if call.budget_hit or call.reserve(request) is None:
                    call.not_requested(key)
                else:
                    try:
                        call.record(key, await self._request(client, call, key, request))
                    except PermanentAPIError:
                        stopped = True  # raising cancels the other workers (their requests in flight)
                        raise
                call.report_progress()

        try:
            async with asyncio.TaskGroup() as group:
                for _ in range(min(self.concurrency, len(call.requests))):
                    group.create_task(worker())
        except BaseExceptionGroup as group_error:
            permanent = first_permanent(group_error)
            if permanent is None:
                raise
            log.debug("%s: stopped at a permanent API error; replies received so far are cached",
                      self.connection.model)
            raise permanent from None
        finally:
            await client.close()

    async def _create(self, client: openai.AsyncOpenAI, request: ChatRequest) -> Reply:
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
        body = self.connection.request_body(request)
        retrying = AsyncRetrying(
            stop=stop_after_attempt(1 + self.invalid_reply_retries),
            wait=wait_exponential(multiplier=0.25, max=4.0),
            retry=retry_if_exception_type(InvalidReply),
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                try:
                    reply = parse_completion(await client.post("/chat/completions", body=body, cast_to=object))
                except (json.JSONDecodeError, UnicodeDecodeError) as err:
                    raise InvalidReply(f"malformed response body ({type(err).__name__}: {err})", *spent) from None
                except InvalidReply as err:
                    spent = [spent[0] + err.prompt_tokens, spent[1] + err.completion_tokens]
                    raise InvalidReply(str(err), *spent) from None
                return replace(reply, prompt_tokens=spent[0] + reply.prompt_tokens,
                               completion_tokens=spent[1] + reply.completion_tokens)
        raise AssertionError("unreachable: tenacity reraises the last error")

    async def _request(self, client: openai.AsyncOpenAI, call: UncachedCall, key: str,
                       request: ChatRequest) -> ChatResult:
        """One item: its result (stored in the cache), or :class:`PermanentAPIError` raised."""
        token_estimate, cost_estimate = self.replies.estimates(request)
        if self._requests_bucket is not None:
            await self._requests_bucket.acquire(1)
        if self._tokens_bucket is not None:
            await self._tokens_bucket.acquire(token_estimate)
        stored_request = request.stored()
        prompt_tokens = completion_tokens = 0
        try:
            reply = await self._create(client, request)
            prompt_tokens, completion_tokens = reply.prompt_tokens, reply.completion_tokens
        except openai.APIStatusError as err:
            permanent = permanent_error_class(err.status_code, err.body, self.connection.wire_params(request.params))
            if permanent is None:
                return self.replies.store_failure(key, stored_request, self._redacted(err))
            # from None: the client's exception holds the request and its headers (the key)
            raise self.connection.permanent_error(permanent, err.status_code, err.body, index=call.index_of(key),
                                                  total=call.total, request=request) from None
        except (openai.APIError, InvalidReply) as err:
            if isinstance(err, InvalidReply):
                prompt_tokens, completion_tokens = err.prompt_tokens, err.completion_tokens
            return self.replies.store_failure(key, stored_request, self._redacted(err), prompt_tokens,
                                              completion_tokens)
        finally:
            self.replies.ledger.settle(cost_estimate, prompt_tokens, completion_tokens)
            if self._tokens_bucket is not None and (prompt_tokens or completion_tokens):
                self._tokens_bucket.adjust(prompt_tokens + completion_tokens - token_estimate)
        return self.replies.store_reply(key, stored_request, reply, call.validate)

    def _redacted(self, err: Exception) -> str:
        return self.connection.redact(f"{type(err).__name__}: {err}")
