"""The ``multicsr`` command line.

``run`` executes the whole pipeline as one Prefect flow (ephemeral by default; reports to a
server when ``PREFECT_API_URL`` is set). Every stage also runs alone on files: ``generate``,
``score``, ``curate``, ``train``, ``evaluate``; ``inspect`` reads a corpus; ``data download``
fetches the public data. Any config field can be overridden with ``--set section.key=value``.

Errors (one path for every command; new commands reuse it):

- Decorate each command with ``@_guarded`` (below ``@app.command()``). A
  ``multicsr_core.errors.UserError`` (config, input, output, model, data, server errors; and
  OS errors about a named file) prints ONE line, ``error: <file[:line]>: <what>; <what to do>``,
  on stderr and exits 2. A ``RetryableError`` or transport failure exits 1 with "run the same
  command again to resume"; anything else exits 1 with one line saying it is unexpected. With
  ``--debug`` (``multicsr --debug CMD``) or ``MULTICSR_DEBUG=1`` the traceback is printed too.
- Register where the command writes, ``_writes((out, "--out"), ...)``: a full disk or a read-only
  file system met by a library that names no file (pyarrow, safetensors, torch) is then reported
  as one line naming that output, the free space there and the option that moves it (exit 2).
- Before any work, call the command's ``multicsr_core.pipeline.preflight`` check (inputs readable and
  non-empty, outputs writable, models resolvable, data present): a bad ``--out`` fails first.
- Validate option values in the declaration: a ``Literal[...]`` type for a fixed set (typer's choices),
  ``min=`` for numbers, ``callback=_csv_choice(...)``/``_int_list`` for comma-separated lists,
  so typer reports them (one line, via :func:`main`) with the choices in ``--help``.

Options (``tests/test_cli_options.py`` walks every command and holds them to this):

- Every option has help text and shows its default in ``--help``; an option whose default is
  "nothing" or is worked out at run time says so in words (``show_default="..."``).
- A boolean option is a flag pair, ``_flag("dry-run", ...)``: ``--dry-run/--no-dry-run``, no value.
- An option that sets a config field is declared with ``_config_option("section.key", ...)`` and
  defaults to ``_config_default("section.key")``, the pydantic field's own default (stated once, in
  ``multicsr_core.config``); the command passes ``_given(ctx, "name")`` on to :func:`_config`, so a
  preset's value stands unless the option is on the command line.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import sys
from pathlib import Path
from typing import Annotated, Literal, Optional

import typer
from rich.console import Console
from rich.table import Table

from multicsr.runners import DASK_LOCAL_WORKERS
from multicsr_core.losses import LOSSES  # the loss names (no torch: the classes load when a loss is built)

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
cache_app = typer.Typer(no_args_is_help=True, help="The workdir's LLM response cache.")
app.add_typer(cache_app, name="cache")

console = Console(stderr=True)
out = Console()


def _flag(name: str, help: str, **kwargs):
    """A boolean option as the pair ``--NAME/--no-NAME``: it takes no value, and --help shows no
    ``<bool>`` that would invite ``--NAME true``."""
    return typer.Option(f"--{name}/--no-{name}", help=help, metavar="", **kwargs)


@functools.lru_cache(maxsize=1)
def _default_config():
    from multicsr_core.config import PipelineConfig

    return PipelineConfig()


def _config_default(dotted: str):
    """The default of config field ``section.key``, read from the pydantic model (stated there once)."""
    section, key = dotted.split(".")
    return getattr(getattr(_default_config(), section), key)


def _config_option(dotted: str, *names: str, help: str, **kwargs):
    """An option that sets config field ``dotted``; declare it ``= _config_default(dotted)`` and pass
    ``_given(ctx, name)`` on, so a preset's value stands unless the option is on the command line."""
    return typer.Option(*names, help=f"{help} (sets {dotted}; when not given: the preset's value, else this default)", **kwargs)


def _given(ctx: typer.Context, name: str):
    """The value of option ``name`` if the command line gave it, else None (the preset's value, or the
    config's default, stands): the option's own default only documents the config's."""
    source = ctx.get_parameter_source(name)
    return None if source is None or source.name in ("DEFAULT", "DEFAULT_MAP") else ctx.params[name]


PresetOpt = Annotated[Optional[str], typer.Option("--preset", "-p", help="preset name (see `multicsr presets`) or YAML path",
                                                  show_default="none: the config's built-in defaults")]
SetOpt = Annotated[Optional[list[str]], typer.Option("--set", "-s", help="override a config field: section.key=value (repeatable)",
                                                     show_default="none")]
WorkdirOpt = Annotated[Path, typer.Option("--workdir", "-w", help="where stage outputs, caches and results go")]


def _batch_api_option(dotted: str):
    """``--batch-api/--no-batch-api`` for the stage whose config field is ``dotted``."""
    return _config_option(dotted, "--batch-api/--no-batch-api", metavar="",
                          help="through the OpenAI Batch API: half the price, answers within 24 h; a killed run picks "
                               "its batches up again (scoring.batch_*)")


