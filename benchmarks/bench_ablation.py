"""The paper's ablation (MultiCSR Table 3, in spirit) measured on real models, end to end.

Fixed for every variant: one premise set (a seeded sample of SNLI dev+test premises that have a
gold triplet), the encoder (all-MiniLM-L6-v2, also the guide), the training steps, batch size and
learning rate, and the seeds. Per LLM the variants are::

    1 plain        w = 0,   no curation, unmasked loss   (the SynCSE-style baseline)
    2 +contrast    w = 0.3, no curation, unmasked loss
    3 +curation    w = 0.3, paper rule (guide scores), unmasked loss
    4 +mask        w = 0.3, paper rule, the Eq. 7 in-batch mask: full MultiCSR
    5 gold         the gold SNLI triplets of the same premises, unmasked loss (shared by the LLMs)

and one control per LLM, after variant 3 has run::

    3r subset      w = 0.3, no curation, unmasked loss, trained on a seeded random sample of the
                   rows cleaning kept, as many as curation kept in variant 3: what curation does
                   beyond making the corpus smaller

Each variant and seed is one ``multicsr run`` with ``--set`` overrides of a config this script
writes. Variants of one (LLM, w) share a workdir, so generation and scoring run once per
(LLM, w) and later variants only curate, train and evaluate (the pipeline's own caches); the
baseline STS evaluation is cached the same way. Each finished run's figures are stored in
``<workdir>/results/<run>.json`` keyed by its config, so a rerun of this script runs nothing that
finished and only assembles the table again.

Reported per variant: STS12-16, STS-B, SICK-R Spearman x 100 (mean and standard deviation over
seeds), the average and its delta against the untrained encoder, the corpus after each step
(premises, rows cleaning kept, rows curation kept), and per (LLM, w) the stage-1 quality figures:
copies of the premise, cleaning rejects, guide cos(x, x+), cos(x, x-) and their gap over the rows
cleaning kept, the share where x+ is closer than x-, and the mean length of the raw outputs in
the LLM's tokens.

    python benchmarks/bench_ablation.py --workdir /work/ablation --premises 300 --seeds 1 2 3 \\
        --out docs/ablation

writes ``ablation.json``, ``ablation.md`` and ``ablation.png`` under ``--out``. ``--llms`` picks
the LLMs (default both bundled ones), ``--only-generate`` runs stage 1 and 2 only (to warm the
caches), ``--report-only`` assembles the table from what has finished.

``--generated DIR`` takes stage 1 from elsewhere, e.g. a GPU machine
(``benchmarks/gpu_ablation_stage1.sh``, which writes ``DIR/<llm>-w0.0.parquet``,
``DIR/<llm>-w0.3.parquet`` and ``DIR/stage1_gpu.json``): an LLM with both files enters every
variant at stage 2 (``input.triplets``, the corpus ``multicsr generate`` wrote), and its stage-1
figures come from those files and the generate reports. Scoring, curation, training and
evaluation still run here, each variant one ``multicsr run``.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
SHARED = (ROOT.parent / "shared" / "data").resolve()
STS_TASKS = ("STS12", "STS13", "STS14", "STS15", "STS16", "STSBenchmark", "SICKRelatedness")
LLMS = {
    # name: (model ref, prompt set, chat template)
    "gemma-3-270m": ("bundled:gemma-3-270m", "base-2shot", False),
    "smollm2-135m": ("bundled:smollm2-135m-instruct", "syncse-pool", True),
}
VARIANTS = {
    # name: (omega, curation, mask)
    "1 plain (w=0)": (0.0, False, False),
    "2 +contrast (w=0.3)": (0.3, False, False),
    "3 +curation": (0.3, True, False),
    "4 +mask (MultiCSR)": (0.3, True, True),
}
GOLD = "5 gold SNLI triplets"


def prepare_data(workdir: Path, n: int, seed: int = 0) -> tuple[Path, Path]:
    """A seeded sample of ``n`` premises with one gold (premise, entailment, contradiction) each."""
    data = workdir / "data"
    premises_path, gold_path = data / f"premises-{n}.txt", data / f"gold-{n}.csv"
    if premises_path.is_file() and gold_path.is_file():
        return premises_path, gold_path
    with open(SHARED / "nli" / "snli_devtest_for_simcse.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    first: dict[str, dict] = {}
    for row in rows:
        first.setdefault(row["sent0"], row)
    premises = sorted(first)
    random.Random(seed).shuffle(premises)  # the file is sorted: its head is no sample
    chosen = premises[:n]
    data.mkdir(parents=True, exist_ok=True)
    premises_path.write_text("".join(p + "\n" for p in chosen), encoding="utf-8")
    with open(gold_path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=["sent0", "sent1", "hard_neg"])
        writer.writeheader()
        writer.writerows(first[p] for p in chosen)
    return premises_path, gold_path


def base_config(args) -> dict:
    return {
        "name": "ablation",
        "generation": {"max_new_tokens": args.max_new_tokens, "batch_size": 16, "shard_size": 100,
                       "dtype": "float32", "device": "cpu"},
        "scoring": {"scorer": "guide"},
        "curation": {"rule": "paper", "alpha": 3.0, "beta": 3.0, "gamma": 1.0},
        "training": {"base_model": "bundled:all-MiniLM-L6-v2", "guide_model": "bundled:all-MiniLM-L6-v2",
                     "pooling": "mean", "mlp_only_train": False, "loss": "paper", "sigma": 0.9, "tau": 0.05,
                     "batch_size": args.batch_size, "learning_rate": args.learning_rate, "epochs": 100,
                     "max_steps": args.steps, "eval_steps": args.eval_steps, "max_seq_length": 32},
        # the untrained encoder is evaluated once (baseline_sts), not once per workdir
        "evaluation": {"data_dir": str(SHARED / "senteval"), "tasks": ["sts"], "evaluate_baseline": False},
    }


def run_multicsr(config_path: Path, workdir: Path, overrides: list[str], log_path: Path) -> dict:
    cmd = [str(Path(sys.executable).parent / "multicsr"), "run", "--preset", str(config_path), "--workdir", str(workdir)]
    for item in overrides:
        cmd += ["--set", item]
    started = time.time()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    with open(log_path, "a", encoding="utf-8") as log:
        log.write(f"\n$ {' '.join(cmd)}\n")
        log.flush()
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=log, text=True, cwd=ROOT)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"multicsr run failed (exit {proc.returncode}); see {log_path}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"report": json.loads(proc.stdout), "wall_s": round(time.time() - started, 1), "cpu_s": round(cpu, 1),
            "command": "multicsr run --preset " + str(config_path) + " --workdir " + str(workdir)
                       + "".join(f" --set {o}" for o in overrides)}


def baseline_sts(workdir: Path) -> dict:
    """STS of the untrained encoder (``multicsr evaluate``), once per benchmark workdir."""
    path = workdir / "baseline" / "results.json"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        cmd = [str(Path(sys.executable).parent / "multicsr"), "evaluate", "--model", "bundled:all-MiniLM-L6-v2",
               "--output", str(path), "--data-dir", str(SHARED / "senteval"), "--no-card"]
        with open(workdir / "runs.log", "a", encoding="utf-8") as log:
            subprocess.run(cmd, stdout=log, stderr=log, check=True, cwd=ROOT)
    return sts_figures(path)


def sts_figures(results_path: Path) -> dict:
    results = json.loads(results_path.read_text())
    flat = results.get("sts", results)
    out = {}
    for task in STS_TASKS:
        value = flat[task]
        if isinstance(value, dict):
            value = value.get("spearman", value.get("all", value))
            if isinstance(value, dict):
                value = value.get("all")
        out[task] = float(value)
    out["avg"] = sum(out[t] for t in STS_TASKS) / len(STS_TASKS)
    return out


def corpus_sizes(workdir: Path) -> dict:
    """The corpus after each step: premises in, rows cleaning kept (the corpus), rows curation kept."""
    import pyarrow.parquet as pq

    kept = pq.read_table(workdir / "corpus.parquet", columns=["kept"]).column("kept").to_pylist()
    funnel = json.loads((workdir / "run_summary.json").read_text()).get("funnel", {})
    return {"premises": funnel.get("premises", len(kept)), "rows": len(kept), "kept": int(sum(map(bool, kept)))}


def stage1_quality(workdir: Path, llm_ref: str) -> dict:
    """Stage 1 of one (LLM, w) workdir: the cleaning funnel (run_summary.json) and, over the rows
    cleaning kept (corpus.parquet), the guide's cos(x, x+), cos(x, x-), their gap, the share where
    x+ is closer, and the mean length of the raw outputs in the LLM's tokens."""
    funnel = json.loads((workdir / "run_summary.json").read_text())["funnel"]
    return _stage1_figures(funnel, workdir / "corpus.parquet", llm_ref)


