"""The ``multicsr`` command line.

``run`` executes the whole pipeline as one Prefect flow (ephemeral by default; reports to a
server when ``PREFECT_API_URL`` is set). Every stage also runs alone on files: ``generate``,
``score``, ``curate``, ``train``, ``evaluate``; ``inspect`` reads a corpus; ``data download``
fetches the public data. Any config field can be overridden with ``--set section.key=value``.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

# Before Prefect is imported anywhere: no telemetry (machines may be offline) and a start-up
# timeout that a slow CI box can meet. Users' own settings win.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="MultiCSR: LLM-built contrastive corpora and sentence-embedding training as one Prefect DAG.")
data_app = typer.Typer(no_args_is_help=True, help="Public data: download, locate.")
experiment_app = typer.Typer(no_args_is_help=True, help="The paper's analyses as commands.")
app.add_typer(data_app, name="data")
app.add_typer(experiment_app, name="experiment")

console = Console(stderr=True)
out = Console()

PresetOpt = Annotated[Optional[str], typer.Option("--preset", "-p", help="preset name (see `multicsr presets`) or YAML path")]
SetOpt = Annotated[Optional[list[str]], typer.Option("--set", "-s", help="override a config field: section.key=value (repeatable)")]
WorkdirOpt = Annotated[Path, typer.Option("--workdir", "-w", help="where stage outputs, caches and results go")]
DataDirOpt = Annotated[Optional[Path], typer.Option("--data-dir", help="data root (holding senteval/ and nli/) or the SentEval folder; default $MULTICSR_DATA_ROOT, ../shared/data, ~/.cache/multicsr/data")]


def _print_json(obj) -> None:
    """Machine-readable output: plain print (rich would wrap long lines and break the JSON)."""
    print(obj if isinstance(obj, str) else json.dumps(obj, indent=2, default=str), flush=True)


def _fail(message: str, code: int = 2) -> None:
    console.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(code)


def _apply_data_dir(data_dir: Optional[Path]) -> None:
    if data_dir is not None:
        os.environ["MULTICSR_DATA_ROOT"] = str(data_dir.expanduser().resolve())


def _config(preset: Optional[str], sets: Optional[list[str]], **fields):
    """Preset <- ``--set`` overrides <- the command's own options (``section__key=value``, None = unset)."""
    from multicsr_core.config import load_config, parse_override

    overrides = [parse_override(s) for s in sets or []]
    named: dict = {}
    for dotted, value in fields.items():
        if value is None:
            continue
        section, key = dotted.split("__", 1)
        named.setdefault(section, {})[key] = value
    if named:
        overrides.append(named)
    return load_config(preset, overrides)