# evaluation.sts_tasks's names (the config's Literal), for --sts-tasks
STS_TASKS = ("STS12", "STS13", "STS14", "STS15", "STS16", "STSBenchmark", "SICKRelatedness")
DataDirOpt = Annotated[Optional[Path], typer.Option("--data-dir", help="data root (holding senteval/ and nli/) or the SentEval folder",
                                                    show_default="$MULTICSR_DATA_ROOT, else ../shared/data, else "
                                                                 "~/.cache/multicsr/data")]


def _print_json(obj) -> None:
    """Machine-readable output: plain print (rich would wrap long lines and break the JSON)."""
    print(obj if isinstance(obj, str) else json.dumps(obj, indent=2, default=str), flush=True)


def _fail(message: str, code: int = 2) -> None:
    _print_error(message)
    raise typer.Exit(code)


def _debug() -> bool:
    """``--debug`` on the command line or ``MULTICSR_DEBUG=1``: print tracebacks."""
    return os.environ.get("MULTICSR_DEBUG", "").strip().lower() in ("1", "true", "yes", "on")


def _version_string() -> str:
    """``multicsr X`` plus the versions a bug report needs (the installed distribution's metadata)."""
    from importlib import metadata

    def version(name: str) -> str:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return "not installed"

    deps = ", ".join(f"{n} {version(n)}" for n in ("torch", "transformers", "sentence-transformers", "prefect"))
    return f"multicsr {version('multicsr')} (python {sys.version.split()[0]}; {deps})"


def _print_version(value: bool) -> None:
    if value:
        print(_version_string(), flush=True)
        raise typer.Exit()


@app.callback()
def _main_options(debug: Annotated[bool, _flag("debug", help="print the traceback of an error "
                                                 "(also MULTICSR_DEBUG=1)")] = False,
                  version: Annotated[bool, typer.Option("--version", callback=_print_version, is_eager=True, metavar="",
                                                        help="print the version and exit")] = False) -> None:
    """MultiCSR: LLM-built contrastive corpora and sentence-embedding training as one Prefect DAG."""
    if debug:
        os.environ["MULTICSR_DEBUG"] = "1"  # child processes (Prefect tasks, Dask workers) see it too


def _csv_choice(choices, lower: bool = False):
    """A typer callback for a comma-separated option whose items come from ``choices``."""
    def check(value):
        if value is None:
            return value
        items = [v.strip() for v in value.split(",") if v.strip()]
        bad = [v for v in items if (v.lower() if lower else v) not in choices]
        if bad or not items:
            raise typer.BadParameter(f"{', '.join(map(repr, bad)) or 'nothing'} not among {', '.join(choices)} "
                                     "(comma-separated)")
        return value
    return check


