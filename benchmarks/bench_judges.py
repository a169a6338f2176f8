"""Stage-2 judges on gold SNLI pairs: which scorer separates entailments from contradictions?

The demo's stage 2 needs a judge that rates sim(x, x+) high and sim(x, x-) low. This script
scores real SNLI test pairs with gold labels (``senteval/SNLI/s1.test``, ``s2.test``,
``labels.test``: for each of the first ``--premises`` premises that has all three, its
entailment, neutral and contradiction hypothesis) with every judge we offer:

- ``guide``: the frozen all-MiniLM-L6-v2 cosine mapped to 0-5 (``5 * clip(cos, 0, 1)``), the
  paper's section-6 alternative;
- SmolLM2-135M-Instruct, one forward pass (the first answer token's distribution over 0-5),
  official zero-shot prompt and our few-shot prompt, ``argmax`` and ``expected``, with and
  without the ``min_score_mass`` verdict;
- SmolLM2 generate + the official parser (greedy, 8 new tokens), both prompts: the share of
  replies that parse.

Reported per judge: coverage (pairs with a score), Spearman of the score with the 3-way label
(entailment 2, neutral 1, contradiction 0; scored pairs), Spearman with the gold binary
(entailment 1 vs contradiction 0; those two classes only), and what the paper rule
(``a >= 3``, ``b <= 3``, ``a >= b + 1``) does with each premise's gold triplet
(x, entailment, contradiction) and with the same triplet swapped (x, contradiction,
entailment): ``kept true`` should be high, ``kept swapped`` low, and ``correct`` is the share of
those 2N decisions that are right (an unparsable score rejects).

A second table supports the default of ``scoring.min_score_mass``: for each prompt, the mass
the score tokens hold, split by whether greedy generation's reply parses, and how often the
one-forward verdict (mass >= t) agrees with generate + parse for a few thresholds t.

    python benchmarks/bench_judges.py                       # bundled SmolLM2, 120 premises
    python benchmarks/bench_judges.py --premises 40 --out /tmp/judge.md

Not a timing benchmark. Replies are cached under ``--workdir`` (a rerun recomputes nothing).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from multicsr_core.config import default_data_root  # noqa: E402

LABEL_VALUE = {"entailment": 2, "neutral": 1, "contradiction": 0}


def snli_triples(data_root: Path, n_premises: int) -> list[dict]:
    """The first ``n_premises`` SNLI test premises with an entailment, a neutral and a
    contradiction hypothesis each (the test set lists a premise's hypotheses together)."""
    folder = data_root / "senteval" / "SNLI"
    s1 = (folder / "s1.test").read_text(encoding="utf-8").splitlines()
    s2 = (folder / "s2.test").read_text(encoding="utf-8").splitlines()
    labels = (folder / "labels.test").read_text(encoding="utf-8").splitlines()
    by_premise: dict[str, dict[str, str]] = {}
    order: list[str] = []
    for premise, hypothesis, label in zip(s1, s2, labels):
        premise, hypothesis, label = premise.strip(), hypothesis.strip(), label.strip()
        if label not in LABEL_VALUE:
            continue
        if premise not in by_premise:
            by_premise[premise] = {}
            order.append(premise)
        by_premise[premise].setdefault(label, hypothesis)
    out = []
    for premise in order:
        hyps = by_premise[premise]
        if len(hyps) == 3:
            out.append({"premise": premise, **hyps})
        if len(out) == n_premises:
            break
    return out


def spearman(scores: list, labels: list) -> tuple[float | None, int]:
    from scipy.stats import spearmanr

    pairs = [(s, y) for s, y in zip(scores, labels) if s is not None]
    if len(pairs) < 3 or len({s for s, _ in pairs}) < 2:
        return None, len(pairs)
    rho = spearmanr([s for s, _ in pairs], [y for _, y in pairs]).statistic
    return float(rho), len(pairs)


def paper_keep(a, b) -> bool:
    from multicsr_core.curation import paper_rule

    return paper_rule(a, b).kept


def judge_row(name: str, scores: dict[str, list], n: int) -> dict:
    """Metrics of one judge from its scores per label (lists aligned with the premises)."""
    all_scores = scores["entailment"] + scores["neutral"] + scores["contradiction"]
    all_labels = [2] * n + [1] * n + [0] * n
    rho3, _ = spearman(all_scores, all_labels)
    rho2, _ = spearman(scores["entailment"] + scores["contradiction"], [1] * n + [0] * n)
    kept_true = sum(paper_keep(a, b) for a, b in zip(scores["entailment"], scores["contradiction"]))
    kept_swapped = sum(paper_keep(b, a) for a, b in zip(scores["entailment"], scores["contradiction"]))
    coverage = sum(s is not None for s in all_scores) / len(all_scores)
    return {"judge": name, "coverage": coverage, "rho3": rho3, "rho2": rho2, "kept_true": kept_true / n,
            "kept_swapped": kept_swapped / n, "correct": (kept_true + n - kept_swapped) / (2 * n)}


def _fmt(value, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def judge_table(rows: list[dict]) -> str:
    lines = ["| judge | scored | Spearman vs label (E2/N1/C0) | Spearman vs gold binary (E1/C0) | "
             "paper rule keeps true triplet | keeps swapped triplet | correct decisions |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        lines.append(f"| {r['judge']} | {r['coverage']:.0%} | {_fmt(r['rho3'])} | {_fmt(r['rho2'])} | "
                     f"{r['kept_true']:.0%} | {r['kept_swapped']:.0%} | {r['correct']:.0%} |")
    return "\n".join(lines)


def quantiles(values: list[float]) -> str:
    if not values:
        return "-"
    values = sorted(values)
    pick = lambda q: values[min(len(values) - 1, int(q * (len(values) - 1) + 0.5))]  # noqa: E731
    return f"{pick(0.0):.3f} / {pick(0.5):.3f} / {pick(1.0):.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="bundled:smollm2-135m-instruct")
    parser.add_argument("--guide", default="bundled:all-MiniLM-L6-v2")
    parser.add_argument("--premises", type=int, default=120)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/multicsr-bench-judges"))
    parser.add_argument("--thresholds", default="0.05,0.1,0.15,0.2,0.25,0.3,0.4,0.5")
    parser.add_argument("--out", type=Path, default=None, help="also write the Markdown report here")
    args = parser.parse_args()

    import torch

    from multicsr_core.builders import cached_guide
    from multicsr_core.llm.cache import ResponseCache
    from multicsr_core.llm.local import LocalLM
    from multicsr_core.models import resolve_model_ref
    from multicsr_core.scoring.guide import GuideScorer
    from multicsr_core.scoring.llm import SCORE_TOKENS, LocalLLMScorer, distribution_to_score
    from multicsr_core.scoring.parsing import parse_official_score

    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    triples = snli_triples(default_data_root(), args.premises)
    n = len(triples)
    premises = [t["premise"] for t in triples]
    labels = ("entailment", "neutral", "contradiction")
    all_premises = premises * 3
    all_hyps = [t[label] for label in labels for t in triples]

    def per_label(values: list) -> dict[str, list]:
        return {label: values[i * n:(i + 1) * n] for i, label in enumerate(labels)}

    rows = []
    guide = GuideScorer(cached_guide(args.guide), source=args.guide)
    rows.append(judge_row("guide: MiniLM cosine -> 0-5", per_label([s.score for s in guide.score_pairs(all_premises, all_hyps)]), n))

    folder = resolve_model_ref(args.model)
    lm = LocalLM.from_pretrained(folder, cache=ResponseCache(args.workdir / "responses.sqlite"),
                                 batch_size=args.batch_size)
    lm.name = args.model  # the cache key names the model, not the converted folder
    spellings = lm.candidate_token_ids(SCORE_TOKENS)
    mass_rows = []
    thresholds = [float(t) for t in args.thresholds.split(",")]
    for prompt_name, variant in (("zero-shot", "single-space"), ("few-shot", "few-shot")):
        scorer = LocalLLMScorer(lm, prompt_variant=variant, min_score_mass=0.0)
        prompts = scorer.prompts(all_premises, all_hyps)
        dists = lm.next_token_distribution(prompts, SCORE_TOKENS)
        generated = lm.generate(prompts, max_new_tokens=8)
        masses = [d.mass for d in dists]
        parsed = [parse_official_score(g.text) for g in generated]
        for mode in ("argmax", "expected"):
            raw = [distribution_to_score(d.distribution, mode) for d in dists]
            rows.append(judge_row(f"SmolLM2 one-forward, {prompt_name}, {mode}, no mass floor", per_label(raw), n))
            for t in (0.25,):
                floored = [s if m >= t else None for s, m in zip(raw, masses)]
                rows.append(judge_row(f"SmolLM2 one-forward, {prompt_name}, {mode}, min_score_mass {t}",
                                      per_label(floored), n))
        rows.append(judge_row(f"SmolLM2 generate + official parser, {prompt_name}", per_label(parsed), n))
        agree = {t: sum((m >= t) == (p is not None) for m, p in zip(masses, parsed)) / len(parsed) for t in thresholds}
        replies = sorted({(g.text or "").strip()[:40] for g in generated})
        mass_rows.append({
            "prompt": prompt_name,
            "mass_all": quantiles(masses),
            "mass_parsed": quantiles([m for m, p in zip(masses, parsed) if p is not None]),
            "mass_unparsed": quantiles([m for m, p in zip(masses, parsed) if p is None]),
            "parsed": sum(p is not None for p in parsed) / len(parsed),
            "agree": agree,
            "examples": [r for r in replies][:6],
        })

    elapsed = time.perf_counter() - started
    lines = [
        f"## Stage-2 judges on {n} SNLI test premises x 3 labels ({3 * n} pairs)",
        "",
        f"`python benchmarks/bench_judges.py --premises {args.premises} --model {args.model}`; "
        f"SmolLM2 score-token spellings {spellings}; {elapsed:.0f} s on {args.threads} threads.",
        "",
        judge_table(rows),
        "",
        "### Probability mass on the score tokens (min / median / max), and greedy replies",
        "",
        "| prompt | all pairs | pairs whose greedy reply parses | pairs whose reply does not | replies that parse | "
        + " | ".join(f"agree t={t:g}" for t in thresholds) + " |",
        "| --- | --- | --- | --- | ---: | " + " | ".join("---:" for _ in thresholds) + " |",
    ]
    for r in mass_rows:
        lines.append(f"| {r['prompt']} | {r['mass_all']} | {r['mass_parsed']} | {r['mass_unparsed']} | {r['parsed']:.0%} | "
                     + " | ".join(f"{r['agree'][t]:.0%}" for t in thresholds) + " |")
    lines.append("")
    for r in mass_rows:
        lines.append(f"- {r['prompt']} greedy replies (first 40 chars, a few distinct): "
                     + "; ".join(repr(x) for x in r["examples"]))
    report = "\n".join(lines)
    print(report)
    if args.out:
        args.out.write_text(report + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
