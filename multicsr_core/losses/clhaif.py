"""CLHAIF's soft InfoNCE: supervised SimCSE whose positive term is weighted by its AI score."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from sentence_transformers.base.losses.merged_forward import embed_columns

from . import citations
from ._batch import gather_candidates


class SoftInfoNCELoss(nn.Module):
    def __init__(self, model, tau: float = 0.05, gather_across_devices: bool = False) -> None:
        r"""CLHAIF soft InfoNCE (Cheng et al., ACL 2023, Eq. 2).

        .. math::

            \mathcal{L} = -\frac{1}{N}\sum_{i=1}^{N} y_i \log
            \frac{e^{\cos(h_i, h_i^+)/\tau}}{\sum_{j=1}^{N}\big(e^{\cos(h_i, h_j^+)/\tau} + e^{\cos(h_i, h_j^-)/\tau}\big)}

        y_i is the AI-feedback similarity score of the positive pair (x_i, x_i^+) in [0, 1]: it
        replaces InfoNCE's one-hot label 1, so with every y_i = 1 this is supervised SimCSE. Only
        positives carry AI scores, as in the paper. Inputs: (anchor, positive[, negative]);
        label = float score per row.
        """
        super().__init__()
        self.model = model
        self.tau = float(tau)
        self.gather_across_devices = gather_across_devices

    def forward(self, sentence_features: Iterable[dict[str, Tensor]], labels: Tensor) -> Tensor:
        embeddings = embed_columns(self.model, sentence_features)
        return self.compute_loss_from_embeddings(embeddings, labels)

    def compute_loss_from_embeddings(self, embeddings: list[Tensor], labels: Tensor) -> Tensor:
        if len(embeddings) < 2:
            raise ValueError(f"SoftInfoNCELoss expects (anchor, positive[, negative]) columns, got {len(embeddings)}")
        anchors = embeddings[0]
        if labels is None or labels.numel() != anchors.size(0):
            raise ValueError(
                f"SoftInfoNCELoss needs one AI score per row in the label column (batch {anchors.size(0)}),"
                f" got {None if labels is None else tuple(labels.shape)}"
            )
        candidates, offset = gather_candidates(embeddings[1:], self.gather_across_devices)
        logits = F.normalize(anchors, dim=-1) @ F.normalize(torch.cat(candidates), dim=-1).T / self.tau
        rows = torch.arange(anchors.size(0), device=logits.device)
        log_softmax_positive = torch.log_softmax(logits, dim=1)[rows, offset + rows]
        return -(labels.to(logits.dtype).view(-1) * log_softmax_positive).mean()

    def get_config_dict(self) -> dict[str, Any]:
        return {"tau": self.tau, "gather_across_devices": self.gather_across_devices}

    @property
    def citation(self) -> str:
        return citations.CLAIF