def generated_stage1(generated: Path, llm: str, omega: float) -> tuple[Path, dict] | None:
    """The corpus ``multicsr generate`` wrote for (llm, w) under ``--generated`` and the funnel of
    its report (stage1_gpu.json), in run_summary's keys; None when either is missing."""
    corpus = generated / f"{llm}-w{omega}.parquet"
    summary = generated / "stage1_gpu.json"
    if not corpus.is_file() or not summary.is_file():
        return None
    for run in json.loads(summary.read_text())["runs"]:
        if run["llm"] == llm and float(run["omega"]) == omega and run["status"] == "ok":
            rejects = run["report"]["rejects"]
            funnel = {"premises": run["report"]["premises"]["kept"], "generation_rejected": rejects["rejected"],
                      **{f"generation_rejected:{k}": v for k, v in rejects.items() if ":" in k},
                      "generation_wall_s": run["wall_s"], "generation_device": json.loads(summary.read_text())["gpu"],
                      "decoding": run["report"].get("decoding")}
            return corpus, funnel
    return None


def _stage1_figures(funnel: dict, corpus: Path, llm_ref: str) -> dict:
    import numpy as np
    import pyarrow.parquet as pq
    from sentence_transformers import SentenceTransformer
    from transformers import AutoTokenizer

    from multicsr_core.models import resolve_model_ref

    rows = pq.read_table(corpus).to_pylist()
    guide = SentenceTransformer(resolve_model_ref("bundled:all-MiniLM-L6-v2"), device="cpu")
    emb = {k: guide.encode([r[k] for r in rows], batch_size=128, normalize_embeddings=True)
           for k in ("premise", "entailment", "contradiction")}
    cos_pos = (emb["premise"] * emb["entailment"]).sum(1)
    cos_neg = (emb["premise"] * emb["contradiction"]).sum(1)
    tokenizer = AutoTokenizer.from_pretrained(resolve_model_ref(llm_ref))
    lengths = [len(tokenizer(r[k] or "", add_special_tokens=False)["input_ids"])
               for r in rows for k in ("entailment_raw", "contradiction_raw")]
    reasons = {k.split(":", 1)[1]: v for k, v in funnel.items() if k.startswith("generation_rejected:")}
    copies = sum(v for k, v in reasons.items() if k.endswith("copy_of_premise"))
    extra = {k: funnel[k] for k in ("generation_wall_s", "generation_device", "decoding") if k in funnel}
    return {**extra, "premises": funnel.get("premises"), "cleaning_rejected": funnel.get("generation_rejected", 0),
            "copy_sides": copies, "reject_reasons": reasons, "scored_rows": len(rows),
            "cos_pos": float(np.mean(cos_pos)), "cos_neg": float(np.mean(cos_neg)),
            "cos_gap": float(np.mean(cos_pos - cos_neg)), "pos_closer": float(np.mean(cos_pos > cos_neg)),
            "mean_raw_tokens": float(np.mean(lengths))}


