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
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

__all__ = [
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


def false_negatives_experiment(
    base: str,
    triplets: str | os.PathLike | tuple[Sequence[str], Sequence[str], Sequence[str]],
    stsb_dev,
    guide: str | None = None,
    n_triplets: int = 256,
    duplications: Sequence[int] = (1, 32, 128),
    batch_size: int = 32,
    epochs: float = 1,
    lr: float = 5e-5,
    sigma: float = 0.9,
    tau: float = 0.05,
    pooling: str = "mean",
    max_seq_length: int = 32,
    seed: int = 42,
    guide_cache_dir: str | os.PathLike | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict:
    """Train with and without the mask for each duplication count K; return STS-B dev (Spearman x 100).

    ``triplets``: a SimCSE csv path or (anchor, positive, negative) lists; the first
    ``n_triplets`` are used. ``stsb_dev``: ``read_stsbenchmark(dir, "dev")`` or (s1, s2, scores).
    Each run starts from ``base`` (``build_model(base, pooling, max_seq_length=...)``) and is
    scored on STS-B dev after its last step. ``guide`` defaults to ``base``.
    """
    from multicsr_core.guide import GuideEmbeddings, load_guide
    from multicsr_core.training import build_model, train

    say = progress or (lambda message: None)
    anchors, positives, negatives = (
        read_snli_triplets(triplets) if isinstance(triplets, (str, os.PathLike)) else triplets
    )
    if len(anchors) < n_triplets:
        raise ValueError(f"need {n_triplets} triplets, got {len(anchors)}")
    anchors, positives, negatives = (list(c[:n_triplets]) for c in (anchors, positives, negatives))
    if min(duplications) < 1:
        raise ValueError(f"duplication counts are copies of the triplet, at least 1; got {list(duplications)}")

    guide_embeddings = GuideEmbeddings(load_guide(guide or base), cache_dir=guide_cache_dir)
    guide_cos = guide_embeddings.similarity(anchors, positives)
    chosen = _choose_duplicated(guide_cos, sigma, seed)
    others = [i for i in range(n_triplets) if i != chosen]
    say(f"duplicating triplet {chosen} (guide cosine premise-entailment {guide_cos[chosen]:.3f})")

    results = {"with_mask": [], "without_mask": []}
    baseline = None
    runs = []
    work = Path(tempfile.mkdtemp(prefix="multicsr-fig4-"))
    started = time.perf_counter()
    try:
        for k in duplications:
            rows = others + [chosen] * k
            data = tuple([column[i] for i in rows] for column in (anchors, positives, negatives))
            for masked in (True, False):
                model = build_model(base, pooling=pooling, max_seq_length=max_seq_length, seed=seed)
                result = train(
                    model, data, work / f"k{k}-{'mask' if masked else 'nomask'}",
                    loss="paper" if masked else "simcse", guide=guide_embeddings, sigma=sigma, tau=tau,
                    batch_size=batch_size, lr=lr, epochs=epochs, eval_steps=10**9, stsb_dev=stsb_dev, seed=seed,
                    evaluate_before=baseline is None,
                )
                if baseline is None:
                    baseline = result.history[0]["stsb_dev"]
                final = result.history[-1]["stsb_dev"]
                results["with_mask" if masked else "without_mask"].append(final)
                runs.append({"duplications": k, "mask": masked, "stsb_dev": final, "steps": result.steps,
                             "rows": len(rows), "train_seconds": result.train_seconds,
                             "masked_fraction": result.masked_fraction})
                say(f"K={k} {'with' if masked else 'without'} mask: STS-B dev {final:.2f} ({result.steps} steps)")
                shutil.rmtree(work / f"k{k}-{'mask' if masked else 'nomask'}", ignore_errors=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    return {
        "experiment": "false-negatives (MultiCSR Fig. 4)",
        "metric": "STS-B dev Spearman x 100 after training",
        "duplications": list(duplications),
        "with_mask": results["with_mask"],
        "without_mask": results["without_mask"],
        "base_model_stsb_dev": baseline,
        "duplicated_triplet": {"index": chosen, "premise": anchors[chosen], "entailment": positives[chosen],
                               "contradiction": negatives[chosen], "guide_cosine": float(guide_cos[chosen])},
        "runs": runs,
        "config": {"base": base, "guide": guide or base, "n_triplets": n_triplets, "batch_size": batch_size,
                   "epochs": epochs, "lr": lr, "sigma": sigma, "tau": tau, "pooling": pooling,
                   "max_seq_length": max_seq_length, "seed": seed},
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
        temporary = paths[key].with_name(paths[key].name + ".tmp")
        temporary.write_text(text, encoding="utf-8")
        os.replace(temporary, paths[key])
    temporary_plot = plot_false_negatives(result, paths["plot"].with_name(paths["plot"].stem + ".tmp.png"))
    os.replace(temporary_plot, paths["plot"])
    return paths
