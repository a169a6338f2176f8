"""Score: fill sim(x, x+) and sim(x, x-) for one shard of the corpus (stage 2a)."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
from prefect import get_run_logger, task

from multicsr_core.config import PipelineConfig
from multicsr_core.config_facts import guide_ref_for_scoring, scoring_llm_ref
from multicsr_core.errors import RetryableError
from multicsr_core.io.corpus import make_provenance, read_corpus, read_provenance, with_provenance, write_parquet_atomic
from multicsr_core.pipeline.results import ScoredShard
from multicsr.orchestration.caching import (STAGE_TASK, Produced, produced_by, run_cached, stage_cache_policy,
                                            task_runs, workdir_relative)
from multicsr.orchestration.progress import ShardFamily, gather_with_progress, stage_progress
from multicsr.orchestration.secrets import resolve_api_key


class ScoringFailures(RetryableError):  # a RuntimeError: rerunning retries the failed requests
    """Some requests failed (transport: HTTP errors, timeouts, the budget); the next run retries them.
    Replies that are not a score are no failure: they are final ``unparsable_score`` verdicts."""


# the corpus enters by content; the shard runs with a config built from its keyed sections alone
@task(name="score_shard", cache_policy=stage_cache_policy("source_path"), **STAGE_TASK)
def score_shard_task(workdir: str, output_path: str, source_path: str, row_start: int, row_end: int,
                     scorer_fingerprint: dict, config: dict) -> ScoredShard:
    # imported when the task runs: the stage loads torch, and importing the flow (every run, every worker) stays quick
    from multicsr_core.pipeline.components import build_scorer
    from multicsr_core.pipeline.score import score_shard

    cfg = PipelineConfig.model_validate(config)
    table = read_corpus(source_path).slice(row_start, row_end - row_start)
    scorer = build_scorer(cfg, workdir, api_key=resolve_api_key(cfg))
    with stage_progress(f"score rows {row_start}-{row_end}", "triplets") as progress:
        # a prompt the server refuses as over the context names its row of source_path
        scored, outcomes = score_shard(cfg, table, scorer, progress, path=source_path, row_offset=row_start)
    # failed: transport only (retried); unparsable, prompt_too_long: final
    prov = make_provenance("score", scorer=scorer_fingerprint, rows=[row_start, row_end], **outcomes)
    write_parquet_atomic(with_provenance(scored, prov), output_path)
    if outcomes["failed"]:
        get_run_logger().warning("%d pairs unscored in rows %d-%d (requests failed; the next run retries them); "
                                 "first errors: %s", outcomes["failed"], row_start, row_end, outcomes["first_errors"][:3])
    if outcomes["unparsable"]:
        get_run_logger().info("%d replies in rows %d-%d are not a score (rejected as unparsable_score)",
                              outcomes["unparsable"], row_start, row_end)
    if outcomes.get("prompt_too_long"):
        get_run_logger().warning("%d pairs in rows %d-%d have a prompt longer than the model's context (rejected as "
                                 "prompt_too_long, never run or sent)", outcomes["prompt_too_long"], row_start, row_end)
    return ScoredShard(workdir_relative(output_path, workdir), scored.num_rows, **outcomes)


def api_client_settings(cfg: PipelineConfig) -> dict:
    """The scoring section's client settings (limits, prices, key source, the model's context):
    API generation uses them too."""
    keep = ("api_key_env", "api_key_secret_block", "concurrency", "timeout_s", "max_retries", "requests_per_minute",
            "tokens_per_minute", "price_input_per_1m", "price_output_per_1m", "budget_usd", "batch_poll_interval_s",
            "batch_max_wait_s", "batch_price_factor", "batch_max_requests", "context_tokens")
    return {k: v for k, v in cfg.scoring.model_dump(mode="json").items() if k in keep}


def scorer_config(cfg: PipelineConfig) -> dict:
    """What a score shard's scorer reads, as its keyed ``config``: the scoring section with the
    scoring model resolved (``config_facts``: the generator under self-curation, the training
    guide for the guide scorer) and the guide's pooling. A training setting changes no shard."""
    scoring = cfg.scoring.model_dump(mode="json")
    if cfg.scoring.scorer == "guide":
        scoring["llm"] = guide_ref_for_scoring(cfg)
    else:
        scoring["llm"], scoring["revision"], _ = scoring_llm_ref(cfg)
    return {"scoring": scoring, "training": {"guide_pooling": cfg.training.guide_pooling}}


def _has_failures(path: Path) -> bool:
    """A shard with failed requests runs again (its answered pairs come from the response cache);
    unparsable verdicts are final and do not count."""
    return read_provenance(path).get("failed", 0) > 0


def score(corpus: Produced, cfg: PipelineConfig, workdir: str | Path) -> list[Produced[ScoredShard]]:
    """Score a corpus file in shards of ``scoring.shard_size`` rows, each shard cached by content.

    A shard holding failed pairs is not reused as is: the next run calls it again, and the
    item-level response cache answers every pair already scored without a new request. A shard
    that fails with an error no rerun fixes (a ``UserError``: a rejected key, an unknown model, a
    prompt the server refuses as over the context...) ends the stage at once: the shards not
    started yet never start (``gather_with_progress``), so the error is met, and logged, once.
    """
    # imported when it runs (see above)
    from multicsr_core.pipeline.components import build_scorer

    fingerprint = build_scorer(cfg, workdir, api_key=resolve_api_key(cfg)).fingerprint()
    rows = pq.read_metadata(corpus.result.path).num_rows
    shards = ShardFamily()  # a shard failing for good (a UserError) cancels the ones not started
    starts = range(0, rows, cfg.scoring.shard_size)
    for number, start in enumerate(starts, start=1):
        if shards.stopped:
            break
        end = min(start + cfg.scoring.shard_size, rows)
        shards.add(run_cached(score_shard_task, workdir, refresh_if=_has_failures, submit=True,
                              run_name=f"score-shard-{number}-of-{len(starts)}", after=task_runs(corpus),
                              source_path=corpus.result.path, row_start=start, row_end=end,
                              scorer_fingerprint=fingerprint, config=scorer_config(cfg)))
    results = gather_with_progress(shards.futures, "score shards", workdir=workdir)
    return [produced_by(result, future) for result, future in zip(results, shards.futures)]


def check_scoring_failures(shards: list[Produced[ScoredShard]], cfg: PipelineConfig) -> None:
    """Fail the run (after everything scored so far is saved) while more pairs than the allowed
    fraction are unscored because their requests failed; the next run retries exactly those.
    Unparsable replies never fail the run: curation rejects them (``unparsable_score``)."""
    failed = sum(s.result.failed for s in shards)
    total = 2 * sum(s.result.rows for s in shards)
    if failed and failed > cfg.scoring.allowed_failure_fraction * total:
        first = [e for s in shards for e in s.result.first_errors][:5]
        raise ScoringFailures(f"{failed} of {total} pairs are still unscored after retries (allowed fraction "
                              f"{cfg.scoring.allowed_failure_fraction}); first errors: {first}. Everything scored is "
                              "saved: run the same command again to retry only the failed pairs.")
