"""The fault matrix of issue 12: every user error through the real CLI is one line naming the file
(or option) and what to do, exit 2, no traceback, found before any work, and nothing already
written changes.

Stage commands run in this process through the real entry point (``multicsr.cli.main``, the
function the ``multicsr`` console script calls: typer parsing, the guard, preflight, the real
readers), so the matrix takes seconds; ``run`` goes through a subprocess (``python -m
multicsr.cli run``), and its errors raised inside Prefect tasks through a real Prefect server.
Every case shares one directory of inputs and an existing output; each case hashes that directory
before and after.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from multicsr_core.io.corpus import CORPUS_SCHEMA, COLUMNS, corpus_table, write_parquet_atomic
from tests.conftest import SHARED_DATA

pytest.register_assert_rewrite("ops_fixtures")
pytest_plugins = ["ops_fixtures"]

MINILM = "bundled:all-MiniLM-L6-v2"
SNLI = SHARED_DATA / "nli" / "snli_devtest_for_simcse.csv"


# ----------------------------------------------------------------------------- the inputs
@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    """One directory of good and broken inputs (and an existing output), shared by every case."""
    return make_inputs(tmp_path_factory.mktemp("fault-matrix"))


def make_inputs(d: Path) -> Path:
    lines = SNLI.read_text(encoding="utf-8").splitlines()
    (d / "triplets.csv").write_text("\n".join(lines[:41]) + "\n", encoding="utf-8")
    (d / "header.csv").write_text(lines[0] + "\n", encoding="utf-8")
    (d / "premises.csv").write_text("sentence\nA dog runs.\nA cat sleeps.\n", encoding="utf-8")
    (d / "empty.txt").write_bytes(b"")
    (d / "blank.txt").write_text("   \n\n\t\n", encoding="utf-8")
    rows = [dict(zip(("premise", "entailment", "contradiction"), line.split(",", 2))) for line in lines[1:11]]
    scored = corpus_table([{**r, "entailment_score": 4.0, "contradiction_score": 1.0} for r in rows])
    write_parquet_atomic(scored, d / "scored.parquet")
    data = (d / "scored.parquet").read_bytes()
    (d / "truncated.parquet").write_bytes(data[: len(data) // 2])
    (d / "zero.parquet").write_bytes(b"")
    (d / "text.parquet").write_text("sent0,sent1,hard_neg\na,b,c\n", encoding="utf-8")
    pq.write_table(pa.table({"premise": ["a"], "entailment": ["b"]}), d / "missing_column.parquet")
    pq.write_table(pa.table({"premise": ["a dog"], "entailment": ["an animal"], "contradiction": ["a cat"],
                             "entailment_score": ["high"], "contradiction_score": [1.0]}), d / "string_score.parquet")
    pq.write_table(pa.table({"sent0": [1, 2], "sent1": ["b", "c"], "hard_neg": ["d", "e"]}), d / "int_column.parquet")
    nullable = pa.schema([f.with_nullable(True) for f in CORPUS_SCHEMA])
    null_premise = {name: scored.column(name).to_pylist()[:3] for name in COLUMNS}
    null_premise["premise"][1] = None
    pq.write_table(pa.table(null_premise, schema=nullable), d / "null_premise.parquet")
    (d / "bad_preset.yaml").write_bytes("name: d\u00e9mo\n".encode("utf-8") + "curation: {alpha: 3} # \u00e9\n".encode("latin-1"))
    shutil.copy(d / "scored.parquet", d / "existing.parquet")  # an output a failed command must leave alone
    (d / "outdir").mkdir()
    (d / "nodata").mkdir()
    return d


def tree_hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(root.rglob("*"))}


@contextlib.contextmanager
def _process_state(env: dict[str, str]):
    """The CLI's process-wide state (environment, argv) restored after an in-process call."""
    saved_env, saved_argv = dict(os.environ), sys.argv
    os.environ.update(env)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved_env)
        sys.argv = saved_argv


def invoke(args: list[str], env: dict[str, str] | None = None, cwd: Path | None = None) -> tuple[int, str, str]:
    """``multicsr ARGS`` through the console script's entry point, in this process."""
    from multicsr.cli import main

    stdout, stderr = io.StringIO(), io.StringIO()
    old_cwd = os.getcwd()
    with _process_state(env or {}), contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        sys.argv = ["multicsr", *args]
        if cwd:
            os.chdir(cwd)
        try:
            main()
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        finally:
            os.chdir(old_cwd)
    return code, stdout.getvalue(), stderr.getvalue()