def variant_runs(args, premises: Path, gold: Path) -> list[tuple[str, str, Path, list[str], int]]:
    """(llm, variant, workdir, overrides, seed) for every run, generation-sharing runs together."""
    runs = []
    gold_runs = [] if args.no_gold else [
        ("gold", GOLD, args.workdir / "runs" / "gold",
         [f"input.triplets={gold}", "curation.enabled=false", "training.mask=false", f"training.seed={seed}"], seed)
        for seed in args.seeds]
    for number, llm in enumerate(args.llms):
        if number == 1:  # the reference before the second LLM: a short budget still gets it
            runs += gold_runs
            gold_runs = []
        ref, prompt_set, chat = LLMS[llm]
        for variant, (omega, curation, mask) in VARIANTS.items():
            gen = [f"input.premises={premises}", f"generation.llm={ref}", f"generation.omega={omega}",
                   f"generation.prompt_set={prompt_set}", f"generation.use_chat_template={str(chat).lower()}"]
            workdir = args.workdir / "runs" / f"{llm}-w{omega}"
            pregenerated = generated_stage1(args.generated, llm, omega) if args.generated else None
            if pregenerated is not None:  # stage 1 ran elsewhere: enter at stage 2 with its corpus
                gen = [f"input.triplets={pregenerated[0]}"]
                workdir = args.workdir / "runs" / f"{llm}-w{omega}-pregenerated-{args.premises}"
            for seed in args.seeds:
                runs.append((llm, variant, workdir, gen + [f"curation.enabled={str(curation).lower()}",
                                                           f"training.mask={str(mask).lower()}",
                                                           f"training.seed={seed}"], seed))
    return runs + gold_runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/multicsr-ablation"))
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "ablation")
    parser.add_argument("--premises", type=int, default=300)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--llms", nargs="+", choices=sorted(LLMS), default=["gemma-3-270m", "smollm2-135m"])
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--eval-steps", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--learning-rate", type=float, default=5e-5)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--no-gold", action="store_true")
    parser.add_argument("--only-generate", action="store_true")
    parser.add_argument("--report-only", action="store_true")
    parser.add_argument("--generated", type=Path, default=None,
                        help="folder with <llm>-w<omega>.parquet and stage1_gpu.json: stage 1 made elsewhere")
    args = parser.parse_args()
    args.workdir = args.workdir.resolve()
    args.generated = args.generated.resolve() if args.generated else None
    if args.generated and not (args.generated / "stage1_gpu.json").is_file():
        raise SystemExit(f"error: --generated {args.generated}: no stage1_gpu.json there "
                         "(the folder benchmarks/gpu_ablation_stage1.sh writes)")
    print(f"load average at start: {os.getloadavg()}", flush=True)

    premises, gold = prepare_data(args.workdir, args.premises)
    config_path = args.workdir / "ablation.yaml"
    config = base_config(args)
    config_text = yaml.safe_dump(config, sort_keys=False)
    if not config_path.is_file() or config_path.read_text() != config_text:
        config_path.write_text(config_text)
    store = args.workdir / "results"
    store.mkdir(parents=True, exist_ok=True)
    log_path = args.workdir / "runs.log"

    baseline = None if args.only_generate else baseline_sts(args.workdir)
    records = []

    def stored(overrides: list[str]) -> tuple[Path, dict | None]:
        """A run's record file (keyed by the config and its overrides) and its record if it finished."""
        key = hashlib.sha256(json.dumps([config, overrides], sort_keys=True).encode()).hexdigest()[:16]
        path = store / f"{key}.json"
        return path, (json.loads(path.read_text()) if path.is_file() else None)

    def measure(llm: str, variant: str, workdir: Path, overrides: list[str], seed: int) -> dict:
        """One `multicsr run`, and the record of what it gave."""
        print(f"{time.strftime('%H:%M:%S')} {llm} | {variant} | seed {seed}", flush=True)
        ran = run_multicsr(config_path, workdir, overrides, log_path)
        record = {"llm": llm, "variant": variant, "seed": seed, "overrides": overrides, **ran,
                  "sts": sts_figures(workdir / "results.json"), "baseline": baseline,
                  "corpus": corpus_sizes(workdir)}
        trained = workdir / "model" / "multicsr_training.json"  # the Eq. 7 mask's share of in-batch negatives removed
        if trained.is_file():
            record["masked_fraction"] = json.loads(trained.read_text()).get("masked_fraction")
        return record

    def keep(record: dict, path: Path) -> None:
        path.write_text(json.dumps(record, indent=2))
        records.append(record)
        print(f"   STS avg {record['sts']['avg']:.2f} (baseline {record['baseline']['avg']:.2f}), "
              f"kept {record['corpus']['kept']}, {record['wall_s']} s", flush=True)

    for llm, variant, workdir, overrides, seed in variant_runs(args, premises, gold):
        if args.only_generate:
            if seed == args.seeds[0] and variant[:1] in "12":
                print(f"{time.strftime('%H:%M:%S')} {llm} | {variant} | stage 1 and 2", flush=True)
                run_multicsr(config_path, workdir, overrides + ["training.enabled=false"], log_path)
            continue
        record_path, record = stored(overrides)
        if record is not None:
            records.append(record)
            continue
        if args.report_only:
            continue
        record = measure(llm, variant, workdir, overrides, seed)
        pregenerated = (generated_stage1(args.generated, llm, VARIANTS[variant][0])
                        if args.generated and llm in LLMS else None)
        if pregenerated is not None:
            record["corpus"]["premises"] = pregenerated[1]["premises"]
        if variant.startswith("2") or variant.startswith("1"):
            quality_path = workdir / "stage1_quality.json"
            if not quality_path.is_file():
                quality = (_stage1_figures(pregenerated[1], pregenerated[0], LLMS[llm][0]) if pregenerated
                           else stage1_quality(workdir, LLMS[llm][0]))
                quality_path.write_text(json.dumps(quality))
            record["stage1"] = json.loads(quality_path.read_text())
        keep(record, record_path)
    if args.only_generate:
        return
    for llm, workdir, overrides, seed in subset_control_runs(args, records):
        record_path, record = stored(overrides)
        if record is not None:
            records.append(record)
        elif not args.report_only:
            record = measure(llm, SUBSET, workdir, overrides, seed)
            record["corpus"]["premises"] = args.premises
            keep(record, record_path)
    if not records:
        return
    write_report(records, args)


