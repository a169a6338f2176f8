"""LLM scorers for stage 2 (MultiCSR, 0-5) and CLAIF (0-1).

All of them implement :class:`~multicsr_core.scoring.base.PairScorer` and go through the
response cache, so a rerun after a crash asks the model only what it has not answered yet.

How a score is read (``mode``, ``scoring.mode`` in the config, ``multicsr score --mode``):

- ``argmax`` (default): the most probable score token of the reply's first token, the paper's
  single answer (MultiCSR scores with greedy decoding; greedy's first token is the argmax).
- ``expected``: the probability-weighted mean of the score tokens, a finer-grained score.
- ``generate``: the official way: greedy generation, then the reply text through a parser (the
  official one by default, method.md). API models without logprobs always read the text.

One rule for every backend (:mod:`multicsr_core.scoring.base`): an answer that is not a score
is a verdict, ``unparsable_score``, cached like any answer and never asked again; only a
transport failure is retried by the next run. A prompt longer than the model's context is
measured before it is run and is the verdict ``prompt_too_long``, never run or sent: a local
model's tokens as it is fed them against its ``max_position_embeddings`` (``LocalLM``), an API
model's tokens as ``multicsr estimate`` counts them against ``scoring.context_tokens`` less
``max_tokens`` (``llm.tokens.api_over_long``; API generation in stage 1 too). For the one-forward modes "not a score" means the
score tokens hold less than ``min_score_mass`` of the first token's probability: the model was
going to say something else, and reading the argmax over the digits anyway would invent a score
it never gave (SmolLM2-135M with the zero-shot prompt puts about 2% there). Each pair records
that mass (corpus columns ``entailment_score_mass`` / ``contradiction_score_mass``).

One caveat: the official parser accepts ``"3.5"``; reading the first token gives 3 (argmax) or
a weighted value (expected), never the ``.5``. That is the price of one forward pass.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Mapping, Sequence

from multicsr_core.llm.accounting import UsageTotals
from multicsr_core.llm.api_errors import ContextLengthExceeded
from multicsr_core.llm.chat import BatchReport, ChatRequest, ChatResult
from multicsr_core.llm.openai_backend import OpenAIChatBackend
from multicsr_core.llm.tokens import api_over_long
from multicsr_core.prompts import (MULTI_TURN_SCORING_VARIANTS, format_claif_scoring_prompt, format_scoring_prompt,
                                   scoring_messages)
from multicsr_core.scoring.base import PROMPT_TOO_LONG, PairScore, prompt_too_long_error, unparsable_error
from multicsr_core.scoring.parsing import SCORE_CHARS, get_parser

if TYPE_CHECKING:  # torch is imported only by callers that score locally
    from multicsr_core.llm.local import LocalLM, LocalResult

log = logging.getLogger(__name__)

SCORE_TOKENS = tuple(SCORE_CHARS)  # "0".."5"
MODES = ("argmax", "expected", "generate")

#: Default of ``scoring.min_score_mass`` (config.py), chosen by measurement on SmolLM2-135M-
#: Instruct and SNLI test pairs (``benchmarks/bench_judges.py``): with the official zero-shot
#: prompt the score tokens hold 0.010-0.041 of the first token's probability and greedy decoding
#: answers prose for every pair; with the few-shot prompt (chat turns) they hold 0.91-0.93 and
#: greedy decoding answers a digit for every pair. Every threshold between 0.05 and 0.9 makes the
#: one-forward verdict agree with generate + official parser on all those pairs; 0.25 sits well
#: inside that gap (6x the largest prose mass, a quarter of the smallest answering one). Below it
#: the argmax over the digits would invent a score the model never gave.
DEFAULT_MIN_SCORE_MASS = 0.25


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


def _short(text: str | None, limit: int = 60) -> str:
    text = (text or "").strip().replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _complete_pairs(backend: OpenAIChatBackend, requests: Sequence[ChatRequest], premises: Sequence[str],
                    hypotheses: Sequence[str], progress: Callable[[int, int], None] | None,
                    pairs: Sequence[int] | None = None) -> BatchReport:
    """``backend.complete`` for one request per pair. A prompt longer than the model's context stops
    the call (no rerun can answer it); the error then names the pair, by its sentences, and its
    ``index`` is the pair's. ``pairs``: the pair (index into ``premises``) of each request, where
    not every pair is sent (default: request i is pair i)."""
    try:
        return backend.complete(requests, progress=progress)
    except ContextLengthExceeded as err:
        if err.index is None or err.details is None or not 0 <= err.index < len(requests):
            raise
        i = err.index if pairs is None else pairs[err.index]
        if not 0 <= i < len(premises):
            raise
        chars = sum(len(str(message.get("content", ""))) for message in requests[err.index].messages)
        pair = ContextLengthExceeded(
            f"pair {i + 1} of {len(premises)} in this call (premise {_short(premises[i], 50)!r}, hypothesis "
            f"{_short(hypotheses[i], 50)!r}; prompt {chars} characters) is longer than model {backend.model!r} "
            f"accepts at {backend.endpoint} "
            f"({backend.error_detail(err.details['status'], err.details['error'], 160)})",
            hint="shorten or drop that row (input.max_chars caps a sentence), or score with a model with a longer "
                 "context; replies so far are cached", index=i)
        pair.details = err.details
        raise pair from None


def text_verdict(text: str | None, parse: Callable[[str | None], float | None], parser_name: str) -> PairScore:
    """A reply text as a score, or as the unparsable verdict that keeps the reply."""
    score = parse(text)
    if score is None:
        return PairScore(score=None, raw=text,
                         error=unparsable_error(f"reply {_short(text)!r} is not a score ({parser_name} parser)"))
    return PairScore(score=score, raw=text)


class LocalLLMScorer:
    """MultiCSR stage-2 scoring with a local Hugging Face model.

    A pair whose prompt is longer than the model's context (``max_position_embeddings``, less
    ``max_new_tokens`` in ``generate`` mode, measured as the model is fed it) is not run: it is
    the ``prompt_too_long`` verdict (``LocalLM``), cached and final, like an unparsable answer.

    Args:
        lm: the model (``LocalLM.from_pretrained(model_id, cache=ResponseCache(workdir / ...))``).
        mode: ``argmax`` | ``expected`` (one forward pass) | ``generate`` (generate + parser).
            If a score string has no single-token spelling, ``argmax``/``expected`` fall back to
            ``generate`` with a warning (the fingerprint records the mode actually used).
        prompt_variant: ``single-space`` (official zero-shot), ``official-17-spaces`` or
            ``few-shot`` (prompts.py; sent as chat turns where the model has a chat template).
        parser: parser for ``generate`` mode (``official`` by default).
        max_new_tokens: generation length in ``generate`` mode (a reply the official parser
            accepts is at most 3 characters, so a few tokens suffice).
        min_score_mass: in one-forward modes, a pair whose score tokens together hold less than
            this probability is unparsable (a verdict, see the module docstring). 0 reads a score
            from every distribution. Default :data:`DEFAULT_MIN_SCORE_MASS` (0.25, measured). The
            mass is cached with the distribution, so changing the threshold needs no new forward.
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
        min_score_mass: float = DEFAULT_MIN_SCORE_MASS,
    ):
        _check_mode(mode)
        if not 0.0 <= min_score_mass <= 1.0:
            raise ValueError(f"min_score_mass must lie in [0, 1], not {min_score_mass}")
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

    def prompts(self, premises: Sequence[str], hypotheses: Sequence[str]) -> list:
        """The model inputs: texts, or for the few-shot prompt on a chat model its chat turns."""
        if self.prompt_variant in MULTI_TURN_SCORING_VARIANTS and self.lm.use_chat_template:
            return [scoring_messages(p, h, self.prompt_variant) for p, h in zip(premises, hypotheses)]
        return [format_scoring_prompt(p, h, self.prompt_variant) for p, h in zip(premises, hypotheses)]

    def score_pairs(self, premises: Sequence[str], hypotheses: Sequence[str]) -> list[PairScore]:
        _check_pairs(premises, hypotheses)
        prompts = self.prompts(premises, hypotheses)
        if self.mode == "generate":
            results = self.lm.generate(prompts, max_new_tokens=self.max_new_tokens)
            return [self._from_text(result) for result in results]
        results = self.lm.next_token_distribution(prompts, SCORE_TOKENS)
        return [self._from_distribution(result) for result in results]

    def _from_text(self, result: "LocalResult") -> PairScore:
        if not result.ok:
            return PairScore(score=None, raw=result.text, error=result.error)
        return text_verdict(result.text, self.parse, self.parser_name)

    def _from_distribution(self, result: "LocalResult") -> PairScore:
        if not result.ok:
            return PairScore(score=None, error=result.error, distribution=result.distribution, mass=result.mass)
        mass = result.mass if result.mass is not None else sum(result.distribution.values())
        if mass < self.min_score_mass or mass <= 0:
            return PairScore(score=None, distribution=result.distribution, mass=mass, error=unparsable_error(
                f"score tokens hold {mass:.3g} of the next-token probability (< min_score_mass {self.min_score_mass})"))
        return PairScore(score=distribution_to_score(result.distribution, self.mode), distribution=result.distribution,
                         mass=mass)


