"""The MultiCSR official code's loss: binary cross-entropy on a softmax whose masked logits are zeroed."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from . import citations
from ._batch import GuidedInBatchLoss


class OfficialMaskedBCELoss(GuidedInBatchLoss):
    def __init__(
        self,
        model,
        guide_embeddings,
        phi: float = 0.95,
        tau: float = 0.05,
        gather_across_devices: bool = False,
    ) -> None:
        r"""The loss MultiCSR's public code trains with (what its reported numbers come from).

        Source: MultiCSR public code, as pinned in docs/method.md ("Official loss"); it differs
        from the paper's Eq. 7 (:class:`~multicsr_core.losses.masked_infonce.MaskedInfoNCELoss`).
        With z1 anchors, z2 positives, z3 hard negatives (N x d each) and cos_eta the guide cosine:

        .. math::

            w = \big[\cos_\eta(z_1,z_2)/\tau \;|\; \cos_\eta(z_1,z_3)/\tau\big] > \phi/\tau \;?\; 0 : 1,
            \quad w_{i,i} \leftarrow 1 \ (\text{first block}),

            p = \mathrm{softmax}_{\text{row}}\big([\cos(z_1,z_2)/\tau \;|\; \cos(z_1,z_3)/\tau] \odot w\big),
            \quad y = [I \;|\; 0],

            \mathcal{L} = \frac{1}{N \cdot 2N} \sum_{i,j} -\big(y_{ij}\log p_{ij} + (1-y_{ij})\log(1-p_{ij})\big)

        Exactly as the official code, and unlike the paper: a masked logit becomes 0 and *stays in
        the denominator* (e^0 = 1), the comparison is strict (``>``), the threshold is phi
        (their run: 0.95), the anchor's own hard negative can be masked (only the positive, the
        diagonal of the first block, is protected), and the objective is element-wise BCE on the
        softmax probabilities rather than cross-entropy. ``F.binary_cross_entropy`` clamps
        log(.) at -100 as ``nn.BCELoss`` in their code does.

        One deliberate difference: their mask model runs with dropout on; here the guide
        similarities come from cached, deterministic guide embeddings (see
        :mod:`multicsr_core.guide`). Inputs and the label column (int sentence ids, (B, n_columns))
        are as for :class:`~multicsr_core.losses.masked_infonce.MaskedInfoNCELoss`.
        """
        super().__init__(model, guide_embeddings, tau, gather_across_devices)
        self.phi = float(phi)

    def weights(self, guide_sim: Tensor, offset: int) -> Tensor:
        """w: 0 where cos_eta/tau > phi/tau (strict), else 1; the positive (first-block diagonal) forced to 1."""
        keep = ~(guide_sim / self.tau > self.phi / self.tau)
        rows = torch.arange(guide_sim.size(0), device=guide_sim.device)
        keep[rows, offset + rows] = True
        return keep.to(guide_sim.dtype)

    def compute_loss_from_embeddings(self, embeddings: list[Tensor], labels: Tensor) -> Tensor:
        logits, guide_sim, offset = self.guided_logits(embeddings, labels)
        probabilities = torch.softmax(logits * self.weights(guide_sim, offset), dim=1)
        targets = torch.zeros_like(probabilities)
        rows = torch.arange(logits.size(0), device=logits.device)
        targets[rows, offset + rows] = 1.0
        # torch refuses binary_cross_entropy inside fp16/bf16 autocast: compute it in float32 outside.
        with torch.autocast(device_type=probabilities.device.type, enabled=False):
            return F.binary_cross_entropy(probabilities.float(), targets.float())

    def get_config_dict(self) -> dict[str, Any]:
        return {"phi": self.phi, "tau": self.tau, "gather_across_devices": self.gather_across_devices}

    @property
    def citation(self) -> str:
        return citations.MULTICSR
