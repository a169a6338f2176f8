"""What a run will ask the LLM, and what it will cost, before it spends anything.

``estimate(cfg, workdir)`` reads the config's input and, for each LLM stage, counts:

- **requests**: stage 1 asks 2 per premise (x+ and x-); stage 2 asks 2 per triplet. Entering
  at stage 2 that is exact; entering at stage 1 it is an upper bound, 2 x premises, since
  generation drops empty and copied outputs.
- **prompt tokens**, counted with the model's own tokenizer where the model is local
  (``AutoTokenizer`` from the resolved ref, offline: ``local_files_only``, chat template applied
  as the model sees it), else with ``tiktoken`` if it is installed with the model's encoding
  already on disk, else approximated as characters / 4 (plus OpenAI's per-message overhead of
  4 tokens and 3 for the reply's priming). The counter used is named in the output. For stage 2
  behind stage 1 the hypotheses are not written yet: each is taken as long as its premise.
- **completion tokens**: the expected count (a score is one token; a generated sentence about
  as long as its premise) and the maximum the requests allow (``max_tokens``), which the
  budget check uses, as the client's own budget cap does.
- **cached**: requests the workdir's response cache already answers, found by computing the very
  cache keys the backends use (the requests are built by the real scorer and generator code
  over a backend that only collects them) and looking them up; nothing is sent anywhere.
- **cost** of the requests not cached at ``scoring.price_input_per_1m`` /
  ``price_output_per_1m`` (API generation uses the same client settings), times
  ``scoring.batch_price_factor`` where the stage goes through the Batch API; and whether
  ``scoring.budget_usd`` covers the maximum. Local models cost nothing here.

No LLM is called and no network is used: a local tokenizer that is not on disk falls back to
the approximation, and says so.
"""

from __future__ import annotations

import sqlite3
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

from multicsr_core.config import PipelineConfig, expand_path
from multicsr_core.config_facts import guide_ref_for_scoring, scoring_llm
from multicsr_core.io.inputs import read_premises, read_triplets
from multicsr_core.llm.accounting import Pricing, UsageTotals
from multicsr_core.llm.api_generation import generate_with_api
from multicsr_core.llm.cache import cache_key, default_cache_path
from multicsr_core.llm.openai_backend import NOT_REQUESTED, BatchReport, ChatResult
from multicsr_core.llm.tokens import api_prompt_tokens, api_token_counter, local_token_counter
from multicsr_core.pipeline.components import openai_scorer
from multicsr_core.pipeline.generate import api_generation_params, generation_prompts
from multicsr_core.prompts import SCORING_PROMPT_CHOICES, format_scoring_prompt


@dataclass
class StageEstimate:
    """One LLM stage: its requests, tokens, cache hits and cost."""

    stage: str  # "generation" (stage 1) or "scoring" (stage 2)
    model: str
    backend: str  # local | openai | guide
    requests: int
    requests_exact: bool  # False: an upper bound (stage 2 behind stage 1)
    prompt_tokens: int
    completion_tokens: int  # expected
    completion_tokens_max: int  # what the requests allow (max_tokens)
    token_counter: str  # which tokenizer or approximation counted them
    cached: int | None  # requests the response cache answers (None: not checkable before the run)
    batch_api: bool = False
    price_factor: float = 1.0
    cost_usd: float = 0.0  # the requests not cached, expected completion tokens
    cost_usd_max: float = 0.0  # the same at max_tokens
    notes: list[str] = field(default_factory=list)


@dataclass
class Estimate:
    input: str
    input_kind: str  # premises | triplets
    input_rows: int
    stages: list[StageEstimate]
    price_input_per_1m: float
    price_output_per_1m: float
    budget_usd: float | None
    notes: list[str] = field(default_factory=list)

    @property
    def cost_usd(self) -> float:
        return sum(stage.cost_usd for stage in self.stages)

    @property
    def cost_usd_max(self) -> float:
        return sum(stage.cost_usd_max for stage in self.stages)

    @property
    def within_budget(self) -> bool | None:
        return None if self.budget_usd is None else self.cost_usd_max <= self.budget_usd

    def to_dict(self) -> dict:
        return {**asdict(self), "cost_usd": self.cost_usd, "cost_usd_max": self.cost_usd_max,
                "within_budget": self.within_budget}

    def markdown(self) -> str:
        """The request, token and cost table, and what the budget says."""
        lines = [f"input: {self.input} ({self.input_rows} {self.input_kind})", "",
                 "| stage | model | backend | requests | prompt tokens | completion tokens (expected / max) "
                 "| cached | cost USD (expected / max) | tokens counted with |",
                 "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | --- |"]
        for s in self.stages:
            requests = f"{s.requests:,}" if s.requests_exact else f"<= {s.requests:,}"
            backend = s.backend + (f" (Batch API, x{s.price_factor:g} price)" if s.batch_api else "")
            cached = "not checked" if s.cached is None else f"{s.cached:,}"
            lines.append(f"| {s.stage} | {s.model} | {backend} | {requests} | {s.prompt_tokens:,} | "
                         f"{s.completion_tokens:,} / {s.completion_tokens_max:,} | {cached} | "
                         f"{s.cost_usd:.4f} / {s.cost_usd_max:.4f} | {s.token_counter} |")
        lines.append(f"| total | | | {sum(s.requests for s in self.stages):,} | "
                     f"{sum(s.prompt_tokens for s in self.stages):,} | "
                     f"{sum(s.completion_tokens for s in self.stages):,} / "
                     f"{sum(s.completion_tokens_max for s in self.stages):,} | | "
                     f"{self.cost_usd:.4f} / {self.cost_usd_max:.4f} | |")
        lines.append("")
        lines.append(f"prices: ${self.price_input_per_1m:g} / ${self.price_output_per_1m:g} per 1M prompt / completion "
                     "tokens (scoring.price_input_per_1m, scoring.price_output_per_1m)")
        if self.budget_usd is None:
            lines.append("budget: none set (scoring.budget_usd)")
        else:
            verdict = "covers" if self.within_budget else "does NOT cover"
            lines.append(f"budget: ${self.budget_usd:g} {verdict} the maximum of ${self.cost_usd_max:.4f}")
        for s in self.stages:
            lines += [f"{s.stage}: {note}" for note in s.notes]
        lines += self.notes
        return "\n".join(lines)


