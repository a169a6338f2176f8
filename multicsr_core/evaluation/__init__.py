"""SentEval-exact evaluation: STS12-16 / STS-B / SICK-R Spearman, transfer tasks, results files and reports."""

from multicsr_core.evaluation.sts import (
    STS_TASKS,
    Encoder,
    StsResults,
    StsTaskResult,
    SubsetResult,
    encode_unique,
    encoder_from_sentence_transformer,
    evaluate_sts,
    evaluate_sts_pairs,
    load_sts_tasks,
    paired_cosine,
    senteval_average,
)
from multicsr_core.evaluation.transfer import (
    TRANSFER_TASKS,
    TransferResult,
    evaluate_transfer,
    evaluate_transfer_detailed,
)

__all__ = [
    "TRANSFER_TASKS",
    "TransferResult",
    "evaluate_transfer",
    "evaluate_transfer_detailed",
    "STS_TASKS",
    "Encoder",
    "StsResults",
    "StsTaskResult",
    "SubsetResult",
    "encode_unique",
    "encoder_from_sentence_transformer",
    "evaluate_sts",
    "evaluate_sts_pairs",
    "load_sts_tasks",
    "paired_cosine",
    "senteval_average",
]
