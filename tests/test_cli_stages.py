"""Each stage alone on files through the real `multicsr` CLI (subprocesses), on real data."""

from __future__ import annotations

import json
import subprocess
import sys

import pyarrow.parquet as pq
import pytest
from sentence_transformers import SentenceTransformer

from multicsr_core.io.corpus import read_provenance
from tests.conftest import SHARED_DATA, small_dev_senteval

MINILM = "bundled:all-MiniLM-L6-v2"


def cli(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "multicsr.cli", *args], capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cli")
    lines = (SHARED_DATA / "nli" / "snli_devtest_for_simcse.csv").read_text(encoding="utf-8").splitlines()
    triplets = tmp / "triplets.csv"
    triplets.write_text("\n".join(lines[:81]) + "\n", encoding="utf-8")
    out = tmp / "scored.parquet"
    done = cli("score", "--corpus", str(triplets), "--scorer", "guide", "--llm", MINILM, "--workdir", str(tmp / "w"),
               "--out", str(out))
    assert done.returncode == 0, done.stderr[-3000:]
    return tmp, out


def test_score_guide_fills_scores(scored):
    _, out = scored
    table = pq.read_table(out)
    assert table.num_rows == 80
    a = table.column("entailment_score").to_pylist()
    assert all(0.0 <= x <= 5.0 for x in a)
    assert read_provenance(out)["scorer"]["mapping"] == "5*clip(cos,0,1)"


def test_curate_rules_and_thresholds_without_llm(scored):
    tmp, scored_path = scored
    results = {}
    for name, args in {"paper": ["--rule", "paper"], "loose": ["--rule", "paper", "--alpha", "2", "--gamma", "0"],
                       "official": ["--rule", "official"]}.items():
        out = tmp / f"curated-{name}.parquet"
        done = cli("curate", "--corpus", str(scored_path), "--out", str(out), *args)
        assert done.returncode == 0, done.stderr[-3000:]
        results[name] = json.loads(done.stdout)
        table = pq.read_table(out)
        assert table.column("kept").null_count == 0
        assert (tmp / f"curated-{name}_report" / "score_scatter.png").is_file()
    assert results["loose"]["kept"] >= results["paper"]["kept"]
    assert sum(v for k, v in results["paper"].items() if k.startswith("rejected:")) + results["paper"]["kept"] == 80
    prov = read_provenance(tmp / "curated-loose.parquet")
    assert prov["config"]["curation"]["alpha"] == 2.0 and prov["input_provenance"]["stage"] == "score"


def test_inspect_prints_funnel_scores_provenance(scored):
    tmp, scored_path = scored
    curated = tmp / "curated-for-inspect.parquet"
    assert cli("curate", "--corpus", str(scored_path), "--out", str(curated)).returncode == 0
    done = cli("inspect", str(curated), "--rows", "3")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "curation" in done.stdout and "kept" in done.stdout
    assert "entailment_score" in done.stdout and "config_hash" in done.stdout


def test_train_cli_then_evaluate_cli(scored):
    tmp, scored_path = scored
    curated = tmp / "curated-for-train.parquet"
    assert cli("curate", "--corpus", str(scored_path), "--out", str(curated), "--alpha", "2", "--gamma", "0").returncode == 0
    model_dir = tmp / "model"
    done = cli("train", "--corpus", str(curated), "--model", MINILM, "--out", str(model_dir),
               "--guide", MINILM, "--loss", "paper", "--sigma", "0.9", "--batch-size", "8", "--max-steps", "2",
               "--set", "training.pooling=mean", "--set", "training.mlp_only_train=false",
               "--set", "training.eval_steps=2", "--set", f"evaluation.data_dir={small_dev_senteval()}")
    assert done.returncode == 0, done.stderr[-3000:]
    # the trainer prints its own log dicts first; our report is the last JSON block
    stdout = "\n" + done.stdout
    report = json.loads(stdout[stdout.rindex("\n{\n") + 1:])
    assert report["steps"] == 2 and report["loss"] == "paper"
    assert json.loads((model_dir / "multicsr_training.json").read_text())["config"]["training"]["sigma"] == 0.9
    assert SentenceTransformer(str(model_dir), device="cpu").encode(["a dog runs"]).shape == (1, 384)

    output = tmp / "eval.json"
    done = cli("evaluate", "--model", MINILM, "--output", str(output), "--sts-tasks", "STS16,STSBenchmark")
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(output.read_text())
    assert round(results["STS16"], 2) == 78.99 and round(results["STSBenchmark"], 2) == 82.03
    assert results["avg"] == round((78.99 + 82.03) / 2, 2)
    assert "| STS16 |" in output.with_suffix(".md").read_text() or "STS16" in output.with_suffix(".md").read_text()