def _int_list(value: str) -> str:
    """A typer callback: comma-separated positive integers."""
    try:
        items = [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise typer.BadParameter(f"{value!r} is not a comma-separated list of integers, e.g. 1,32,128") from None
    if not items or min(items) < 1:
        raise typer.BadParameter(f"{value!r}: give positive integers, e.g. 1,32,128")
    return value


def _prompt_set_option(value: Optional[str]) -> Optional[str]:
    """A typer callback: a built-in prompt set or an existing prompt file."""
    from multicsr_core.errors import UserError
    from multicsr_core.pipeline.preflight import check_prompt_set

    try:
        check_prompt_set(value, "--prompt-set")
    except UserError as exc:
        raise typer.BadParameter(str(exc).replace("--prompt-set ", "", 1)) from None
    return value


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


def _pipeline_config(preset: Optional[str], sets: Optional[list[str]]):
    """The config of a whole run (``run``, ``estimate``). The built-in config names no input, so a
    command line without --preset (and without input.*) is told to pass one."""
    cfg = _config(preset, sets)
    if not preset and not (cfg.input.premises or cfg.input.triplets):
        _fail("no preset given: pass --preset NAME (`multicsr presets` lists them) or --preset FILE.yaml "
              "(or name the input with --set input.triplets=FILE or --set input.premises=FILE)")
    return cfg


RESUME_HINT = "everything finished is cached: run the same command again to resume"


def report_error(exc: BaseException) -> int:
    """Print ``exc`` as the CLI's one line (plus the traceback under --debug); return the exit code:
    2 for a user error, 1 for anything else (with the resume hint only where a rerun can help)."""
    import traceback

    from multicsr_core.errors import is_retryable, user_error_of

    if _debug():
        console.print("".join(traceback.format_exception(exc)).rstrip(), markup=False, highlight=False)
    user = user_error_of(exc)
    if user is not None:
        _print_error(str(user))
        return 2
    text = " ".join(str(exc).split()) or type(exc).__name__
    if is_retryable(exc):
        _print_error(f"{text} ({RESUME_HINT})" if "run the same command again" not in text else text)
    else:
        _print_error(f"unexpected {type(exc).__name__}: {text}"
                     + ("" if _debug() else " (rerun with --debug for the traceback)"))
    return 1


def _print_error(message: str) -> None:
    # markup=False/highlight=False: a path like "[x]" prints as written; soft_wrap: on one line
    console.print("[bold red]error:[/] ", end="")
    console.print(message, markup=False, highlight=False, soft_wrap=True)


def _guarded(fn):
    """The one error path of every command (see the module docstring): user errors one line and
    exit 2, other failures one line and exit 1, tracebacks only with --debug."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from multicsr_core.errors import clear_outputs

        clear_outputs()
        try:
            return fn(*args, **kwargs)
        except (typer.Exit, typer.Abort, typer.TyperException, KeyboardInterrupt):
            raise  # typer's own exits and usage errors, Ctrl-C (exit 130)
        except Exception as exc:  # noqa: BLE001  (classified by report_error: user error or real failure)
            raise typer.Exit(report_error(exc)) from None
        finally:
            clear_outputs()

    return wrapper


def _writes(*outputs: tuple[Optional[Path], str]) -> None:
    """Register where the command writes, with the option naming each place: a full disk or a
    read-only file system met by a library that names no file (pyarrow, safetensors, torch) is
    reported at the registered output it hit (``multicsr_core.errors.machine_error_of``)."""
    from multicsr_core.errors import register_output

    for path, flag in outputs:
        register_output(path, flag)


@app.command()
@_guarded
def presets() -> None:
    """List the preset configs."""
    from multicsr_core.config import list_presets, resolve_preset

    for name in list_presets():
        out.print(f"{name}\t{resolve_preset(name)}")


@app.command("config")
@_guarded
def show_config(preset: PresetOpt = None, set_: SetOpt = None,
                diff: Annotated[Optional[tuple[str, str]], typer.Option(
                    "--diff", metavar="PRESET_A PRESET_B", show_default="off: print the whole config",
                    help="print only the keys whose resolved values differ between two presets (--set applies to both)")] = None,
                ) -> None:
    """Print the resolved config (YAML) and its hash, or with --diff A B the keys where two presets differ."""
    import yaml

    if diff:
        from multicsr_core.config import config_diff

        a, b = (_config(name, set_) for name in diff)
        rows = [(key, json.dumps(x), json.dumps(y)) for key, x, y in config_diff(a, b)]
        header = ("key", diff[0], diff[1])
        widths = [max(len(r[i]) for r in [header, *rows]) for i in range(3)]
        for row in [header, *rows]:
            print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip(), flush=True)
        print(f"# {len(rows)} differing keys", flush=True)
        return
    cfg = _config(preset, set_)
    out.print(yaml.safe_dump(cfg.to_dict(), sort_keys=False).rstrip())
    out.print(f"# config_hash: {cfg.config_hash()}")


def _prefect_api_url() -> Optional[str]:
    """The Prefect server this process would report to (env or profile), None for a temporary one."""
    if os.environ.get("PREFECT_API_URL"):
        return os.environ["PREFECT_API_URL"]
    from prefect.settings import get_current_settings

    return get_current_settings().api.url


def _quiet_prefect_console() -> None:
    """Keep Prefect's tracebacks off the terminal (a failed task or flow logs its exception with
    ``exc_info``): the error is reported once, as the CLI's one line, and the server keeps the full
    log (its API handler sits on Prefect's own loggers, before the root's console handler). The
    log line itself stays. ``--debug`` keeps the tracebacks."""
    import logging

    if _debug():
        return

    class _DropTraceback(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            record.exc_info, record.exc_text, record.stack_info = None, None, None
            return True

    loggers = [logging.getLogger()] + [logging.getLogger(name) for name in list(logging.root.manager.loggerDict)
                                       if name.startswith("prefect")]
    for logger in loggers:
        for handler in logger.handlers:
            if type(handler).__name__ == "PrefectConsoleHandler" and not getattr(handler, "_multicsr_quiet", False):
                handler.addFilter(_DropTraceback())
                handler._multicsr_quiet = True


def _raise_flow_failure(state):
    """Raise what failed the flow: Prefect keeps the original exception (``state.result`` re-raises
    it), so a user error inside a task reads as the same one line as in the stage command. A
    crashed or cancelled run (killed, interrupted) can be resumed: that is a RetryableError."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    from multicsr_core.errors import RetryableError

    # send what is queued now, so Prefect's exit hook has nothing left to warn about after our line
    APILogWorker.drain_all(timeout=10)
    EventsWorker.drain_all(timeout=10)
    if state.is_crashed() or state.is_cancelled():
        raise RetryableError(f"pipeline {state.name}: {' '.join(str(state.message).split())}")
    state.result(raise_on_failure=True)
    raise RetryableError(f"pipeline {state.name}: {' '.join(str(state.message).split())}")


def _check_task_runner(task_runner: str, dask_workers: Optional[int], dask_address: Optional[str]) -> None:
    """``run``'s task runner options: one line and exit 2 for a combination that cannot work."""
    if task_runner not in ("threads", "dask"):
        _fail(f"--task-runner must be 'threads' or 'dask', not {task_runner!r}")
    if task_runner == "threads" and (dask_workers is not None or dask_address):
        _fail("--dask-workers and --dask-address need --task-runner dask")
    if dask_workers is not None and dask_address:
        _fail("give --dask-workers (a local cluster) or --dask-address (a running one), not both")
    if task_runner == "dask" and not os.environ.get("PREFECT_API_URL"):
        console.print("[yellow]warning:[/] with no PREFECT_API_URL every Dask worker process starts a Prefect server "
                      "of its own; start one (`prefect server start`) and export PREFECT_API_URL")