def assert_one_line_error(stdout: str, stderr: str, *needles: str) -> str:
    """stderr is exactly one ``error:`` line holding every needle; no traceback, no report on stdout."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert "Traceback" not in stderr + stdout, stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    assert stdout.strip() == "", stdout
    return lines[0]


# ----------------------------------------------------------------------------- stage commands
SCORE = ["score", "--scorer", "guide", "--llm", MINILM, "--workdir", "{d}/w"]
GUIDE = ["--guide", MINILM]

# (case, arguments with {d} = the inputs folder, extra environment, strings the one line must hold)
CASES = [
    # a truncated, empty or non-Parquet file where Parquet is expected
    ("score-truncated-parquet", SCORE + ["--corpus", "{d}/truncated.parquet", "--out", "{d}/existing.parquet"], {},
     ["truncated.parquet", "not a readable Parquet file"]),
    ("score-0-byte-parquet", SCORE + ["--corpus", "{d}/zero.parquet", "--out", "{d}/existing.parquet"], {},
     ["zero.parquet", "empty (0 bytes)"]),
    ("score-text-as-parquet", SCORE + ["--corpus", "{d}/text.parquet", "--out", "{d}/existing.parquet"], {},
     ["text.parquet", "not a readable Parquet file"]),
    ("curate-truncated-parquet", ["curate", "--corpus", "{d}/truncated.parquet", "--out", "{d}/existing.parquet"], {},
     ["truncated.parquet", "truncated or of another format"]),
    ("train-truncated-parquet", ["train", "--corpus", "{d}/truncated.parquet", "--model", MINILM, *GUIDE,
                                 "--out", "{d}/model"], {}, ["truncated.parquet"]),
    ("inspect-truncated-parquet", ["inspect", "{d}/truncated.parquet"], {}, ["truncated.parquet"]),
    ("inspect-0-byte-parquet", ["inspect", "{d}/zero.parquet"], {}, ["zero.parquet", "empty"]),
    ("generate-truncated-parquet", ["generate", "--llm", "bundled:smollm2-135m-instruct", "--premises",
                                    "{d}/truncated.parquet", "--out", "{d}/existing.parquet", "--workdir", "{d}/w"], {},
     ["truncated.parquet"]),
    # a CSV given to curate (no scores) or to inspect (not triplets)
    ("curate-unscored-csv", ["curate", "--corpus", "{d}/triplets.csv", "--out", "{d}/existing.parquet"], {},
     ["triplets.csv", "no score columns", "multicsr score"]),
    ("inspect-premises-csv", ["inspect", "{d}/premises.csv"], {}, ["premises.csv:1", "missing column"]),
    # Parquet with a missing column, a string score, a null premise, an integer text column
    ("score-missing-column", SCORE + ["--corpus", "{d}/missing_column.parquet", "--out", "{d}/existing.parquet"], {},
     ["missing_column.parquet", "missing column(s) ['contradiction']"]),
    ("curate-string-score", ["curate", "--corpus", "{d}/string_score.parquet", "--out", "{d}/existing.parquet"], {},
     ["string_score.parquet: row 1", "entailment_score='high'", "not a number"]),
    ("score-null-premise", SCORE + ["--corpus", "{d}/null_premise.parquet", "--out", "{d}/existing.parquet"], {},
     ["null_premise.parquet: row 2", "premise is null"]),
    ("score-integer-text-column", SCORE + ["--corpus", "{d}/int_column.parquet", "--out", "{d}/existing.parquet"], {},
     ["int_column.parquet: row 1", "'sent0'", "not text"]),
    # an output that cannot be written, found before the work
    ("score-out-is-directory", SCORE + ["--corpus", "{d}/triplets.csv", "--out", "{d}/outdir"], {},
     ["outdir", "is a directory", "--out"]),
    ("score-out-unwritable", SCORE + ["--corpus", "{d}/triplets.csv", "--out", "/sys/multicsr-out.parquet"], {},
     ["/sys/multicsr-out.parquet", "cannot write", "--out"]),
    ("curate-out-under-a-file", ["curate", "--corpus", "{d}/scored.parquet", "--out", "{d}/existing.parquet/c.parquet"],
     {}, ["existing.parquet is a file", "--out"]),
    ("train-out-is-a-file", ["train", "--corpus", "{d}/scored.parquet", "--model", MINILM, *GUIDE,
                             "--out", "{d}/existing.parquet"], {}, ["existing.parquet", "is a file", "--out"]),
    ("evaluate-output-is-directory", ["evaluate", "--model", MINILM, "--output", "{d}/outdir"], {},
     ["outdir", "is a directory", "--output"]),
    # option values
    ("curate-swap-mode-foo", ["curate", "--corpus", "{d}/scored.parquet", "--out", "{d}/c.parquet", "--swap-mode", "foo"],
     {}, ["--swap-mode", "'foo'", "generation", "corpus"]),
    ("evaluate-tasks-foo", ["evaluate", "--model", MINILM, "--output", "{d}/e.json", "--tasks", "foo"], {},
     ["--tasks", "'foo'", "sts, transfer"]),
    ("evaluate-sts-tasks-STS99", ["evaluate", "--model", MINILM, "--output", "{d}/e.json", "--sts-tasks", "STS16,STS99"],
     {}, ["--sts-tasks", "'STS99'", "STSBenchmark"]),
    ("evaluate-batch-size-0", ["evaluate", "--model", MINILM, "--output", "{d}/e.json", "--batch-size", "0"], {},
     ["--batch-size", "greater than or equal to 1"]),
    ("generate-prompt-set-nope", ["generate", "--llm", "bundled:smollm2-135m-instruct", "--premises", "{d}/premises.csv",
                                  "--out", "{d}/g.parquet", "--prompt-set", "nope"], {},
     ["--prompt-set", "'nope'", "syncse-pool"]),
    ("generate-llm-nonexistent", ["generate", "--llm", "/nonexistent", "--premises", "{d}/premises.csv",
                                  "--out", "{d}/g.parquet", "--workdir", "{d}/w"], {},
     ["--llm", "/nonexistent", "no such file or folder"]),
    ("train-model-bundled-foo", ["train", "--corpus", "{d}/scored.parquet", "--model", "bundled:foo", *GUIDE,
                                 "--out", "{d}/model"], {}, ["--model", "bundled:foo", "known: bundled:all-MiniLM-L6-v2"]),
    ("experiment-ks-abc", ["experiment", "false-negatives", "--output", "{d}/fn.json", "--ks", "abc"], {},
     ["--ks", "'abc'", "integers"]),
    ("inspect-rows-minus-1", ["inspect", "{d}/scored.parquet", "--rows", "-1"], {}, ["--rows", "greater than or equal to 0"]),
    ("data-download-what-foo", ["data", "download", "--to", "{d}/data", "--what", "foo"], {},
     ["--what", "'foo'", "senteval, nli, wiki1m"]),
    ("score-scorer-foo", SCORE[:1] + ["--scorer", "foo", "--corpus", "{d}/triplets.csv", "--out", "{d}/o.parquet"], {},
     ["--scorer", "'foo'", "guide"]),
    # a non-UTF-8 preset
    ("config-non-utf8-preset", ["config", "--preset", "{d}/bad_preset.yaml"], {},
     ["bad_preset.yaml:2", "not valid UTF-8", "UTF-8"]),
    # the default guide is a hub id that is not cached, offline
    ("train-default-guide-offline", ["train", "--corpus", "{d}/scored.parquet", "--model", MINILM, "--out", "{d}/model"],
     {"HF_HUB_OFFLINE": "1"}, ["--guide", "princeton-nlp/unsup-simcse-bert-base-uncased", "not in the local cache",
                               "--guide bundled:all-MiniLM-L6-v2"]),
    # empty input after cleaning
    ("generate-empty-txt", ["generate", "--llm", "bundled:smollm2-135m-instruct", "--premises", "{d}/empty.txt",
                            "--out", "{d}/g.parquet", "--workdir", "{d}/w"], {}, ["empty.txt", "empty (0 bytes)"]),
    ("generate-blank-txt", ["generate", "--llm", "bundled:smollm2-135m-instruct", "--premises", "{d}/blank.txt",
                            "--out", "{d}/g.parquet", "--workdir", "{d}/w"], {}, ["blank.txt", "no usable sentences"]),
    ("score-header-only-csv", SCORE + ["--corpus", "{d}/header.csv", "--out", "{d}/existing.parquet"], {},
     ["header.csv", "no usable triplets", "after its header"]),
    # the data directory
    ("evaluate-no-data-dir", ["evaluate", "--model", MINILM, "--output", "{d}/e.json", "--data-dir", "{d}/nodata"], {},
     ["nodata", "no SentEval data", "--data-dir", "multicsr data download"]),
    ("run-no-data-dir", ["run", "--preset", "demo-snli", "--data-dir", "{d}/nodata", "--workdir", "{d}/run-w"], {},
     ["nodata", "data root", "--data-dir", "multicsr data download"]),
    ("run-non-utf8-preset", ["run", "--preset", "{d}/bad_preset.yaml", "--workdir", "{d}/run-w"], {},
     ["bad_preset.yaml:2", "not valid UTF-8"]),
    ("run-truncated-parquet-input", ["run", "--preset", "demo-snli", "--set", "input.triplets={d}/truncated.parquet",
                                     "--workdir", "{d}/run-w"], {}, ["truncated.parquet", "not a readable Parquet"]),
    ("run-guide-bundled-foo", ["run", "--preset", "demo-snli", "--set", "training.guide_model=bundled:foo",
                               "--workdir", "{d}/run-w"], {}, ["training.guide_model", "bundled:foo"]),
    ("experiment-no-data-dir", ["experiment", "false-negatives", "--output", "{d}/fn.json", "--data-dir", "{d}/nodata"],
     {}, ["nodata", "no SentEval data", "multicsr data download"]),
]


@pytest.mark.parametrize("case,args,env,needles", CASES, ids=[c[0] for c in CASES])
def test_stage_command_user_error(files, case, args, env, needles):
    before = tree_hashes(files)
    code, stdout, stderr = invoke([a.format(d=files) for a in args], env)
    assert code == 2, (case, stderr)
    assert_one_line_error(stdout, stderr, *needles)
    assert tree_hashes(files) == before, "a failed command changed or added files"


def test_debug_prints_the_traceback_and_the_same_line(files):
    args = SCORE + ["--corpus", "{d}/truncated.parquet", "--out", "{d}/existing.parquet"]
    code, _, stderr = invoke(["--debug", *[a.format(d=files) for a in args]])
    assert code == 2 and "Traceback" in stderr and "InputError" in stderr
    assert stderr.rstrip().splitlines()[-1].startswith("error: ") and "truncated.parquet" in stderr
    code, _, stderr = invoke([a.format(d=files) for a in args], {"MULTICSR_DEBUG": "1"})
    assert code == 2 and "Traceback" in stderr


def test_user_triplets_in_parquet_and_jsonl_enter_at_stage_2(files, tmp_path):
    """Either column naming, Parquet and JSONL, through `multicsr inspect` (the same reader as score)."""
    lines = SNLI.read_text(encoding="utf-8").splitlines()[1:6]
    triples = [line.split(",", 2) for line in lines]
    pq.write_table(pa.table({"sent0": [t[0] for t in triples], "sent1": [t[1] for t in triples],
                             "hard_neg": [t[2] for t in triples]}), tmp_path / "simcse.parquet")
    import json

    (tmp_path / "ours.jsonl").write_text("".join(json.dumps({"premise": a, "entailment": b, "contradiction": c,
                                                             "entailment_score": 4, "contradiction_score": 1.5}) + "\n"
                                                 for a, b, c in triples), encoding="utf-8")
    for name, scored in (("simcse.parquet", 0), ("ours.jsonl", len(triples))):
        code, stdout, stderr = invoke(["inspect", str(tmp_path / name), "--rows", "2"])
        assert code == 0, stderr
        assert f'"total": {len(triples)}' in stdout and f'entailment_score: {{"count": {scored},' in stdout, stdout


def test_report_error_classifies(capsys):
    """The guard's three outcomes: user error 2, retryable 1 with the resume hint, else 1 without it."""
    from multicsr.cli import report_error
    from multicsr_core.errors import InputError, RetryableError

    assert report_error(InputError("bad row", path="x.csv", line=3)) == 2
    assert capsys.readouterr().err.strip() == "error: x.csv:3: bad row"
    assert report_error(RetryableError("2 requests failed")) == 1
    assert "run the same command again to resume" in capsys.readouterr().err
    assert report_error(ConnectionRefusedError("refused")) == 1
    assert "run the same command again" in capsys.readouterr().err
    assert report_error(RuntimeError("boom")) == 1
    err = capsys.readouterr().err
    assert "unexpected RuntimeError: boom" in err and "run the same command again" not in err and "--debug" in err