def _guarded(fn):
    """Turn the errors users cause (bad config, bad input file) into one clear line and exit 2."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from multicsr_core.config import ConfigError
        from multicsr_core.io.inputs import InputError

        try:
            return fn(*args, **kwargs)
        except (ConfigError, InputError, FileNotFoundError) as exc:
            _fail(str(exc))

    return wrapper


@app.command()
@_guarded
def presets() -> None:
    """List the preset configs."""
    from multicsr_core.config import list_presets, resolve_preset

    for name in list_presets():
        out.print(f"{name}\t{resolve_preset(name)}")


@app.command("config")
@_guarded
def show_config(preset: PresetOpt = None, set_: SetOpt = None) -> None:
    """Print the resolved config (YAML) and its hash."""
    import yaml

    cfg = _config(preset, set_)
    out.print(yaml.safe_dump(cfg.to_dict(), sort_keys=False).rstrip())
    out.print(f"# config_hash: {cfg.config_hash()}")


@app.command()
@_guarded
def run(preset: PresetOpt = None, workdir: WorkdirOpt = Path("runs/default"), set_: SetOpt = None,
        data_dir: DataDirOpt = None,
        task_runner: Annotated[str, typer.Option("--task-runner", help="threads: shards one after another in this "
                                                 "process; dask: shards spread over Dask workers")] = "threads",
        dask_workers: Annotated[Optional[int], typer.Option("--dask-workers", help="worker processes of a local Dask "
                                                            "cluster (default 2)")] = None,
        dask_address: Annotated[Optional[str], typer.Option("--dask-address", help="scheduler of a running Dask "
                                                            "cluster, e.g. tcp://host:8786")] = None) -> None:
    """Run the whole pipeline (load -> generate -> score -> curate -> train -> evaluate) as one flow."""
    _apply_data_dir(data_dir)
    if task_runner not in ("threads", "dask"):
        _fail(f"--task-runner must be 'threads' or 'dask', not {task_runner!r}")
    if task_runner == "threads" and (dask_workers is not None or dask_address):
        _fail("--dask-workers and --dask-address need --task-runner dask")
    if dask_workers is not None and dask_address:
        _fail("give --dask-workers (a local cluster) or --dask-address (a running one), not both")
    if task_runner == "dask" and not os.environ.get("PREFECT_API_URL"):
        console.print("[yellow]warning:[/] with no PREFECT_API_URL every Dask worker process starts a Prefect server "
                      "of its own; start one (`prefect server start`) and export PREFECT_API_URL")
    cfg = _config(preset, set_)
    workdir = workdir.expanduser().resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    from multicsr.flows.pipeline import multicsr_pipeline

    flow = multicsr_pipeline
    if task_runner == "dask":
        from multicsr.runners import build_task_runner

        try:
            flow = multicsr_pipeline.with_options(
                task_runner=build_task_runner("dask", n_workers=dask_workers, address=dask_address))
        except (ImportError, ValueError) as exc:
            _fail(str(exc))
    state = flow(config=cfg.to_dict(), workdir=str(workdir), return_state=True)
    if not state.is_completed():
        console.print(f"[bold red]pipeline {state.name}:[/] {state.message}")
        console.print(f"Everything finished is cached under {workdir}: run the same command again to resume.")
        raise typer.Exit(1)
    outputs = state.result()
    if outputs.get("comparison"):
        print(outputs["comparison"], flush=True)  # plain: rich would wrap the Markdown table
    for key in ("corpus", "model", "results", "baseline_results", "summary"):
        if outputs.get(key):
            out.print(f"{key}: {outputs[key]}")


@app.command()
@_guarded
def generate(
    llm: Annotated[str, typer.Option(help="generator: HF hub id or local path")],
    premises: Annotated[Path, typer.Option(help="premise file (.txt lines, SimCSE NLI csv, csv/tsv/jsonl/parquet)")],
    out_path: Annotated[Path, typer.Option("--out", help="output Parquet")],
    omega: Annotated[Optional[float], typer.Option("--omega", help="contrast weight w (paper default 0.3)")] = None,
    max_new_tokens: Annotated[Optional[int], typer.Option()] = None,
    batch_size: Annotated[Optional[int], typer.Option()] = None,
    prompt_set: Annotated[Optional[str], typer.Option(help="syncse-pool | official-2shot | prompt file")] = None,
    seed: Annotated[Optional[int], typer.Option()] = None,
    column: Annotated[Optional[str], typer.Option(help="sentence column of a table file")] = None,
    backend: Annotated[Optional[str], typer.Option(help="local (contrastive decoding) | openai (plain, through an API)")] = None,
    base_url: Annotated[Optional[str], typer.Option(help="OpenAI-compatible endpoint for --backend openai")] = None,
    workdir: WorkdirOpt = Path("runs/default"),
    preset: PresetOpt = None, set_: SetOpt = None,
) -> None:
    """Stage 1: write an entailment and a contradiction for each premise (contrastive decoding)."""
    from multicsr_core.stages import generate_corpus

    cfg = _config(preset, set_, generation__llm=llm, generation__omega=omega, generation__max_new_tokens=max_new_tokens,
                  generation__batch_size=batch_size, generation__prompt_set=prompt_set, generation__seed=seed,
                  generation__backend=backend, generation__base_url=base_url,
                  input__premises=str(premises), input__column=column, input__triplets=None)
    from multicsr.progress import ProgressReporter

    with ProgressReporter("generate", "premises") as progress:
        report = generate_corpus(cfg, out_path, progress=progress, workdir=workdir)
    _print_json(report)


@app.command()
@_guarded
def score(
    corpus: Annotated[Path, typer.Option(help="corpus Parquet (or sent0,sent1,hard_neg csv)")],
    out_path: Annotated[Path, typer.Option("--out", help="output Parquet")],
    scorer: Annotated[Optional[str], typer.Option(help="guide | local | openai")] = None,
    llm: Annotated[Optional[str], typer.Option(help="scoring model (hub id, path, API model name, or guide model)")] = None,
    base_url: Annotated[Optional[str], typer.Option(help="OpenAI-compatible endpoint")] = None,
    workdir: WorkdirOpt = Path("runs/default"),
    preset: PresetOpt = None, set_: SetOpt = None,
) -> None:
    """Stage 2a: score sim(x, x+) and sim(x, x-) (0-5). Every reply is cached: re-running resumes."""
    from multicsr_core.stages import score_corpus_file

    cfg = _config(preset, set_, scoring__scorer=scorer, scoring__llm=llm, scoring__base_url=base_url)
    from multicsr.progress import ProgressReporter

    with ProgressReporter("score", "triplets") as progress:
        report = score_corpus_file(cfg, corpus, out_path, workdir, progress=progress)
    _print_json(report)
    if report["failed"] > cfg.scoring.allowed_failure_fraction * 2 * report["rows"]:
        console.print(f"[bold red]{report['failed']} pairs are still unscored[/]; first errors: {report['first_errors']}. "
                      "Run the same command again to retry only those.")
        raise typer.Exit(1)


@app.command()
@_guarded
def curate(
    corpus: Annotated[Path, typer.Option(help="scored corpus Parquet")],
    out_path: Annotated[Path, typer.Option("--out", help="output Parquet")],
    rule: Annotated[Optional[str], typer.Option(help="paper | official")] = None,
    alpha: Annotated[Optional[float], typer.Option()] = None,
    beta: Annotated[Optional[float], typer.Option()] = None,
    gamma: Annotated[Optional[float], typer.Option()] = None,
    swap_mode: Annotated[str, typer.Option(help="official rule's swap: generation | corpus")] = "generation",
    report_dir: Annotated[Optional[Path], typer.Option(help="write the curation report here (default: beside --out)")] = None,
    preset: PresetOpt = None, set_: SetOpt = None,
) -> None:
    """Stage 2b: apply the keep rule (no LLM call); write the curated corpus and its report."""
    from multicsr_core.curation import curate_table, curation_funnel
    from multicsr_core.curation_report import write_curation_report
    from multicsr_core.io.corpus import make_provenance, read_corpus, read_provenance, with_provenance, write_parquet_atomic

    cfg = _config(preset, set_, curation__rule=rule, curation__alpha=alpha, curation__beta=beta, curation__gamma=gamma)
    c = cfg.curation
    table = read_corpus(corpus)
    curated = curate_table(table, c.rule, c.alpha, c.beta, c.gamma, c.enabled, swap_mode)
    funnel = curation_funnel(curated)
    prov = make_provenance("curate", config=cfg.to_dict(), config_hash=cfg.config_hash(), input=str(corpus),
                           input_provenance=read_provenance(corpus), funnel=funnel, swap_mode=swap_mode)
    write_parquet_atomic(with_provenance(curated, prov), out_path)
    write_curation_report(curated, report_dir or out_path.parent / f"{out_path.stem}_report", c.rule, c.alpha, c.beta, c.gamma)
    _print_json(funnel)


@app.command()
@_guarded
def train(
    corpus: Annotated[Path, typer.Option(help="curated corpus Parquet (kept rows train) or sent0,sent1,hard_neg csv")],
    model: Annotated[str, typer.Option("--model", help="base model: hub id, path or bundled:all-MiniLM-L6-v2")],
    out_dir: Annotated[Path, typer.Option("--out", help="output model folder (SentenceTransformer)")],
    guide: Annotated[Optional[str], typer.Option(help="frozen guide model P_eta")] = None,
    loss: Annotated[Optional[str], typer.Option(help="paper | official | simcse | unsup-simcse | claif | clhaif")] = None,
    sigma: Annotated[Optional[float], typer.Option()] = None,
    batch_size: Annotated[Optional[int], typer.Option()] = None,
    max_steps: Annotated[Optional[int], typer.Option()] = None,
    data_dir: DataDirOpt = None,
    preset: PresetOpt = None, set_: SetOpt = None,
) -> None:
    """Stage 3: train a sentence encoder on the curated corpus (STS-B dev selects the checkpoint)."""
    _apply_data_dir(data_dir)
    from multicsr_core.stages import train_from_corpus

    cfg = _config(preset, set_, training__base_model=model, training__guide_model=guide, training__loss=loss,
                  training__sigma=sigma, training__batch_size=batch_size, training__max_steps=max_steps)
    from multicsr.progress import ProgressReporter

    with ProgressReporter("train", "steps") as progress:
        report = train_from_corpus(cfg, corpus, out_dir, cache_dir=out_dir.parent / ".multicsr-cache", progress=progress)
    _print_json(report)


@app.command()
@_guarded
def evaluate(
    model: Annotated[str, typer.Option("--model", help="SentenceTransformer folder, hub id or bundled:all-MiniLM-L6-v2")],
    output: Annotated[Path, typer.Option("--output", "-o", help="results JSON")],
    data_dir: DataDirOpt = None,
    tasks: Annotated[str, typer.Option(help="comma-separated: sts, transfer")] = "sts",
    batch_size: Annotated[int, typer.Option()] = 128,
    sts_tasks: Annotated[Optional[str], typer.Option(help="comma-separated subset of STS12..STS16, STSBenchmark, SICKRelatedness (default: all seven)")] = None,
    markdown: Annotated[Optional[Path], typer.Option(help="Markdown report (default: beside --output)")] = None,
) -> None:
    """SentEval STS12-16, STS-B, SICK-R Spearman (and transfer tasks), exactly as SimCSE's SentEval fork."""
    from multicsr_core.config import default_data_root
    from multicsr_core.evaluation.report import markdown_comparison
    from multicsr_core.evaluation.runner import evaluate_model, resolve_senteval_dir, write_results

    senteval = resolve_senteval_dir(data_dir if data_dir is not None else default_data_root())
    from multicsr.progress import ProgressReporter

    with ProgressReporter("evaluate", "sentences") as progress:
        results = evaluate_model(model, senteval, tasks=[t.strip() for t in tasks.split(",") if t.strip()],
                                 batch_size=batch_size, progress=progress,
                                 sts_tasks=[t.strip() for t in sts_tasks.split(",")] if sts_tasks else None)
    write_results(results, output, provenance={"model": model, "data_dir": str(senteval)})
    table = markdown_comparison({model: results})
    md_path = markdown or output.with_suffix(".md")
    md_path.write_text(table, encoding="utf-8")
    print(table, flush=True)  # plain: rich would wrap the Markdown table
    out.print(f"results: {output}\nreport: {md_path}")


