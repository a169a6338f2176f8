"""Stage-3 training losses, one per module (sentence-transformers custom-loss style).

| name (CLI ``--loss``) | class | source |
| --- | --- | --- |
| ``paper`` | :class:`MaskedInfoNCELoss` | MultiCSR Eq. 7 (default) |
| ``official`` | :class:`OfficialMaskedBCELoss` | MultiCSR public code |
| ``simcse`` | :class:`SupervisedSimCSELoss` | SimCSE, supervised |
| ``unsup-simcse`` | :class:`UnsupSimCSELoss` | SimCSE, unsupervised |
| ``claif`` | :class:`CLAIFLoss` | CLAIF |
| ``clhaif`` | :class:`SoftInfoNCELoss` | CLHAIF soft InfoNCE |

The names, and everything else known about each loss, are :data:`LOSSES` (:mod:`.registry`).
The classes are imported on first use, so that the config and the CLI read the names without
loading torch.
"""

from __future__ import annotations

import importlib

from .registry import LOSSES, LossEntry, LossSettings

_CLASS_MODULES = {
    "CLAIFLoss": ".claif",
    "MaskedInfoNCELoss": ".masked_infonce",
    "OfficialMaskedBCELoss": ".official_bce",
    "SoftInfoNCELoss": ".clhaif",
    "SupervisedSimCSELoss": ".simcse",
    "UnsupSimCSELoss": ".unsup_simcse",
}

__all__ = ["LOSSES", "LossEntry", "LossSettings", *_CLASS_MODULES]


def __getattr__(name: str):
    if name in _CLASS_MODULES:
        return getattr(importlib.import_module(_CLASS_MODULES[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
