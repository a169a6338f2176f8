"""How long an input a sentence encoder reads: its training length vs its inference limit.

SimCSE trains at ``max_seq_length = 32`` tokens, but SentEval (SimCSE's fork) encodes with
``tokenizer(batch, padding=True)`` and no truncation, so at evaluation every sentence is read in
full, up to what the backbone's position embeddings allow. 718 of the 26,083 distinct sentences
of the seven STS test sets are longer than 32 tokens (all-MiniLM-L6-v2's tokenizer; the longest
has 93), so evaluating at the training length changes the figures (all-MiniLM-L6-v2, STS-B test:
82.03 untruncated, 81.80 at 32).

- :func:`model_length_limit`: the longest input the backbone can take (BERT 512; RoBERTa's 514
  positions minus its ``padding_idx + 1`` offset = 512), ``None`` if it has no absolute limit.
- :func:`encoding_length`: a context manager that sets a ``SentenceTransformer``'s
  ``max_seq_length`` for the duration of a block and restores it, so the trainer's 32-token
  model can be evaluated untruncated between steps.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator

__all__ = ["model_length_limit", "encoding_length", "untruncated_length"]


def _first_transformer(model: Any):
    try:
        first = model[0]
    except (TypeError, IndexError, KeyError):
        return None
    return first if hasattr(first, "auto_model") else None


def model_length_limit(model: Any) -> int | None:
    """Longest token sequence ``model`` (a ``SentenceTransformer``) can encode: its absolute positions.

    ``max_position_embeddings`` of the backbone config, less the position offset of RoBERTa-style
    embeddings (positions start at ``padding_idx + 1``). ``None`` when the backbone has no
    absolute limit (relative or rotary positions without a ``max_position_embeddings``).
    """
    import torch

    transformer = _first_transformer(model)
    if transformer is None:
        return None
    config = transformer.auto_model.config
    if hasattr(config, "get_text_config"):
        config = config.get_text_config()
    positions = getattr(config, "max_position_embeddings", None)
    if not isinstance(positions, int) or positions <= 0:
        return None
    offset = 0
    for module in transformer.auto_model.modules():
        padding_idx = getattr(module, "padding_idx", None)
        if isinstance(padding_idx, int) and isinstance(getattr(module, "position_embeddings", None), torch.nn.Embedding):
            offset = padding_idx + 1
            break
    return positions - offset


def untruncated_length(model: Any) -> int | None:
    """The length to encode at for SentEval-style (untruncated) evaluation: the model's limit,
    or its current ``max_seq_length`` when the backbone has no absolute limit."""
    limit = model_length_limit(model)
    return limit if limit is not None else getattr(model, "max_seq_length", None)


@contextmanager
def encoding_length(model: Any, max_seq_length: int | None) -> Iterator[Any]:
    """Within the block, ``model.max_seq_length == max_seq_length`` (``None``: unchanged); restored after."""
    if max_seq_length is None or not hasattr(model, "max_seq_length"):
        yield model
        return
    before = model.max_seq_length
    model.max_seq_length = int(max_seq_length)
    try:
        yield model
    finally:
        model.max_seq_length = before
