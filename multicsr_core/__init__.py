"""multicsr_core: the MultiCSR library. Pure Python + torch/transformers; never imports Prefect."""

__version__ = "0.1.0"
