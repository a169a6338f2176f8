"""Curate: the keep rule over the scored shards -> ``corpus.parquet`` + the curation report."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from multicsr_core.config import CurationConfig, PipelineConfig
from multicsr_core.curation_report import inline_figures
from multicsr_core.pipeline.curate import curate_shards, publish_curated_stage
from multicsr_core.pipeline.results import CuratedCorpus, ScoredShard
from multicsr.orchestration.caching import (STAGE_TASK, Produced, content_hash, run_cached, stage_cache_policy,
                                            task_runs, workdir_relative)


@task(name="curate", cache_policy=stage_cache_policy("shard_paths"), **STAGE_TASK)
def curate_task(workdir: str, output_path: str, shard_paths: list[str], curation_config: dict,
                swap_mode: str) -> CuratedCorpus:
    curated = curate_shards(shard_paths, [content_hash(p) for p in shard_paths],
                            CurationConfig.model_validate(curation_config), swap_mode, output_path)
    get_run_logger().info("curation funnel: %s", curated.funnel)
    return dataclasses.replace(curated, path=workdir_relative(output_path, workdir))


def curate(scored_shards: list[Produced[ScoredShard]], cfg: PipelineConfig, workdir: str | Path, swap_mode: str,
           publish_dir: str | Path | None = None, generation_rejects: dict | None = None) -> Produced[CuratedCorpus]:
    """Curate, then publish ``corpus.parquet`` and ``reports/`` into ``publish_dir`` (the run's
    staging folder, see ``orchestration/publish.py``; default the workdir) and the UI artifacts.

    ``generation_rejects`` (stage 1's reject counts) put the premises and the rows cleaning
    rejected at the head of the published funnel."""
    result = run_cached(curate_task, workdir, run_name="curate", after=task_runs(*scored_shards),
                        shard_paths=[s.result.path for s in scored_shards],
                        curation_config=cfg.curation.model_dump(mode="json"), swap_mode=swap_mode)
    # Publishing is not cached: it stamps the whole run's config (and its hash) on the copy, while
    # the cached stage file records only what determined it.
    publish_dir = Path(publish_dir if publish_dir is not None else workdir)
    published = publish_dir / "corpus.parquet"
    stage = result.result
    report = publish_curated_stage(stage.path, cfg, publish_dir, generation_rejects)
    create_table_artifact([{"stage": k, "triplets": v} for k, v in report["funnel"].items()], key="curation-funnel",
                          description="Curation funnel: generated -> scored -> kept, rejected by reason")
    # the UI cannot follow the report's relative image links: the figures (funnel, histograms with
    # alpha/beta and kept/rejected, scatter) go into the artifact itself as data: URIs
    create_markdown_artifact(inline_figures(report["markdown"], publish_dir / "reports"), key="curation-report",
                             description="Curation report")
    return Produced(dataclasses.replace(stage, path=str(published), stage_path=stage.path, report=report["files"]),
                    result.task_runs)
