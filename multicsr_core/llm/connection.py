"""How the client talks to one endpoint: the key, the HTTP client, the request body, the error wording.

The API key comes from the client's ``api_key`` or the environment variable ``api_key_env``. It is
held by :class:`APIKey` only: it is not part of cache keys, cache rows, the fingerprint, log lines
or error messages (errors are scrubbed of it before they are stored or raised, and ``repr`` never
shows it). Both transports (``direct.py``, ``batch_api.py``) reach the endpoint through one
:class:`Connection`, so a request body, a redacted error and a permanent error's wording are the
same whichever way a request goes.
"""

from __future__ import annotations

import os
import ssl
from typing import Any, Mapping

import httpx2
import openai

from multicsr_core.llm.api_errors import (KEY_LIKE, MODEL_MISSING, APIKeyRejected, APIModelNotFound,
                                          APIParameterRejected, APIPermissionDenied, APIQuotaExhausted,
                                          ContextLengthExceeded, PermanentAPIError, error_fields,
                                          no_client_retry_for_permanent_errors)
from multicsr_core.llm.chat import MAX_TOKENS_FIELDS, ChatRequest, wire_params
from multicsr_core.llm.settings import APISettings
from multicsr_core.redaction import redact_text, redact_url


class APIKey:
    """The API key and where it came from (``given``, ``env`` or ``unset``); its value is never shown."""

    def __init__(self, api_key: str | None, env: str, base_url: str | None):
        key = api_key if api_key is not None else os.environ.get(env)
        self.env = env  # the variable's NAME (error messages say it; never the value)
        self.source = "given" if api_key is not None else ("env" if key else "unset")
        if not key:
            if base_url is None:
                raise ValueError(f"no API key: set the environment variable {env} or pass api_key")
            key = "EMPTY"  # vLLM / Ollama convention: the server does not check it
        self.value = key

    def __repr__(self) -> str:
        return f"APIKey(env={self.env!r}, source={self.source!r})"

    def redact(self, text: str) -> str:
        return text.replace(self.value, "***") if self.value != "EMPTY" else text

    def words(self) -> str:
        """How messages name the key (never its value)."""
        if self.source == "given":
            return f"the API key given to the client (scoring.api_key_secret_block, else ${self.env})"
        return f"the API key in ${self.env}"


class Connection:
    """One model at one endpoint, with one key: what every request and every error message needs."""

    def __init__(self, model: str, settings: APISettings, api_key: str | None = None):
        self.model = model
        self.base_url = settings.base_url
        self.settings = settings
        self.key = APIKey(api_key, settings.api_key_env, settings.base_url)
        self._ssl_context: ssl.SSLContext | None = None

    def __repr__(self) -> str:  # never show the key
        return f"Connection(model={self.model!r}, base_url={redact_url(self.base_url)!r})"

    @property
    def endpoint(self) -> str:
        """The endpoint as messages name it: the redacted base URL, or api.openai.com."""
        return redact_url(self.base_url) or "https://api.openai.com/v1"

    def wire_params(self, params: Mapping[str, Any]) -> dict:
        """``params`` as the request body carries them: ``max_tokens`` under ``max_tokens_field``."""
        return wire_params(params, self.settings.max_tokens_field)

    def request_body(self, request: ChatRequest) -> dict:
        """The chat-completions body of ``request``, the same for a direct request and a Batch API line."""
        return {"model": self.model, "messages": [dict(message) for message in request.messages],
                **self.wire_params(request.params)}

    def redact(self, text: str) -> str:
        """``text`` without our key."""
        return self.key.redact(text)

    def new_client(self) -> openai.AsyncOpenAI:
        """A client for one call (its connection pool belongs to the call's event loop), with the
        client's retries for the retryable errors only (``api_errors.py``)."""
        return openai.AsyncOpenAI(
            api_key=self.key.value, base_url=self.base_url, max_retries=self.settings.max_retries,
            timeout=self.settings.timeout_s,
            http_client=openai.DefaultAsyncHttpxClient(
                verify=self._shared_ssl_context(),
                event_hooks={"response": [no_client_retry_for_permanent_errors]}))

    def _shared_ssl_context(self) -> ssl.SSLContext:
        """One SSL context for every call. Each call needs a new client (its connection pool
        belongs to that call's event loop), and a new client would otherwise load the CA bundle
        again: about 40 ms, paid per scoring shard. httpx2's own default (certifi, SSL_CERT_FILE)."""
        if self._ssl_context is None:
            self._ssl_context = httpx2.create_ssl_context()
        return self._ssl_context

    def server_says(self, message: str, limit: int = 200) -> str:
        """A server's error message fit for ours: one line, no key (ours or one it echoes), short."""
        text = KEY_LIKE.sub("<key>", redact_text(self.redact(" ".join(message.split()))))
        return text if len(text) <= limit else text[: limit - 3] + "..."

    def error_detail(self, status: int | None, error: Any, limit: int = 200) -> str:
        """``400, context_length_exceeded: <the server's words, without keys>``."""
        code, kind, _, message = error_fields(error)
        said = self.server_says(message, limit)
        detail = ", ".join(part for part in (str(status) if status else "", code or kind) if part)
        return f"{detail}: {said}" if detail and said else (detail or said)

    def permanent_error(self, cls: type[PermanentAPIError], status: int | None, error: Any, *,
                        index: int | None = None, total: int | None = None,
                        request: ChatRequest | None = None, what: str = "") -> PermanentAPIError:
        """The one-line error for a permanent API failure: what failed, then what to do. ``what``
        names the call when it is not a chat completion (``"Batch API upload"``). The arguments
        are kept on the error (``details``), so a caller can name the request anew."""
        inside = self.error_detail(status, error)
        at = f"{what + ' at ' if what else ''}{self.endpoint}"
        exc = self._worded(cls, f"({inside})" if inside else "", at, error, index, total, request)
        exc.details = {"cls": cls, "status": status, "error": error, "request": request, "what": what}
        return exc

    def _worded(self, cls: type[PermanentAPIError], because: str, at: str, error: Any, index: int | None,
                total: int | None, request: ChatRequest | None) -> PermanentAPIError:
        code, _, param, message = error_fields(error)

        def text(*parts: str) -> str:
            return " ".join(part for part in parts if part)

        env = self.key.env
        if cls is APIKeyRejected:
            if self.key.source == "unset":
                return cls(text(f"{at} requires an API key", because, f"and ${env} is not set"),
                           hint=f"set {env} to your key, then rerun (replies so far are cached)")
            fix = ("put a valid key in the Prefect Secret block scoring.api_key_secret_block names"
                   if self.key.source == "given" else f"set {env} to a valid key for this endpoint")
            return cls(text(f"{at} rejected {self.key.words()}", because),
                       hint=f"{fix}, then rerun (replies so far are cached)")
        if cls is APIPermissionDenied:
            return cls(text(f"{at} refused model {self.model!r} to {self.key.words()}", because),
                       hint="use a key whose project may use this model, or another model (--llm)")
        if cls is APIModelNotFound:
            if code == "model_not_found" or MODEL_MISSING.search(message):
                return cls(text(f"{at} does not serve model {self.model!r}", because),
                           hint="name a model this endpoint serves (--llm), or check --base-url")
            return cls(text(f"{at} answered 404 Not Found for model {self.model!r}", because),
                       hint="check --base-url (an OpenAI-compatible endpoint usually ends in /v1) and the model "
                            "name (--llm)")
        if cls is APIQuotaExhausted:
            return cls(text(f"{at}: the account of {self.key.words()} has no quota left", because),
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
