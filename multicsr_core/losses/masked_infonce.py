"""MultiCSR's in-batch contrastive loss with the guide's false-negative mask (paper Eq. 7, the default)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from . import citations
from ._batch import GuidedInBatchLoss, own_candidate_positions


class MaskedInfoNCELoss(GuidedInBatchLoss):
    def __init__(
        self,
        model,
        guide_embeddings,
        sigma: float = 0.9,
        tau: float = 0.05,
        gather_across_devices: bool = False,
    ) -> None:
        r"""Supervised-SimCSE InfoNCE whose denominator drops in-batch negatives the frozen guide calls duplicates.

        Source: MultiCSR, Wang et al., NAACL 2024 (arXiv 2310.10962), Eq. 7. For anchor h_i with
        positive h_i^+ and the batch's 2N candidates {h_k^+, h_k^-}:

        .. math::

            \ell_i = -\log \frac{e^{\mathrm{sim}(h_i, h_i^+)/\tau}}
                     {\sum_{k=1}^{N} \sum_{s \in \{+,-\}} M_{i,k,s}\, e^{\mathrm{sim}(h_i, h_k^s)/\tau}},
            \qquad
            M_{i,k,s} = \begin{cases} 0 & k \ne i \text{ and } \mathrm{sim}_\eta(x_i, x_k^s) \ge \sigma \\
                                      1 & \text{otherwise} \end{cases}

        sim is cosine; sim_eta is the cosine of the frozen guide model P_eta. The positive and the
        anchor's own hard negative (k = i) are never masked; the comparison is ``>=``. The loss is
        the mean of l_i over anchors. With sigma > 1 nothing is masked and this is exactly
        supervised SimCSE (:class:`~multicsr_core.losses.simcse.SupervisedSimCSELoss`).

        How the guide similarity gets here: the guide never runs during training. The caller embeds
        every unique sentence once (:class:`multicsr_core.guide.GuideEmbeddings`) into
        ``guide_embeddings`` (n_sentences x dim) and the dataset's label column carries, per row,
        the row ids of its texts in that matrix (shape (B, n_columns), anchor first). The mask is a
        lookup of those rows and one (B x dim) @ (dim x 2N) matmul.

        Args:
            model: the SentenceTransformer being trained.
            guide_embeddings: (n_sentences, dim) guide vectors (numpy or tensor); rows are re-normalised.
            sigma: mask threshold on the guide cosine (paper: 0.9).
            tau: temperature (paper: 0.05).
            gather_across_devices: gather candidates and their ids across processes so the negatives
                and the mask span the global batch (see :mod:`multicsr_core.losses._batch`).

        Inputs: (anchor, positive) pairs or (anchor, positive, negative) triplets; label = int ids
        (B, n_columns).
        """
        super().__init__(model, guide_embeddings, tau, gather_across_devices)
        self.sigma = float(sigma)

    def mask(self, guide_sim: Tensor, offset: int, n_blocks: int) -> Tensor:
        """True where M_{i,k,s} = 0: guide cosine >= sigma, except anchor i's own candidates."""
        batch_size, width = guide_sim.shape
        own = own_candidate_positions(batch_size, width // n_blocks, n_blocks, offset, guide_sim.device)
        return (guide_sim >= self.sigma) & ~own

    def compute_loss_from_embeddings(self, embeddings: list[Tensor], labels: Tensor) -> Tensor:
        logits, guide_sim, offset = self.guided_logits(embeddings, labels)
        logits = logits.masked_fill(self.mask(guide_sim, offset, len(embeddings) - 1), float("-inf"))
        targets = torch.arange(logits.size(0), device=logits.device) + offset
        return F.cross_entropy(logits, targets)

    def get_config_dict(self) -> dict[str, Any]:
        return {"sigma": self.sigma, "tau": self.tau, "gather_across_devices": self.gather_across_devices}

    @property
    def citation(self) -> str:
        return citations.MULTICSR
