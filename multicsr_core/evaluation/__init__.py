"""SentEval-exact evaluation: STS12-16 / STS-B / SICK-R Spearman, transfer tasks, results files and reports."""

from multicsr_core.evaluation.report import (
    REFERENCE_STS,
    markdown_comparison,
    markdown_sts_subsets,
    markdown_sts_table,
    markdown_transfer_table,
    read_results_json,
    write_results_json,
)
from multicsr_core.evaluation.sts import (
    STS_TASKS,
    Encoder,
    SentenceTransformerEncoder,
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
    "REFERENCE_STS",
    "markdown_comparison",
    "markdown_sts_subsets",
    "markdown_sts_table",
    "markdown_transfer_table",
    "read_results_json",
    "write_results_json",
    "TRANSFER_TASKS",
    "TransferResult",
    "evaluate_transfer",
    "evaluate_transfer_detailed",
    "STS_TASKS",
    "Encoder",
    "SentenceTransformerEncoder",
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
