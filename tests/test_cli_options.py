"""The CLI's options and one-line errors, in process (typer's CliRunner on the real app): every
option documented with its default, flags as --x/--no-x, config options that leave a preset's
value alone, `run` without a preset, a data root that lacks a file, and evaluate's progress."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import typer.main
from typer.testing import CliRunner

from multicsr.cli import app
from multicsr_core.config import CurationConfig, PipelineConfig
from multicsr_core.io.corpus import read_provenance
from tests.conftest import SHARED_DATA

# Options that may show no default, and why ("no default" means something there).
NO_DEFAULT_SHOWN = {
    ("multicsr", "--version"): "an action, not a setting: prints the version and exits",
}
MINILM = "bundled:all-MiniLM-L6-v2"


def _commands(command, path: tuple[str, ...]):
    yield path, command  # a group's own options too (the app's --debug, --version)
    for name, sub in getattr(command, "commands", {}).items():
        yield from _commands(sub, (*path, name))


def _option_problems() -> list[str]:
    root = typer.main.get_command(app)
    problems = []
    for path, command in _commands(root, ("multicsr",)):
        ctx = typer.Context(command, info_name=path[-1])
        for param in command.params:
            name = param.opts[0]
            where = f"{' '.join(path)} {name}"
            if not (getattr(param, "help", None) or "").strip():
                problems.append(f"{where}: no help text")
            if getattr(param, "is_bool_flag", False):
                if not param.secondary_opts and (path[0], name) not in NO_DEFAULT_SHOWN:
                    problems.append(f"{where}: a boolean option without its --no- form")
                if param.display_type_rich(ctx):
                    problems.append(f"{where}: --help shows it taking a value ({param.display_type_rich(ctx)})")
            record = param.get_help_record(ctx)
            shown = record is not None and ("default:" in record[1] or param.required)
            if not shown and (path[0], name) not in NO_DEFAULT_SHOWN:
                problems.append(f"{where}: --help shows no default")
    return problems


def test_every_option_has_help_and_shows_its_default():
    assert _option_problems() == []


def test_config_options_show_the_config_default_and_flags_take_no_value():
    runner = CliRunner()
    help_text = runner.invoke(app, ["curate", "--help"], env={"COLUMNS": "200"}).output
    for key in ("alpha", "beta", "gamma"):
        line = next(line for line in help_text.splitlines() if f"--{key} " in line)
        assert f"[default: {getattr(CurationConfig(), key)}]" in line  # the paper's 3/3/1, from the config model
    for command, default in (("train", f"[default: {PipelineConfig().training.sigma}]"),
                             ("generate", f"[default: {PipelineConfig().generation.max_new_tokens}]")):
        assert default in runner.invoke(app, [command, "--help"], env={"COLUMNS": "200"}).output
    run_help = runner.invoke(app, ["run", "--help"], env={"COLUMNS": "200"}).output
    dry_run = next(line for line in run_help.splitlines() if "--dry-run" in line)
    assert "--no-dry-run" in dry_run and "<bool>" not in dry_run and "[default: no-dry-run]" in dry_run


def test_config_options_leave_the_presets_value_unless_given(tmp_path):
    """`curate` without --alpha keeps the preset's alpha; --alpha on the command line wins, even at
    the value the help shows as the default."""
    scored = tmp_path / "scored.csv"
    scored.write_text("sent0,sent1,hard_neg,entailment_score,contradiction_score\n"
                      "a dog runs,an animal moves,a cat sleeps,4.5,1.0\n"
                      "the sun is up,it is day,it is night,2.6,0.5\n", encoding="utf-8")
    preset = tmp_path / "low-alpha.yaml"
    preset.write_text("curation:\n  alpha: 2.5\n", encoding="utf-8")
    runner = CliRunner()
    default_alpha = CurationConfig().alpha
    kept = {}
    for name, extra in {"defaults": [], "preset": ["--preset", str(preset)],
                        "preset+flag": ["--preset", str(preset), "--alpha", str(default_alpha)]}.items():
        out = tmp_path / f"{name}.parquet"
        result = runner.invoke(app, ["curate", "--corpus", str(scored), "--out", str(out), *extra])
        assert result.exit_code == 0, result.output
        kept[name] = (read_provenance(out)["config"]["curation"]["alpha"], sum(pq.read_table(out).column("kept").to_pylist()))
    assert kept == {"defaults": (default_alpha, 1), "preset": (2.5, 2), "preset+flag": (default_alpha, 1)}


@pytest.mark.parametrize("command", ["run", "estimate"])
def test_run_without_a_preset_says_pass_preset(command, tmp_path):
    result = CliRunner().invoke(app, [command, "--workdir", str(tmp_path / "w")])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "pass --preset" in lines[0] and "names no input" not in lines[0]
    assert not (tmp_path / "w").exists()


@pytest.fixture(scope="module")
def tiny_senteval(tmp_path_factory) -> Path:
    """A SentEval folder holding STS16 only, each subset cut to its first 8 scored pairs."""
    root = tmp_path_factory.mktemp("tiny-senteval")
    real, tiny = SHARED_DATA / "senteval" / "STS" / "STS16-en-test", root / "STS" / "STS16-en-test"
    tiny.mkdir(parents=True)
    for gold in real.glob("STS.gs.*.txt"):
        pairs = real / gold.name.replace("STS.gs.", "STS.input.")
        scored = [(p, g) for p, g in zip(pairs.read_text(encoding="utf-8").splitlines(keepends=True),
                                         gold.read_text(encoding="utf-8").splitlines(keepends=True)) if g.strip()][:8]
        (tiny / pairs.name).write_text("".join(p for p, _ in scored), encoding="utf-8")
        (tiny / gold.name).write_text("".join(g for _, g in scored), encoding="utf-8")
    return root


def _assert_names_layout(line: str) -> None:
    assert "senteval/" in line and "nli/" in line and "MULTICSR_DATA_ROOT" in line and "multicsr data download" in line


def test_data_root_missing_a_file_names_it_and_the_layout(tiny_senteval, tmp_path, monkeypatch):
    """A data root without the preset's NLI file: one line naming the file and what a data root holds,
    exit 2, before anything runs. A SentEval folder missing a task's file: its reader says the same."""
    from multicsr_core.errors import DataDirError
    from multicsr_core.evaluation.sts import load_sts_tasks

    empty = tmp_path / "data"
    empty.mkdir()
    monkeypatch.setenv("MULTICSR_DATA_ROOT", str(empty))  # restored after the test (--data-dir sets it)
    result = CliRunner().invoke(app, ["run", "--preset", "demo-snli", "--data-dir", str(empty),
                                      "--workdir", str(tmp_path / "w")])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {empty / 'nli' / 'snli_devtest_for_simcse.csv'}: not found")
    _assert_names_layout(lines[0])

    with pytest.raises(DataDirError) as missing:
        load_sts_tasks(tiny_senteval, ["STS15"])
    assert str(missing.value).startswith(f"{tiny_senteval / 'STS' / 'STS15-en-test' / 'STS.input.answers-forums.txt'}: "
                                         "file not found; ")
    _assert_names_layout(str(missing.value))