def logprobs_to_distribution(logprobs: list[dict] | None, candidates: Sequence[str] = SCORE_TOKENS) -> dict[str, float] | None:
    """Score distribution from the first reply token's top alternatives (API logprobs).

    Tokens are compared after stripping whitespace (``" 3"`` counts for ``"3"``). None if the
    endpoint sent no logprobs, or if the reply's first token is not itself a score: a reply
    like "I cannot rate that" may still list "3" among its alternatives at a tiny probability,
    and reading a score out of a non-answer would keep a triplet the model never scored.
    """
    distribution, _ = logprobs_to_distribution_and_mass(logprobs, candidates)
    return distribution


def logprobs_to_distribution_and_mass(logprobs: list[dict] | None, candidates: Sequence[str] = SCORE_TOKENS
                                      ) -> tuple[dict[str, float] | None, float | None]:
    """:func:`logprobs_to_distribution` and the probability the listed score tokens hold together."""
    if not logprobs or logprobs[0]["token"].strip() not in candidates:
        return None, None
    first = logprobs[0]
    alternatives = dict(first.get("top") or {})
    alternatives.setdefault(first["token"], first["logprob"])
    mass = {candidate: 0.0 for candidate in candidates}
    for token, logprob in alternatives.items():
        if token.strip() in mass:
            mass[token.strip()] += math.exp(logprob)
    total = sum(mass.values())
    return {candidate: p / total for candidate, p in mass.items()}, total