@app.command()
@_guarded
def inspect(path: Annotated[Path, typer.Argument(help="a corpus Parquet file")],
            rows: Annotated[int, typer.Option(help="sample rows to print")] = 5) -> None:
    """Print rows, kept/rejected by reason, score summaries and provenance of a corpus file."""
    from multicsr_core.inspect import corpus_summary

    summary = corpus_summary(path, sample_rows=rows)
    table = Table(title=f"{path} ({summary['rows']} rows)")
    for col in ("premise", "entailment", "contradiction", "a", "b", "kept", "reason"):
        table.add_column(col, overflow="fold", max_width=40 if col in ("premise", "entailment", "contradiction") else None)
    for r in summary["sample"]:
        table.add_row(*[("" if r[c] is None else f"{r[c]:.2f}" if isinstance(r[c], float) else str(r[c]))
                        for c in ("premise", "entailment", "contradiction", "a", "b", "kept", "reason")])
    out.print(table)
    out.print("[bold]curation[/]: " + json.dumps(summary["funnel"]))
    for side in ("entailment_score", "contradiction_score"):
        out.print(f"[bold]{side}[/]: " + json.dumps(summary["scores"][side]))
    prov = summary["provenance"]
    out.print("[bold]provenance[/]: " + json.dumps({k: v for k, v in prov.items() if k not in ("config", "input_provenance")}, default=str))
    if "config_hash" in prov:
        out.print(f"[bold]config_hash[/]: {prov['config_hash']}")