SUBSET = "3r random subset, size of 3"


def subset_control_runs(args, records: list[dict]) -> list[tuple[str, Path, list[str], int]]:
    """(llm, workdir, overrides, seed) of the size-matched control: a seeded random sample of the
    w = 0.3 rows cleaning kept, as many rows as variant 3's curation kept, trained without curation."""
    import pyarrow.parquet as pq

    runs = []
    for llm in args.llms:
        curated = [r for r in records if r["llm"] == llm and r["variant"] == "3 +curation"]
        source = args.workdir / "runs" / f"{llm}-w0.3"
        if args.generated and generated_stage1(args.generated, llm, 0.3):
            source = args.workdir / "runs" / f"{llm}-w0.3-pregenerated-{args.premises}"
        if not curated or not (source / "corpus.parquet").is_file():
            continue
        size = curated[0]["corpus"]["kept"]
        rows = pq.read_table(source / "corpus.parquet", columns=["premise", "entailment", "contradiction"]).to_pylist()
        sample = random.Random(0).sample(rows, min(size, len(rows)))
        path = args.workdir / "data" / f"subset-{llm}-{args.premises}-{size}.csv"
        with open(path, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["sent0", "sent1", "hard_neg"])
            writer.writerows([r["premise"], r["entailment"], r["contradiction"]] for r in sample)
        workdir = args.workdir / "runs" / f"{llm}-subset-{args.premises}-{size}"
        for seed in args.seeds:
            runs.append((llm, workdir, [f"input.triplets={path}", "curation.enabled=false", "training.mask=false",
                                        f"training.seed={seed}"], seed))
    return runs