@dataclass(frozen=True)
class APIScoringSettings:
    """How :class:`OpenAIScorer` asks and reads (checked once, here).

    Args:
        mode: ``argmax`` | ``expected`` (read the first token's logprobs) | ``generate`` (the text).
        use_logprobs: ask for the top ``top_logprobs`` alternatives of each reply token (not in
            ``generate`` mode).
        prompt_variant: the scoring prompt (prompts.py); parser: the text parser (``official``).
        temperature, max_tokens: sent with every request; system: an optional system message.
        context_tokens: the model's context in tokens (``scoring.context_tokens``); None: no check.
    """

    mode: str = "argmax"
    use_logprobs: bool = True
    top_logprobs: int = 10
    prompt_variant: str = "single-space"
    parser: str = "official"
    temperature: float = 0.0
    max_tokens: int = 8
    system: str | None = None
    context_tokens: int | None = None

    def __post_init__(self) -> None:
        _check_mode(self.mode)
        if self.context_tokens is not None and self.context_tokens < 1:
            raise ValueError(f"context_tokens must be at least 1, not {self.context_tokens}")
        get_parser(self.parser)  # fail now on an unknown parser
        format_scoring_prompt("x", "y", self.prompt_variant)  # fail now on an unknown variant


class OpenAIScorer:
    """MultiCSR stage-2 scoring with an OpenAI-compatible endpoint.

    With ``use_logprobs`` (and ``mode`` argmax or expected) the request asks for the top
    ``top_logprobs`` alternatives of each reply token; when the endpoint returns them and the
    reply starts with a score token, the score comes from the first token's distribution over
    0-5 (as :class:`LocalLLMScorer`). Otherwise (``mode="generate"``, no logprobs, or a reply
    that starts with something else) the reply text goes through the parser. A reply that gives
    no score is the ``unparsable_score`` verdict: cached, never requested again. Only transport
    failures (HTTP errors, timeouts, malformed bodies, the budget cap) are failed pairs that the
    next run retries. An error no rerun can fix (a rejected key, an unknown model, a prompt over
    the context...) raises the client's ``PermanentAPIError`` instead, at once; for a prompt
    over the context it names the pair by its sentences. ``last_report`` holds the
    :class:`BatchReport` of the latest call (of the pairs sent).

    ``settings.context_tokens`` (``scoring.context_tokens``): the model's context in tokens. A pair
    whose prompt is longer than that less ``max_tokens`` (``tokens.api_over_long``) is not sent: it
    is the ``prompt_too_long`` verdict. None: no check (the server's 400 is the only guard).
    """

    name = "openai"

    def __init__(self, backend: OpenAIChatBackend, settings: APIScoringSettings = APIScoringSettings(), *,
                 progress: Callable[[int, int], None] | None = None):
        self.backend = backend
        self.mode = settings.mode
        self.context_tokens = settings.context_tokens
        self.use_logprobs = settings.use_logprobs and settings.mode != "generate"
        self.top_logprobs = settings.top_logprobs
        self.prompt_variant = settings.prompt_variant
        self.parser_name = settings.parser
        self.parse = get_parser(settings.parser)
        self.system = settings.system
        self.progress = progress
        self.params: dict = {"temperature": settings.temperature, "max_tokens": settings.max_tokens}
        if self.use_logprobs:
            self.params.update(logprobs=True, top_logprobs=settings.top_logprobs)
        self.last_report: BatchReport | None = None

    def fingerprint(self) -> dict:
        fingerprint = {"scorer": self.name, **self.backend.fingerprint(), "mode": self.mode,
                       "parser": self.parser_name, "prompt_variant": self.prompt_variant, "system": self.system,
                       "params": self.params}
        if self.context_tokens is not None:  # only when set: unset, the fingerprint (a cache key) is as before
            fingerprint["context_tokens"] = self.context_tokens
        return fingerprint

    def score_pairs(self, premises: Sequence[str], hypotheses: Sequence[str]) -> list[PairScore]:
        _check_pairs(premises, hypotheses)
        system = [{"role": "system", "content": self.system}] if self.system else []
        requests = [ChatRequest(messages=system + scoring_messages(p, h, self.prompt_variant), params=self.params)
                    for p, h in zip(premises, hypotheses)]
        over = api_over_long(self.backend.model, requests, self.context_tokens)
        if over:
            log.warning("%d of %d pairs have a prompt longer than the context of model %r allows (scoring."
                        "context_tokens %d less max_tokens): rejected as %s, not sent", len(over), len(requests),
                        self.backend.model, self.context_tokens, PROMPT_TOO_LONG)
        sent = [i for i in range(len(requests)) if i not in over]
        scores: list[PairScore | None] = [PairScore(score=None, error=prompt_too_long_error(*over[i])) if i in over
                                          else None for i in range(len(requests))]
        # No validator: every reply that arrives is an answer (a score or the unparsable verdict).
        if sent:
            self.last_report = _complete_pairs(self.backend, [requests[i] for i in sent], premises, hypotheses,
                                               self.progress, sent if over else None)
        else:  # nothing to send (an empty call, or every prompt over the context)
            self.last_report = BatchReport([], UsageTotals())
        for i, result in zip(sent, self.last_report.results):
            scores[i] = self._pair_score(result)
        return scores  # type: ignore[return-value]

    def _pair_score(self, result: ChatResult) -> PairScore:
        if not result.ok:
            return PairScore(score=None, raw=result.text, error=result.error)
        if self.use_logprobs:
            distribution, mass = logprobs_to_distribution_and_mass(result.logprobs)
            if distribution is not None:
                return PairScore(score=distribution_to_score(distribution, self.mode), raw=result.text,
                                 distribution=distribution, mass=mass)
        return text_verdict(result.text, self.parse, self.parser_name)


