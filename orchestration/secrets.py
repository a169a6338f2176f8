"""API keys from Prefect Secret blocks, for the stages that call an OpenAI-compatible API."""

from __future__ import annotations

from multicsr_core.config import PipelineConfig


def resolve_api_key(cfg: PipelineConfig, stage: str = "scoring") -> str | None:
    """The API key from the Prefect Secret block the config names (else the client reads the
    environment variable). Only ever handed to the client: never a parameter, log or file."""
    uses_api = cfg.scoring.scorer == "openai" if stage == "scoring" else cfg.generation.backend == "openai"
    if not uses_api or not cfg.scoring.api_key_secret_block:
        return None
    from prefect.blocks.system import Secret

    return Secret.load(cfg.scoring.api_key_secret_block).get()
