"""`multicsr export` through the real CLI: the corpus as a datasets folder, SimCSE csv and JSONL
(read back with datasets and pandas), a model folder for the Hub, and the upload through the real
huggingface_hub client against a local Hub on 127.0.0.1 (tests/hub_server.py).

What this cannot test offline: huggingface.co itself, and the Xet transfer protocol that
huggingface_hub uses there when hf_xet is installed (HF_HUB_DISABLE_XET=1 makes the client use
git-LFS "basic" transfers, which the local Hub implements, as the Hub still accepts).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

import pandas as pd
import pytest
from datasets import load_dataset

from tests.hub_server import FakeHub

pytest_plugins = ["card_fixtures"]
pytestmark = pytest.mark.slow  # the shared tiny run trains once per session (about 25 s of CPU)

TOKEN = "hf_test_0123456789abcdefSECRET"


def cli(*args: str, env: dict | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "multicsr.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


def hub_env(hub: FakeHub, token: str = TOKEN) -> dict:
    env = {**os.environ, "HF_TOKEN": token, "HF_ENDPOINT": hub.endpoint, "HF_HUB_DISABLE_XET": "1"}
    env.pop("HF_HUB_OFFLINE", None)
    env.pop("TRANSFORMERS_OFFLINE", None)
    return env


def test_corpus_formats_load_with_datasets_and_pandas(trained, tmp_path):
    corpus, _, _, funnel = trained
    kept = funnel["kept"]

    done = cli("export", "--corpus", str(corpus), "--to", str(tmp_path / "hf"))
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout)["rows"] == kept
    ds = load_dataset(str(tmp_path / "hf"), split="train")  # the README's configs name the data file
    assert ds.num_rows == kept and all(ds["kept"])
    assert ds.column_names[:3] == ["premise", "entailment", "contradiction"]
    frame = pd.read_parquet(tmp_path / "hf" / "data" / "train-00000-of-00001.parquet")
    assert len(frame) == kept and frame["entailment_score"].between(0, 5).all()

    done = cli("export", "--corpus", str(corpus), "--to", str(tmp_path / "csv"), "--format", "simcse-csv")
    assert done.returncode == 0, done.stderr[-3000:]
    frame = pd.read_csv(tmp_path / "csv" / "train.csv")
    assert list(frame.columns) == ["sent0", "sent1", "hard_neg"] and len(frame) == kept
    assert frame["sent0"].tolist() == ds["premise"]
    assert load_dataset(str(tmp_path / "csv"), split="train").column_names == ["sent0", "sent1", "hard_neg"]
    # SimCSE's csv is also what `multicsr train` and our readers take back
    from multicsr_core.io.inputs import read_triplets

    assert read_triplets(tmp_path / "csv" / "train.csv")[0].num_rows == kept

    done = cli("export", "--corpus", str(corpus), "--to", str(tmp_path / "jsonl"), "--format", "jsonl", "--all")
    assert done.returncode == 0, done.stderr[-3000:]
    frame = pd.read_json(tmp_path / "jsonl" / "train.jsonl", lines=True)
    assert len(frame) == funnel["total"] and frame["kept"].sum() == kept  # --all: rejected rows too
    assert load_dataset(str(tmp_path / "jsonl"), split="train").num_rows == funnel["total"]

    for folder in ("hf", "csv", "jsonl"):
        card = (tmp_path / folder / "README.md").read_text()
        assert card.startswith("---\n") and "license: cc-by-sa-4.0" in card and "task_categories:" in card


def test_export_user_errors_are_one_line_exit_2(trained, tmp_path):
    corpus, model_dir, _, _ = trained
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    for args, message in [
        (("--corpus", str(corpus), "--to", str(tmp_path / "full")), "folder exists and is not empty"),
        (("--corpus", str(corpus), "--model", str(model_dir), "--to", str(tmp_path / "a")), "one of them"),
        (("--corpus", str(corpus)), "give --to DIR"),
        (("--corpus", str(corpus), "--to", str(tmp_path / "b"), "--format", "xml"), "xml"),
    ]:
        done = cli("export", *args)
        assert done.returncode == 2, (args, done.stderr)
        assert message in done.stderr and "Traceback" not in done.stderr
    env = {k: v for k, v in os.environ.items() if k != "HF_TOKEN"}
    done = cli("export", "--corpus", str(corpus), "--push-to-hub", "me/corpus", env=env)
    assert done.returncode == 2 and "HF_TOKEN is not set" in done.stderr
    done = cli("export", "--corpus", str(corpus), "--push-to-hub", "me/corpus",
               env={**os.environ, "HF_TOKEN": TOKEN, "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 2 and "HF_HUB_OFFLINE is set" in done.stderr and TOKEN not in done.stderr


def test_push_corpus_and_model_to_a_local_hub(trained, tmp_path):
    corpus, model_dir, _, funnel = trained
    with FakeHub(TOKEN) as hub:
        done = cli("export", "--corpus", str(corpus), "--to", str(tmp_path / "corpus"), "--push-to-hub",
                   "someone/snli-curated", env=hub_env(hub))
        assert done.returncode == 0, done.stderr[-3000:]
        uploaded = hub.repos[("dataset", "someone/snli-curated")]
        local = tmp_path / "corpus"
        assert set(uploaded) == {"README.md", "data/train-00000-of-00001.parquet"}
        for name, data in uploaded.items():  # the exact folder that was built is what arrived
            assert data == (local / name).read_bytes(), name
        assert "load_dataset('someone/snli-curated', split='train')" in uploaded["README.md"].decode()
        assert json.loads(done.stdout)["pushed"].endswith("/commit/" + "0" * 40)

        done = cli("export", "--model", str(model_dir), "--push-to-hub", "someone/multicsr-minilm", "--private",
                   env=hub_env(hub))
        assert done.returncode == 0, done.stderr[-3000:]
        model_files = hub.repos[("model", "someone/multicsr-minilm")]
        assert hub.private[("model", "someone/multicsr-minilm")] is True
        assert "model.safetensors" in model_files and "modules.json" in model_files
        assert not any(name.startswith("checkpoints/") for name in model_files)
        assert (hashlib.sha256(model_files["model.safetensors"]).digest()
                == hashlib.sha256((model_dir / "model.safetensors").read_bytes()).digest())  # through git-LFS
        readme = model_files["README.md"].decode()
        assert 'SentenceTransformer("someone/multicsr-minilm")' in readme and "# Download from the" in readme

        # the token: sent as the bearer header, written nowhere (files, output), redacted from errors
        assert all(h.get("Authorization") == f"Bearer {TOKEN}" for h in hub.headers_seen if "Authorization" in h)
        for data in [*uploaded.values(), *model_files.values()]:
            assert TOKEN.encode() not in data
        assert TOKEN not in done.stdout + done.stderr
        for path in (tmp_path / "corpus").rglob("*"):
            assert path.is_dir() or TOKEN.encode() not in path.read_bytes()

        wrong = "hf_wrong_token_SECRET42"
        done = cli("export", "--corpus", str(corpus), "--push-to-hub", "someone/other", env=hub_env(hub, wrong))
        assert done.returncode == 2 and "401" in done.stderr and wrong not in done.stderr + done.stdout
        assert ("dataset", "someone/other") not in hub.repos
        endpoint = hub.endpoint
    done = cli("export", "--corpus", str(corpus), "--push-to-hub", "someone/other",
               env={**hub_env(hub), "HF_ENDPOINT": endpoint})  # the Hub is gone: connection refused
    assert done.returncode == 1 and "run the same command again" in done.stderr and TOKEN not in done.stderr
    assert funnel["kept"] > 0