class ClaifScorer:
    """CLAIF's 0-1 similarity (Cheng et al. 2023, App. B): the first number in the reply.

    Works with an API backend or a local model (greedy generate). A reply with no number, or
    with a number outside ``valid_range`` (ours: CLAIF's label smoothing ``0.8 y + 0.1`` assumes
    0-1), is the ``unparsable_score`` verdict, kept with its reply and not asked again.
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

    def _verdict(self, text: str | None) -> PairScore:
        value = self.parse(text)
        if value is None:
            return PairScore(score=None, raw=text, error=unparsable_error(f"reply {_short(text)!r} holds no number"))
        low, high = self.valid_range
        if not low <= value <= high:
            return PairScore(score=None, raw=text, error=unparsable_error(f"score {value} outside [{low}, {high}]"))
        return PairScore(score=value, raw=text)

    def score_pairs(self, premises: Sequence[str], hypotheses: Sequence[str]) -> list[PairScore]:
        _check_pairs(premises, hypotheses)
        prompts = [format_claif_scoring_prompt(a, b) for a, b in zip(premises, hypotheses)]
        if isinstance(self.model, OpenAIChatBackend):
            requests = [ChatRequest.from_prompt(prompt, **self.params) for prompt in prompts]
            self.last_report = _complete_pairs(self.model, requests, premises, hypotheses, self.progress)
            results = self.last_report.results
        else:  # a LocalLM: greedy generate
            results = self.model.generate(prompts, max_new_tokens=self.max_tokens, progress=self.progress)
        return [self._verdict(r.text) if r.ok else PairScore(score=None, raw=r.text, error=r.error) for r in results]
