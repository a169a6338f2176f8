"""The one list of stage-3 losses: name -> what the loss is, how it is built, what it trains on.

The config's and the CLI's ``loss`` choices are this mapping's keys; :mod:`multicsr_core.training`
builds the loss from its entry (:meth:`LossSettings.build`) and takes the columns it trains on
from it; the model card reads its formula and citations here. Importing this module loads no
torch: the classes are imported when a loss is built.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Callable

from .citations import BY_NAME

__all__ = ["LOSSES", "LossEntry", "LossSettings", "unknown_loss"]

_SIM = r"\mathrm{sim}"


def _masked_infonce(cls: type, model, guide_embeddings, settings: "LossSettings", gather: bool):
    return cls(model, guide_embeddings, sigma=settings.sigma, tau=settings.tau, gather_across_devices=gather)


def _official(cls: type, model, guide_embeddings, settings: "LossSettings", gather: bool):
    return cls(model, guide_embeddings, phi=settings.phi, tau=settings.tau, gather_across_devices=gather)


def _in_batch(cls: type, model, guide_embeddings, settings: "LossSettings", gather: bool):
    return cls(model, tau=settings.tau, gather_across_devices=gather)


def _regression(cls: type, model, guide_embeddings, settings: "LossSettings", gather: bool):
    return cls(model)


@dataclass(frozen=True)
class LossEntry:
    """One loss: its class (in :mod:`multicsr_core.losses`), the card's summary, formula (LaTeX) and
    where-clause (Markdown), the papers to cite, and what it trains on."""

    name: str
    class_name: str
    summary: str
    formula: str
    where: str
    papers: tuple[str, ...]
    build: Callable[..., Any]  # (class, model, guide embeddings, LossSettings, gather across devices) -> loss
    text_columns: tuple[str, ...] = ("anchor", "positive", "negative")  # the first two (or one) are required
    scored: bool = False  # needs an AI score per row (the label column)
    guided: bool = False  # needs the guide's embeddings (the label column holds sentence ids)

    @property
    def qualified_name(self) -> str:
        return f"multicsr_core.losses.{self.class_name}"

    @property
    def loss_class(self) -> type:
        return getattr(importlib.import_module("multicsr_core.losses"), self.class_name)

    @property
    def citations(self) -> dict[str, str]:
        """BibTeX by paper name, in the order to cite them."""
        return {paper: BY_NAME[paper] for paper in self.papers}


LOSSES: dict[str, LossEntry] = {entry.name: entry for entry in (
    LossEntry(
        "paper", "MaskedInfoNCELoss",
        "MultiCSR's in-batch InfoNCE with the guide's false-negative mask (paper Eq. 7)",
        r"\ell_i = -\log \frac{e^{" + _SIM + r"(h_i, h_i^+)/\tau}}{\sum_{k=1}^{N} \sum_{s \in \{+,-\}} M_{i,k,s}\, e^{"
        + _SIM + r"(h_i, h_k^s)/\tau}}, \quad M_{i,k,s} = 0 \text{ iff } k \ne i \text{ and } " + _SIM
        + r"_\eta(x_i, x_k^s) \ge \sigma, \text{ else } 1",
        "sim is cosine; sim_eta is the cosine of the frozen guide model P_eta; the positive and the anchor's own hard "
        "negative are never masked; the loss is the mean of l_i over the batch's anchors.",
        ("MultiCSR", "SimCSE"), _masked_infonce, guided=True,
    ),
    LossEntry(
        "official", "OfficialMaskedBCELoss",
        "the official MultiCSR code's masked loss (binary cross-entropy over softmaxed, masked logits)",
        r"p = \mathrm{softmax}\big([\cos(z_1,z_2)/\tau \,|\, \cos(z_1,z_3)/\tau] \odot w\big), \quad "
        r"w = [\cos_\eta > \varphi], \quad \ell = -\overline{y \log p + (1-y)\log(1-p)}, \; y = [I \,|\, 0]",
        "masked logits become 0 (they stay in the denominator); the comparison with phi is strict.",
        ("MultiCSR",), _official, guided=True,
    ),
    LossEntry(
        "simcse", "SupervisedSimCSELoss",
        "supervised SimCSE's InfoNCE with hard negatives (no mask)",
        r"\ell_i = -\log \frac{e^{" + _SIM + r"(h_i, h_i^+)/\tau}}{\sum_{k=1}^{N} \big(e^{" + _SIM
        + r"(h_i, h_k^+)/\tau} + e^{" + _SIM + r"(h_i, h_k^-)/\tau}\big)}",
        "sim is cosine; the loss is the mean of l_i over the batch's anchors.",
        ("SimCSE",), _in_batch,
    ),
    LossEntry(
        "unsup-simcse", "UnsupSimCSELoss",
        "unsupervised SimCSE (dropout noise makes the positive)",
        r"\ell_i = -\log \frac{e^{" + _SIM + r"(h_i, h_i')/\tau}}{\sum_{k=1}^{N} e^{" + _SIM + r"(h_i, h_k')/\tau}}",
        "h_i' is a second forward pass of the same sentence with another dropout mask.",
        ("SimCSE",), _in_batch, text_columns=("anchor",),
    ),
    LossEntry(
        "claif", "CLAIFLoss",
        "CLAIF's regression on AI feedback scores",
        r"\ell = \frac{1}{N} \sum_i \big(\cos(h_i, h_i') - y_i\big)^2",
        "y_i is the LLM's similarity score of the pair, on [0, 1].",
        ("CLAIF",), _regression, text_columns=("anchor", "positive"), scored=True,
    ),
    LossEntry(
        "clhaif", "SoftInfoNCELoss",
        "CLHAIF's soft InfoNCE (the positive term weighted by the AI score)",
        r"\ell = -\frac{1}{N} \sum_i y_i \log \frac{e^{" + _SIM + r"(h_i, h_i^+)/\tau}}{\sum_{k} \big(e^{" + _SIM
        + r"(h_i, h_k^+)/\tau} + e^{" + _SIM + r"(h_i, h_k^-)/\tau}\big)}",
        "y_i is the LLM's similarity score of (x_i, x_i+), on [0, 1].",
        ("CLAIF", "SimCSE"), _in_batch, scored=True,
    ),
)}


def unknown_loss(name: str) -> ValueError:
    return ValueError(f"unknown loss {name!r}; choose one of {', '.join(LOSSES)}")


@dataclass(frozen=True)
class LossSettings:
    """Which loss, with its hyperparameters (method.md: tau 0.05, sigma 0.9; the official loss's phi 0.95).

    Checked once, here: an unknown name is refused when the settings are made."""

    name: str = "paper"
    sigma: float = 0.9  # paper: guide cosine at or above which an in-batch negative is masked
    phi: float = 0.95  # official: its strict threshold
    tau: float = 0.05

    def __post_init__(self) -> None:
        if self.name not in LOSSES:
            raise unknown_loss(self.name)

    @property
    def entry(self) -> LossEntry:
        return LOSSES[self.name]

    def build(self, model, guide_embeddings=None, gather_across_devices: bool = False):
        """This loss around ``model``; the guided losses need ``guide_embeddings``
        ((n_sentences, dim), rows in :func:`multicsr_core.training.index_sentences` order)."""
        entry = self.entry
        if entry.guided and guide_embeddings is None:
            raise ValueError(f"loss {self.name!r} needs guide embeddings (pass guide=...)")
        return entry.build(entry.loss_class, model, guide_embeddings, self, gather_across_devices)
