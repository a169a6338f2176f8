"""How a generator decodes: one frozen object, built once where the config is mapped and passed whole
down to the decoding loop.

Its fields are what decoding takes; ``fingerprint()`` is those fields (``dataclasses.asdict``), less the
ones a field's metadata marks as not changing the output, so a field added here is part of stage 1's
cache key unless it says why not. Each value is checked once, where the settings are built: ``omega``
by ``ContrastiveLogitsProcessor``'s constructor (as transformers' ``ClassifierFreeGuidanceLogitsProcessor``
checks its guidance scale), the lengths and sampling parameters here.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Sequence

import torch
from transformers import (
    LogitsProcessorList,
    MinNewTokensLengthLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from .processors import ContrastiveLogitsProcessor

__all__ = ["DecodingSettings", "build_logits_processors"]

#: Field metadata: the field does not change a premise's output, so it is not in ``fingerprint()``.
NOT_FINGERPRINTED = "not_fingerprinted"
#: Field metadata: the field acts only when sampling; under greedy decoding ``fingerprint()`` records None.
SAMPLING_ONLY = "sampling_only"


@dataclass(frozen=True)
class DecodingSettings:
    """Stage 1's decoding (paper 3.1): ``omega`` is w in ``l - w * l_hat`` (paper default 0.3; 0 = plain
    decoding, no opposite branch). Greedy unless ``do_sample``; then temperature / top_k (0 = off) /
    top_p (1 = off) apply to the contrasted scores, and ``seed`` with each sequence's key seeds its draws.
    ``stop_strings`` end a sequence at the first token holding one (its text is cut there).
    ``batch_size`` counts premises (``generate_contrastive``) or prompts (``generate_texts``)."""

    omega: float = 0.3
    max_new_tokens: int = 64
    min_new_tokens: int = 0
    do_sample: bool = False
    temperature: float = field(default=1.0, metadata={SAMPLING_ONLY: True})
    top_k: int = field(default=0, metadata={SAMPLING_ONLY: True})
    top_p: float = field(default=1.0, metadata={SAMPLING_ONLY: True})
    seed: int = 42  # stage 1 also draws the pool instructions with it
    use_chat_template: bool = True
    # stage 1 takes them from its prompt set, whose digest (prompt_set_sha256) records them
    stop_strings: tuple[str, ...] = field(default=(), metadata={NOT_FINGERPRINTED: True})
    # a sequence's output does not depend on its batch-mates (padding is masked, draws are per row)
    batch_size: int = field(default=16, metadata={NOT_FINGERPRINTED: True})

    def __post_init__(self) -> None:
        ContrastiveLogitsProcessor(self.omega)  # omega's one check is in the processor that applies it
        if not isinstance(self.max_new_tokens, int) or self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be an int >= 1, got {self.max_new_tokens!r}")
        if not 0 <= self.min_new_tokens <= self.max_new_tokens:
            raise ValueError(f"min_new_tokens must be in [0, max_new_tokens], got {self.min_new_tokens!r}")
        if self.do_sample:
            if not self.temperature > 0:
                raise ValueError(f"temperature must be > 0, got {self.temperature!r}")
            if self.top_k < 0:
                raise ValueError(f"top_k must be >= 0 (0 = off), got {self.top_k!r}")
            if not 0 < self.top_p <= 1:
                raise ValueError(f"top_p must be in (0, 1], got {self.top_p!r}")
        # one type per field, whatever the caller passed (0 or 0.0): the fingerprint's JSON depends on it
        for f in dataclasses.fields(self):
            kind = tuple if f.name == "stop_strings" else {"float": float, "int": int, "bool": bool}[f.type]
            object.__setattr__(self, f.name, kind(getattr(self, f.name)))

    def fingerprint(self) -> dict:
        """The fields that determine a premise's output, as a JSON-able dict (part of stage 1's cache key).
        The sampling-only fields are None under greedy decoding, so changing them keeps the cache."""
        fields = {f.name: f for f in dataclasses.fields(self)}
        return {name: None if fields[name].metadata.get(SAMPLING_ONLY) and not self.do_sample else value
                for name, value in dataclasses.asdict(self).items()
                if not fields[name].metadata.get(NOT_FINGERPRINTED)}


def build_logits_processors(
    settings: DecodingSettings, eos_token_ids: Sequence[int], device: str | torch.device = "cpu"
) -> LogitsProcessorList:
    """The processors applied after the contrast step, in ``generate``'s order, for scores on ``device``.

    ``input_ids`` given to the list must hold only the *new* tokens (prompt length 0), so
    ``MinNewTokensLengthLogitsProcessor`` counts generated tokens for both architectures.
    Warpers are added only when sampling, and only when they change something.
    """
    processors = LogitsProcessorList()
    if settings.min_new_tokens > 0:
        # its EOS ids live on ``device``: torch.isin needs both tensors on the scores' device
        processors.append(MinNewTokensLengthLogitsProcessor(0, settings.min_new_tokens, list(eos_token_ids),
                                                            device=str(device)))
    if settings.do_sample:
        if settings.temperature != 1.0:
            processors.append(TemperatureLogitsWarper(settings.temperature))
        if settings.top_k > 0:
            processors.append(TopKLogitsWarper(settings.top_k))
        if settings.top_p < 1.0:
            processors.append(TopPLogitsWarper(settings.top_p))
    return processors