def _pipeline_flow(task_runner: str, dask_workers: Optional[int], dask_address: Optional[str]):
    """The pipeline flow, on a Dask task runner with ``--task-runner dask``."""
    from multicsr.flows.pipeline import multicsr_pipeline

    if task_runner != "dask":
        return multicsr_pipeline
    from multicsr.runners import build_task_runner

    try:
        return multicsr_pipeline.with_options(
            task_runner=build_task_runner("dask", n_workers=dask_workers, address=dask_address))
    except (ImportError, ValueError) as exc:
        _fail(str(exc))


@app.command()
@_guarded
def run(preset: PresetOpt = None, workdir: WorkdirOpt = Path("runs/default"), set_: SetOpt = None,
        data_dir: DataDirOpt = None,
        task_runner: Annotated[Literal["threads", "dask"], typer.Option("--task-runner", help="threads: shards one after another in this "
                                                 "process; dask: shards spread over Dask workers")] = "threads",
        dask_workers: Annotated[Optional[int], typer.Option("--dask-workers", help="worker processes of a local Dask "
                                                            "cluster", show_default=str(DASK_LOCAL_WORKERS))] = None,
        dask_address: Annotated[Optional[str], typer.Option("--dask-address", help="scheduler of a running Dask "
                                                            "cluster, e.g. tcp://host:8786",
                                                            show_default="none: a local cluster")] = None,
        wait_lock: Annotated[bool, _flag("wait-lock", help="if another run holds the workdir, wait for it "
                                         "(--no-wait-lock: exit 2 naming its pid)")] = False,
        dry_run: Annotated[bool, _flag("dry-run", help="print what `multicsr estimate` prints (LLM requests, "
                                       "tokens, cost, cache hits, budget) and run nothing")] = False) -> None:
    """Run the whole pipeline (load -> generate -> score -> curate -> train -> evaluate) as one flow.

    Prints a JSON report (the published files and the config hash) on stdout; logs go to stderr."""
    _apply_data_dir(data_dir)
    _check_task_runner(task_runner, dask_workers, dask_address)
    cfg = _pipeline_config(preset, set_)
    workdir = workdir.expanduser().resolve()
    if dry_run:
        _print_estimate(cfg, workdir, as_json=False)
        return
    _writes((workdir, "--workdir"))
    from multicsr_core.pipeline.preflight import check_prefect_home, preflight_run

    # before Prefect is imported: Prefect only warns about a home it cannot create, and its temporary
    # server then fails to open its database, over and over
    check_prefect_home()
    preflight_run(cfg, workdir, prefect_api_url=_prefect_api_url())  # before any stage (and any server) starts
    workdir.mkdir(parents=True, exist_ok=True)
    flow = _pipeline_flow(task_runner, dask_workers, dask_address)  # imports Prefect: its console handlers exist now
    _quiet_prefect_console()
    from multicsr.run_guard import WorkdirBusy, ephemeral_prefect_server, workdir_lock
    from multicsr_core.redaction import hold_url_credentials

    try:
        # one run per workdir; the temporary Prefect server (if any) dies with this process
        with workdir_lock(workdir, wait=wait_lock), ephemeral_prefect_server(log_dir=workdir / ".multicsr"):
            # URL credentials stay out of the flow's parameters (Prefect's database, the UI)
            state = flow(config=hold_url_credentials(cfg.to_dict()), workdir=str(workdir), return_state=True)
            outputs = state.result() if state.is_completed() else _raise_flow_failure(state)  # while the server is up
    except WorkdirBusy as exc:
        _fail(str(exc))
    if outputs.get("comparison"):
        print(outputs["comparison"], file=sys.stderr, flush=True)  # for people; stdout is the JSON report
    _print_json({k: v for k, v in outputs.items() if k != "comparison"})


@contextlib.contextmanager
def _batch_api_errors():
    """A Batch API call the endpoint refused: one line (the message holds no key), exit 1; what was
    submitted is in the workdir, so the same command picks it up."""
    from multicsr_core.llm.batch_api import BatchAPIError

    try:
        yield
    except BatchAPIError as exc:
        _fail(f"{exc}. An endpoint without /v1/files and /v1/batches cannot take --batch-api; batches already "
              "submitted are kept in the workdir and picked up by the same command", code=1)


def _print_estimate(cfg, workdir: Path, as_json: bool) -> None:
    from multicsr_core.pipeline.estimate import estimate as estimate_run

    try:
        result = estimate_run(cfg, workdir)
    except ValueError as exc:
        _fail(str(exc))
    if as_json:
        _print_json(result.to_dict())
    else:
        print(result.markdown(), flush=True)  # plain: rich would wrap the Markdown table


@app.command()
@_guarded
def estimate(preset: PresetOpt = None, set_: SetOpt = None, workdir: WorkdirOpt = Path("runs/default"),
             data_dir: DataDirOpt = None,
             as_json: Annotated[bool, _flag("json", help="machine-readable output")] = False) -> None:
    """LLM requests per stage, prompt and completion tokens, cost at the configured prices, what the
    workdir's response cache already answers, and whether scoring.budget_usd covers it. Calls no LLM
    and no network."""
    _apply_data_dir(data_dir)
    _print_estimate(_pipeline_config(preset, set_), workdir.expanduser().resolve(), as_json)