def test_evaluate_shows_progress_over_the_encoded_sentences(tiny_senteval, tmp_path, monkeypatch):
    """`multicsr evaluate` reports the evaluation's per-batch callback (off a terminal, as the other
    stages do: a line per tenth), counting up to all the sentences it encoded."""
    monkeypatch.setenv("MULTICSR_DATA_ROOT", str(tiny_senteval))
    output = tmp_path / "e.json"
    result = CliRunner().invoke(app, ["evaluate", "--model", MINILM, "--output", str(output), "--data-dir",
                                      str(tiny_senteval), "--sts-tasks", "STS16", "--batch-size", "16"])
    assert result.exit_code == 0, result.output
    counts = [tuple(map(int, line.split()[1].split("/"))) for line in result.stderr.splitlines()
              if line.startswith("[evaluate] ")]
    total = counts[-1][1]
    sentences = {s for path in (tiny_senteval / "STS" / "STS16-en-test").glob("STS.input.*.txt")
                 for line in path.read_text(encoding="utf-8").splitlines() for s in line.split("\t")}
    assert total == len({" ".join(s.split()) for s in sentences})  # every distinct sentence, once
    assert len(counts) >= 3 and [d for d, _ in counts] == sorted(d for d, _ in counts) and counts[-1][0] == total
    assert "STS16" in json.loads(output.read_text())


def test_transfer_progress_runs_on_across_tasks():
    import numpy as np

    from multicsr_core.evaluation.transfer import evaluate_transfer

    def letter_counts(sentences: list[str]) -> np.ndarray:  # a cheap real encoder: no model to load
        return np.array([[s.count(c) for c in "aeiou tnsrl"] for s in sentences], dtype=np.float32)

    seen: list[tuple[int, int]] = []
    evaluate_transfer(letter_counts, SHARED_DATA / "senteval", tasks=["CR", "MR"], kfold=2, max_examples=40,
                      batch_size=16, progress=lambda done, total: seen.append((done, total)))
    done, cr_total = [d for d, _ in seen], seen[0][1]
    assert done == sorted(done) and seen[-1][0] == seen[-1][1]
    assert (cr_total, cr_total) in seen and seen[-1][1] > cr_total  # MR's sentences count on after CR's
