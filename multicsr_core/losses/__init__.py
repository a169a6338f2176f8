"""Stage-3 training losses, one per module (sentence-transformers custom-loss style).

| name (CLI ``--loss``) | class | source |
| --- | --- | --- |
| ``paper`` | :class:`MaskedInfoNCELoss` | MultiCSR Eq. 7 (default) |
| ``official`` | :class:`OfficialMaskedBCELoss` | MultiCSR public code |
| ``simcse`` | :class:`SupervisedSimCSELoss` | SimCSE, supervised |
| ``unsup-simcse`` | :class:`UnsupSimCSELoss` | SimCSE, unsupervised |
| ``claif`` | :class:`CLAIFLoss` | CLAIF |
| ``clhaif`` | :class:`SoftInfoNCELoss` | CLHAIF soft InfoNCE |
"""

from .claif import CLAIFLoss
from .clhaif import SoftInfoNCELoss
from .masked_infonce import MaskedInfoNCELoss
from .official_bce import OfficialMaskedBCELoss
from .simcse import SupervisedSimCSELoss
from .unsup_simcse import UnsupSimCSELoss

__all__ = [
    "CLAIFLoss",
    "MaskedInfoNCELoss",
    "OfficialMaskedBCELoss",
    "SoftInfoNCELoss",
    "SupervisedSimCSELoss",
    "UnsupSimCSELoss",
]