@app.command()
@_guarded
def generate(
    ctx: typer.Context,
    llm: Annotated[str, typer.Option(help="generator: HF hub id, local folder, .gguf file or "
                                           "bundled:smollm2-135m-instruct")],
    premises: Annotated[Path, typer.Option(help="premise file (.txt lines, SimCSE NLI csv, csv/tsv/jsonl/parquet)")],
    out_path: Annotated[Path, typer.Option("--out", help="output Parquet")],
    omega: Annotated[float, _config_option("generation.omega", help="contrast weight w in l_t - w * l_hat_t "
                                           "(paper App. C)")] = _config_default("generation.omega"),
    max_new_tokens: Annotated[int, _config_option("generation.max_new_tokens", help="longest generated "
                                                  "sentence, in tokens")] = _config_default("generation.max_new_tokens"),
    batch_size: Annotated[int, _config_option("generation.batch_size", help="premises per generation "
                                              "batch")] = _config_default("generation.batch_size"),
    prompt_set: Annotated[str, _config_option("generation.prompt_set", help="syncse-pool | official-2shot | prompt "
                                              "file (.yaml/.json)", callback=_prompt_set_option)] = _config_default("generation.prompt_set"),
    seed: Annotated[int, _config_option("generation.seed", help="seed of the prompt draw and of sampling")] = _config_default("generation.seed"),
    column: Annotated[Optional[str], _config_option("input.column", help="sentence column of a table file",
                                                    show_default="sent0, sentence or text")] = None,
    backend: Annotated[Literal["local", "openai"], _config_option("generation.backend", help="local (contrastive "
                                                                  "decoding) | openai (plain, through an API)")] = _config_default("generation.backend"),
    base_url: Annotated[Optional[str], _config_option("generation.base_url", help="OpenAI-compatible endpoint for "
                                                      "--backend openai", show_default="none")] = None,
    batch_api: Annotated[bool, _batch_api_option("generation.batch_api")] = _config_default("generation.batch_api"),
    workdir: WorkdirOpt = Path("runs/default"),
    preset: PresetOpt = None, set_: SetOpt = None,
) -> None:
    """Stage 1: write an entailment and a contradiction for each premise (contrastive decoding)."""
    given = {name: _given(ctx, name) for name in ("omega", "max_new_tokens", "batch_size", "prompt_set", "seed",
                                                   "column", "backend", "base_url", "batch_api")}
    cfg = _config(preset, set_, generation__llm=llm, input__premises=str(premises), input__triplets=None,
                  input__column=given.pop("column"), **{f"generation__{k}": v for k, v in given.items()})
    from multicsr_core.pipeline.preflight import preflight_generate

    _writes((out_path, "--out"), (workdir, "--workdir"))
    preflight_generate(cfg, out_path, workdir)
    from multicsr_core.pipeline.generate import generate_stage  # after the checks: it loads torch (seconds)
    from multicsr_core.progress import ProgressReporter

    with ProgressReporter("generate", "premises") as progress, _batch_api_errors():
        report = generate_stage(cfg, out_path, progress=progress, workdir=workdir)
    _print_json(report)


@app.command()
@_guarded
def score(
    ctx: typer.Context,
    corpus: Annotated[Path, typer.Option(help="corpus Parquet (or sent0,sent1,hard_neg csv)")],
    out_path: Annotated[Path, typer.Option("--out", help="output Parquet")],
    scorer: Annotated[Literal["guide", "local", "openai"], _config_option("scoring.scorer", help="guide | local | "
                                                                          "openai")] = _config_default("scoring.scorer"),
    llm: Annotated[Optional[str], _config_option("scoring.llm", help="scoring model (hub id, path, .gguf file, "
                                                 "bundled:..., API model name, or guide model)",
                                                 show_default="the generation LLM (self-curation)")] = None,
    base_url: Annotated[Optional[str], _config_option("scoring.base_url", help="OpenAI-compatible endpoint",
                                                      show_default="none")] = None,
    mode: Annotated[Literal["argmax", "expected", "generate"], _config_option("scoring.mode", help="argmax | expected "
                                                                              "(one forward) | generate (generate + "
                                                                              "official parser)")] = _config_default("scoring.mode"),
    prompt: Annotated[Literal["official", "official-verbatim", "few-shot"], _config_option("scoring.prompt", help="official | official-verbatim | few-shot")] = _config_default("scoring.prompt"),
    batch_api: Annotated[bool, _batch_api_option("scoring.batch_api")] = _config_default("scoring.batch_api"),
    workdir: WorkdirOpt = Path("runs/default"),
    preset: PresetOpt = None, set_: SetOpt = None,
) -> None:
    """Stage 2a: score sim(x, x+) and sim(x, x-) (0-5). Every reply is cached: re-running resumes.

    A reply that is not a score is final (curation rejects it as unparsable_score); only failed
    requests make the exit status 1, and running the same command again retries them."""
    cfg = _config(preset, set_, **{f"scoring__{name}": _given(ctx, name)
                                   for name in ("scorer", "llm", "base_url", "mode", "prompt", "batch_api")})
    from multicsr_core.pipeline.preflight import preflight_score

    _writes((out_path, "--out"), (workdir, "--workdir"))
    preflight_score(cfg, corpus, out_path, workdir)
    from multicsr_core.pipeline.score import score_stage  # after the checks: it loads torch and transformers (seconds)
    from multicsr_core.progress import ProgressReporter

    with ProgressReporter("score", "triplets") as progress, _batch_api_errors():
        report = score_stage(cfg, corpus, out_path, workdir, progress=progress)
    _print_json(report)
    if report["failed"] > cfg.scoring.allowed_failure_fraction * 2 * report["rows"]:  # transport failures only
        console.print(f"[bold red]{report['failed']} pairs are still unscored (their requests failed)[/]; first errors: "
                      f"{report['first_errors']}. Run the same command again to retry only those.")
        raise typer.Exit(1)


