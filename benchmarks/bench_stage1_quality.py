"""Stage 1 measured on a real LLM: does contrast (w > 0) separate x+ from x- better?

The same premises at each w in ``--omegas`` (default 0, 0.3, 0.5) through the project's own
generation path (``generate_contrastive``: SynCSE pools, chat template, greedy, a fixed
``--max-new-tokens``), then per w:

- ``cos(x,x+)`` / ``cos(x,x-)``: mean guide cosine (all-MiniLM-L6-v2) of the premise with the
  cleaned entailment / contradiction, over the rows cleaning kept; ``gap`` is their difference
  and ``x+ closer`` the share of those rows where cos(x, x+) > cos(x, x-);
- ``copy``: share of premises where x+ or x- equals x (after cleaning; case, spacing and
  punctuation ignored);
- ``meta``: share of premises where a raw output of either side held meta-text (a wrapper
  such as ``The alternative expression is: "..."``, a lead-in, a label, an echoed
  instruction, a trailing explanation: ``CleanedText.meta``, extracted or rejected);
- ``rejected``: share of premises cleaning rejected (either side), with the reasons;
- ``kept (guide)``: share of all premises kept by curation (paper rule a >= 3, b <= 3,
  a >= b + 1) with the guide scorer (5 * clip(cos, 0, 1)); ``kept (self)`` the same with the
  generator itself as the one-forward local scorer (``--no-self-score`` skips it).

Raw outputs (before cleaning) are cached under ``--cache-dir`` by everything that determines
them (the generation fingerprint and the premises), chunk by chunk and w by w, so an
interrupted run resumes and a rerun (e.g. after a change to cleaning) only re-cleans and
re-scores. ``--budget-s`` stops starting new chunks after that time and measures the premises
every w has (a loaded machine); the table header says how many.

    nohup python benchmarks/bench_stage1_quality.py --n 210 > /tmp/stage1.log 2>&1 &
    python benchmarks/bench_stage1_quality.py --n 210 --markdown out.md --json out.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from multicsr_core.generation.cleaning import clean_generation, comparable  # noqa: E402
from multicsr_core.generation.engine import generate_contrastive, generation_fingerprint  # noqa: E402
from multicsr_core.generation.settings import DecodingSettings  # noqa: E402
from multicsr_core.io.inputs import read_premises  # noqa: E402
from multicsr_core.models import resolve_model_ref  # noqa: E402
from multicsr_core.prompts import build_generation_prompts  # noqa: E402

DEFAULT_PREMISES = ROOT.parent / "shared" / "data" / "nli" / "snli_devtest_premises.txt"


def premise_sample(items: list[str], n: int, seed: int = 0) -> list[str]:
    """The first ``n`` of a seeded shuffle (the premise file is sorted: its head is no sample).

    A prefix, so a smaller ``--n`` measures a subset of a larger one and shares its cache."""
    order = list(range(len(items)))
    random.Random(seed).shuffle(order)
    return [items[i] for i in order[:n]]


class GenerationCache:
    """Raw (uncleaned) x+ / x- per premise, one JSON file per chunk of premises and w.

    The key is the generation fingerprint without the engine version (the cache holds raw text,
    which cleaning changes do not touch) and the chunk's premises.
    """

    def __init__(self, model, tokenizer, model_ref: str, max_new_tokens: int, batch_size: int, cache_dir: Path,
                 log=print):
        self.model, self.tokenizer, self.model_ref = model, tokenizer, model_ref
        self.max_new_tokens, self.batch_size, self.cache_dir, self.log = max_new_tokens, batch_size, cache_dir, log
        cache_dir.mkdir(parents=True, exist_ok=True)

    def _path(self, omega: float, premises: list[str]) -> tuple[Path, dict]:
        fingerprint = generation_fingerprint(self.model_ref, None,
                                             DecodingSettings(omega=omega, max_new_tokens=self.max_new_tokens))
        fingerprint["versions"].pop("engine", None)
        key = hashlib.sha256(json.dumps([fingerprint, premises], sort_keys=True).encode()).hexdigest()
        return self.cache_dir / f"{key[:32]}.json", fingerprint

    def cached(self, omega: float, premises: list[str]) -> bool:
        return self._path(omega, premises)[0].is_file()

    def rows(self, omega: float, premises: list[str]) -> list[dict]:
        path, fingerprint = self._path(omega, premises)
        if path.is_file():
            return json.loads(path.read_text(encoding="utf-8"))
        t0 = time.perf_counter()
        prompts = build_generation_prompts(premises, seed=fingerprint["seed"])
        triplets = generate_contrastive(self.model, self.tokenizer, prompts, DecodingSettings(
            omega=omega, max_new_tokens=self.max_new_tokens, batch_size=self.batch_size))
        got = [{"premise": t.premise, "entailment_raw": t.entailment_raw, "contradiction_raw": t.contradiction_raw,
                "entailment_prompt_id": t.entailment_prompt_id, "contradiction_prompt_id": t.contradiction_prompt_id,
                "entailment_finished": t.entailment_finished, "contradiction_finished": t.contradiction_finished}
               for t in triplets]
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(got, indent=1), encoding="utf-8")
        tmp.replace(path)
        self.log(f"w={omega}: {len(premises)} premises generated in {time.perf_counter() - t0:.0f} s")
        return got


def clean_rows(rows: list[dict]) -> list[dict]:
    out = []
    for r in rows:
        # as the pipeline cleans (engine.generate_contrastive): without the finished flags
        ent, con = clean_generation(r["entailment_raw"], r["premise"]), clean_generation(r["contradiction_raw"], r["premise"])
        reasons = [f"{side}:{c.reject_reason}" for side, c in (("entailment", ent), ("contradiction", con)) if c.reject_reason]
        out.append({**r, "entailment": ent.text, "contradiction": con.text, "reject_reasons": reasons,
                    "meta": ent.meta or con.meta,
                    "copy": any(comparable(c.text) == comparable(r["premise"]) for c in (ent, con) if c.text)})
    return out


def curated_share(kept_rows: list[dict], scorer, n_total: int) -> tuple[float, dict, dict]:
    """(share of all premises kept by the paper rule, its reject reasons, mean a and b)."""
    from multicsr_core.curation import curate_table
    from multicsr_core.io.corpus import corpus_table
    from multicsr_core.scoring.apply import score_corpus

    if not kept_rows:
        return 0.0, {}, {}
    table = corpus_table([{k: r[k] for k in ("premise", "entailment", "contradiction")} for r in kept_rows])
    curated = curate_table(score_corpus(table, scorer), rule="paper")
    reasons = Counter(r for r in curated.column("reject_reason").to_pylist() if r)
    means = {}
    for side in ("entailment", "contradiction"):
        scores = [v for v in curated.column(f"{side}_score").to_pylist() if v is not None]
        means[side[0]] = round(sum(scores) / len(scores), 3) if scores else None
    return sum(curated.column("kept").to_pylist()) / n_total, dict(reasons.most_common()), means


def measure(rows: list[dict], guide_embeddings, scorers: dict) -> dict:
    cleaned = clean_rows(rows)
    n = len(cleaned)
    kept = [r for r in cleaned if not r["reject_reasons"]]
    result = {"premises": n, "cleaning_kept": len(kept)}
    if kept:
        vectors = guide_embeddings.embed([r["premise"] for r in kept] + [r["entailment"] for r in kept]
                                         + [r["contradiction"] for r in kept])
        x, pos, neg = np.split(vectors, 3)
        cos_pos, cos_neg = np.einsum("ij,ij->i", x, pos), np.einsum("ij,ij->i", x, neg)
        result.update({"cos_pos": float(cos_pos.mean()), "cos_neg": float(cos_neg.mean()),
                       "gap": float((cos_pos - cos_neg).mean()), "pos_closer": float((cos_pos > cos_neg).mean())})
    result["copy"] = sum(r["copy"] for r in cleaned) / n
    result["meta"] = sum(r["meta"] for r in cleaned) / n
    result["rejected"] = sum(bool(r["reject_reasons"]) for r in cleaned) / n
    result["reject_reasons"] = dict(Counter(reason for r in cleaned for reason in r["reject_reasons"]).most_common())
    for name, scorer in scorers.items():
        try:
            result[f"kept_{name}"], result[f"curation_{name}"], result[f"mean_scores_{name}"] = \
                curated_share(kept, scorer, n)
        except Exception as exc:  # a scorer under construction elsewhere must not lose the table
            result[f"kept_{name}"] = None
            result[f"kept_{name}_error"] = f"{type(exc).__name__}: {exc}"[:300]
    return result


def markdown_table(results: dict[float, dict]) -> str:
    def pct(v):
        return "n/a" if v is None else f"{100 * v:.1f}%"

    def num(v):
        return "n/a" if v is None else f"{v:.3f}"

    names = [k for k in next(iter(results.values())) if k.startswith("kept_") and not k.endswith("_error")]
    head = ("| w | cos(x,x+) | cos(x,x-) | gap | x+ closer | x+ or x- = x | meta-text | rejected by cleaning | "
            + " | ".join(f"kept ({k[5:]})" for k in names) + " |")
    lines = [head, "|" + " --- |" * (8 + len(names))]
    for omega, r in results.items():
        lines.append(f"| {omega} | {num(r.get('cos_pos'))} | {num(r.get('cos_neg'))} | {num(r.get('gap'))} | "
                     f"{pct(r.get('pos_closer'))} | {pct(r['copy'])} | {pct(r['meta'])} | {pct(r['rejected'])} | "
                     + " | ".join(pct(r.get(k)) for k in names) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--llm", default="bundled:smollm2-135m-instruct")
    parser.add_argument("--guide", default="bundled:all-MiniLM-L6-v2")
    parser.add_argument("--premises", default=str(DEFAULT_PREMISES))
    parser.add_argument("--n", type=int, default=210, help="premises (a seeded sample of the file)")
    parser.add_argument("--chunk", type=int, default=32, help="premises per cached chunk (part of the cache key)")
    parser.add_argument("--budget-s", type=float, default=0,
                        help="stop generating new chunks after this many seconds; measure what every w has (0: no limit)")
    parser.add_argument("--omegas", default="0,0.3,0.5")
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--cache-dir", default=str(Path.home() / ".cache" / "multicsr" / "bench_stage1"))
    parser.add_argument("--no-self-score", action="store_true", help="skip curation with the generator as scorer")
    parser.add_argument("--cached-only", action="store_true",
                        help="generate nothing: measure the leading chunks every w has in the cache")
    parser.add_argument("--markdown", help="also write the table here")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    from multicsr_core.pipeline.components import cached_guide
    from multicsr_core.generation.engine import load_generator
    from multicsr_core.guide import GuideEmbeddings
    from multicsr_core.scoring.guide import GuideScorer

    cache_dir = Path(args.cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    premises = premise_sample(read_premises(args.premises).premises, args.n)
    model_path = resolve_model_ref(args.llm)
    model, tokenizer = load_generator(model_path)
    guide = cached_guide(args.guide)
    scorers = {"guide": GuideScorer(guide, source=args.guide, cache_dir=cache_dir / "guide")}
    if not args.no_self_score:
        from multicsr_core.llm.cache import ResponseCache
        from multicsr_core.llm.local import LocalLM
        from multicsr_core.scoring.llm import LocalLLMScorer

        lm = LocalLM(model, tokenizer, name=args.llm, cache=ResponseCache(cache_dir / "self_score.sqlite"), batch_size=32)
        scorers["self"] = LocalLLMScorer(lm)
    embeddings = GuideEmbeddings(guide, cache_dir=cache_dir / "guide")

    started = time.perf_counter()
    omegas = [float(w) for w in args.omegas.split(",")]
    cache = GenerationCache(model, tokenizer, args.llm, args.max_new_tokens, args.batch_size, cache_dir / "generations")
    # chunk by chunk over every w, so that a budget cut leaves the same premises at each w
    by_omega: dict[float, list[dict]] = {w: [] for w in omegas}
    measured: list[str] = []
    for start in range(0, len(premises), args.chunk):
        part = premises[start:start + args.chunk]
        over = args.cached_only or (args.budget_s and time.perf_counter() - started > args.budget_s)
        if over and not all(cache.cached(w, part) for w in omegas):
            print(f"{'cached only' if args.cached_only else f'budget of {args.budget_s} s spent'}: "
                  f"measuring the first {len(measured)} premises", flush=True)
            break
        for w in omegas:
            by_omega[w] += cache.rows(w, part)
        measured += part
    results: dict[float, dict] = {}
    samples: dict[float, list] = {}
    for w in omegas:
        results[w] = measure(by_omega[w], embeddings, scorers)
        samples[w] = by_omega[w][:3]
        print(f"w={w}: {json.dumps(results[w])}", flush=True)
    table = markdown_table(results)
    header = (f"{len(measured)} SNLI premises (a seeded sample of {Path(args.premises).name}), {args.llm}, "
              f"SynCSE pools, chat template, greedy, max_new_tokens {args.max_new_tokens}; "
              f"guide {args.guide}; paper rule alpha 3, beta 3, gamma 1")
    print("\n" + header + "\n\n" + table)
    for omega, r in results.items():
        print(f"w={omega} cleaning rejects: {r['reject_reasons']}")
        for name in scorers:
            print(f"w={omega} curation ({name} scorer): mean a, b = {r.get(f'mean_scores_{name}')}, "
                  f"rejects {r.get(f'curation_{name}', r.get(f'kept_{name}_error'))}")
    print(f"total {time.perf_counter() - started:.0f} s")
    if args.markdown:
        Path(args.markdown).write_text(header + "\n\n" + table + "\n", encoding="utf-8")
    if args.json:
        Path(args.json).write_text(json.dumps({"setup": header, "results": {str(k): v for k, v in results.items()},
                                               "samples": {str(k): v for k, v in samples.items()}}, indent=1),
                                   encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