# ----------------------------------------------------------------------------- multicsr run
def run_cli(args: list[str], env: dict[str, str], timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "multicsr.cli", "run", *args], capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=timeout)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_run_preflight_errors_before_the_flow(files, tmp_path):
    """`multicsr run` (a subprocess) checks before any stage and any Prefect server starts: a dead
    PREFECT_API_URL, an input empty after cleaning. (More run preflight cases run in-process in
    CASES.)"""
    demo = ["--preset", "demo-snli", "--set", f"input.triplets={files}/triplets.csv"]
    cases = [
        (demo + ["--workdir", str(tmp_path / "w1")], {"PREFECT_API_URL": f"http://127.0.0.1:{_free_port()}/api"},
         ["PREFECT_API_URL=http://127.0.0.1:", "no Prefect server answers", "prefect server start"]),
        (["--preset", "demo-snli", "--set", f"input.triplets={files}/header.csv", "--workdir", str(tmp_path / "w2")],
         {}, ["header.csv", "no usable triplets"]),
    ]
    before = tree_hashes(files)
    for args, env, needles in cases:
        done = run_cli(args, env, timeout=300)
        assert done.returncode == 2, done.stderr[-2000:]
        line = assert_one_line_error(done.stdout, done.stderr, *needles)
        assert "run the same command again" not in line
        assert not Path(args[args.index("--workdir") + 1]).exists(), "preflight created the workdir"
    assert tree_hashes(files) == before


