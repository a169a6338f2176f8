"""Stage 1 with API models: generation prompts as chat requests, and their replies as texts.

API models expose no logits, so the paper's ChatGPT runs generate plainly and rely on stages 2
and 3 (method.md, stage 1). Greedy (temperature 0) matches the official local decoding. An empty
reply is a failure (stored ``failed``, retried by the next run). A prompt longer than the model's
context is measured before anything is sent (``tokens.api_over_long``).
"""

from __future__ import annotations

from typing import Callable, Sequence

from multicsr_core.llm.chat import BatchReport, ChatRequest

#: CLAIF's official API settings for mask-filling generation (method.md, CLAIF).
CLAIF_GENERATION_PARAMS = {"temperature": 0.7, "top_p": 0.9, "max_tokens": 256, "stop": ['"']}


def _non_empty(text: str, _logprobs=None) -> str | None:
    return None if text.strip() else "empty reply"


def generate_with_api(
    backend,
    prompts: Sequence[str],
    *,
    temperature: float = 0.0,
    max_tokens: int = 128,
    system: str | None = None,
    progress: Callable[[int, int], None] | None = None,
    **params,
) -> BatchReport:
    """Stage 1 with an API model: plain generation, one reply per prompt (no contrast).

    ``backend``: an :class:`~multicsr_core.llm.openai_backend.OpenAIChatBackend` (or anything with
    its ``complete``, as ``multicsr estimate``'s request collector). Extra ``params`` (top_p, stop,
    seed...) go to the API. Per-item texts and errors are ``report.results[i].text / .error``.
    """
    requests = generation_requests(prompts, temperature=temperature, max_tokens=max_tokens, system=system, **params)
    return backend.complete(requests, validate=_non_empty, progress=progress)


def generation_requests(prompts: Sequence[str], *, temperature: float = 0.0, max_tokens: int = 128,
                        system: str | None = None, **params) -> list[ChatRequest]:
    """The requests :func:`generate_with_api` sends for ``prompts`` (one user turn each)."""
    return [ChatRequest.from_prompt(prompt, system, temperature=temperature, max_tokens=max_tokens, **params)
            for prompt in prompts]


def generate_claif_with_api(
    backend,
    prompts: Sequence[str],
    *,
    progress: Callable[[int, int], None] | None = None,
    **overrides,
) -> BatchReport:
    """CLAIF mask-filling / paraphrase generation with the official API settings.

    Note: identical prompts share one cached reply (the cache key is the prompt and settings),
    even though the settings sample; CLAIF's prompts differ per sentence and mask pattern.
    """
    params = {**CLAIF_GENERATION_PARAMS, **overrides}
    requests = [ChatRequest.from_prompt(prompt, **params) for prompt in prompts]
    return backend.complete(requests, validate=_non_empty, progress=progress)
