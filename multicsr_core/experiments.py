"""Paper analyses as functions: the false-negatives experiment of MultiCSR Fig. 4 (section 5.1).

The paper samples one pair from 10K NLI pairs, duplicates it a number of times, trains SimCSE
with and without stage 3's in-batch mask and reports STS-B dev: without the mask the score falls
as the duplication count grows, with it the score holds. Here the same thing runs small enough
for a CPU: ``n_triplets`` SNLI triplets, one of them present ``K`` times for each K of
``duplications``, trained with the paper loss (Eq. 7, sigma) and with the same loss unmasked
(supervised SimCSE), same seed, same batches.

Which triplet is duplicated matters under Eq. 7: a copy's entailment x_k^+ is a false negative
for another copy's anchor x_i, and Eq. 7 masks it iff sim_eta(x_i, x_k^+) = sim_eta(x_i, x_i^+)
>= sigma. So the triplet is drawn (seeded) among those whose guide cosine premise-entailment is
at least sigma, i.e. a pair that is "in good condition" (paper) *and* that the guide can
recognise; the chosen triplet and its guide cosine are reported. Its contradiction copies are
true negatives for every copy and are not masked.
"""

from __future__ import annotations

import csv
import json
import os
import random
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from multicsr_core.io.atomic import atomic_path, write_text_atomic

__all__ = [
    "FalseNegativesSettings",
    "false_negatives_experiment",
    "false_negatives_markdown",
    "plot_false_negatives",
    "read_snli_triplets",
    "write_false_negatives",
]


