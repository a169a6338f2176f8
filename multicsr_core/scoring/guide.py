"""The offline stage-2 scorer: the frozen guide sentence model's cosine, mapped to 0-5.

MultiCSR section 6 discusses scoring with a pre-trained sentence model instead of the LLM and
argues for the LLM (the corpus then does not depend on the backbone). We offer the guide scorer
for machines with no LLM (the offline demo, CI) and as that paper's comparison point.

Mapping (ours; the paper gives none): ``score = 5 * clip(cos, 0, 1)``. Cosine 0.6 becomes 3.0,
the paper's alpha/beta, and a negative cosine (unrelated) becomes 0.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from multicsr_core.guide import GuideEmbeddings
from multicsr_core.scoring.base import PairScore


def cosine_to_score(cosine: np.ndarray) -> np.ndarray:
    return 5.0 * np.clip(cosine, 0.0, 1.0)


class GuideScorer:
    """Scores pairs by the guide model's cosine (one embedding per unique sentence, cached)."""

    name = "guide"

    def __init__(self, guide_model, source: str, cache_dir: str | Path | None = None, batch_size: int = 128):
        self.embeddings = GuideEmbeddings(guide_model, cache_dir=cache_dir, batch_size=batch_size)
        self.source = source

    def fingerprint(self) -> dict:
        return {"scorer": self.name, "guide": self.source, "guide_fingerprint": self.embeddings.fingerprint,
                "mapping": "5*clip(cos,0,1)"}

    def score_pairs(self, premises: Sequence[str], hypotheses: Sequence[str]) -> list[PairScore]:
        if len(premises) != len(hypotheses):
            raise ValueError(f"{len(premises)} premises but {len(hypotheses)} hypotheses")
        if not premises:
            return []
        # One embed call for both sides: each unique sentence is encoded once.
        vectors = self.embeddings.embed(list(premises) + list(hypotheses))
        left, right = vectors[: len(premises)], vectors[len(premises):]
        cosine = np.einsum("ij,ij->i", left, right).astype(np.float64)
        return [PairScore(score=float(s)) for s in cosine_to_score(cosine)]