def test_bad_inputs_exit_2_with_file_and_line(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("sent0,sent1,hard_neg\nok,fine,good\nbad,\xff\n", encoding="latin-1")
    done = cli("score", "--corpus", str(bad), "--scorer", "guide", "--llm", MINILM, "--workdir", str(tmp_path),
               "--out", str(tmp_path / "o.parquet"))
    assert done.returncode == 2
    assert "bad.csv:3: not valid UTF-8" in done.stderr.replace("\n", "")
    assert not (tmp_path / "o.parquet").exists()
    done = cli("config", "--preset", "demo-offline", "--set", "training.sigmaa=1")
    assert done.returncode == 2 and "training.sigmaa: unknown key" in done.stderr


def test_train_cli_supervised_setting_and_no_mask_ablation(scored):
    """`training.supervised_nli` merges gold NLI triplets (paper App. G); `training.mask=false` (the
    "without stage 3" ablation) trains the paper loss without its mask, i.e. supervised SimCSE."""
    tmp, scored_path = scored
    curated = tmp / "curated-for-ablation.parquet"
    assert cli("curate", "--corpus", str(scored_path), "--out", str(curated)).returncode == 0
    kept = sum(pq.read_table(curated).column("kept").to_pylist())
    nli = tmp / "gold.csv"
    lines = (SHARED_DATA / "nli" / "snli_devtest_for_simcse.csv").read_text(encoding="utf-8").splitlines()
    nli.write_text("\n".join([lines[0], *lines[200:230]]) + "\n", encoding="utf-8")
    out = tmp / "model-ablation"
    done = cli("train", "--corpus", str(curated), "--model", MINILM, "--out", str(out), "--batch-size", "8",
               "--max-steps", "1", "--set", "training.pooling=mean", "--set", "training.mlp_only_train=false",
               "--set", "training.mask=false", "--set", f"training.supervised_nli={nli}",
               "--set", "training.eval_steps=100", "--set", f"evaluation.data_dir={small_dev_senteval()}")
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((out / "multicsr_training.json").read_text())
    assert report["loss"] == "simcse"
    assert report["train_rows"] == kept + 30


def test_score_user_triplets_parquet_and_jsonl_either_naming(scored):
    """Stage 2 takes a user's own triplets in Parquet (sent0,sent1,hard_neg) and JSONL
    (premise,entailment,contradiction), validated by the same rules as csv."""
    import pyarrow as pa

    tmp, _ = scored
    lines = (SHARED_DATA / "nli" / "snli_devtest_for_simcse.csv").read_text(encoding="utf-8").splitlines()[1:11]
    triples = [line.split(",", 2) for line in lines]
    pq.write_table(pa.table({"sent0": [t[0] for t in triples], "sent1": [t[1] for t in triples],
                             "hard_neg": [t[2] for t in triples]}), tmp / "user.parquet")
    (tmp / "user.jsonl").write_text("".join(json.dumps(dict(zip(("premise", "entailment", "contradiction"), t))) + "\n"
                                            for t in triples), encoding="utf-8")
    for name in ("user.parquet", "user.jsonl"):
        out = tmp / f"scored-{name}.parquet"
        done = cli("score", "--corpus", str(tmp / name), "--scorer", "guide", "--llm", MINILM, "--workdir",
                   str(tmp / "w"), "--out", str(out))
        assert done.returncode == 0, done.stderr[-3000:]
        table = pq.read_table(out)
        assert table.num_rows == 10 and table.column("entailment_score").null_count == 0
        assert table.column("premise").to_pylist() == [t[0].strip() for t in triples]