# ---------------------------------------------------------------- the requests a stage sends
class RequestCollector:
    """Stands where an :class:`OpenAIChatBackend` would: records the requests the real scorer or
    generator builds and answers none of them, so their cache keys are exactly the backend's."""

    def __init__(self, model: str):
        self.model = model
        self.requests: list = []

    def key_for(self, request) -> str:
        return cache_key(self.model, request.messages, request.params)

    def fingerprint(self) -> dict:
        return {"backend": "estimate", "model": self.model}

    def complete(self, requests, *, validate=None, progress=None):
        self.requests.extend(requests)
        return BatchReport([ChatResult(NOT_REQUESTED, error="estimate only") for _ in requests], UsageTotals())


# ---------------------------------------------------------------- the stages
def _price(cfg: PipelineConfig, prompt_tokens: int, completion_tokens: int, factor: float) -> float:
    return factor * Pricing(cfg.scoring.price_input_per_1m, cfg.scoring.price_output_per_1m).cost(prompt_tokens,
                                                                                                   completion_tokens)


def _with_costs(cfg: PipelineConfig, stage: StageEstimate, per_request: list[tuple[int, int, int, bool]]) -> StageEstimate:
    """Cost of the requests not cached: per_request = (prompt, completion, completion_max, cached)."""
    if stage.backend != "openai":
        return stage
    todo = [item for item in per_request if not item[3]]
    stage.cost_usd = _price(cfg, sum(p for p, _, _, _ in todo), sum(c for _, c, _, _ in todo), stage.price_factor)
    stage.cost_usd_max = _price(cfg, sum(p for p, _, _, _ in todo), sum(m for _, _, m, _ in todo), stage.price_factor)
    return stage


def _generation_stage(cfg: PipelineConfig, premises: Sequence[str], workdir) -> StageEstimate:
    g = cfg.generation
    prompts = generation_prompts(cfg, premises)
    texts = [p.entailment_prompt for p in prompts] + [p.contradiction_prompt for p in prompts]
    lengths_source = list(premises) + list(premises)
    if g.backend == "openai":
        collector = RequestCollector(g.llm)
        generate_with_api(collector, texts, **api_generation_params(cfg))
        counter = api_token_counter(g.llm)
        keys = [collector.key_for(r) for r in collector.requests]
        cached_keys = _cached_keys(workdir, keys)
        per_request = []
        for request, premise, key in zip(collector.requests, lengths_source, keys):
            maximum = int(request.params.get("max_tokens") or g.max_new_tokens)
            per_request.append((api_prompt_tokens(counter, request),
                                min(maximum, counter.count(premise)), maximum, key in cached_keys))
        stage = StageEstimate("generation", g.llm, "openai", len(texts), True, sum(p for p, *_ in per_request),
                              sum(c for _, c, _, _ in per_request), sum(m for _, _, m, _ in per_request),
                              counter.name, sum(c for *_, c in per_request), g.batch_api,
                              cfg.scoring.batch_price_factor if g.batch_api else 1.0,
                              notes=["plain generation through the API (no logits, so no contrast)",
                                     "expected completion: each sentence about as long as its premise"])
        return _with_costs(cfg, stage, per_request)
    counter = local_token_counter(g.llm, g.revision, g.use_chat_template)
    prompt_tokens = sum(counter.count(text) for text in texts)
    expected = sum(min(g.max_new_tokens, counter.count(p)) for p in lengths_source)
    notes = ["local model: no cost; outputs are cached per shard (Prefect), not per request"]
    if g.omega != 0:
        notes.append(f"contrastive decoding (w={g.omega:g}) also runs each opposite prompt: about twice the "
                     "prompt compute of these requests")
    return StageEstimate("generation", g.llm, "local", len(texts), True, prompt_tokens, expected,
                         g.max_new_tokens * len(texts), counter.name, None, notes=notes)


