"""The curation report: the funnel, histograms of a and b, the (a, b) scatter with the keep
region (like the paper's Fig. 3), and sample rejected triplets, as Markdown + PNG files."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pyarrow as pa

from multicsr_core.curation import curation_funnel


def _keep_region(rule: str, alpha: float, beta: float, gamma: float):
    """Polygon (a on x, b on y) of the paper rule's keep region, for the plot."""
    if rule != "paper":
        return None
    # a in [alpha, 5], b in [0, beta], b <= a - gamma
    pts = []
    for a in (alpha, 5.0):
        pts.append((a, 0.0))
    top = min(beta, 5.0 - gamma)
    pts += [(5.0, top), (max(alpha, top + gamma), top), (alpha, max(0.0, min(beta, alpha - gamma)))]
    return pts


def write_curation_report(table: pa.Table, out_dir: str | Path, rule: str = "paper", alpha: float = 3.0,
                          beta: float = 3.0, gamma: float = 1.0, samples: int = 10, seed: int = 0) -> dict:
    """Write ``curation_report.md``, ``curation_funnel.json``, ``score_histograms.png`` and
    ``score_scatter.png`` into ``out_dir``; return their paths and the Markdown text."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Polygon

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    funnel = curation_funnel(table)
    a = table.column("entailment_score").to_pylist()
    b = table.column("contradiction_score").to_pylist()
    kept = table.column("kept").to_pylist()
    pairs = [(x, y, bool(k)) for x, y, k in zip(a, b, kept) if x is not None and y is not None]

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
    for ax, values, label in ((axes[0], [p[0] for p in pairs], "a = sim(x, x+)"), (axes[1], [p[1] for p in pairs], "b = sim(x, x-)")):
        ax.hist(values, bins=[i / 4 for i in range(21)], color="#4c72b0")
        ax.set_xlabel(label)
        ax.set_ylabel("triplets")
    fig.tight_layout()
    hist_path = out / "score_histograms.png"
    fig.savefig(hist_path, dpi=100)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(4.2, 4.2))
    region = _keep_region(rule, alpha, beta, gamma)
    if region:
        ax.add_patch(Polygon(region, closed=True, alpha=0.15, color="green", label="keep region"))
    rng = random.Random(seed)
    shown = pairs if len(pairs) <= 5000 else rng.sample(pairs, 5000)
    for flag, color, name in ((True, "#2ca02c", "kept"), (False, "#d62728", "rejected")):
        pts = [(x, y) for x, y, k in shown if k == flag]
        if pts:
            ax.scatter([p[0] for p in pts], [p[1] for p in pts], s=4, alpha=0.4, color=color, label=name)
    ax.set_xlim(-0.1, 5.1)
    ax.set_ylim(-0.1, 5.1)
    ax.set_xlabel("a = sim(x, x+)")
    ax.set_ylabel("b = sim(x, x-)")
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    scatter_path = out / "score_scatter.png"
    fig.savefig(scatter_path, dpi=100)
    plt.close(fig)

    rejected = [i for i, k in enumerate(kept) if not k]
    sample = rng.sample(rejected, min(samples, len(rejected)))
    lines = [f"# Curation report ({rule} rule: alpha={alpha}, beta={beta}, gamma={gamma})", "",
             "| stage | triplets |", "| --- | ---: |"]
    lines += [f"| {k} | {v} |" for k, v in funnel.items()]
    lines += ["", "![histograms](score_histograms.png)", "", "![scatter](score_scatter.png)", "",
              "## Sample rejected triplets", "", "| reason | a | b | premise | entailment | contradiction |",
              "| --- | ---: | ---: | --- | --- | --- |"]
    cols = {c: table.column(c).to_pylist() for c in ("reject_reason", "premise", "entailment", "contradiction")}

    def cell(text):
        return "" if text is None else str(text).replace("|", "\\|").replace("\n", " ")[:120]

    for i in sorted(sample):
        fmt = lambda v: "" if v is None else f"{v:.2f}"  # noqa: E731
        lines.append(f"| {cols['reject_reason'][i]} | {fmt(a[i])} | {fmt(b[i])} | {cell(cols['premise'][i])} | "
                     f"{cell(cols['entailment'][i])} | {cell(cols['contradiction'][i])} |")
    markdown = "\n".join(lines) + "\n"
    md_path = out / "curation_report.md"
    md_path.write_text(markdown, encoding="utf-8")
    funnel_path = out / "curation_funnel.json"
    funnel_path.write_text(json.dumps(funnel, indent=2), encoding="utf-8")
    return {"markdown": markdown, "funnel": funnel, "files": [str(md_path), str(funnel_path), str(hist_path), str(scatter_path)]}
