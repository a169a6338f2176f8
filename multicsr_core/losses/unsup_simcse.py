"""Unsupervised SimCSE: a sentence and its own second dropout pass are the positive pair."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor
from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

from . import citations


class UnsupSimCSELoss(MultipleNegativesRankingLoss):
    def __init__(self, model, tau: float = 0.05, gather_across_devices: bool = False) -> None:
        r"""Unsupervised SimCSE (Gao et al., EMNLP 2021, Eq. 4): dropout noise is the only augmentation.

        Each sentence x_i is encoded twice in train mode; the two dropout masks give h_i and h_i'.

        .. math::

            \ell_i = -\log \frac{e^{\cos(h_i, h_i')/\tau}}{\sum_{j=1}^{N} e^{\cos(h_i, h_j')/\tau}}

        Input: a single text column. As in the official SimCSE code, the batch is duplicated and
        encoded in ONE forward pass of 2N rows (dropout masks differ per row), then split. A
        dataset with two identical columns (sentence-transformers' recipe) also works: each
        column is then its own forward pass. The label column, if any, is ignored. The model must
        be in train mode with dropout > 0, or the positive is trivial; the trainer does this.
        """
        super().__init__(model, scale=1.0 / tau, gather_across_devices=gather_across_devices)
        self.tau = float(tau)

    def forward(self, sentence_features: Iterable[dict[str, Tensor]], labels: Tensor | None) -> Tensor:
        sentence_features = list(sentence_features)
        if len(sentence_features) != 1:
            return super().forward(sentence_features, labels)
        features = sentence_features[0]
        batch_size = features["input_ids"].size(0)
        doubled = {
            key: torch.cat([value, value]) if isinstance(value, Tensor) and value.size(0) == batch_size else value
            for key, value in features.items()
        }
        embeddings = self.model(doubled)["sentence_embedding"]
        return self.compute_loss_from_embeddings([embeddings[:batch_size], embeddings[batch_size:]], labels)

    def get_config_dict(self) -> dict[str, Any]:
        return {"tau": self.tau, "gather_across_devices": self.gather_across_devices}

    @property
    def citation(self) -> str:
        return citations.SIMCSE
