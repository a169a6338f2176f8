"""LLM scorers for stage 2 (MultiCSR, 0-5) and CLAIF (0-1), and API generation for stage 1.

All of them implement :class:`~multicsr_core.scoring.base.PairScorer` and go through the
response cache, so a rerun after a crash asks the model only what it has not answered yet.

How a score is read (``mode``):

- ``argmax`` (default): the most probable score token of the reply's first token, the paper's
  single answer (MultiCSR scores with greedy decoding; greedy's first token is the argmax).
- ``expected``: the probability-weighted mean of the score tokens, a finer-grained score.
- ``generate`` (local) / no logprobs (API): the reply text through a parser (the official
  one by default, method.md). A reply that does not parse is a failure for that pair: its
  score is None, the reply is kept, and the next run asks again.

One caveat: the official parser accepts ``"3.5"``; reading the first token gives 3 (argmax) or
a weighted value (expected), never the ``.5``. That is the price of one forward pass.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Callable, Mapping, Sequence

from multicsr_core.llm.openai_backend import BatchReport, ChatRequest, ChatResult, OpenAIChatBackend
from multicsr_core.prompts import format_claif_scoring_prompt, format_scoring_prompt
from multicsr_core.scoring.base import PairScore
from multicsr_core.scoring.parsing import SCORE_CHARS, get_parser

if TYPE_CHECKING:  # torch is imported only by callers that score locally
    from multicsr_core.llm.local import LocalLM, LocalResult

log = logging.getLogger(__name__)

SCORE_TOKENS = tuple(SCORE_CHARS)  # "0".."5"
MODES = ("argmax", "expected", "generate")


def distribution_to_score(distribution: Mapping[str, float], mode: str = "argmax") -> float:
    """The score a distribution over score strings stands for: its argmax or its expected value."""
    if not distribution:
        raise ValueError("empty score distribution")
    if mode == "argmax":
        return float(max(distribution.items(), key=lambda item: item[1])[0])  # ties: the first listed
    if mode == "expected":
        total = sum(distribution.values())
        if total <= 0:
            raise ValueError(f"score distribution has no mass: {dict(distribution)}")
        return sum(float(token) * p for token, p in distribution.items()) / total
    raise ValueError(f"unknown score mode {mode!r}; choose from argmax, expected")


def _check_pairs(premises: Sequence[str], hypotheses: Sequence[str]) -> None:
    if len(premises) != len(hypotheses):
        raise ValueError(f"{len(premises)} premises but {len(hypotheses)} hypotheses")


def _check_mode(mode: str) -> None:
    if mode not in MODES:
        raise ValueError(f"unknown score mode {mode!r}; choose from {', '.join(MODES)}")


class LocalLLMScorer:
    """MultiCSR stage-2 scoring with a local Hugging Face model.

    Args:
        lm: the model (``LocalLM.from_pretrained(model_id, cache=ResponseCache(workdir / ...))``).
        mode: ``argmax`` | ``expected`` (one forward pass) | ``generate`` (generate + parser).
            If a score string is not a single token, ``argmax``/``expected`` fall back to
            ``generate`` with a warning (the fingerprint records the mode actually used).
        prompt_variant: ``single-space`` or ``official-17-spaces`` (prompts.py).
        parser: parser for ``generate`` mode (``official`` by default).
        max_new_tokens: generation length in ``generate`` mode (a reply the official parser
            accepts is at most 3 characters, so a few tokens suffice).
        min_score_mass: in one-forward modes, fail a pair whose score tokens together hold less
            probability than this (the model was not going to answer a number). 0 disables.
    """

    name = "local"

    def __init__(
        self,
        lm: "LocalLM",
        *,
        mode: str = "argmax",
        prompt_variant: str = "single-space",
        parser: str = "official",
        max_new_tokens: int = 8,
        min_score_mass: float = 0.0,
    ):
        _check_mode(mode)
        self.lm = lm
        self.prompt_variant = prompt_variant
        self.parser_name = parser
        self.parse = get_parser(parser)
        self.max_new_tokens = max_new_tokens
        self.min_score_mass = min_score_mass
        format_scoring_prompt("x", "y", prompt_variant)  # fail now on an unknown variant
        if mode != "generate" and lm.candidate_token_ids(SCORE_TOKENS) is None:
            log.warning("%s: the score strings 0-5 are not single tokens; scoring with generate + %s parser",
                        lm.name, parser)
            mode = "generate"
        self.mode = mode

    def fingerprint(self) -> dict:
        fingerprint = {"scorer": self.name, **self.lm.fingerprint(), "mode": self.mode,
                       "prompt_variant": self.prompt_variant}
        if self.mode == "generate":
            fingerprint.update(parser=self.parser_name, max_new_tokens=self.max_new_tokens)
        else:
            fingerprint.update(min_score_mass=self.min_score_mass)
        return fingerprint

    def _validate_text(self, text: str) -> str | None:
        return None if self.parse(text) is not None else f"reply does not parse as a score ({self.parser_name} parser)"

    def _validate_distribution(self, distribution: Mapping[str, float], mass: float) -> str | None:
        if mass < self.min_score_mass:
            return f"score tokens hold only {mass:.3g} of the next-token probability (< {self.min_score_mass})"
        return None

    def score_pairs(self, premises: Sequence[str], hypotheses: Sequence[str]) -> list[PairScore]:
        _check_pairs(premises, hypotheses)
        prompts = [format_scoring_prompt(p, h, self.prompt_variant) for p, h in zip(premises, hypotheses)]
        if self.mode == "generate":
            results = self.lm.generate(prompts, max_new_tokens=self.max_new_tokens, validate=self._validate_text)
            return [self._from_text(result) for result in results]
        results = self.lm.next_token_distribution(prompts, SCORE_TOKENS, validate=self._validate_distribution)
        return [self._from_distribution(result) for result in results]

    def _from_text(self, result: "LocalResult") -> PairScore:
        if not result.ok:
            return PairScore(score=None, raw=result.text, error=result.error)
        return PairScore(score=self.parse(result.text), raw=result.text)

    def _from_distribution(self, result: "LocalResult") -> PairScore:
        if not result.ok:
            return PairScore(score=None, error=result.error, distribution=result.distribution)
        return PairScore(score=distribution_to_score(result.distribution, self.mode), distribution=result.distribution)


def logprobs_to_distribution(logprobs: list[dict] | None, candidates: Sequence[str] = SCORE_TOKENS) -> dict[str, float] | None:
    """Score distribution from the first reply token's top alternatives (API logprobs).

    Tokens are compared after stripping whitespace (``" 3"`` counts for ``"3"``). None if the
    endpoint sent no logprobs, or if the reply's first token is not itself a score: a reply
    like "I cannot rate that" may still list "3" among its alternatives at a tiny probability,
    and reading a score out of a non-answer would keep a triplet the model never scored.
    """
    import math

    if not logprobs or logprobs[0]["token"].strip() not in candidates:
        return None
    first = logprobs[0]
    alternatives = dict(first.get("top") or {})
    alternatives.setdefault(first["token"], first["logprob"])
    mass = {candidate: 0.0 for candidate in candidates}
    for token, logprob in alternatives.items():
        if token.strip() in mass:
            mass[token.strip()] += math.exp(logprob)
    total = sum(mass.values())
    return {candidate: p / total for candidate, p in mass.items()}


class OpenAIScorer:
    """MultiCSR stage-2 scoring with an OpenAI-compatible endpoint.

    With ``use_logprobs`` the request asks for the top ``top_logprobs`` alternatives of each
    reply token; when the endpoint returns them, the score comes from the first token's
    distribution over 0-5 (as :class:`LocalLLMScorer`, ``mode`` argmax or expected). Otherwise
    the reply text goes through the parser. A reply giving neither is a failed pair, stored with
    the reply. ``last_report`` holds the :class:`BatchReport` of the latest call (counts, spend,
    whether the budget cap stopped it).
    """

    name = "openai"

    def __init__(
        self,
        backend: OpenAIChatBackend,
        *,
        mode: str = "argmax",
        use_logprobs: bool = True,
        top_logprobs: int = 10,
        prompt_variant: str = "single-space",
        parser: str = "official",
        temperature: float = 0.0,
        max_tokens: int = 8,
        system: str | None = None,
        progress: Callable[[int, int], None] | None = None,
    ):
        if mode not in ("argmax", "expected"):
            raise ValueError(f"unknown score mode {mode!r} for API scoring; choose argmax or expected")
        self.backend = backend
        self.mode = mode
        self.use_logprobs = use_logprobs
        self.top_logprobs = top_logprobs
        self.prompt_variant = prompt_variant
        self.parser_name = parser
        self.parse = get_parser(parser)
        self.system = system
        self.progress = progress
        self.params: dict = {"temperature": temperature, "max_tokens": max_tokens}
        if use_logprobs:
            self.params.update(logprobs=True, top_logprobs=top_logprobs)
        self.last_report: BatchReport | None = None
        format_scoring_prompt("x", "y", prompt_variant)  # fail now on an unknown variant

    def fingerprint(self) -> dict:
        return {"scorer": self.name, **self.backend.fingerprint(), "mode": self.mode, "parser": self.parser_name,
                "prompt_variant": self.prompt_variant, "system": self.system, "params": self.params}

    def _score(self, text: str | None, logprobs: list[dict] | None) -> tuple[float | None, dict | None]:
        distribution = logprobs_to_distribution(logprobs) if self.use_logprobs else None
        if distribution is not None:
            return distribution_to_score(distribution, self.mode), distribution
        return self.parse(text), None

    def _validate(self, text: str, logprobs: list[dict] | None) -> str | None:
        score, _ = self._score(text, logprobs)
        return None if score is not None else f"reply does not parse as a score ({self.parser_name} parser)"

    def score_pairs(self, premises: Sequence[str], hypotheses: Sequence[str]) -> list[PairScore]:
        _check_pairs(premises, hypotheses)
        requests = [
            ChatRequest.from_prompt(format_scoring_prompt(p, h, self.prompt_variant), self.system, **self.params)
            for p, h in zip(premises, hypotheses)
        ]
        self.last_report = self.backend.complete(requests, validate=self._validate, progress=self.progress)
        return [self._pair_score(result) for result in self.last_report.results]

    def _pair_score(self, result: ChatResult) -> PairScore:
        if not result.ok:
            return PairScore(score=None, raw=result.text, error=result.error)
        score, distribution = self._score(result.text, result.logprobs)
        return PairScore(score=score, raw=result.text, distribution=distribution)


class ClaifScorer:
    """CLAIF's 0-1 similarity (Cheng et al. 2023, App. B): the first number in the reply.

    Works with an API backend or a local model (greedy generate). A reply with no number, or
    with a number outside ``valid_range`` (ours: CLAIF's label smoothing ``0.8 y + 0.1`` assumes
    0-1), is a failed pair kept with its reply.
    """

    name = "claif"

    def __init__(
        self,
        model: "OpenAIChatBackend | LocalLM",
        *,
        temperature: float = 0.0,
        max_tokens: int = 16,
        valid_range: tuple[float, float] = (0.0, 1.0),
        progress: Callable[[int, int], None] | None = None,
    ):
        self.model = model
        self.parse = get_parser("first-number")
        self.valid_range = valid_range
        self.max_tokens = max_tokens
        self.params = {"temperature": temperature, "max_tokens": max_tokens}
        self.progress = progress
        self.last_report: BatchReport | None = None

    def fingerprint(self) -> dict:
        return {"scorer": self.name, **self.model.fingerprint(), "parser": "first-number",
                "valid_range": list(self.valid_range), "params": self.params}

    def _error(self, text: str | None) -> str | None:
        value = self.parse(text)
        if value is None:
            return "reply holds no number"
        low, high = self.valid_range
        if not low <= value <= high:
            return f"score {value} outside [{low}, {high}]"
        return None

    def score_pairs(self, premises: Sequence[str], hypotheses: Sequence[str]) -> list[PairScore]:
        _check_pairs(premises, hypotheses)
        prompts = [format_claif_scoring_prompt(a, b) for a, b in zip(premises, hypotheses)]
        if isinstance(self.model, OpenAIChatBackend):
            requests = [ChatRequest.from_prompt(prompt, **self.params) for prompt in prompts]
            self.last_report = self.model.complete(requests, validate=lambda text, _: self._error(text),
                                                   progress=self.progress)
            results = self.last_report.results
        else:  # a LocalLM: greedy generate
            results = self.model.generate(prompts, max_new_tokens=self.max_tokens, validate=self._error,
                                          progress=self.progress)
        return [
            PairScore(score=self.parse(r.text), raw=r.text) if r.ok else PairScore(score=None, raw=r.text, error=r.error)
            for r in results
        ]


# -- stage 1 with API models ------------------------------------------------------------

#: CLAIF's official API settings for mask-filling generation (method.md, CLAIF).
CLAIF_GENERATION_PARAMS = {"temperature": 0.7, "top_p": 0.9, "max_tokens": 256, "stop": ['"']}


def _non_empty(text: str, _logprobs=None) -> str | None:
    return None if text.strip() else "empty reply"


def generate_with_api(
    backend: OpenAIChatBackend,
    prompts: Sequence[str],
    *,
    temperature: float = 0.0,
    max_tokens: int = 128,
    system: str | None = None,
    progress: Callable[[int, int], None] | None = None,
    **params,
) -> BatchReport:
    """Stage 1 with an API model: plain generation, one reply per prompt (no contrast).

    API models expose no logits, so the paper's ChatGPT runs generate plainly and rely on
    stages 2 and 3 (method.md, stage 1). Greedy (temperature 0) matches the official local
    decoding; extra ``params`` (top_p, stop, seed...) go to the API. Empty replies are failures
    (retried by the next run). Per-item texts and errors are ``report.results[i].text / .error``.
    """
    requests = [ChatRequest.from_prompt(prompt, system, temperature=temperature, max_tokens=max_tokens, **params)
                for prompt in prompts]
    return backend.complete(requests, validate=_non_empty, progress=progress)


def generate_claif_with_api(
    backend: OpenAIChatBackend,
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
