"""Counting the prompt tokens of LLM requests without calling the LLM: the model's own tokenizer
where the model is local and on disk, else ``tiktoken`` where its encoding is on disk, else
characters / 4 plus OpenAI's per-request chat overhead. The one count ``multicsr estimate`` and the
context check before stage 1 and 2 send anything both use.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

CHARS_PER_TOKEN = 4  # OpenAI's rule of thumb for English text
MESSAGE_OVERHEAD_TOKENS = 4  # per chat message (role and separators), OpenAI cookbook
REPLY_PRIMING_TOKENS = 3  # every reply is primed with <|start|>assistant<|message|>

#: The reason curation gives for a triplet whose prompt does not fit the scoring model's context,
#: and the prefix of the error text such a pair carries (the same name as stage 1's reject reason).
PROMPT_TOO_LONG = "prompt_too_long"


def prompt_too_long_error(tokens: int, limit: int) -> str:
    """The stored error text of an over-long prompt: ``"prompt_too_long: <n> tokens > <limit>"``."""
    return f"{PROMPT_TOO_LONG}: {tokens} tokens > {limit}"


@dataclass(frozen=True)
class TokenCounter:
    name: str
    count: Callable[[str], int]
    chat_overhead: int = 0  # tokens an API adds per single-user-message request


def _approximate(model: str, why: str) -> TokenCounter:
    return TokenCounter(f"approximation: characters / {CHARS_PER_TOKEN} ({why})",
                        lambda text: max(1, -(-len(text) // CHARS_PER_TOKEN)),
                        MESSAGE_OVERHEAD_TOKENS + REPLY_PRIMING_TOKENS)


def _tiktoken_offline(model: str) -> TokenCounter | None:
    """tiktoken's encoding for ``model``, only if tiktoken is installed and the encoding file is
    already in its cache (loading it otherwise downloads it)."""
    try:
        import tiktoken
        from tiktoken.model import encoding_name_for_model
    except ImportError:
        return None
    try:
        name = encoding_name_for_model(model)
    except KeyError:
        return None
    cache_dir = (os.environ.get("TIKTOKEN_CACHE_DIR") or os.environ.get("DATA_GYM_CACHE_DIR")
                 or os.path.join(tempfile.gettempdir(), "data-gym-cache"))
    url = f"https://openaipublic.blob.core.windows.net/encodings/{name}.tiktoken"
    if not Path(cache_dir, hashlib.sha1(url.encode()).hexdigest()).is_file():
        return None
    encoding = tiktoken.get_encoding(name)
    return TokenCounter(f"tiktoken {name}", lambda text: len(encoding.encode(text)),
                        MESSAGE_OVERHEAD_TOKENS + REPLY_PRIMING_TOKENS)


def api_token_counter(model: str) -> TokenCounter:
    return _tiktoken_offline(model) or _approximate(model, f"no offline tokenizer for the API model {model}")


def local_token_counter(ref: str, revision: str | None = None, use_chat_template: bool = True) -> TokenCounter:
    """The model's own tokenizer, from disk only; the prompt is wrapped as the model sees it."""
    try:  # transformers and torch (seconds to import) load only for a local model; any failure: approximate
        from transformers import AutoTokenizer

        from multicsr_core.generation.engine import encode_prompt
        from multicsr_core.models import resolve_model_ref

        tokenizer = AutoTokenizer.from_pretrained(resolve_model_ref(ref), revision=revision, local_files_only=True)
    except Exception as exc:  # not on disk, no network: say so and approximate
        return _approximate(ref, f"tokenizer of {ref} not available offline: {type(exc).__name__}")
    return TokenCounter(f"tokenizer of {ref}", lambda text: len(encode_prompt(tokenizer, text, use_chat_template)[0]))


def _message_text(request) -> str:
    return "".join(str(message.get("content", "")) for message in request.messages)


def api_prompt_tokens(counter: TokenCounter, request) -> int:
    """The prompt tokens of one API request (a ``ChatRequest``): its messages' text counted with
    ``counter`` (:func:`api_token_counter`) plus the chat overhead. The one count of an API prompt:
    ``multicsr estimate``'s, and the context check before stage 1 and 2 send anything
    (:func:`api_over_long`)."""
    return counter.count(_message_text(request)) + counter.chat_overhead


def api_over_long(model: str, requests: Sequence, context_tokens: int | None) -> dict[int, tuple[int, int]]:
    """{index: (prompt tokens, limit)} of the requests (``ChatRequest``) whose prompt is longer than an
    API model's context allows: ``context_tokens`` less the request's ``max_tokens``. Tokens are
    counted as ``multicsr estimate`` counts them (:func:`api_prompt_tokens`: tiktoken's encoding of the
    model where it is on disk, else characters / 4, plus the chat overhead). None: no check."""
    if context_tokens is None or not requests:
        return {}
    counter = api_token_counter(model)
    over = {}
    for i, request in enumerate(requests):
        limit = context_tokens - int(request.params.get("max_tokens") or 0)
        tokens = api_prompt_tokens(counter, request)
        if tokens > limit:
            over[i] = (tokens, limit)
    return over
