"""The pipeline's deployments: one per LLM/backbone combination, each built from a preset.

A deployment's parameters are the two arguments of ``multicsr_pipeline``: ``config`` (the
fields the preset file and the overrides set, so the paper's settings stay written out; the flow
validates it and fills in the defaults) and ``workdir`` (one folder per deployment, which holds its
caches: a scheduled rebuild of the same deployment reuses every finished batch).

The premises-fed deployments carry a cron schedule for corpus rebuilds: premises appended to the
input file since the last run cost only their own generation batches, unchanged scoring pairs
are answered by the response cache, and training reruns only when the curated corpus changed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from multicsr_core.config import DATA_ROOT_ENV, PipelineConfig, load_config, parse_override

FLOW_NAME = "multicsr-pipeline"
ENTRYPOINT = "multicsr.flows.pipeline:multicsr_pipeline"
CPU_POOL = "multicsr-cpu"
GPU_POOL = "multicsr-gpu"
WORKDIR_ROOT_ENV = "MULTICSR_WORKDIR_ROOT"
MODEL_CACHE_ENV = "MULTICSR_MODEL_CACHE"  # multicsr_core.models.model_cache_root
# what a worker's flow run needs; every deployment carries them in its `env` job variable
WORKER_ENV_NAMES = (DATA_ROOT_ENV, WORKDIR_ROOT_ENV, MODEL_CACHE_ENV)


@dataclass(frozen=True)
class PipelineDeployment:
    """One deployment of the pipeline: a preset, the pool whose workers can run it, a schedule."""

    name: str
    preset: str
    llm: str
    backbone: str
    description: str
    gpu: bool = True
    cron: str | None = None  # corpus rebuilds; None = runs on demand only
    timezone: str = "UTC"
    tags: tuple[str, ...] = field(default=())

    @property
    def work_pool(self) -> str:
        return GPU_POOL if self.gpu else CPU_POOL

    @property
    def all_tags(self) -> list[str]:
        return ["multicsr", f"llm:{self.llm}", f"backbone:{self.backbone}", *self.tags]


DEPLOYMENTS: tuple[PipelineDeployment, ...] = (
    PipelineDeployment(
        name="flan-t5-xl-bert", preset="paper-flan-t5-xl-bert", llm="flan-t5-xl", backbone="bert-base",
        description="Paper Table 1: Flan-T5-XL generates and self-curates from NLI premises; BERT-base is trained.",
        cron="0 2 * * *"),
    PipelineDeployment(
        name="flan-t5-xl-roberta", preset="paper-flan-t5-xl-roberta", llm="flan-t5-xl", backbone="roberta-base",
        description="Paper Table 1: Flan-T5-XL generates and self-curates from NLI premises; RoBERTa-base is trained.",
        cron="0 4 * * *"),  # two hours after the BERT one: both need the GPU pool
    PipelineDeployment(
        name="chatgpt-roberta", preset="paper-chatgpt-roberta", llm="gpt-3.5-turbo", backbone="roberta-base",
        description="Paper 4.1: ChatGPT-written triplets enter at stage 2, ChatGPT scores them through the API "
                    "(key from OPENAI_API_KEY or a Secret block), RoBERTa-base is trained."),
    PipelineDeployment(
        name="demo-offline", preset="demo-offline", llm="smollm2-135m-instruct", backbone="all-MiniLM-L6-v2",
        gpu=False,
        description="Offline demo on CPU, the whole method: the bundled SmolLM2-135M-Instruct writes x+ and x- for "
                    "SNLI premises (contrastive decoding), the guide model scores them, all-MiniLM-L6-v2 is "
                    "fine-tuned with the Eq. 7 loss, STS before and after."),
    PipelineDeployment(
        name="demo-snli", preset="demo-snli", llm="none", backbone="all-MiniLM-L6-v2", gpu=False,
        description="SNLI-triplet demo on CPU (no LLM): SNLI triplets scored by the guide model, all-MiniLM-L6-v2 "
                    "fine-tuned with the Eq. 7 loss, STS before and after."),
)


def get_deployment(name: str) -> PipelineDeployment:
    for spec in DEPLOYMENTS:
        if spec.name == name:
            return spec
    raise KeyError(f"unknown deployment {name!r}; known: {', '.join(d.name for d in DEPLOYMENTS)}")


def default_workdir_root() -> Path:
    """``$MULTICSR_WORKDIR_ROOT``, else ``~/.cache/multicsr/runs``; absolute, because a process worker runs
    each flow in a temporary folder (a relative root would land there and vanish with it)."""
    root = os.environ.get(WORKDIR_ROOT_ENV) or Path.home() / ".cache" / "multicsr" / "runs"
    return Path(root).expanduser().resolve()


def worker_environment(workdir_root: str | Path | None = None) -> dict[str, str]:
    """The environment a worker's flow run needs, as absolute paths resolved on the registering machine.

    A process worker starts each flow run in a temporary folder, where the core's relative
    ``../shared/data`` fallback finds nothing: the deployments carry these in their ``env`` job
    variable instead (it overrides the worker's own environment). Each value comes from the core's own
    resolution (the variable if set, else its default), so each fact lives in one place.
    """
    from multicsr_core.config import default_data_root
    from multicsr_core.models import model_cache_root

    root = Path(workdir_root).expanduser().resolve() if workdir_root else default_workdir_root()
    return {DATA_ROOT_ENV: str(default_data_root().expanduser().resolve()), WORKDIR_ROOT_ENV: str(root),
            MODEL_CACHE_ENV: str(model_cache_root().resolve())}


def deployment_config(spec: PipelineDeployment, overrides: list[str] | None = None) -> PipelineConfig:
    return load_config(spec.preset, [parse_override(s) for s in overrides or []])


def deployment_parameters(spec: PipelineDeployment, workdir_root: str | Path, overrides: list[str] | None = None,
                          ) -> dict:
    """``{"config": <non-default fields>, "workdir": <root>/<name>}`` for ``multicsr_pipeline``.

    ``workdir_root`` is used as given (a ``{{ $VAR }}`` placeholder stays one for prefect.yaml).
    """
    cfg = deployment_config(spec, overrides)
    compact = cfg.model_dump(mode="json", exclude_unset=True)
    if PipelineConfig.model_validate(compact) != cfg:  # a validator that rewrites values would break this
        raise AssertionError(f"{spec.name}: the compact config does not round-trip")
    return {"config": compact, "workdir": f"{str(workdir_root).rstrip('/')}/{spec.name}"}
