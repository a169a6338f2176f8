"""Each stage task's cache key is exactly what determines its output (issue #22, item 5).

Real Prefect runs (the session's temporary API) of the real stage tasks: an input edited in place
reruns what reads it, the same content at another path reruns nothing, a non-training input
setting that training reads (``input.max_chars``) retrains, and a run with nothing changed
recomputes nothing. Training is MiniLM, one step on 16 SNLI triplets, with no STS-B dev data
(no checkpoint selection).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from prefect import flow

from multicsr_core.config import PipelineConfig, deep_merge
from multicsr_core.pipeline.results import CuratedCorpus
from multicsr.orchestration.caching import Produced
from multicsr.tasks.load import load_input
from multicsr.tasks.train import train
from tests.conftest import SHARED_DATA, snli_triplets_csv, task_states


@flow(name="cache-keys-load")
def _load_flow(config: dict, workdir: str):
    return load_input(PipelineConfig.model_validate(config), workdir).result


@flow(name="cache-keys-train")
def _train_flow(config: dict, workdir: str):
    cfg = PipelineConfig.model_validate(config)
    loaded = load_input(cfg, workdir)
    # the loaded triplets train as they are (no row curated away): the corpus training reads
    corpus = CuratedCorpus(loaded.result.path, loaded.result.rows, stage_path=loaded.result.path)
    return train(Produced(corpus, loaded.task_runs), cfg, workdir).result


def _run(flow_fn, config: dict, workdir: Path) -> dict:
    state = flow_fn(config=config, workdir=str(workdir), return_state=True)
    assert state.is_completed(), state.message
    return task_states(state.state_details.flow_run_id)


def _nli_triplets(path: Path, first: int, n: int) -> Path:
    """SNLI triplets ``first``..``first + n`` (with the header): rows the corpus does not hold."""
    lines = (SHARED_DATA / "nli" / "snli_devtest_for_simcse.csv").read_text(encoding="utf-8").splitlines()
    path.write_text("\n".join([lines[0], *lines[first + 1:first + n + 1]]) + "\n", encoding="utf-8")
    return path


def test_an_input_edited_in_place_reloads_and_the_same_content_elsewhere_does_not(prefect_server, tmp_path):
    workdir = tmp_path / "run"
    triplets = snli_triplets_csv(tmp_path / "triplets.csv", 12)
    config = {"input": {"triplets": str(triplets)}}

    assert _run(_load_flow, config, workdir)["load_triplets"] == Counter(Completed=1)
    assert _run(_load_flow, config, workdir)["load_triplets"] == Counter(Cached=1)  # nothing changed

    # the same bytes at another path: the key holds the content, not the path
    copy = tmp_path / "elsewhere" / "copy.csv"
    copy.parent.mkdir()
    copy.write_bytes(triplets.read_bytes())
    assert _run(_load_flow, {"input": {"triplets": str(copy)}}, workdir)["load_triplets"] == Counter(Cached=1)

    # edited in place (same path, one triplet less): loaded again
    snli_triplets_csv(triplets, 11)
    assert _run(_load_flow, config, workdir)["load_triplets"] == Counter(Completed=1)
    assert _run(_load_flow, config, workdir)["load_triplets"] == Counter(Cached=1)


@pytest.mark.slow  # three trainings and five flow runs: ~25 s on 2 cores
def test_train_reruns_for_each_input_it_reads_and_only_then(prefect_server, tmp_path, minilm_path):
    workdir = tmp_path / "run"
    nli = _nli_triplets(tmp_path / "gold_nli.csv", first=100, n=8)
    config = {"input": {"triplets": str(snli_triplets_csv(tmp_path / "triplets.csv", 16))},
              "training": {"base_model": minilm_path, "loss": "simcse", "max_steps": 1, "batch_size": 8,
                           "max_seq_length": 32, "supervised_nli": str(nli)},
              "evaluation": {"data_dir": str(tmp_path / "no-senteval")}}  # no STS-B dev: no checkpoint selection

    first = _run(_train_flow, config, workdir)
    assert first["load_triplets"] == Counter(Completed=1) and first["train"] == Counter(Completed=1)
    trained = (workdir / "model").resolve()

    # (c) nothing changed: nothing reruns
    assert _run(_train_flow, config, workdir) == {"load_triplets": Counter(Cached=1), "train": Counter(Cached=1)}

    # (a) the supervised NLI file edited in place (its path unchanged): train reruns, load does not
    _nli_triplets(nli, first=200, n=8)
    assert _run(_train_flow, config, workdir) == {"load_triplets": Counter(Cached=1), "train": Counter(Completed=1)}
    assert (workdir / "model").resolve() != trained

    # (b) input.max_chars, an input setting training applies again: load and train rerun (the
    #     loaded rows are the same, so only train's own key can make it rerun)
    changed = deep_merge(config, {"input": {"max_chars": 1999}})
    assert _run(_train_flow, changed, workdir) == {"load_triplets": Counter(Completed=1), "train": Counter(Completed=1)}