@pytest.mark.slow
def test_run_errors_inside_prefect_tasks(files, tmp_path, live_server):
    """A user error raised inside a Prefect task reads as the stage command's one line, exit 2, no
    Prefect traceback and no resume hint; a transport failure (an API that does not answer) exits 1
    with the resume hint."""
    lines = SNLI.read_text(encoding="utf-8").splitlines()
    long_row = next(i for i, line in enumerate(lines[1:], start=2) if len(line.split(",", 2)[0]) > 120)
    source = tmp_path / "long.csv"
    source.write_text("\n".join([lines[0], lines[1], lines[long_row - 1]]) + "\n", encoding="utf-8")
    env = live_server.env()
    done = run_cli(["--preset", "demo-snli", "--set", f"input.triplets={source}", "--set", "input.max_chars=100",
                    "--workdir", str(tmp_path / "w-user")], env)
    assert done.returncode == 2, done.stderr[-3000:]
    assert "Traceback" not in done.stderr + done.stdout
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, done.stderr[-3000:]  # Prefect's own log lines stay, one line each
    assert "long.csv:3: sentence of" in errors[0] and "max_chars=100" in errors[0]
    assert "run the same command again" not in done.stderr

    before = tree_hashes(files)
    done = run_cli(["--preset", "demo-snli", "--set", f"input.triplets={files}/triplets.csv",
                    "--set", "scoring.scorer=openai", "--set", "scoring.llm=gpt-4o-mini",
                    "--set", f"scoring.base_url=http://127.0.0.1:{_free_port()}/v1", "--set", "scoring.max_retries=0",
                    "--workdir", str(tmp_path / "w-transport")], {**env, "OPENAI_API_KEY": "sk-test"})
    assert done.returncode == 1, done.stderr[-3000:]
    assert "Traceback" not in done.stderr + done.stdout
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "run the same command again" in errors[0], done.stderr[-3000:]
    assert tree_hashes(files) == before


def test_usage_errors_are_one_line_and_help_still_works():
    code, stdout, stderr = invoke(["score"])
    assert code == 2
    assert_one_line_error(stdout, stderr, "Missing option '--corpus'", "multicsr score --help")
    code, stdout, stderr = invoke(["curate", "--help"])
    assert code == 0 and "generation|corpus" in stdout.replace(" ", "")
    code, stdout, stderr = invoke([])  # no command: the help, exit 2 (as typer standalone)
    assert code == 2 and "Usage" in stdout + stderr and "error:" not in stdout + stderr
