"""The curation report: the funnel, histograms of a and b, the (a, b) scatter with the keep
region (like the paper's Fig. 3), and sample rejected triplets, as Markdown + PNG files."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pyarrow as pa

from multicsr_core.config import CurationConfig
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


def _no_rows(ax, xlabel: str, ylabel: str) -> None:
    """An axis for an empty corpus: a "no rows" message on fixed 0-5 / 0-1 axes (no negative ticks)."""
    ax.set_xlim(0, 5)
    ax.set_ylim(0, 1)
    ax.set_yticks([0, 1])
    ax.text(2.5, 0.5, "no rows", ha="center", va="center", fontsize=12, color="#666666")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)


def score_histograms(pairs: list[tuple[float, float, bool]], rule: str = "paper", alpha: float = 3.0,
                     beta: float = 3.0):
    """The figure of a's and b's histograms: kept (green) stacked on rejected (red), with the
    alpha (on a) and beta (on b) thresholds of the paper rule as dashed lines. ``pairs``: (a, b, kept)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
    bins = [i / 4 for i in range(21)]
    for ax, index, label, threshold, name in ((axes[0], 0, "a = sim(x, x+)", alpha, "alpha"),
                                              (axes[1], 1, "b = sim(x, x-)", beta, "beta")):
        if not pairs:
            _no_rows(ax, label, "triplets")
            continue
        split = [[p[index] for p in pairs if p[2]], [p[index] for p in pairs if not p[2]]]
        ax.hist(split, bins=bins, stacked=True, color=["#2ca02c", "#d62728"], label=["kept", "rejected"])
        ax.set_xlim(0, 5)
        ax.set_ylim(bottom=0)
        ax.yaxis.get_major_locator().set_params(integer=True)
        if rule == "paper":
            ax.axvline(threshold, color="black", linestyle="--", linewidth=1, label=f"{name} = {threshold:g}")
        ax.set_xlabel(label)
        ax.set_ylabel("triplets")
        ax.legend(loc="upper left", fontsize=7)
    fig.tight_layout()
    return fig


def funnel_figure(funnel: dict):
    """Horizontal bars: the premises and stage 1's rejects (when known), total -> scored -> kept,
    then each curation reject reason (the README's funnel plot)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stages = [k for k in ("premises",) if k in funnel] + [k for k in funnel if k.startswith("generation_rejected:")]
    stages += [k for k in ("total", "scored", "kept") if k in funnel] + [k for k in funnel if k.startswith("rejected:")]
    counts = [int(funnel[k]) for k in stages]
    colors = ["#d62728" if "rejected" in k else "#2ca02c" if k == "kept" else "#4c72b0" for k in stages]
    fig, ax = plt.subplots(figsize=(6.4, 0.45 * len(stages) + 1.2))
    ax.barh(range(len(stages)), counts, color=colors)
    ax.set_yticks(range(len(stages)), [k.replace("rejected:", "rejected: ") for k in stages], fontsize=8)
    ax.invert_yaxis()
    top = max(counts, default=0)
    ax.set_xlim(0, max(1, top) * 1.15)
    ax.xaxis.get_major_locator().set_params(integer=True)
    for y, count in enumerate(counts):
        ax.text(count + max(1, top) * 0.01, y, f"{count:,}", va="center", fontsize=8)
    if top == 0:
        ax.text(0.5, 0.5, "no rows", transform=ax.transAxes, ha="center", va="center", fontsize=12, color="#666666")
    ax.set_xlabel("triplets")
    ax.set_title("Curation funnel")
    fig.tight_layout()
    return fig


def _save(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def scatter_figure(pairs: list[tuple[float, float, bool]], rule: CurationConfig, rng: random.Random):
    """The (a, b) scatter, kept green and rejected red, over the paper rule's keep region (at most
    5000 points: a seeded sample of larger corpora)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Polygon

    fig, ax = plt.subplots(figsize=(4.2, 4.2))
    region = _keep_region(rule.rule, rule.alpha, rule.beta, rule.gamma)
    if region:
        ax.add_patch(Polygon(region, closed=True, alpha=0.15, color="green", label="keep region"))
    shown = pairs if len(pairs) <= 5000 else rng.sample(pairs, 5000)
    for flag, color, name in ((True, "#2ca02c", "kept"), (False, "#d62728", "rejected")):
        pts = [(x, y) for x, y, k in shown if k == flag]
        if pts:
            ax.scatter([p[0] for p in pts], [p[1] for p in pts], s=4, alpha=0.4, color=color, label=name)
    if not pairs:
        ax.text(2.5, 2.5, "no rows", ha="center", va="center", fontsize=12, color="#666666")
    ax.set_xlim(0, 5.1)
    ax.set_ylim(0, 5.1)
    ax.set_xlabel("a = sim(x, x+)")
    ax.set_ylabel("b = sim(x, x-)")
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    return fig


