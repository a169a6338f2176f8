"""What the config implies beyond its own fields, stated once: which LLM scores (the generator
unless ``scoring.llm`` names another: the paper's self-curation), which model the guide scorer
uses, which loss training runs, and whether a prompt set names a file. The pipeline, preflight,
the cards and the tasks' cache keys all read these, so none restates them.

Light on purpose (the config only): preflight and the cards import it.
"""

from __future__ import annotations

from pathlib import Path

from multicsr_core.config import PipelineConfig

PROMPT_FILE_SUFFIXES = (".yaml", ".yml", ".json")


def is_prompt_file(prompt_set: str) -> bool:
    """A prompt set given as a file (``.yaml``, ``.yml`` or ``.json``), not a built-in name."""
    return Path(prompt_set).suffix.lower() in PROMPT_FILE_SUFFIXES


def scoring_llm_ref(cfg: PipelineConfig) -> tuple[str | None, str | None, str]:
    """``(model, revision, config key)`` of the scoring LLM: ``scoring.llm``, else the generation
    LLM (self-curation); the key names where it was set (None, None, "scoring.llm" when neither is)."""
    if cfg.scoring.llm:
        return cfg.scoring.llm, cfg.scoring.revision, "scoring.llm"
    if cfg.generation.llm:
        return cfg.generation.llm, cfg.generation.revision, "generation.llm"
    return None, None, "scoring.llm"


def scoring_llm(cfg: PipelineConfig) -> tuple[str, str | None]:
    """The scoring LLM and its revision (:func:`scoring_llm_ref`); an error when there is none."""
    ref, revision, _ = scoring_llm_ref(cfg)
    if ref is None:
        raise ValueError("scoring.scorer needs an LLM: set scoring.llm (or generation.llm for self-curation)")
    return ref, revision


def guide_ref_for_scoring(cfg: PipelineConfig) -> str:
    """The guide scorer uses ``scoring.llm`` when set, else the training guide model."""
    return cfg.scoring.llm or cfg.training.guide_model


def effective_loss(cfg: PipelineConfig) -> str:
    """``training.mask = false`` (the "without stage 3" ablation) trains the paper loss without its mask."""
    t = cfg.training
    return "simcse" if (not t.mask and t.loss == "paper") else t.loss
