"""The config a flow run uses: its ``config`` parameter, over its deployment's config, under its ``overrides``.

Prefect merges a run's parameters over the deployment's at the top level only: a run started with
``--param config='{"input": {"limit": 12}}'`` gets that dict as its whole ``config``, which would
validate to the library defaults (bert-base-uncased, no LLM) or fail for naming no input. The
flow therefore deep-merges the run's ``config`` over the deployment's own (the preset it was
registered with), so a partial config changes only what it names; a full config (what ``multicsr
run`` passes) names every field and is used as it is. Merging rather than refusing keeps what the
user evidently meant and the deployment's preset in charge of everything else, and it is what
``--set`` already means. ``overrides`` (``section.key=value``, the CLI's ``--set``) are applied last.

The result is validated before any stage runs (a bad key or value, or no input, fails the run at
once with one line naming it), and the changes against the deployment's config are logged.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import ValidationError

from multicsr_core.config import PipelineConfig, config_diff, deep_merge, expand_path, parse_override, resolve_config
from multicsr_core.errors import InputError
from multicsr.orchestration.progress import run_logger


def input_source(cfg: PipelineConfig) -> tuple[Path, str]:
    """The input file the config names and its kind (premises|triplets); naming none is a user error."""
    if cfg.input.triplets:
        return expand_path(cfg.input.triplets), "triplets"
    if cfg.input.premises:
        return expand_path(cfg.input.premises), "premises"
    raise InputError("the config names no input", hint="set input.premises or input.triplets (a deployment run: "
                                                       "overrides=['input.triplets=FILE'])")


def deployment_config() -> tuple[str | None, dict]:
    """The name and ``config`` parameter of the deployment this flow run belongs to; ``(None, {})``
    for a run of no deployment (``multicsr run``, a flow called from Python)."""
    from prefect.runtime import deployment

    if deployment.id is None:
        return None, {}
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        stored = client.read_deployment(deployment.id)
    return stored.name, dict(stored.parameters.get("config") or {})


def run_config(config: dict, overrides: list[str] | None = None) -> PipelineConfig:
    """Deployment config <- ``config`` <- ``overrides``, validated, with an input named."""
    name, base = deployment_config()
    source = f"deployment {name}: its config + the run's config" if name else "the flow's config parameter"
    cfg = resolve_config(deep_merge(base, config or {}), [parse_override(s) for s in overrides or []], source)
    input_source(cfg)  # no input: fail now, not at the first stage
    try:
        changed = config_diff(PipelineConfig.model_validate(base), cfg) if name else []
    except ValidationError:  # a deployment registered under an older schema: the run's config is what counts
        changed = []
    if changed:
        run_logger().info("config of this run, changed against deployment %s: %s", name,
                          "; ".join(f"{key}: {old!r} -> {new!r}" for key, old, new in changed))
    if overrides:
        run_logger().info("overrides: %s", " ".join(overrides))
    return cfg
