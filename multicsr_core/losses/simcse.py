"""Supervised SimCSE: InfoNCE over in-batch positives and hard negatives, no false-negative mask."""

from __future__ import annotations

from typing import Any

from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

from . import citations


class SupervisedSimCSELoss(MultipleNegativesRankingLoss):
    def __init__(self, model, tau: float = 0.05, gather_across_devices: bool = False) -> None:
        r"""Supervised SimCSE (Gao et al., EMNLP 2021, Eq. 5), the unmasked baseline of MultiCSR's Eq. 7.

        .. math::

            \ell_i = -\log \frac{e^{\cos(h_i, h_i^+)/\tau}}
                     {\sum_{k=1}^{N} \big(e^{\cos(h_i, h_k^+)/\tau} + e^{\cos(h_i, h_k^-)/\tau}\big)},
            \qquad \mathcal{L} = \frac{1}{N}\sum_i \ell_i

        This is sentence-transformers' ``MultipleNegativesRankingLoss`` with its defaults
        (cosine, ``query_to_doc``, joint partition: candidates = all positives then all
        negatives) and ``scale = 1 / tau``; only the temperature is re-expressed as SimCSE's tau.
        SimCSE's optional hard-negative weight is 0 in its released runs and is not offered.
        Inputs: (anchor, positive[, negative]); the label column, if any, is ignored (so the
        same dataset with guide sentence ids can train this and the masked losses).
        """
        super().__init__(model, scale=1.0 / tau, gather_across_devices=gather_across_devices)
        self.tau = float(tau)

    def get_config_dict(self) -> dict[str, Any]:
        return {"tau": self.tau, "gather_across_devices": self.gather_across_devices}

    @property
    def citation(self) -> str:
        return citations.SIMCSE
