"""Evaluate: SentEval STS (and transfer) for a model folder or hub id -> results JSON + table artifact."""

from __future__ import annotations

import json
from pathlib import Path

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from multicsr_core.config import PipelineConfig, expand_path
from multicsr_core.evaluation.runner import evaluate_model, resolve_senteval_dir, write_results
from multicsr.orchestration.caching import STAGE_TASK, run_cached, stage_cache_policy, task_runs, workdir_relative
from multicsr.orchestration.progress import stage_progress


# the SentEval folder enters by content; the model by its key (the trained folder's content key,
# or ``base:<hub id>``): the folder itself gains its model card when the run publishes
@task(name="evaluate", cache_policy=stage_cache_policy("data_dir", not_keyed=("source_path",)), **STAGE_TASK)
def evaluate_task(workdir: str, output_path: str, source_path: str, model_key: str, data_dir: str,
                  evaluation: dict, label: str) -> dict:
    # about a minute per model on a CPU: progress in sentences encoded, like the other stages
    with stage_progress(f"evaluate {label}", "sentences") as progress:
        results = evaluate_model(source_path, data_dir, tasks=evaluation["tasks"], batch_size=evaluation["batch_size"],
                                 sts_tasks=evaluation["sts_tasks"], progress=progress)
    write_results(results, output_path, provenance={"model": source_path, "model_key": model_key, "label": label})
    get_run_logger().info("%s: %s", label, json.dumps(results, default=str))
    return {"path": workdir_relative(output_path, workdir), "results": results}


def evaluate(model_path: str, model_key: str, cfg: PipelineConfig, workdir: str | Path, label: str,
             publish_as: str, publish_dir: str | Path | None = None, after: dict | None = None) -> dict:
    """Evaluate, then publish ``<publish_dir>/<publish_as>`` (the ``multicsr evaluate`` JSON shape, plus the
    run's config under ``_provenance``; ``publish_dir`` is the run's staging folder, default the
    workdir) and a Prefect table artifact. The task run is ``evaluate-<label>`` and waits for the
    stage result ``after`` (the training)."""
    e = cfg.evaluation
    result = run_cached(evaluate_task, workdir, output_suffix=".json", run_name=f"evaluate-{label}",
                        after=task_runs(after), source_path=model_path, model_key=model_key,
                        data_dir=str(resolve_senteval_dir(expand_path(e.data_dir))),
                        evaluation={"tasks": list(e.tasks), "sts_tasks": e.sts_tasks, "batch_size": e.batch_size},
                        label=label)
    published = Path(publish_dir if publish_dir is not None else workdir) / publish_as
    write_results(result["results"], published, provenance={"model": model_path, "model_key": model_key, "label": label,
                                                             "config": cfg.to_dict(), "config_hash": cfg.config_hash()})
    sts = {k: v for k, v in result["results"].items() if isinstance(v, float)}
    create_table_artifact([{"task": k, "spearman_x100": round(v, 2)} for k, v in sts.items()],
                          key=f"sts-{label}".lower().replace("_", "-"), description=f"SentEval STS Spearman x 100: {label}")
    return {**result, "published": str(Path(workdir) / publish_as)}


def publish_comparison(rows: dict[str, dict], publish_dir: str | Path) -> str:
    """The before/after Markdown table, as a file (in the run's staging folder) and an artifact."""
    from multicsr_core.evaluation.report import markdown_comparison

    markdown = markdown_comparison(rows)
    (Path(publish_dir) / "reports").mkdir(parents=True, exist_ok=True)
    (Path(publish_dir) / "reports" / "sts_comparison.md").write_text(markdown, encoding="utf-8")
    create_markdown_artifact(markdown, key="sts-comparison", description="STS before/after, paper layout")
    return markdown


def model_card(model: dict, trained: dict, baseline: dict | None, corpus: dict, workdir: str | Path) -> dict[Path, str]:
    """The trained folder's model card with the final evaluation (``README.md``, and the figures in
    its ``multicsr_evaluation.json``): ``{path: text}``, written when the run publishes. The
    folder is the content-keyed training stage that ``<workdir>/model`` links to, so writing it
    now would change the published model's card even if this run failed later."""
    from multicsr_core.cards import model_card_files

    def absolute(path: str) -> Path:
        return Path(path) if Path(path).is_absolute() else Path(workdir) / path

    folder = absolute(model["stage_path"])
    files = model_card_files(folder, results=trained["results"], baseline=baseline["results"] if baseline else None,
                             model_ref=str(Path(workdir) / "model"),
                             corpus=absolute(corpus["path"]) if absolute(corpus["path"]).is_file()
                             else absolute(corpus["stage_path"]))  # the staged copy carries stage 1's funnel
    return {folder / name: text for name, text in files.items()}