def _cached_keys(workdir, keys: Sequence[str]) -> set[str]:
    if workdir is None or not default_cache_path(workdir).is_file():
        return set()
    unique = list(dict.fromkeys(keys))
    found: set[str] = set()
    uri = default_cache_path(workdir).resolve().as_uri() + "?mode=ro"
    with sqlite3.connect(uri, uri=True, timeout=30) as conn:
        for start in range(0, len(unique), 500):
            chunk = unique[start:start + 500]
            found |= {k for (k,) in conn.execute(f"SELECT key FROM responses WHERE status = 'ok' AND key IN "
                                                 f"({','.join('?' * len(chunk))})", chunk)}
    return found


def _scoring_stage(cfg: PipelineConfig, premises: Sequence[str], hypotheses: Sequence[str] | None,
                   workdir) -> StageEstimate:
    """``hypotheses`` None: behind stage 1, not written yet (each taken as long as its premise)."""
    s = cfg.scoring
    exact = hypotheses is not None
    pairs_premises = list(premises) + list(premises)
    pairs_hypotheses = list(hypotheses) if exact else pairs_premises
    n = len(pairs_premises)
    if s.scorer == "guide":
        return StageEstimate("scoring", guide_ref_for_scoring(cfg), "guide", 0, exact, 0, 0, 0, "-", None,
                             notes=[f"the guide model embeds {n:,} pairs: no LLM requests, no cost"])
    ref, revision = scoring_llm(cfg)
    notes = [] if exact else ["upper bound: 2 x premises (generation drops some); the hypotheses are not "
                              "written yet, each taken as long as its premise; cache not checkable"]
    if s.scorer == "openai":
        collector = RequestCollector(ref)
        openai_scorer(cfg, collector).score_pairs(pairs_premises, pairs_hypotheses)
        counter = api_token_counter(ref)
        keys = [collector.key_for(r) for r in collector.requests]
        found = _cached_keys(workdir, keys) if exact else set()
        per_request = [(api_prompt_tokens(counter, r), 1,
                        int(r.params.get("max_tokens") or 1), key in found)
                       for r, key in zip(collector.requests, keys)]
        stage = StageEstimate("scoring", ref, "openai", n, exact, sum(p for p, *_ in per_request),
                              sum(c for _, c, _, _ in per_request), sum(m for _, _, m, _ in per_request),
                              counter.name, sum(c for *_, c in per_request) if exact else None, s.batch_api,
                              s.batch_price_factor if s.batch_api else 1.0,
                              notes=notes + ["expected completion: one score token per request"])
        return _with_costs(cfg, stage, per_request)
    counter = local_token_counter(ref, revision, True)
    variant = SCORING_PROMPT_CHOICES[s.prompt]
    prompt_tokens = sum(counter.count(format_scoring_prompt(p, h, variant))
                        for p, h in zip(pairs_premises, pairs_hypotheses))
    notes.append("local model: no cost; one forward pass per pair reads the score token (nothing generated); "
                 "cache hits not checked (local keys depend on the loaded model)")
    return StageEstimate("scoring", ref, "local", n, exact, prompt_tokens, 0, 0, counter.name, None, notes=notes)


def estimate(cfg: PipelineConfig, workdir: str | Path | None = None) -> Estimate:
    """Requests, tokens, cache hits and cost of the LLM stages of ``cfg``; calls nothing."""
    i = cfg.input
    stages: list[StageEstimate] = []
    notes: list[str] = []
    if i.triplets:
        path = expand_path(i.triplets)
        table, _ = read_triplets(path, max_chars=i.max_chars, limit=i.limit)
        premises = table.column("premise").to_pylist()
        hypotheses = table.column("entailment").to_pylist() + table.column("contradiction").to_pylist()
        stages.append(_scoring_stage(cfg, premises, hypotheses, workdir))
        kind, rows = "triplets", table.num_rows
    elif i.premises:
        path = expand_path(i.premises)
        premise_set = read_premises(path, fmt=i.premises_format, column=i.column, max_chars=i.max_chars, limit=i.limit)
        premises = premise_set.premises
        if not cfg.generation.llm:
            raise ValueError("input.premises needs a generator: set generation.llm")
        stages.append(_generation_stage(cfg, premises, workdir))
        stages.append(_scoring_stage(cfg, premises, None, workdir))
        kind, rows = "premises", len(premises)
    else:
        raise ValueError("the config names no input: set input.premises or input.triplets")
    s = cfg.scoring
    if any(st.backend == "openai" for st in stages) and s.price_input_per_1m == 0 and s.price_output_per_1m == 0:
        notes.append("prices are 0: set scoring.price_input_per_1m and scoring.price_output_per_1m "
                     "(USD per 1M tokens, from your provider's price list) for a cost")
    return Estimate(str(path), kind, rows, stages, s.price_input_per_1m, s.price_output_per_1m, s.budget_usd, notes)
