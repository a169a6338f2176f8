"""Publishing a run's outputs together, at the end of a successful run.

The stage outputs live in the content-keyed cache (``<workdir>/stages``); what a user reads sits
at fixed names in the workdir (:data:`PUBLISHED`). During a run every publisher writes into a
staging folder, ``<workdir>/.multicsr/staging/<run>``; only when the whole flow has succeeded does
:meth:`Publication.commit` move each staged output into place with a ``rename`` (atomic per
name) and write ``run_manifest.json``, naming the config hash of the run and every output. A run
that fails before that leaves the published outputs exactly as they were (the staging folder is
removed), so ``corpus.parquet``, ``model``, the results and the reports always come from one run.

The manifest is written twice: ``"state": "publishing"`` before the first rename and
``"state": "complete"`` after the last, so a process killed in the middle of the renames (a few
milliseconds) leaves a manifest that says so instead of a silently mixed workdir. Outputs of the
previous run that this run does not produce (``results.json`` after a run with training off) are
removed: the workdir shows one run, not a mixture.

Files outside the staging folder that belong to the run's outputs (the model card inside the
content-keyed trained folder that ``model`` links to) are handed to :meth:`Publication.write_at_commit`
and written, atomically each, between the renames and the ``"complete"`` manifest.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from pathlib import Path

from prefect.artifacts import create_markdown_artifact

from multicsr_core.config import PipelineConfig
from multicsr_core.io.atomic import write_text_atomic
from multicsr_core.pipeline.results import CuratedCorpus, EvaluatedModel, TrainedModel

# The names a run publishes in its workdir, in the order they are swapped in.
PUBLISHED = ("corpus.parquet", "reports", "model", "baseline_results.json", "results.json", "run_summary.json")
MANIFEST = "run_manifest.json"


def staging_root(workdir: str | Path) -> Path:
    return Path(workdir) / ".multicsr" / "staging"


def _write_json_atomic(path: Path, payload: dict) -> None:
    write_text_atomic(path, json.dumps(payload, indent=2) + "\n", fsync=False)


def read_manifest(workdir: str | Path) -> dict:
    path = Path(workdir) / MANIFEST
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


class Publication:
    """One run's outputs, staged until the run succeeds (see module docstring)."""

    def __init__(self, workdir: str | Path, cfg: PipelineConfig):
        self.workdir = Path(workdir)
        self.config_hash = cfg.config_hash()
        self.run_id = f"{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{uuid.uuid4().hex[:8]}"
        # leftovers of runs that died before publishing (the workdir lock keeps other runs out)
        shutil.rmtree(staging_root(self.workdir), ignore_errors=True)
        self.staging = staging_root(self.workdir) / self.run_id
        self.staging.mkdir(parents=True)
        self.committed = False
        self.deferred: dict[Path, str] = {}

    def path(self, name: str) -> Path:
        """Where a publisher writes ``name`` now (it reaches ``<workdir>/name`` at commit)."""
        return self.staging / name

    def final(self, name: str) -> Path:
        return self.workdir / name

    def write_at_commit(self, files: dict[Path, str]) -> None:
        """Write ``{path: text}`` at commit, not now (see module docstring)."""
        self.deferred.update({Path(path): text for path, text in files.items()})

    def commit(self) -> dict[str, str]:
        """Swap every staged output in; returns {published name: final path}."""
        model = self.final("model")
        if model.is_dir() and not model.is_symlink():
            raise FileExistsError(f"{model} is a real folder, not the pipeline's link to the trained model; move it away")
        staged = [name for name in PUBLISHED if os.path.lexists(self.staging / name)]
        manifest = {"state": "publishing", "run_id": self.run_id, "config_hash": self.config_hash,
                    "outputs": staged, "published_at": None}
        _write_json_atomic(self.final(MANIFEST), manifest)
        trash = self.staging.parent / f"{self.run_id}.old"
        trash.mkdir()
        for name in PUBLISHED:
            source, target = self.staging / name, self.final(name)
            if os.path.lexists(source):
                if target.is_dir() and not target.is_symlink():
                    os.replace(target, trash / name)  # rename cannot replace a non-empty folder
                os.replace(source, target)
            elif os.path.lexists(target):
                os.replace(target, trash / name)  # the previous run's, not made by this one
        self._write_deferred()
        manifest.update(state="complete", published_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
        _write_json_atomic(self.final(MANIFEST), manifest)
        self.committed = True
        shutil.rmtree(trash, ignore_errors=True)
        shutil.rmtree(self.staging, ignore_errors=True)
        return {name: str(self.final(name)) for name in staged} | {MANIFEST: str(self.final(MANIFEST))}

    def _write_deferred(self) -> None:
        from multicsr_core.cards import fix_file_modes

        for path, text in self.deferred.items():
            write_text_atomic(path, text)
        for folder in {path.parent for path in self.deferred}:
            fix_file_modes(folder)  # as write_model_card leaves them: 0666 & ~umask

    def __enter__(self) -> "Publication":
        return self

    def __exit__(self, *exc) -> None:
        self.discard()

    def discard(self) -> None:
        """Drop what was staged (a failed run): the published outputs stay as they were."""
        if not self.committed:
            shutil.rmtree(self.staging, ignore_errors=True)


def publish_comparison(rows: dict[str, dict], publish_dir: str | Path) -> str:
    """The before/after Markdown table, as a file (in the run's staging folder) and an artifact."""
    from multicsr_core.evaluation.report import markdown_comparison

    markdown = markdown_comparison(rows)
    (Path(publish_dir) / "reports").mkdir(parents=True, exist_ok=True)
    (Path(publish_dir) / "reports" / "sts_comparison.md").write_text(markdown, encoding="utf-8")
    create_markdown_artifact(markdown, key="sts-comparison", description="STS before/after, paper layout")
    return markdown


def model_card(model: TrainedModel, trained: EvaluatedModel, baseline: EvaluatedModel | None, corpus: CuratedCorpus,
               workdir: str | Path) -> dict[Path, str]:
    """The trained folder's model card with the final evaluation (``README.md``, and the figures in
    its ``multicsr_evaluation.json``): ``{path: text}``, written when the run publishes. The
    folder is the content-keyed training stage that ``<workdir>/model`` links to, so writing it
    now would change the published model's card even if this run failed later."""
    from multicsr_core.cards import CardTarget, model_card_files
    from multicsr_core.pipeline.generate import generation_prompt_set

    def absolute(path: str) -> Path:
        return Path(path) if Path(path).is_absolute() else Path(workdir) / path

    folder = absolute(model.stage_path)
    files = model_card_files(folder, results=trained.results, baseline=baseline.results if baseline else None,
                             target=CardTarget(model_ref=str(Path(workdir) / "model")),
                             prompts_for=generation_prompt_set,
                             corpus=absolute(corpus.path) if absolute(corpus.path).is_file()
                             else absolute(corpus.stage_path))  # the staged copy carries stage 1's funnel
    return {folder / name: text for name, text in files.items()}