@app.command()
@_guarded
def curate(
    ctx: typer.Context,
    corpus: Annotated[Path, typer.Option(help="scored corpus Parquet")],
    out_path: Annotated[Path, typer.Option("--out", help="output Parquet")],
    rule: Annotated[Literal["paper", "official"], _config_option("curation.rule", help="paper | official")] = _config_default("curation.rule"),
    alpha: Annotated[float, _config_option("curation.alpha", help="keep a triplet whose "
                                           "entailment score a >= alpha")] = _config_default("curation.alpha"),
    beta: Annotated[float, _config_option("curation.beta", help="... whose contradiction score "
                                          "b <= beta")] = _config_default("curation.beta"),
    gamma: Annotated[float, _config_option("curation.gamma", help="... and a >= b + "
                                           "gamma")] = _config_default("curation.gamma"),
    swap_mode: Annotated[Literal["generation", "corpus"], typer.Option(help="official rule's swap: generation | corpus")] = "generation",
    report_dir: Annotated[Optional[Path], typer.Option(help="write the curation report here",
                                                       show_default="beside --out: OUT_report/")] = None,
    preset: PresetOpt = None, set_: SetOpt = None,
) -> None:
    """Stage 2b: apply the keep rule (no LLM call); write the curated corpus and its report."""
    from multicsr_core.pipeline.curate import curate_stage
    from multicsr_core.pipeline.preflight import preflight_curate

    cfg = _config(preset, set_, **{f"curation__{name}": _given(ctx, name) for name in ("rule", "alpha", "beta", "gamma")})
    report_dir = report_dir or out_path.parent / f"{out_path.stem}_report"
    _writes((out_path, "--out"), (report_dir, "--report-dir"))
    preflight_curate(cfg, corpus, out_path, report_dir)
    # a scored corpus Parquet, or scored triplets of any format; generate -> score -> curate: stage 1's
    # reject counts head the funnel
    _print_json(curate_stage(cfg, corpus, out_path, report_dir, swap_mode))


@app.command()
@_guarded
def train(
    ctx: typer.Context,
    corpus: Annotated[Path, typer.Option(help="curated corpus Parquet (kept rows train) or sent0,sent1,hard_neg csv")],
    model: Annotated[str, typer.Option("--model", help="base model: hub id, path or bundled:all-MiniLM-L6-v2")],
    out_dir: Annotated[Path, typer.Option("--out", help="output model folder (SentenceTransformer)")],
    guide: Annotated[str, _config_option("training.guide_model", "--guide", help="frozen guide model "
                                         "P_eta")] = _config_default("training.guide_model"),
    loss: Annotated[Literal[tuple(LOSSES)],
                    _config_option("training.loss", help=" | ".join(LOSSES))] = _config_default("training.loss"),
    sigma: Annotated[float, _config_option("training.sigma", help="guide cosine at or above which an in-batch "
                                           "negative is masked")] = _config_default("training.sigma"),
    batch_size: Annotated[int, _config_option("training.batch_size", help="triplets per training "
                                              "batch")] = _config_default("training.batch_size"),
    max_steps: Annotated[Optional[int], _config_option("training.max_steps", help="stop after this many "
                                                       "optimizer steps", show_default="none: training.epochs "
                                                       "decide")] = None,
    data_dir: DataDirOpt = None,
    preset: PresetOpt = None, set_: SetOpt = None,
) -> None:
    """Stage 3: train a sentence encoder on the curated corpus (STS-B dev selects the checkpoint)."""
    _apply_data_dir(data_dir)
    cfg = _config(preset, set_, training__base_model=model, training__guide_model=_given(ctx, "guide"),
                  **{f"training__{name}": _given(ctx, name) for name in ("loss", "sigma", "batch_size", "max_steps")})
    from multicsr_core.pipeline.preflight import preflight_train

    _writes((out_dir, "--out"), (out_dir.parent / ".multicsr-cache", "--out"))
    preflight_train(cfg, corpus, out_dir)
    from multicsr_core.pipeline.train import train_stage  # after the checks: it loads torch and transformers (seconds)
    from multicsr_core.progress import ProgressReporter

    with ProgressReporter("train", "steps") as progress:
        report = train_stage(cfg, corpus, out_dir, cache_dir=out_dir.parent / ".multicsr-cache", progress=progress)
    _print_json(report)