def _mean_sd(values: list[float]) -> tuple[float, float]:
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def write_report(records: list[dict], args) -> None:
    args.out.mkdir(parents=True, exist_ok=True)
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in records:
        groups.setdefault((r["llm"], r["variant"]), []).append(r)
    baseline = records[0]["baseline"]
    rows = []
    for (llm, variant), runs in sorted(groups.items(), key=lambda kv: (kv[0][0] == "gold", kv[0][0], kv[0][1])):
        row = {"llm": llm, "variant": variant, "seeds": sorted(r["seed"] for r in runs),
               "corpus": runs[0]["corpus"], "cpu_s": sum(r["cpu_s"] for r in runs)}
        for task in (*STS_TASKS, "avg"):
            row[task] = _mean_sd([r["sts"][task] for r in runs])
        row["delta"] = row["avg"][0] - baseline["avg"]
        if "stage1" in runs[0]:
            row["stage1"] = runs[0]["stage1"]
        rows.append(row)
    total_cpu = sum(r["cpu_s"] for r in records)
    (args.out / "ablation.json").write_text(json.dumps(
        {"baseline": baseline, "rows": rows, "runs": records, "total_cpu_s": total_cpu,
         "settings": {k: str(v) for k, v in vars(args).items()}}, indent=2))

    short = {"STSBenchmark": "STS-B", "SICKRelatedness": "SICK-R"}
    head = ["LLM", "variant", *[short.get(t, t) for t in STS_TASKS], "avg (sd)", "delta", "premises -> cleaned -> kept"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines.append("| - | all-MiniLM-L6-v2, untrained | " + " | ".join(f"{baseline[t]:.2f}" for t in STS_TASKS)
                 + f" | {baseline['avg']:.2f} | - | - |")
    for row in rows:
        cells = [f"{row[t][0]:.2f}" for t in STS_TASKS]
        c = row["corpus"]
        size = f"{c['premises']} -> {c['rows']} -> {c['kept']}"
        lines.append(f"| {row['llm']} | {row['variant']} | " + " | ".join(cells)
                     + f" | {row['avg'][0]:.2f} ({row['avg'][1]:.2f}) | {row['delta']:+.2f} | {size} |")
    quality = ["| LLM | w | premises | cleaning rejected | copy sides | cos(x,x+) | cos(x,x-) | gap | x+ closer | "
               "mean raw tokens |", "|" + "---|" * 10]
    for row in rows:
        q = row.get("stage1")
        if q:
            w = "0" if row["variant"].startswith("1") else "0.3"
            quality.append(f"| {row['llm']} | {w} | {q['premises']} | {q['cleaning_rejected']} | {q['copy_sides']} | "
                           f"{q['cos_pos']:.3f} | {q['cos_neg']:.3f} | {q['cos_gap']:+.3f} | "
                           f"{100 * q['pos_closer']:.0f}% | {q['mean_raw_tokens']:.1f} |")
    elsewhere = [f"{row['llm']} at w = {'0' if row['variant'].startswith('1') else '0.3'}: "
                 f"{row['stage1']['generation_wall_s']:.0f} s on {row['stage1']['generation_device']}"
                 for row in rows if row.get("stage1", {}).get("generation_device")]
    if elsewhere:
        quality.append("\nStage 1 made by `benchmarks/gpu_ablation_stage1.sh` (float32, greedy, batch 128) and read "
                       "in at stage 2 (`input.triplets`), model conversion included: " + "; ".join(elsewhere) + ".")
    text = (f"STS Spearman x 100, mean over seeds {args.seeds} (sd of the average in brackets); "
            f"{args.premises} SNLI premises; all-MiniLM-L6-v2 trained {args.steps} steps at batch "
            f"{args.batch_size}, lr {args.learning_rate}; total CPU {total_cpu / 3600:.2f} h.\n\n"
            + "\n".join(lines) + "\n\nStage 1 quality (guide cosines over the rows cleaning kept):\n\n"
            + "\n".join(quality) + "\n")
    (args.out / "ablation.md").write_text(text)
    print(text)
    plot(rows, baseline, args.out / "ablation.png")


def plot(rows: list[dict], baseline: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4.5))
    labels = [f"{r['llm']}\n{r['variant']}" for r in rows]
    means = [r["avg"][0] for r in rows]
    sds = [r["avg"][1] for r in rows]
    colors = ["#888" if r["llm"] == "gold" else ("#3b7dd8" if r["llm"].startswith("gemma") else "#e08a2c")
              for r in rows]
    ax.bar(range(len(rows)), means, yerr=sds, color=colors, capsize=3)
    ax.axhline(baseline["avg"], color="k", linestyle="--", linewidth=1, label="untrained all-MiniLM-L6-v2")
    ax.set_xticks(range(len(rows)), labels, rotation=60, ha="right", fontsize=7)
    low = min(means + [baseline["avg"]]) - 2
    ax.set_ylim(low, max(means + [baseline["avg"]]) + 1)
    ax.set_ylabel("STS avg (Spearman x 100)")
    ax.set_title("MultiCSR ablation on real models (mean and sd over seeds)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
