"""Generate: stage 1 over the premises in shards; each shard a cached task writing a Parquet shard,
then materialization concatenates the shards into one generated corpus."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pyarrow.parquet as pq
from prefect import get_run_logger, task

from multicsr_core.config import PipelineConfig
from multicsr_core.io.corpus import concat_corpus, make_provenance, read_corpus, write_parquet_atomic
from multicsr_core.pipeline.results import GeneratedCorpus, GeneratedShard, LoadedInput, sum_rejects
from multicsr.orchestration.caching import (STAGE_TASK, Produced, content_hash, run_cached, stage_cache_policy,
                                            task_runs, workdir_relative)
from multicsr.orchestration.progress import gather_with_progress, stage_progress
from multicsr.orchestration.secrets import resolve_api_key
from multicsr.tasks.score import api_client_settings


# the premises travel inline; the shard runs with a config built from its keyed sections alone
@task(name="generate_shard", cache_policy=stage_cache_policy(), **STAGE_TASK)
def generate_shard_task(workdir: str, output_path: str, premises: list[str], source_rows: list[int],
                        fingerprint: dict, generation_config: dict, scoring_client: dict) -> GeneratedShard:
    # imported when the task runs: the stage loads torch, and importing the flow (every run, every worker) stays quick
    from multicsr_core.pipeline.generate import generate_shard, generation_identity

    cfg = PipelineConfig.model_validate({"generation": generation_config, "scoring": scoring_client})
    with stage_progress(f"generate {len(premises)} premises", "premises") as progress:
        table, rejects = generate_shard(cfg, premises, source_rows, progress, workdir=workdir,
                                       api_key=resolve_api_key(cfg, "generation"))
    prov = make_provenance("generate", generation=fingerprint, generation_rejects=rejects)
    write_parquet_atomic(concat_corpus([table], prov), output_path)
    get_run_logger().info("shard of %d premises: %s", len(premises), rejects)
    return GeneratedShard(workdir_relative(output_path, workdir), table.num_rows, rejects=rejects)


@task(name="materialize_generated", cache_policy=stage_cache_policy("shard_paths"), **STAGE_TASK)
def materialize_task(workdir: str, output_path: str, shard_paths: list[str]) -> GeneratedCorpus:
    table = concat_corpus([read_corpus(p) for p in shard_paths],
                          make_provenance("materialize_generated", shards=[content_hash(p) for p in shard_paths]))
    write_parquet_atomic(table, output_path)
    return GeneratedCorpus(workdir_relative(output_path, workdir), table.num_rows)


def generate(premises: Produced[LoadedInput], cfg: PipelineConfig, workdir: str | Path) -> Produced[GeneratedCorpus]:
    """Run stage 1 shard by shard (``generation.shard_size`` premises each), then concatenate.

    A shard's key is the generation fingerprint (model, revision, omega, decoding, prompts) and
    its premises, so a rerun, a crash later in the DAG, or new premises appended to the input
    never regenerate a finished shard.
    """
    # imported when it runs (see above)
    from multicsr_core.pipeline.generate import generation_identity

    table = pq.read_table(premises.result.path)
    texts, rows = table.column("premise").to_pylist(), table.column("source_row").to_pylist()
    fingerprint = generation_identity(cfg)
    size = cfg.generation.shard_size
    starts = range(0, len(texts), size)
    futures = []
    for number, start in enumerate(starts, start=1):
        futures.append(run_cached(generate_shard_task, workdir, submit=True, run_name=f"generate-shard-{number}-of-"
                                  f"{len(starts)}", after=task_runs(premises), premises=texts[start:start + size],
                                  source_rows=rows[start:start + size], fingerprint=fingerprint,
                                  generation_config=cfg.generation.model_dump(mode="json"),
                                  # client settings matter only through an API (and must not re-key local shards)
                                  scoring_client=api_client_settings(cfg) if cfg.generation.backend == "openai" else {}))
    shards = gather_with_progress(futures, "generate shards", workdir=workdir)
    result = run_cached(materialize_task, workdir, run_name="materialize-generated", after=futures,
                        shard_paths=[s.path for s in shards])
    # stage 1's reject counts head the curation funnel
    return Produced(dataclasses.replace(result.result, rejects=sum_rejects(shards)), result.task_runs)
