"""Errors no rerun can fix, and how an API error is told apart from one a rerun may fix.

Errors split by what a rerun can do (:func:`permanent_error_class`):

- Retryable: 408/409/429 rate limits/5xx/timeouts/connection errors are retried by the client;
  what is still unanswered is stored ``failed`` and asked again by the next run (exit 1, "run
  the same command again"). So is a 400 we cannot attribute (a generic "bad request").
- Permanent: a rejected key (401), no permission (403), an unknown model or route (404, or a
  ``model_not_found`` code), a prompt longer than the model's context (400
  ``context_length_exceeded``), a request parameter the endpoint rejects (400 naming it) and an
  account without quota (429 ``insufficient_quota``). No rerun can fix these, so the first one
  stops the whole call (both transports), as a :class:`PermanentAPIError` (a ``UserError``: one
  line, exit 2) worded by :meth:`~multicsr_core.llm.connection.Connection.permanent_error`.
"""

from __future__ import annotations

import json
import re
from typing import Any, Mapping

import httpx2

from multicsr_core.errors import UserError


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
        self.details: dict | None = None  # what Connection.permanent_error built it from


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
MODEL_MISSING = re.compile(r"\bmodel\b[^.]{0,80}?\b(?:does not exist|not found|is not served|unknown)|"
                            r"\b(?:unknown|no such|invalid) model\b", re.IGNORECASE)
# API keys as servers echo them ("Incorrect API key provided: sk-abc***wxyz"): never repeated
KEY_LIKE = re.compile(r"\b(?:sk|rk|pk)-[A-Za-z0-9_*.\-]{2,}[A-Za-z0-9_*]")
_NO_CLIENT_RETRY = frozenset({400, 401, 403, 404})


def error_fields(error: Any) -> tuple[str, str, str, str]:
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
    code, kind, param, message = error_fields(error)
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
        if code == "model_not_found" or MODEL_MISSING.search(message):
            return APIModelNotFound
        if code in ("unsupported_parameter", "unsupported_value") or (param and param in params):
            return APIParameterRejected
    return None


async def no_client_retry_for_permanent_errors(response: httpx2.Response) -> None:
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
        code, kind, _, _ = error_fields(body)
        if "insufficient_quota" in (code, kind):
            response.headers["x-should-retry"] = "false"


def first_permanent(error: BaseException) -> PermanentAPIError | None:
    """The first :class:`PermanentAPIError` in an exception group (a TaskGroup's), else None."""
    if isinstance(error, PermanentAPIError):
        return error
    for inner in getattr(error, "exceptions", ()):
        found = first_permanent(inner)
        if found is not None:
            return found
    return None
