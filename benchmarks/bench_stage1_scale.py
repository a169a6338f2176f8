"""Stage 1 at corpus scale: premises/s of this checkout against another checkout, side by side.

Each checkout runs in its own worker process (its own ``multicsr_core`` on ``sys.path``, the model
loaded once) and stage 1 (``generate_contrastive``: tokenize, decode, clean; the function
``multicsr generate`` runs on each shard) is fed the same premises in chunks, the two checkouts
taking turns chunk by chunk, first one then the other, so a change of load hits both alike.
Reported per setting (premises, batch size, threads): seconds, premises/s and output tokens/s of
each checkout, their ratio, and whether every row's raw text is the same. Then the projected CPU
hours for 10,000 and 275,601 premises (SimCSE's NLI set) at the best rate, and a profile of where
one checkout's time goes (``--profile``), by part of stage 1.

    python benchmarks/bench_stage1_scale.py --baseline /path/to/checkout-of-main [/path/to/another] \\
        --premises 1024 --batch-sizes 16 --threads 2 --out runs/scale
    python benchmarks/bench_stage1_scale.py --premises 256 512 --batch-sizes 8 16 32 --threads 1 2 \\
        --out runs/scale-grid            # this checkout only: the scale table
    python benchmarks/bench_stage1_scale.py --profile --premises 64 --baseline ... --out runs/profile

The model is the bundled SmolLM2-135M-Instruct (``--model`` takes any ref ``multicsr generate``
takes), float32, greedy, w = 0.3, ``--new-tokens`` 32, the syncse-pool prompts through the
model's chat template, premises from SNLI (``../shared/data/nli/snli_devtest_premises.txt`` or
``--premises-file``). The load average is printed before and after; ratios count only from a
quiet machine.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
NLI_PREMISES = 275_601
DEFAULT_PREMISES = REPO.parent / "shared" / "data" / "nli" / "snli_devtest_premises.txt"

#: Where stage 1's time goes: (part, the functions whose cumulative time it is). A function is
#: matched by (file name ending, function name); parts nest in this order, so a part's own time is
#: its cumulative time less the parts below it that it calls.
PROFILE_PARTS = [
    ("prefill (prompts through the model)", [("decoding.py", "first_logits")]),
    # inside the prefill (subtracted from it): the shared prompt prefixes, computed once per call
    ("  of it: shared prefixes, once per call", [("decoding.py", "_compute")]),
    ("decode steps (one forward per step)", [("decoding.py", "forward")]),
    ("logits processing (l - w*l_hat, processors, token choice)",
     [("processors.py", "__call__")]),
    ("cache reorder (dropping finished rows)", [("decoding.py", "keep")]),
    ("tokenizing prompts", [("engine.py", "encode_prompt")]),
    ("cleaning outputs", [("cleaning.py", "clean_generation")]),
]


# ----------------------------------------------------------------------------- worker


def worker(checkout: Path, model_path: str, profile_out: Path | None) -> None:
    """Serve stage-1 requests (one JSON line each on stdin) with ``checkout``'s code."""
    sys.path.insert(0, str(checkout))
    import torch

    from multicsr_core.generation.engine import generate_contrastive, load_generator
    from multicsr_core.prompts import build_generation_prompts

    try:  # checkouts from #22 on take the decoding settings as one object; older ones as keywords
        from multicsr_core.generation.settings import DecodingSettings
    except ImportError:
        DecodingSettings = None

    model, tokenizer = load_generator(model_path)
    print(json.dumps({"ready": True, "code": str(checkout)}), flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        torch.set_num_threads(request["threads"])
        prompts = build_generation_prompts(request["premises"], seed=42)
        decoding = dict(omega=request["omega"], max_new_tokens=request["new_tokens"], batch_size=request["batch_size"])
        args, kwargs = ((DecodingSettings(**decoding),), {}) if DecodingSettings is not None else ((), decoding)
        profiler = cProfile.Profile() if request.get("profile") else None
        started = time.perf_counter()
        if profiler:
            profiler.enable()
        rows = generate_contrastive(model, tokenizer, prompts, *args, **kwargs)
        if profiler:
            profiler.disable()
        seconds = time.perf_counter() - started
        reply = {"seconds": seconds,
                 "raw": [[r.entailment_raw, r.contradiction_raw] for r in rows],
                 # older checkouts do not count decoded tokens (None): the driver uses this checkout's count
                 "new_tokens": sum(getattr(r, "entailment_new_tokens", 0) + getattr(r, "contradiction_new_tokens", 0)
                                   for r in rows) if hasattr(rows[0], "entailment_new_tokens") else None}
        if profiler:
            reply["profile"] = profile_parts(profiler, seconds)
        print(json.dumps(reply), flush=True)


def profile_parts(profiler: cProfile.Profile, total: float) -> dict:
    """Seconds per part of ``PROFILE_PARTS`` (cumulative times, nested parts subtracted)."""
    stats = pstats.Stats(profiler).stats  # {(file, line, name): (cc, nc, tottime, cumtime, callers)}
    cumulative = {}
    for part, functions in PROFILE_PARTS:
        cumulative[part] = sum(value[3] for (file, _, name), value in stats.items()
                               if any(file.endswith(f) and name == n for f, n in functions))
    # logits processing runs inside neither forward; the rest are disjoint but for the shared prefixes,
    # which run inside the prefill: the prefill is reported with them, the other parts as measured
    parts = {part: round(seconds, 3) for part, seconds in cumulative.items()}
    nested = sum(seconds for part, seconds in cumulative.items() if part.startswith("  of it"))
    parts["other (batching, decoding ids to text, Python)"] = round(total - sum(cumulative.values()) + nested, 3)
    parts["total"] = round(total, 3)
    return parts


class Worker:
    def __init__(self, checkout: Path, model_path: str):
        env = dict(os.environ, PYTHONPATH=str(checkout), TRANSFORMERS_VERBOSITY="error")
        self.name = str(checkout)
        self.process = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--worker", str(checkout), "--model-path", model_path],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, cwd=str(checkout))
        hello = self.process.stdout.readline()
        if not hello:
            raise SystemExit(f"bench_stage1_scale: the worker for {checkout} did not start (see its stderr above)")

    def run(self, **request) -> dict:
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            raise SystemExit(f"bench_stage1_scale: the worker for {self.name} died (see its stderr above)")
        return json.loads(line)

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait(timeout=60)


# ----------------------------------------------------------------------------- driver


def loadavg() -> str:
    try:
        return Path("/proc/loadavg").read_text(encoding="utf-8").strip()
    except OSError:
        return "unknown"


def side_by_side(workers: dict[str, Worker], premises: list[str], batch_size: int, threads: int, chunk: int,
                 omega: float, new_tokens: int) -> dict:
    """Every worker on the same premises, chunk by chunk, the order alternating per chunk."""
    seconds = {name: 0.0 for name in workers}
    chunks = {name: [] for name in workers}  # seconds per chunk, to see how load moved the ratio
    raw = {name: [] for name in workers}
    tokens = {name: 0 for name in workers}
    names = list(workers)
    for k, start in enumerate(range(0, len(premises), chunk)):
        part = premises[start:start + chunk]
        for name in (names if k % 2 == 0 else names[::-1]):
            reply = workers[name].run(premises=part, batch_size=batch_size, threads=threads, omega=omega,
                                      new_tokens=new_tokens)
            seconds[name] += reply["seconds"]
            chunks[name].append(round(reply["seconds"], 2))
            raw[name] += reply["raw"]
            tokens[name] += reply["new_tokens"] if reply["new_tokens"] is not None else -10**12
        print(f"  {start + len(part)}/{len(premises)} premises: "
              + ", ".join(f"{n} {seconds[n]:.1f} s" for n in names) + f"  (load {loadavg()})", flush=True)
    row = {"premises": len(premises), "batch_size": batch_size, "threads": threads,
           "seconds": {n: round(s, 2) for n, s in seconds.items()},
           "premises_per_s": {n: round(len(premises) / s, 3) for n, s in seconds.items()},
           # tokens decoded by this checkout (a checkout that does not count them is credited with the same
           # number: compare its rows' identity below)
           "output_tokens_per_s": {n: round((tokens[n] if tokens[n] >= 0 else tokens["this"]) / seconds[n], 1)
                                   for n in names},
           "new_tokens": tokens["this"], "chunk_seconds": chunks}
    row["speedup"], row["identical_rows"], row["differing_rows"] = {}, {}, {}
    for name in names[1:]:  # every other checkout against this one
        row["speedup"][name] = round(seconds[name] / seconds["this"], 3)
        same = sum(a == b for a, b in zip(raw["this"], raw[name]))
        row["identical_rows"][name] = f"{same}/{len(premises)}"
        row["differing_rows"][name] = [{"premise": premises[i], "this": a, name: b}
                                       for i, (a, b) in enumerate(zip(raw["this"], raw[name])) if a != b][:5]
    return row


def projection(rate: float) -> dict:
    return {"premises_per_s": rate,
            "hours_10k": round(10_000 / rate / 3600, 2),
            "hours_275k": round(NLI_PREMISES / rate / 3600, 1)}


def markdown(report: dict) -> str:
    lines = [f"# Stage 1 at scale ({report['model']}, w = {report['omega']}, {report['new_tokens']} new tokens)", "",
             f"load average before: {report['load_before']}; after: {report['load_after']}", ""]
    names = report["checkouts"]
    head = "| premises | batch | threads | " + " | ".join(f"{n} s | {n} premises/s | {n} tokens/s" for n in names)
    head += "".join(f" | speedup vs {n} | identical rows vs {n}" for n in names[1:])
    if report["rows"]:  # a --profile run has none
        lines += [head + " |", "|" + " --- |" * (head.count("|") - 1 + 1)]
    for row in report["rows"]:
        cells = [str(row["premises"]), str(row["batch_size"]), str(row["threads"])]
        for n in names:
            cells += [f"{row['seconds'][n]:.1f}", f"{row['premises_per_s'][n]:.2f}", f"{row['output_tokens_per_s'][n]:.1f}"]
        for n in names[1:]:
            cells += [f"{row['speedup'][n]:.2f}x", row["identical_rows"][n]]
        lines.append("| " + " | ".join(cells) + " |")
    if report.get("projection"):
        p = report["projection"]
        lines += ["", f"Projection at {p['premises_per_s']:.2f} premises/s (this checkout's best rate): "
                      f"10,000 premises {p['hours_10k']} h, 275,601 premises {p['hours_275k']} h of this CPU."]
    for name, parts in report.get("profiles", {}).items():
        lines += ["", f"## Profile: {name}", "", "| part | seconds | share |", "| --- | --- | --- |"]
        for part, seconds in parts.items():
            if part != "total":
                lines.append(f"| {part} | {seconds:.2f} | {seconds / parts['total']:.0%} |")
        lines.append(f"| total | {parts['total']:.2f} | |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--model-path", help=argparse.SUPPRESS)
    parser.add_argument("--baseline", type=Path, nargs="+", default=[],
                        help="checkouts to compare with (e.g. `git worktree add` of main), named by their folder")
    parser.add_argument("--model", default="bundled:smollm2-135m-instruct")
    parser.add_argument("--premises", type=int, nargs="+", default=[1024])
    parser.add_argument("--premises-file", type=Path, default=DEFAULT_PREMISES)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[16])
    parser.add_argument("--threads", type=int, nargs="+", default=[2])
    parser.add_argument("--chunk", type=int, default=64, help="premises per turn of each checkout")
    parser.add_argument("--omega", type=float, default=0.3)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--profile", action="store_true", help="profile each checkout on the first setting")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    if args.worker:
        return worker(args.worker, args.model_path, None)
    if args.out is None:
        parser.error("--out DIR is required (stage1_scale.json and stage1_scale.md go there)")
    for checkout in args.baseline:
        if not (checkout / "multicsr_core" / "generation" / "engine.py").is_file():
            parser.error(f"--baseline {checkout}: not a checkout of this project (no multicsr_core/generation/engine.py)")
    if not args.premises_file.is_file():
        parser.error(f"--premises-file {args.premises_file}: no such file (one premise per line)")
    sentences = [s.strip() for s in args.premises_file.read_text(encoding="utf-8").splitlines() if s.strip()]
    if max(args.premises) > len(sentences):
        parser.error(f"{args.premises_file} holds {len(sentences)} premises, fewer than {max(args.premises)}")

    sys.path.insert(0, str(REPO))
    from multicsr_core.models import resolve_model_ref

    model_path = str(resolve_model_ref(args.model))
    report = {"model": args.model, "omega": args.omega, "new_tokens": args.new_tokens,
              "checkouts": ["this"] + [c.resolve().name for c in args.baseline],
              "code": {"this": str(REPO), **{c.resolve().name: str(c.resolve()) for c in args.baseline}},
              "cpus": os.cpu_count(), "load_before": loadavg(), "rows": []}
    print(f"bench_stage1_scale: load average {report['load_before']}", flush=True)
    workers = {"this": Worker(REPO, model_path)}
    for checkout in args.baseline:
        workers[checkout.resolve().name] = Worker(checkout.resolve(), model_path)
    try:
        if args.profile:
            report["profiles"] = {}
            part = sentences[: args.premises[0]]
            for name, w in workers.items():
                reply = w.run(premises=part, batch_size=args.batch_sizes[0], threads=args.threads[0],
                              omega=args.omega, new_tokens=args.new_tokens, profile=True)
                report["profiles"][name] = reply["profile"]
        else:
            for n in args.premises:
                for batch in args.batch_sizes:
                    for threads in args.threads:
                        print(f"{n} premises, batch {batch}, {threads} threads", flush=True)
                        report["rows"].append(side_by_side(workers, sentences[:n], batch, threads,
                                                           args.chunk, args.omega, args.new_tokens))
            best = max(row["premises_per_s"]["this"] for row in report["rows"])
            report["projection"] = projection(best)
    finally:
        for w in workers.values():
            w.close()
    report["load_after"] = loadavg()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "stage1_scale.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    table = markdown(report)
    (args.out / "stage1_scale.md").write_text(table, encoding="utf-8")
    print(table)
    return report


if __name__ == "__main__":
    main()
