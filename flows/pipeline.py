"""The MultiCSR pipeline as one Prefect flow: it only composes the stage tasks.

    load -> generate -> score -> curate -> train -> evaluate

Every stage is cached by content under the workdir, so the same run again recomputes nothing,
a changed training setting reruns only train and evaluate, and a crashed run resumes from the
last finished stage (and, inside stages, from the last finished batch).
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow
from prefect.task_runners import ThreadPoolTaskRunner

from multicsr_core.config import PipelineConfig
from multicsr.tasks.curate import curate
from multicsr.tasks.evaluate import evaluate, publish_comparison
from multicsr.tasks.generate import generate
from multicsr.tasks.load import load_input
from multicsr.tasks.score import check_scoring_failures, score
from multicsr.tasks.summary import RunSummary
from multicsr.tasks.train import train


# Shards of generation and scoring are submitted to the task runner. By default one at a time
# (one model per process; a CPU or GPU gains nothing from threads fighting over it); the CLI and
# deployments swap in a DaskTaskRunner to spread shards over workers (one per GPU).
@flow(name="multicsr-pipeline", task_runner=ThreadPoolTaskRunner(max_workers=1))
def multicsr_pipeline(config: dict, workdir: str) -> dict:
    """Build a curated contrastive corpus with an LLM, train a sentence encoder on it, evaluate it."""
    cfg = PipelineConfig.model_validate(config)
    Path(workdir).mkdir(parents=True, exist_ok=True)
    summary = RunSummary(workdir)

    with summary.stage("load"):
        data = load_input(cfg, workdir)
    if data["kind"] == "premises":
        with summary.stage("generate"):
            data = generate(data, cfg, workdir)
    with summary.stage("score"):
        scored = score(data, cfg, workdir)
    check_scoring_failures(scored, cfg)
    with summary.stage("curate"):
        corpus = curate(scored, cfg, workdir, swap_mode="corpus" if data["kind"] == "triplets" else "generation")

    outputs = {"corpus": corpus["path"]}
    if cfg.training.enabled:
        with summary.stage("train"):
            model = train(corpus, cfg, workdir)
        outputs["model"] = model["path"]
        if cfg.evaluation.enabled:
            with summary.stage("evaluate"):
                rows = {}
                if cfg.evaluation.evaluate_baseline:
                    baseline = evaluate(cfg.training.base_model, "base:" + cfg.training.base_model, cfg, workdir,
                                        label="baseline", publish_as="baseline_results.json")
                    rows[f"{cfg.training.base_model} (before)"] = baseline["results"]
                    outputs["baseline_results"] = baseline["published"]
                trained = evaluate(model["path"], model["key"], cfg, workdir, label="trained",
                                   publish_as="results.json")
                rows[f"{cfg.name} (after)"] = trained["results"]
                outputs["results"] = trained["published"]
                outputs["comparison"] = publish_comparison(rows, workdir)
    outputs["summary"] = summary.publish(corpus, cfg)
    return outputs
