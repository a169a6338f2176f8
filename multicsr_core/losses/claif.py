"""CLAIF: regress the cosine of a sentence pair onto its AI-feedback similarity score."""

from __future__ import annotations

from typing import Any

from torch import nn
from sentence_transformers.sentence_transformer.losses import CosineSimilarityLoss

from . import citations


class CLAIFLoss(CosineSimilarityLoss):
    def __init__(self, model) -> None:
        r"""CLAIF (Cheng et al., ACL 2023, "Improving Contrastive Learning of Sentence Embeddings from AI Feedback").

        For pairs (x_i, x_i') with AI similarity score y_i in [0, 1] (after the official smoothing
        y <- 0.8 y + 0.1, done when the corpus is built, not here):

        .. math::

            \mathcal{L} = \frac{1}{N}\sum_{i=1}^{N} \big(\cos(h_i, h_i') - y_i\big)^2

        This is sentence-transformers' ``CosineSimilarityLoss`` with its MSE default, which is
        what the CLAIF code trains with. Inputs: (sentence1, sentence2); label = float score.
        """
        super().__init__(model, loss_fct=nn.MSELoss())

    def get_config_dict(self) -> dict[str, Any]:
        return {"objective": "mean((cos - y)^2)"}

    @property
    def citation(self) -> str:
        return citations.CLAIF
