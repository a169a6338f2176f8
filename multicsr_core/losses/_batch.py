"""Pieces the in-batch losses share: candidate gathering across devices and the guide lookup.

Multi-process training (torchrun / accelerate, one process per GPU) follows the pattern of
sentence-transformers' own MultipleNegativesRankingLoss and GISTEmbedLoss: each process keeps its
*local* anchors and gathers every process's candidates with
``sentence_transformers.util.all_gather_with_grad`` (gradient flows back to the local part), so the
negatives and the false-negative mask span the global batch. Anchor i of process r then has its
positive at column ``r * B + i`` of the candidate block (``offset = rank * B``). The per-process
losses are means over local anchors; DDP averages the gradients, which equals the global mean.
Guide sentence ids are gathered the same way (no gradient). Without an initialised process group
every gather returns the local tensor and the offset is 0: the single-process path, which is what
the tests exercise.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from sentence_transformers.base.losses.merged_forward import embed_columns
from sentence_transformers.util import all_gather, all_gather_with_grad, get_rank


def gather_candidates(candidates: list[Tensor], gather: bool) -> tuple[list[Tensor], int]:
    """Candidate columns (positives, negatives...) gathered over processes, and this process's row offset."""
    if not gather:
        return candidates, 0
    batch_size = candidates[0].size(0)
    return [all_gather_with_grad(column) for column in candidates], get_rank() * batch_size


def gather_ids(ids: Tensor, gather: bool) -> Tensor:
    """Integer ids (no gradient) gathered over processes in rank order."""
    return all_gather(ids) if gather else ids


def own_candidate_positions(batch_size: int, global_batch: int, n_blocks: int, offset: int, device) -> Tensor:
    """Boolean (B, n_blocks * global_batch): True at anchor i's own candidates (its positive, its hard negative...)."""
    own = torch.zeros(batch_size, n_blocks * global_batch, dtype=torch.bool, device=device)
    rows = torch.arange(batch_size, device=device)
    for block in range(n_blocks):
        own[rows, block * global_batch + offset + rows] = True
    return own


def as_guide_matrix(guide_embeddings) -> Tensor:
    """The guide embedding matrix as float32 with unit rows (cosine = dot product)."""
    if guide_embeddings is None:
        raise ValueError("this loss needs guide_embeddings: the (n_sentences, dim) matrix of the frozen guide model")
    if torch.is_tensor(guide_embeddings):  # may live on the GPU already: numpy cannot read it there
        matrix = guide_embeddings.detach().to(torch.float32)
    else:
        matrix = torch.as_tensor(np.asarray(guide_embeddings, dtype=np.float32))
    if matrix.ndim != 2:
        raise ValueError(f"guide_embeddings must be 2-D (n_sentences, dim), got shape {tuple(matrix.shape)}")
    return torch.nn.functional.normalize(matrix, dim=1)


def check_sentence_ids(labels: Tensor | None, n_columns: int, n_sentences: int, loss_name: str) -> Tensor:
    """Validate the label column that carries guide sentence ids: int (B, n_columns) in range."""
    if labels is None:
        raise ValueError(
            f"{loss_name} needs sentence ids in the label column (one id per text column, rows of the guide matrix)"
        )
    if labels.dtype.is_floating_point or labels.dtype == torch.bool:
        raise ValueError(f"{loss_name}: the label column must hold integer sentence ids, got dtype {labels.dtype}")
    if labels.ndim != 2 or labels.size(1) != n_columns:
        raise ValueError(
            f"{loss_name}: expected labels of shape (batch, {n_columns}) (one sentence id per column),"
            f" got {tuple(labels.shape)}"
        )
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= n_sentences):
        raise ValueError(f"{loss_name}: sentence id out of range [0, {n_sentences}) in the label column")
    return labels.long()


def guide_similarity(guide: Tensor, anchor_ids: Tensor, candidate_ids: Tensor, device) -> Tensor:
    """sim_eta(x_i, x_k^s) for local anchors x_i and all candidates: a row lookup and one matmul."""
    anchors = guide[anchor_ids.to(guide.device)]
    candidates = guide[candidate_ids.to(guide.device)]
    return (anchors @ candidates.T).to(device)


class GuidedInBatchLoss(nn.Module):
    """Shared plumbing of the guide-masked losses: the guide lookup table, the forward, and the
    (logits, guide similarity) pair over local anchors x global candidates. Subclasses turn that
    pair into a loss in ``compute_loss_from_embeddings``."""

    def __init__(self, model, guide_embeddings, tau: float, gather_across_devices: bool) -> None:
        super().__init__()
        self.model = model
        self.tau = float(tau)
        self.gather_across_devices = gather_across_devices
        # A buffer, so the trainer's loss.to(device) moves the lookup table next to the model.
        self.register_buffer("guide_embeddings", as_guide_matrix(guide_embeddings), persistent=False)

    def forward(self, sentence_features: Iterable[dict[str, Tensor]], labels: Tensor) -> Tensor:
        embeddings = embed_columns(self.model, sentence_features)
        return self.compute_loss_from_embeddings(embeddings, labels)

    def guided_logits(self, embeddings: list[Tensor], labels: Tensor) -> tuple[Tensor, Tensor, int]:
        """cos(h_i, candidate)/tau and sim_eta(x_i, candidate), both (B, n_blocks * global B), and the row offset.

        Candidate columns are in block order [all positives | all negatives]."""
        name = type(self).__name__
        if len(embeddings) < 2:
            raise ValueError(f"{name} expects (anchor, positive[, negative]) columns, got {len(embeddings)}")
        ids = check_sentence_ids(labels, len(embeddings), self.guide_embeddings.size(0), name)
        candidates, offset = gather_candidates(embeddings[1:], self.gather_across_devices)
        candidate_ids = gather_ids(ids[:, 1:].contiguous(), self.gather_across_devices).T.reshape(-1)
        logits = F.normalize(embeddings[0], dim=-1) @ F.normalize(torch.cat(candidates), dim=-1).T / self.tau
        guide_sim = guide_similarity(self.guide_embeddings, ids[:, 0], candidate_ids, logits.device)
        return logits, guide_sim, offset