@app.command()
@_guarded
def evaluate(
    model: Annotated[str, typer.Option("--model", help="SentenceTransformer folder, hub id or bundled:all-MiniLM-L6-v2")],
    output: Annotated[Path, typer.Option("--output", "-o", help="results JSON")],
    data_dir: DataDirOpt = None,
    tasks: Annotated[str, typer.Option(help="comma-separated: sts, transfer", callback=_csv_choice(("sts", "transfer")))] = "sts",
    batch_size: Annotated[int, typer.Option(min=1, help="sentences per encoding batch (evaluation.batch_size)")] = _config_default("evaluation.batch_size"),
    sts_tasks: Annotated[Optional[str], typer.Option(help="comma-separated subset of STS12..STS16, STSBenchmark, SICKRelatedness",
                                                     callback=_csv_choice(STS_TASKS), show_default="all seven")] = None,
    markdown: Annotated[Optional[Path], typer.Option(help="Markdown report", show_default="beside --output, .md")] = None,
    card: Annotated[bool, _flag("card", help="a folder trained by multicsr: put these results in its model card "
                                "(README.md)")] = True,
) -> None:
    """SentEval STS12-16, STS-B, SICK-R Spearman (and transfer tasks), exactly as SimCSE's SentEval fork."""
    from multicsr_core.pipeline.preflight import preflight_evaluate

    md_path = markdown or output.with_suffix(".md")
    _writes((output, "--output"), (md_path, "--markdown"))
    senteval = preflight_evaluate(model, output, data_dir, md_path)
    from multicsr_core.evaluation.report import markdown_comparison  # after the checks: scipy, torch
    from multicsr_core.pipeline.evaluate import evaluate_stage
    from multicsr_core.progress import ProgressReporter

    settings = {"tasks": [t.strip() for t in tasks.split(",") if t.strip()], "batch_size": batch_size,
                "sts_tasks": [t.strip() for t in sts_tasks.split(",")] if sts_tasks else None}
    with ProgressReporter("evaluate", "sentences") as progress:
        results = evaluate_stage(model, senteval, output, settings, {"model": model, "data_dir": str(senteval)}, progress)
    table = markdown_comparison({model: results})
    md_path.write_text(table, encoding="utf-8")
    print(table, flush=True)  # plain: rich would wrap the Markdown table
    out.print(f"results: {output}\nreport: {md_path}")
    if card and (Path(model) / "multicsr_training.json").is_file():
        from multicsr_core.cards import CardTarget, write_model_card
        from multicsr_core.pipeline.generate import generation_prompt_set

        card_path = write_model_card(model, results=results, target=CardTarget(model_ref=model),
                                     prompts_for=generation_prompt_set)
        out.print(f"model card: {card_path}")


@app.command()
@_guarded
def inspect(path: Annotated[Path, typer.Argument(help="a corpus Parquet file")],
            rows: Annotated[int, typer.Option(min=0, help="sample rows to print")] = 5,
            as_json: Annotated[bool, _flag("json", help="print one JSON object (rows, sample, funnel, "
                                           "scores, provenance with the config) instead of tables")] = False) -> None:
    """Print rows, kept/rejected by reason, score summaries and provenance of a corpus file."""
    from multicsr_core.pipeline.inspection import corpus_summary
    from multicsr_core.pipeline.preflight import check_input_file

    check_input_file(path, "the corpus argument")
    summary = corpus_summary(path, sample_rows=rows)
    if as_json:
        _print_json(summary)
        return
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


@app.command()
@_guarded
def export(
    corpus: Annotated[Optional[Path], typer.Option(help="curated corpus Parquet to export (this or --model)",
                                                   show_default="none")] = None,
    model: Annotated[Optional[Path], typer.Option(help="model folder trained by multicsr to export (this or --corpus)",
                                                  show_default="none")] = None,
    to: Annotated[Optional[Path], typer.Option("--to", help="new (or empty) output folder",
                                               show_default="none; with --push-to-hub a temporary one")] = None,
    fmt: Annotated[Literal["hf", "simcse-csv", "jsonl"], typer.Option("--format", help="corpus format: hf (Parquet + "
                                                                      "card, the Hub's layout), simcse-csv "
                                                                      "(sent0,sent1,hard_neg), jsonl")] = "hf",
    all_rows: Annotated[bool, _flag("all", help="every row, not only the kept ones")] = False,
    push_to_hub: Annotated[Optional[str], typer.Option("--push-to-hub", help="upload the folder to this Hub repo "
                                                       "(OWNER/NAME; token from $HF_TOKEN)",
                                                       show_default="none: no upload")] = None,
    private: Annotated[bool, _flag("private", help="create the Hub repo private")] = False,
    license: Annotated[Optional[str], typer.Option(help="license id for the card",
                                                   show_default="the source data's")] = None,
) -> None:
    """Export a corpus (datasets folder, SimCSE csv, JSONL) or a model, with its card; optionally push it to the Hub."""
    import tempfile

    from multicsr_core.pipeline.export import ExportError, export_corpus, export_model, push_folder

    if (corpus is None) == (model is None):
        raise ExportError("give --corpus FILE or --model DIR (one of them)")
    if to is None and not push_to_hub:
        raise ExportError("give --to DIR (where the export goes), or --push-to-hub OWNER/NAME")
    if push_to_hub and not os.environ.get("HF_TOKEN"):  # before any work
        raise ExportError("HF_TOKEN is not set: export a Hugging Face token with write access and run again")
    with tempfile.TemporaryDirectory(prefix="multicsr-export-") as scratch:
        folder = to if to is not None else Path(scratch) / "export"
        _writes((folder, "--to" if to is not None else "TMPDIR"))
        if corpus is not None:
            done = export_corpus(corpus, folder, fmt, all_rows=all_rows, repo_id=push_to_hub, license=license)
        else:
            done = export_model(model, folder, repo_id=push_to_hub, license=license)
        report = done.as_dict()
        if push_to_hub:
            report["pushed"] = push_folder(folder, push_to_hub, repo_type="dataset" if corpus is not None else "model",
                                           private=private)
            if to is None:
                report.update(folder=None, data_file=None, card=None)  # the temporary copy is gone; the Hub holds it
        _print_json(report)


