"""MultiCSR's in-batch contrastive loss with the guide's false-negative mask (paper Eq. 7, the default)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from sentence_transformers.base.losses.merged_forward import embed_columns

from ._batch import (
    as_guide_matrix,
    check_sentence_ids,
    gather_candidates,
    gather_ids,
    guide_similarity,
    own_candidate_positions,
)


class MaskedInfoNCELoss(nn.Module):
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
        super().__init__()
        self.model = model
        self.sigma = float(sigma)
        self.tau = float(tau)
        self.gather_across_devices = gather_across_devices
        # A buffer, so the trainer's loss.to(device) moves the lookup table next to the model.
        self.register_buffer("guide_embeddings", as_guide_matrix(guide_embeddings), persistent=False)

    def forward(self, sentence_features: Iterable[dict[str, Tensor]], labels: Tensor) -> Tensor:
        embeddings = embed_columns(self.model, sentence_features)
        return self.compute_loss_from_embeddings(embeddings, labels)

    def mask(self, guide_sim: Tensor, offset: int, n_blocks: int) -> Tensor:
        """True where M_{i,k,s} = 0: guide cosine >= sigma, except anchor i's own candidates."""
        batch_size, width = guide_sim.shape
        own = own_candidate_positions(batch_size, width // n_blocks, n_blocks, offset, guide_sim.device)
        return (guide_sim >= self.sigma) & ~own

    def compute_loss_from_embeddings(self, embeddings: list[Tensor], labels: Tensor) -> Tensor:
        if len(embeddings) < 2:
            raise ValueError(f"MaskedInfoNCELoss expects (anchor, positive[, negative]) columns, got {len(embeddings)}")
        ids = check_sentence_ids(labels, len(embeddings), self.guide_embeddings.size(0), type(self).__name__)
        anchors = embeddings[0]
        candidates, offset = gather_candidates(embeddings[1:], self.gather_across_devices)
        candidate_ids = gather_ids(ids[:, 1:].contiguous(), self.gather_across_devices)
        # Candidate block order [all positives | all negatives], the order the mask is built in.
        candidate_ids = candidate_ids.T.reshape(-1)
        logits = F.normalize(anchors, dim=-1) @ F.normalize(torch.cat(candidates), dim=-1).T / self.tau

        guide_sim = guide_similarity(self.guide_embeddings, ids[:, 0], candidate_ids, logits.device)
        logits = logits.masked_fill(self.mask(guide_sim, offset, len(candidates)), float("-inf"))
        targets = torch.arange(anchors.size(0), device=logits.device) + offset
        return F.cross_entropy(logits, targets)

    def get_config_dict(self) -> dict[str, Any]:
        return {"sigma": self.sigma, "tau": self.tau, "gather_across_devices": self.gather_across_devices}

    @property
    def citation(self) -> str:
        return """
@inproceedings{wang2024multicsr,
    title = "Large Language Models can Contrastively Refine their Generation for Better Sentence Representation Learning",
    author = "Wang, Huiming and Li, Zhaodonghui and Cheng, Liying and Soh, De Wen and Bing, Lidong",
    booktitle = "Proceedings of NAACL 2024",
    year = "2024",
    url = "https://arxiv.org/abs/2310.10962",
}
"""