@data_app.command("download")
def data_download(to: Annotated[Optional[Path], typer.Option("--to", help="data root (default ~/.cache/multicsr/data)")] = None,
                  what: Annotated[str, typer.Option(help="comma-separated: senteval, nli, wiki1m")] = "senteval,nli") -> None:
    """Fetch the public evaluation and premise data (needs internet)."""
    from multicsr_core.io.download import download_data

    root = (to or Path.home() / ".cache" / "multicsr" / "data").expanduser()
    try:
        done = download_data(root, [w.strip() for w in what.split(",") if w.strip()], log=lambda m: console.print(m))
    except OSError as exc:
        _fail(f"download failed ({exc}); nothing partial was left in {root}", code=1)
    _print_json(done)


@data_app.command("where")
def data_where() -> None:
    """Print the data root the pipeline will use."""
    from multicsr_core.config import default_data_root

    out.print(str(default_data_root()))


@experiment_app.command("false-negatives")
@_guarded
def experiment_false_negatives(
    output: Annotated[Path, typer.Option("--output", "-o", help="results JSON (a PNG plot and Markdown table beside it)")],
    model: Annotated[str, typer.Option("--model")] = "bundled:all-MiniLM-L6-v2",
    guide: Annotated[str, typer.Option("--guide")] = "bundled:all-MiniLM-L6-v2",
    ks: Annotated[str, typer.Option("--ks", help="comma-separated duplicate counts K")] = "1,32,128",
    triplets: Annotated[Optional[Path], typer.Option(help="SNLI triplets csv (default: data root nli/)")] = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Paper Fig. 4: duplicate one triplet K times; train with and without the mask; STS-B dev per K."""
    _apply_data_dir(data_dir)
    from multicsr_core.stages import run_false_negatives_cli

    result = run_false_negatives_cli(output, model=model, guide=guide, ks=[int(k) for k in ks.split(",")], triplets=triplets)
    _print_json(result)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