@data_app.command("download")
@_guarded
def data_download(to: Annotated[Optional[Path], typer.Option("--to", help="data root",
                                                              show_default="~/.cache/multicsr/data")] = None,
                  what: Annotated[str, typer.Option(help="comma-separated: senteval, nli, wiki1m",
                                                    callback=_csv_choice(("senteval", "nli", "wiki1m")))] = "senteval,nli") -> None:
    """Fetch the public evaluation and premise data (needs internet)."""
    from multicsr_core.io.download import download_data

    root = (to or Path.home() / ".cache" / "multicsr" / "data").expanduser()
    _writes((root, "--to"))
    from multicsr_core.pipeline.preflight import check_output_dir

    check_output_dir(root, "--to")
    try:
        done = download_data(root, [w.strip() for w in what.split(",") if w.strip()], log=lambda m: console.print(m))
    except OSError as exc:
        from multicsr_core.errors import machine_error_of

        machine = machine_error_of(exc, root, "--to")  # a full disk is the machine's, not the network's
        if machine is not None:
            raise machine from None
        _fail(f"download failed ({exc}); nothing partial was left in {root}", code=1)
    _print_json(done)


@data_app.command("where")
def data_where() -> None:
    """Print the data root the pipeline will use."""
    from multicsr_core.config import default_data_root

    out.print(str(default_data_root()))


@cache_app.command("merge")
@_guarded
def cache_merge(quarantined: Annotated[Path, typer.Argument(help="a damaged response cache moved aside "
                                                           "(llm/responses.sqlite.corrupt-...)")],
                workdir: WorkdirOpt = Path("runs/default")) -> None:
    """Copy the replies SQLite can still read from a quarantined response cache into the workdir's cache."""
    from multicsr_core.llm.cache import ResponseCache, default_cache_path, merge_quarantined

    if not quarantined.is_file():
        _fail(f"{quarantined}: no such file (the warning that moved the cache aside names it)")
    with open(quarantined, "rb") as fh:
        from multicsr_core.sqlite_health import SQLITE_HEADER

        if fh.read(len(SQLITE_HEADER)) != SQLITE_HEADER:
            _fail(f"{quarantined}: not a SQLite file (no rows to recover); give the responses.sqlite.corrupt-... file "
                  "that the warning named")
    _writes((workdir, "--workdir"))
    with ResponseCache(default_cache_path(workdir)) as cache:
        counts = merge_quarantined(quarantined, cache)
    _print_json({**counts, "into": str(default_cache_path(workdir))})


@experiment_app.command("false-negatives")
@_guarded
def experiment_false_negatives(
    output: Annotated[Path, typer.Option("--output", "-o", help="results JSON (a PNG plot and Markdown table beside it)")],
    model: Annotated[str, typer.Option("--model", help="encoder trained with and without the mask")] = "bundled:all-MiniLM-L6-v2",
    guide: Annotated[str, typer.Option("--guide", help="frozen guide model of the mask")] = "bundled:all-MiniLM-L6-v2",
    ks: Annotated[str, typer.Option("--ks", help="comma-separated duplicate counts K", callback=_int_list)] = "1,32,128",
    triplets: Annotated[Optional[Path], typer.Option(help="SNLI triplets csv",
                                                     show_default="the data root's nli/snli_devtest_for_simcse.csv")] = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Paper Fig. 4: duplicate one triplet K times; train with and without the mask; STS-B dev per K."""
    _apply_data_dir(data_dir)
    from multicsr_core.config import default_data_root
    from multicsr_core.pipeline.preflight import check_model, check_output_file, check_senteval, check_triplets
    from multicsr_core.pipeline.train import false_negatives_report

    _writes((output, "--output"))
    check_output_file(output, "--output")
    check_model(model, "--model")
    check_model(guide, "--guide")
    check_senteval(data_dir)
    check_triplets(triplets or default_data_root() / "nli" / "snli_devtest_for_simcse.csv", "--triplets")
    result = false_negatives_report(output, model=model, guide=guide, ks=[int(k) for k in ks.split(",") if k.strip()],
                                     triplets=triplets)
    _print_json(result)


def main() -> None:
    """The ``multicsr`` entry point: typer's usage errors (a bad option value) as one line too."""
    try:
        code = app(standalone_mode=False)
    except typer.TyperException as exc:  # typer's (vendored click's) usage errors: bad option values
        if type(exc).__name__ == "NoArgsIsHelpError":  # `multicsr` / `multicsr data` alone: typer printed the help
            sys.exit(2)
        ctx = getattr(exc, "ctx", None)
        where = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
        message = (exc.format_message() if hasattr(exc, "format_message") else str(exc)).replace("Value error, ", "")
        _print_error(" ".join(f"{message}{where}".split()))
        code = getattr(exc, "exit_code", 2)
    except typer.Abort:
        code = 130
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
