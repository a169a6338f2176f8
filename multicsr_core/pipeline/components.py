"""From the typed config to core objects: the generator, the guide, the API client, the scorer.
Shared by every stage of the pipeline (the CLI and the tasks reach them through it).

Loaded models are kept per process (``functools.lru_cache``): a pipeline's many batch tasks
load the LLM or the guide once. Which model scores and which guide it uses are stated once, in
``config_facts``.
"""

from __future__ import annotations

import functools
from pathlib import Path

from multicsr_core.config import PipelineConfig
from multicsr_core.config_facts import guide_ref_for_scoring, scoring_llm
from multicsr_core.generation.engine import load_generator
from multicsr_core.guide import load_guide
from multicsr_core.llm.accounting import Pricing
from multicsr_core.llm.batch_api import default_state_dir
from multicsr_core.llm.cache import ResponseCache, default_cache_path
from multicsr_core.llm.local import LocalLM
from multicsr_core.llm.openai_backend import OpenAIChatBackend
from multicsr_core.llm.settings import APISettings, BatchAPISettings
from multicsr_core.models import model_provenance, resolve_model_ref
from multicsr_core.prompts import SCORING_PROMPT_CHOICES
from multicsr_core.redaction import restore_url
from multicsr_core.scoring.guide import GuideScorer
from multicsr_core.scoring.llm import APIScoringSettings, LocalLLMScorer, OpenAIScorer


@functools.lru_cache(maxsize=4)
def cached_guide(ref: str, pooling: str = "auto", device: str = "cpu"):
    return load_guide(resolve_model_ref(ref), pooling=None if pooling == "auto" else pooling, device=device)


@functools.lru_cache(maxsize=2)
def cached_generator(ref: str, revision: str | None, dtype: str, device: str):
    """A local LLM and its tokenizer, loaded once per process (generation shards and the local
    scorer share it: with self-curation the same model writes and scores)."""
    return load_generator(resolve_model_ref(ref), revision=revision, dtype=dtype, device=device)


def _batch_api_settings(cfg: PipelineConfig, workdir: str | Path, batch_api_shard: int) -> BatchAPISettings:
    """One batch per shard of ``batch_api_shard`` rows (two requests per row), its state under
    ``workdir/.multicsr/batches``."""
    s = cfg.scoring
    return BatchAPISettings(default_state_dir(workdir), poll_interval_s=s.batch_poll_interval_s,
                            max_wait_s=s.batch_max_wait_s, price_factor=s.batch_price_factor,
                            max_requests_per_batch=min(s.batch_max_requests, 2 * batch_api_shard))


def build_openai_backend(cfg: PipelineConfig, workdir: str | Path, model: str, base_url: str | None,
                         api_key: str | None = None, batch_api_shard: int | None = None):
    """An OpenAI-compatible client with the scoring section's limits (concurrency, retries, rate
    limits, prices, budget) and the workdir's response cache; used for API scoring and generation.

    ``batch_api_shard`` (rows per shard) sends through the OpenAI Batch API instead."""
    s = cfg.scoring
    base_url = restore_url(base_url)  # `run` passes redacted URLs through Prefect; credentials via env
    batch_api = _batch_api_settings(cfg, workdir, batch_api_shard) if batch_api_shard is not None else None
    settings = APISettings(base_url=base_url, api_key_env=s.api_key_env, concurrency=s.concurrency,
                           timeout_s=s.timeout_s, max_retries=s.max_retries, requests_per_minute=s.requests_per_minute,
                           tokens_per_minute=s.tokens_per_minute,
                           pricing=Pricing(s.price_input_per_1m, s.price_output_per_1m), budget_usd=s.budget_usd,
                           batch_api=batch_api, max_tokens_field=s.max_tokens_field)
    return OpenAIChatBackend(model, cache=ResponseCache(default_cache_path(workdir)), settings=settings, api_key=api_key)


def _local_scorer(cfg: PipelineConfig, workdir: str | Path) -> LocalLLMScorer:
    """The scoring LLM run locally (loaded once per process: with self-curation, the generator)."""
    s = cfg.scoring
    ref, revision = scoring_llm(cfg)
    model, tokenizer = cached_generator(ref, revision, s.dtype, s.device)
    name = f"{ref}@{revision}" if revision else ref
    lm = LocalLM(model, tokenizer, name=name, cache=ResponseCache(default_cache_path(workdir)), batch_size=s.batch_size,
                 source=model_provenance(ref))
    return LocalLLMScorer(lm, mode=s.mode, prompt_variant=SCORING_PROMPT_CHOICES[s.prompt],
                          min_score_mass=s.min_score_mass)


def build_scorer(cfg: PipelineConfig, workdir: str | Path, api_key: str | None = None):
    """The stage-2 scorer the config names; its caches live under ``workdir``.

    ``api_key`` (openai scorer) overrides the environment variable ``scoring.api_key_env``; it is
    handed to the client only and never stored or logged.
    """
    s = cfg.scoring
    if s.scorer == "guide":
        ref = guide_ref_for_scoring(cfg)
        return GuideScorer(cached_guide(ref, cfg.training.guide_pooling), source=ref,
                           cache_dir=Path(workdir) / "cache" / "guide")
    if s.scorer == "local":
        return _local_scorer(cfg, workdir)
    if s.scorer == "openai":
        ref, _ = scoring_llm(cfg)
        shard = s.shard_size if s.batch_api else None
        return openai_scorer(cfg, build_openai_backend(cfg, workdir, ref, s.base_url, api_key, shard))
    raise ValueError(f"unknown scorer {s.scorer!r}")


def openai_scorer(cfg: PipelineConfig, backend) -> OpenAIScorer:
    """The API scorer the config names, over ``backend`` (``estimate`` passes one that only
    collects the requests, so its cache keys are the scorer's own)."""
    return OpenAIScorer(backend, APIScoringSettings(mode=cfg.scoring.mode,
                                                    prompt_variant=SCORING_PROMPT_CHOICES[cfg.scoring.prompt],
                                                    context_tokens=cfg.scoring.context_tokens))
