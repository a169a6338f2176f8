"""The STS-B dev evaluator used for checkpoint selection during training, untruncated.

The trainer's model truncates its inputs at the training length (SimCSE: 32 tokens). SimCSE's
own dev evaluation during training goes through SentEval, which reads every sentence in full,
so this evaluator is sentence-transformers' ``EmbeddingSimilarityEvaluator`` (Spearman of the
cosine similarities, the ``<name>_spearman_cosine`` metric the trainer selects on) with one
change: each evaluation encodes at the model's own limit
(:func:`multicsr_core.evaluation.lengths.untruncated_length`), then puts the training length
back before the next step.
"""

from __future__ import annotations

from typing import Any, Sequence

from sentence_transformers.sentence_transformer.evaluation import EmbeddingSimilarityEvaluator

from multicsr_core.evaluation.lengths import encoding_length, untruncated_length

__all__ = ["UntruncatedSimilarityEvaluator"]


class UntruncatedSimilarityEvaluator(EmbeddingSimilarityEvaluator):
    """``EmbeddingSimilarityEvaluator`` that encodes at ``max_seq_length`` (None: the model's limit)."""

    def __init__(self, sentences1: Sequence[str], sentences2: Sequence[str], scores: Sequence[float],
                 max_seq_length: int | None = None, **kwargs: Any) -> None:
        super().__init__(list(sentences1), list(sentences2), [float(s) for s in scores], **kwargs)
        self.max_seq_length = max_seq_length
        self.last_max_seq_length: int | None = None  # the length the latest evaluation encoded at

    def embed_inputs(self, model, sentences, **kwargs):
        length = self.max_seq_length if self.max_seq_length is not None else untruncated_length(model)
        self.last_max_seq_length = length
        with encoding_length(model, length):
            return super().embed_inputs(model, sentences, **kwargs)