def read_snli_triplets(path: str | os.PathLike) -> tuple[list[str], list[str], list[str]]:
    """(sent0, sent1, hard_neg) columns of a SimCSE-format csv, with file:line errors."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: triplet file not found")
    anchors, positives, negatives = [], [], []
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in ("sent0", "sent1", "hard_neg") if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{path}:1: missing column(s) {missing}; expected sent0,sent1,hard_neg")
        for line, row in enumerate(reader, start=2):
            texts = [(row.get(c) or "").strip() for c in ("sent0", "sent1", "hard_neg")]
            if not all(texts):
                raise ValueError(f"{path}:{line}: empty field in triplet {texts}")
            anchors.append(texts[0])
            positives.append(texts[1])
            negatives.append(texts[2])
    return anchors, positives, negatives


def _choose_duplicated(guide_cos: np.ndarray, sigma: float, seed: int) -> int:
    eligible = np.flatnonzero(guide_cos >= sigma)
    if not len(eligible):
        raise ValueError(
            f"no triplet has guide cosine(premise, entailment) >= sigma={sigma}; the mask could not catch its "
            f"duplicates (max cosine {guide_cos.max():.3f}): lower sigma or use more triplets"
        )
    return int(random.Random(seed).choice(list(eligible)))


@dataclass(frozen=True)
class FalseNegativesSettings:
    """The experiment's size and training settings (small CPU defaults; the paper uses 10K pairs).

    ``n_triplets``: the first N triplets are used; ``duplications``: the copy counts K of the
    duplicated triplet, one pair of runs (with and without the mask) per K."""

    n_triplets: int = 256
    duplications: tuple[int, ...] = (1, 32, 128)
    batch_size: int = 32
    epochs: float = 1
    lr: float = 5e-5
    sigma: float = 0.9
    tau: float = 0.05
    pooling: str = "mean"
    max_seq_length: int = 32
    seed: int = 42

    def __post_init__(self) -> None:
        if min(self.duplications) < 1:
            raise ValueError(f"duplication counts are copies of the triplet, at least 1; got {list(self.duplications)}")


def _first_triplets(triplets, n_triplets: int) -> tuple[list[str], list[str], list[str]]:
    anchors, positives, negatives = (
        read_snli_triplets(triplets) if isinstance(triplets, (str, os.PathLike)) else triplets
    )
    if len(anchors) < n_triplets:
        raise ValueError(f"need {n_triplets} triplets, got {len(anchors)}")
    return tuple(list(c[:n_triplets]) for c in (anchors, positives, negatives))  # type: ignore[return-value]


def _train_once(base: str, data, out_dir: Path, masked: bool, settings: FalseNegativesSettings, guide_embeddings,
                stsb_dev, evaluate_before: bool):
    """One run from ``base``: the paper loss (masked) or supervised SimCSE, scored on STS-B dev after its last step."""
    from multicsr_core.losses import LossSettings
    from multicsr_core.training import TrainingSettings, build_model, train

    s = settings
    model = build_model(base, pooling=s.pooling, max_seq_length=s.max_seq_length, seed=s.seed)
    loss = LossSettings("paper" if masked else "simcse", sigma=s.sigma, tau=s.tau)
    training = TrainingSettings(loss, batch_size=s.batch_size, lr=s.lr, epochs=s.epochs, eval_steps=10**9,
                                seed=s.seed, evaluate_before=evaluate_before)
    return train(model, data, out_dir, training, guide=guide_embeddings, stsb_dev=stsb_dev)


def _duplication_runs(base: str, columns, chosen: int, settings: FalseNegativesSettings, guide_embeddings, stsb_dev,
                      say: Callable[[str], None]) -> tuple[dict, float | None, list[dict]]:
    """For each K, the runs with and without the mask on the triplets with ``chosen`` present K
    times: ``(final dev scores by mask, the base model's dev score, one record per run)``."""
    others = [i for i in range(len(columns[0])) if i != chosen]
    results: dict[str, list] = {"with_mask": [], "without_mask": []}
    baseline = None
    runs = []
    work = Path(tempfile.mkdtemp(prefix="multicsr-fig4-"))
    try:
        for k in settings.duplications:
            rows = others + [chosen] * k
            data = tuple([column[i] for i in rows] for column in columns)
            for masked in (True, False):
                out_dir = work / f"k{k}-{'mask' if masked else 'nomask'}"
                result = _train_once(base, data, out_dir, masked, settings, guide_embeddings, stsb_dev,
                                     evaluate_before=baseline is None)
                if baseline is None:
                    baseline = result.history[0]["stsb_dev"]
                final = result.history[-1]["stsb_dev"]
                results["with_mask" if masked else "without_mask"].append(final)
                runs.append({"duplications": k, "mask": masked, "stsb_dev": final, "steps": result.steps,
                             "rows": len(rows), "train_seconds": result.train_seconds,
                             "masked_fraction": result.masked_fraction})
                say(f"K={k} {'with' if masked else 'without'} mask: STS-B dev {final:.2f} ({result.steps} steps)")
                shutil.rmtree(out_dir, ignore_errors=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return results, baseline, runs


def false_negatives_experiment(
    base: str,
    triplets: str | os.PathLike | tuple[Sequence[str], Sequence[str], Sequence[str]],
    stsb_dev,
    guide: str | None = None,
    settings: FalseNegativesSettings = FalseNegativesSettings(),
    *,
    guide_cache_dir: str | os.PathLike | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict:
    """Train with and without the mask for each duplication count K; return STS-B dev (Spearman x 100).

    ``triplets``: a SimCSE csv path or (anchor, positive, negative) lists. ``stsb_dev``:
    ``read_stsbenchmark(dir, "dev")`` or (s1, s2, scores). Each run starts from ``base``
    (``build_model(base, pooling, max_seq_length=...)``) and is scored on STS-B dev after its last
    step. ``guide`` defaults to ``base``.
    """
    from multicsr_core.guide import GuideEmbeddings, load_guide

    say = progress or (lambda message: None)
    s = settings
    anchors, positives, negatives = _first_triplets(triplets, s.n_triplets)
    guide_embeddings = GuideEmbeddings(load_guide(guide or base), cache_dir=guide_cache_dir)
    guide_cos = guide_embeddings.similarity(anchors, positives)
    chosen = _choose_duplicated(guide_cos, s.sigma, s.seed)
    say(f"duplicating triplet {chosen} (guide cosine premise-entailment {guide_cos[chosen]:.3f})")

    started = time.perf_counter()
    columns = (anchors, positives, negatives)
    results, baseline, runs = _duplication_runs(base, columns, chosen, s, guide_embeddings, stsb_dev, say)
    return {
        "experiment": "false-negatives (MultiCSR Fig. 4)",
        "metric": "STS-B dev Spearman x 100 after training",
        "duplications": list(s.duplications),
        "with_mask": results["with_mask"],
        "without_mask": results["without_mask"],
        "base_model_stsb_dev": baseline,
        "duplicated_triplet": {"index": chosen, "premise": anchors[chosen], "entailment": positives[chosen],
                               "contradiction": negatives[chosen], "guide_cosine": float(guide_cos[chosen])},
        "runs": runs,
        "config": {"base": base, "guide": guide or base, "n_triplets": s.n_triplets, "batch_size": s.batch_size,
                   "epochs": s.epochs, "lr": s.lr, "sigma": s.sigma, "tau": s.tau, "pooling": s.pooling,
                   "max_seq_length": s.max_seq_length, "seed": s.seed},
        "seconds": time.perf_counter() - started,
    }


def false_negatives_markdown(result: dict) -> str:
    """The result as a Markdown table (one row per K)."""
    lines = [
        f"STS-B dev Spearman x 100 (base model before training: {result['base_model_stsb_dev']:.2f})",
        "",
        "| copies K | with mask (Eq. 7) | without mask | difference |",
        "| ---: | ---: | ---: | ---: |",
    ]
    for k, with_mask, without in zip(result["duplications"], result["with_mask"], result["without_mask"]):
        lines.append(f"| {k} | {with_mask:.2f} | {without:.2f} | {with_mask - without:+.2f} |")
    return "\n".join(lines) + "\n"


def plot_false_negatives(result: dict, path: str | os.PathLike) -> Path:
    """Fig. 4-style line plot (Agg backend, no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(5, 3.5))
    axis.plot(result["duplications"], result["with_mask"], marker="o", label="with mask (Eq. 7)")
    axis.plot(result["duplications"], result["without_mask"], marker="s", label="without mask")
    axis.set_xlabel("copies of the duplicated triplet")
    axis.set_ylabel("STS-B dev Spearman x 100")
    axis.set_title("False negatives in the batch")
    axis.legend()
    figure.tight_layout()
    path = Path(path)
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def write_false_negatives(result: dict, output: str | os.PathLike) -> dict[str, Path]:
    """Write ``output`` (JSON), and beside it ``.md`` and ``.png``; each written atomically."""
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    paths = {"json": output, "markdown": output.with_suffix(".md"), "plot": output.with_suffix(".png")}
    for key, text in (("json", json.dumps(result, indent=2)), ("markdown", false_negatives_markdown(result))):
        write_text_atomic(paths[key], text, fsync=False)
    with atomic_path(paths["plot"]) as temporary_plot:  # keeps the .png suffix savefig reads
        plot_false_negatives(result, temporary_plot)
    return paths
