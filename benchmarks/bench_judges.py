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

    python benchmarks/bench_judges.py                       # bundled SmolLM2, 40 + 40 premises
    python benchmarks/bench_judges.py --premises 40 --few-shot-premises 12 --out /tmp/judge.md

Not a timing benchmark; nothing is cached (one greedy generate per prompt gives both the
first-step distribution and the reply).
"""

from __future__ import annotations

import argparse
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
    parser.add_argument("--premises", type=int, default=40, help="premises for the zero-shot prompt (x 3 labels)")
    parser.add_argument("--few-shot-premises", type=int, default=40, help="premises for the few-shot prompt")
    parser.add_argument("--max-new-tokens", type=int, default=8, help="as LocalLLMScorer's generate mode")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--thresholds", default="0.05,0.1,0.15,0.2,0.25,0.3,0.4,0.5")
    parser.add_argument("--out", type=Path, default=None, help="also write the Markdown report here")
    args = parser.parse_args()

    import torch

    from multicsr_core.pipeline.components import cached_guide
    from multicsr_core.llm.local import LocalLM
    from multicsr_core.models import resolve_model_ref
    from multicsr_core.scoring.guide import GuideScorer
    from multicsr_core.scoring.llm import DEFAULT_MIN_SCORE_MASS, SCORE_TOKENS, LocalLLMScorer, distribution_to_score
    from multicsr_core.scoring.parsing import parse_official_score

    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    labels = ("entailment", "neutral", "contradiction")
    folder = resolve_model_ref(args.model)
    lm = LocalLM.from_pretrained(folder, batch_size=args.batch_size)
    spellings = lm.candidate_token_ids(SCORE_TOKENS)
    guide = GuideScorer(cached_guide(args.guide), source=args.guide)
    thresholds = [float(t) for t in args.thresholds.split(",")]
    rows, mass_rows, sizes = [], [], {}

    def report() -> str:
        lines = [
            "## Stage-2 judges on SNLI test pairs with gold labels",
            "",
            f"`python benchmarks/bench_judges.py --premises {args.premises} --few-shot-premises "
            f"{args.few_shot_premises} --model {args.model}`; " + "; ".join(
                f"{name}: {n} premises x 3 labels = {3 * n} pairs" for name, n in sizes.items())
            + f". SmolLM2 score-token spellings {spellings}; {time.perf_counter() - started:.0f} s on "
            f"{args.threads} threads. Each SmolLM2 row reads the one-forward distribution from the first step of "
            "the same greedy generate call whose reply the parser reads (equal by construction, "
            "tests/test_local_scorer.py::test_t5_one_forward_matches_first_generate_step). The guide row is repeated "
            "on each prompt's pairs.",
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
            lines.append(f"| {r['prompt']} | {r['mass_all']} | {r['mass_parsed']} | {r['mass_unparsed']} | "
                         f"{r['parsed']:.0%} | " + " | ".join(f"{r['agree'][t]:.0%}" for t in thresholds) + " |")
        lines.append("")
        lines.append("`agree t`: share of pairs where the one-forward verdict (mass >= t scores, else unparsable) "
                     "agrees with generate + official parser (reply parses or not).")
        lines.append("")
        for r in mass_rows:
            lines.append(f"- {r['prompt']} greedy replies (a few distinct, first 40 chars): "
                         + "; ".join(repr(x) for x in r["examples"]))
        return "\n".join(lines)

    for prompt_name, variant, n_premises in (("zero-shot", "single-space", args.premises),
                                             ("few-shot", "few-shot", args.few_shot_premises)):
        if n_premises <= 0:
            continue
        triples = snli_triples(default_data_root(), n_premises)
        n = len(triples)
        sizes[prompt_name] = n
        all_premises = [t["premise"] for t in triples] * 3
        all_hyps = [t[label] for label in labels for t in triples]

        def per_label(values: list) -> dict[str, list]:
            return {label: values[i * n:(i + 1) * n] for i, label in enumerate(labels)}

        rows.append(judge_row(f"guide: MiniLM cosine -> 0-5 ({prompt_name} pairs)",
                              per_label([s.score for s in guide.score_pairs(all_premises, all_hyps)]), n))
        scorer = LocalLLMScorer(lm, prompt_variant=variant, min_score_mass=0.0)
        outcomes = first_step_and_reply(lm, scorer.prompts(all_premises, all_hyps), spellings, args.max_new_tokens)
        masses = [o["mass"] for o in outcomes]
        parsed = [parse_official_score(o["text"]) for o in outcomes]
        for mode in ("argmax", "expected"):
            raw = [distribution_to_score(o["distribution"], mode) for o in outcomes]
            rows.append(judge_row(f"SmolLM2 one-forward, {prompt_name}, {mode}, no mass floor", per_label(raw), n))
            floored = [s if m >= DEFAULT_MIN_SCORE_MASS else None for s, m in zip(raw, masses)]
            rows.append(judge_row(f"SmolLM2 one-forward, {prompt_name}, {mode}, min_score_mass {DEFAULT_MIN_SCORE_MASS}",
                                  per_label(floored), n))
        rows.append(judge_row(f"SmolLM2 generate + official parser, {prompt_name}", per_label(parsed), n))
        agree = {t: sum((m >= t) == (p is not None) for m, p in zip(masses, parsed)) / len(parsed) for t in thresholds}
        mass_rows.append({
            "prompt": prompt_name,
            "mass_all": quantiles(masses),
            "mass_parsed": quantiles([m for m, p in zip(masses, parsed) if p is not None]),
            "mass_unparsed": quantiles([m for m, p in zip(masses, parsed) if p is None]),
            "parsed": sum(p is not None for p in parsed) / len(parsed),
            "agree": agree,
            "examples": sorted({(o["text"] or "").strip()[:40] for o in outcomes})[:6],
        })
        text = report()
        print(text, flush=True)
        if args.out:  # after each prompt: partial results are readable while the next one runs
            args.out.write_text(text + "\n", encoding="utf-8")


def first_step_and_reply(lm, prompts: list, spellings: dict[str, list[int]], max_new_tokens: int) -> list[dict]:
    """Per prompt, in one greedy ``generate``: the first step's distribution over the score tokens
    and their mass (what ``LocalLM.next_token_distribution`` computes), and the decoded reply
    (what ``LocalLM.generate`` returns). One pass instead of two: the CPU here is shared."""
    import torch

    out: list[dict | None] = [None] * len(prompts)
    for number, indices in enumerate(lm._batches(prompts), start=1):
        batch = lm._encode([prompts[i] for i in indices])
        with torch.inference_mode():
            result = lm.model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False, output_logits=True,
                                       return_dict_in_generate=True, pad_token_id=lm.tokenizer.pad_token_id)
        probs = torch.softmax(result.logits[0].float(), dim=-1)
        texts = lm.tokenizer.batch_decode(result.sequences[:, batch["input_ids"].shape[1]:], skip_special_tokens=True)
        for row, index, text in zip(probs, indices, texts):
            raw = {digit: float(row[ids].sum()) for digit, ids in spellings.items()}
            mass = sum(raw.values())
            out[index] = {"distribution": {d: p / mass for d, p in raw.items()}, "mass": mass, "text": text}
        print(f"  batch {number}: {len(indices)} prompts", file=sys.stderr, flush=True)
    return out  # type: ignore[return-value]


if __name__ == "__main__":
    main()
