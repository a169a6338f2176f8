"""The MultiCSR pipeline as one Prefect flow: it only composes the stage tasks.

    load -> generate -> score -> curate -> train -> evaluate

Each stage's tasks wait for the previous stage's task runs, so the UI draws this graph.
Every stage is cached by content under the workdir, so the same run again recomputes nothing,
a changed training setting reruns only train and evaluate, and a crashed run resumes from the
last finished stage (and, inside stages, from the last finished batch).

What a user reads (``corpus.parquet``, ``model``, the results, ``reports/``, ``run_summary.json``)
is staged during the run and published together at its end (``orchestration/publish.py``): a failed run
leaves the previous run's outputs as they were.

``overrides`` change single fields for one run (``["input.limit=12"]``, the CLI's ``--set``); a
deployment run's ``config`` is merged over the deployment's own (``orchestration/run_config.py``).
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow
from prefect.task_runners import ThreadPoolTaskRunner

from multicsr_core.config import PipelineConfig
from multicsr_core.pipeline.results import CuratedCorpus, TrainedModel
from multicsr.orchestration.caching import Produced
from multicsr.orchestration.library_logs import library_output_to_debug
from multicsr.orchestration.publish import MANIFEST, Publication, model_card, publish_comparison
from multicsr.orchestration.run_config import run_config
from multicsr.orchestration.summary import RunSummary
from multicsr.orchestration.termination import sigterm_deadline
from multicsr.tasks.curate import curate
from multicsr.tasks.evaluate import evaluate
from multicsr.tasks.generate import generate
from multicsr.tasks.load import load_input
from multicsr.tasks.score import check_scoring_failures, score
from multicsr.tasks.train import train


def evaluate_models(model: Produced[TrainedModel], corpus: Produced[CuratedCorpus], cfg: PipelineConfig,
                    workdir: str, publication: Publication) -> str:
    """Evaluate the base model (``evaluation.evaluate_baseline``) and the trained one, stage their
    results, the model card (written at commit) and the before/after table; returns the table."""
    rows, baseline = {}, None
    if cfg.evaluation.evaluate_baseline:
        baseline = evaluate(cfg.training.base_model, "base:" + cfg.training.base_model, cfg, workdir, label="baseline",
                            publish_as="baseline_results.json", publish_dir=publication.staging, after=model)
        rows[f"{cfg.training.base_model} (before)"] = baseline.results
    trained = evaluate(model.result.stage_path, model.result.key, cfg, workdir, label="trained",
                       publish_as="results.json", publish_dir=publication.staging, after=model)
    rows[f"{cfg.name} (after)"] = trained.results
    publication.write_at_commit(model_card(model.result, trained, baseline, corpus.result, workdir))
    return publish_comparison(rows, publication.staging)


# Shards of generation and scoring are submitted to the task runner. By default one at a time
# (one model per process; a CPU or GPU gains nothing from threads fighting over it); the CLI and
# deployments swap in a DaskTaskRunner to spread shards over workers (one per GPU).
@flow(name="multicsr-pipeline", task_runner=ThreadPoolTaskRunner(max_workers=1))
def multicsr_pipeline(config: dict, workdir: str, overrides: list[str] | None = None) -> dict:
    """Build a curated contrastive corpus with an LLM, train a sentence encoder on it, evaluate it.

    Args:
        config: the pipeline config (a deployment run's is merged over the deployment's own)
        workdir: the folder holding the run's caches and outputs
        overrides: single fields for this run, ``section.key=value`` (``input.limit=12``)
    """
    cfg = run_config(config, overrides)  # validated before any stage runs
    Path(workdir).mkdir(parents=True, exist_ok=True)
    summary = RunSummary(workdir)
    publication = Publication(workdir, cfg)
    # a SIGTERM (docker stop, a cancel) ends the run in seconds, not after the running shard;
    # leaving the block without commit() drops what was staged: the published outputs stay as they were;
    # the libraries' warnings and bars go to the run's debug log meanwhile
    with sigterm_deadline(seconds=5), publication, library_output_to_debug():
        with summary.stage("load"):
            data = load_input(cfg, workdir)
        if data.result.kind == "premises":
            with summary.stage("generate"):
                data = generate(data, cfg, workdir)
        with summary.stage("score"):
            scored = score(data, cfg, workdir)
        check_scoring_failures(scored, cfg)
        with summary.stage("curate"):
            corpus = curate(scored, cfg, workdir, swap_mode="corpus" if data.result.kind == "triplets" else "generation",
                            publish_dir=publication.staging, generation_rejects=getattr(data.result, "rejects", None))
        comparison = None
        if cfg.training.enabled:
            with summary.stage("train"):
                model = train(corpus, cfg, workdir, publish_dir=publication.staging)
            if cfg.evaluation.enabled:
                with summary.stage("evaluate"):
                    comparison = evaluate_models(model, corpus, cfg, workdir, publication)
        summary.publish(corpus.result, cfg, publish_dir=publication.staging)
        published = publication.commit()  # every output changes here, together, or none did
    names = {"corpus.parquet": "corpus", "model": "model", "results.json": "results",
             "baseline_results.json": "baseline_results", "run_summary.json": "summary", MANIFEST: "manifest"}
    outputs = {names[name]: path for name, path in published.items() if name in names}
    outputs["config_hash"] = cfg.config_hash()
    if comparison is not None:
        outputs["comparison"] = comparison
    return outputs