def _cell(text) -> str:
    return "" if text is None else str(text).replace("|", "\\|").replace("\n", " ")[:120]


def _report_markdown(table: pa.Table, funnel: dict, rule: CurationConfig, sample: list[int]) -> str:
    """The report's Markdown: the funnel table, the figures, and the sampled rejected triplets."""
    lines = [f"# Curation report ({rule.rule} rule: alpha={rule.alpha}, beta={rule.beta}, gamma={rule.gamma})", "",
             "| stage | triplets |", "| --- | ---: |"]
    lines += [f"| {k} | {v} |" for k, v in funnel.items()]
    lines += ["", "![funnel](curation_funnel.png)", "", "![histograms](score_histograms.png)", "",
              "![scatter](score_scatter.png)", "",
              "## Sample rejected triplets", "", "| reason | a | b | premise | entailment | contradiction |",
              "| --- | ---: | ---: | --- | --- | --- |"]
    cols = {c: table.column(c).to_pylist() for c in ("reject_reason", "premise", "entailment", "contradiction",
                                                    "entailment_score", "contradiction_score")}
    fmt = lambda v: "" if v is None else f"{v:.2f}"  # noqa: E731
    for i in sorted(sample):
        lines.append(f"| {cols['reject_reason'][i]} | {fmt(cols['entailment_score'][i])} | "
                     f"{fmt(cols['contradiction_score'][i])} | {_cell(cols['premise'][i])} | "
                     f"{_cell(cols['entailment'][i])} | {_cell(cols['contradiction'][i])} |")
    return "\n".join(lines) + "\n"


def write_curation_report(table: pa.Table, out_dir: str | Path, rule: CurationConfig = CurationConfig(),
                          generation_rejects: dict | None = None, samples: int = 10, seed: int = 0) -> dict:
    """Write ``curation_report.md``, ``curation_funnel.json``, ``curation_funnel.png``,
    ``score_histograms.png`` and ``score_scatter.png`` into ``out_dir``; return their paths, the
    funnel and the Markdown text. ``rule``: the curation settings (rule, alpha, beta, gamma).
    ``generation_rejects`` (stage 1's reject counts) put the premises and the rows cleaning
    rejected at the head of the funnel.

    The histograms stack kept (green) over rejected (red) triplets and mark the thresholds: alpha
    on a's axis, beta on b's (the paper rule keeps a >= alpha and b <= beta). A corpus with no
    scored rows gets axes that say "no rows" instead of empty ones.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    funnel = curation_funnel(table)
    if generation_rejects:
        from multicsr_core.generation.engine import generation_funnel

        funnel = {**generation_funnel(generation_rejects), **funnel}
    a = table.column("entailment_score").to_pylist()
    b = table.column("contradiction_score").to_pylist()
    kept = table.column("kept").to_pylist()
    pairs = [(x, y, bool(k)) for x, y, k in zip(a, b, kept) if x is not None and y is not None]

    hist_path = _save(score_histograms(pairs, rule.rule, rule.alpha, rule.beta), out / "score_histograms.png")
    rng = random.Random(seed)  # one stream: the scatter's sample (large corpora), then the rejected rows shown
    scatter_path = _save(scatter_figure(pairs, rule, rng), out / "score_scatter.png")
    funnel_png = _save(funnel_figure(funnel), out / "curation_funnel.png")
    rejected = [i for i, k in enumerate(kept) if not k]
    markdown = _report_markdown(table, funnel, rule, rng.sample(rejected, min(samples, len(rejected))))
    md_path = out / "curation_report.md"
    md_path.write_text(markdown, encoding="utf-8")
    funnel_path = out / "curation_funnel.json"
    funnel_path.write_text(json.dumps(funnel, indent=2), encoding="utf-8")
    return {"markdown": markdown, "funnel": funnel,
            "files": [str(md_path), str(funnel_path), str(funnel_png), str(hist_path), str(scatter_path)]}


def inline_figures(markdown: str, folder: str | Path) -> str:
    """``markdown`` with each ``![name](file.png)`` link to a PNG in ``folder`` replaced by the image
    itself as a ``data:image/png;base64`` URI: for viewers that cannot follow a relative link to a
    local file (the Prefect UI renders a Markdown artifact in the browser, far from the workdir)."""
    import base64
    import re

    def embed(match: re.Match) -> str:
        path = Path(folder) / match.group(2)
        if not path.is_file():
            return match.group(0)
        data = base64.b64encode(path.read_bytes()).decode("ascii")
        return f"![{match.group(1)}](data:image/png;base64,{data})"

    return re.sub(r"!\[([^\]]*)\]\(([^)\s]+\.png)\)", embed, markdown)
