"""The frozen guide sentence model P_eta and its on-disk embedding cache.

MultiCSR's stage 3 (paper Eq. 7) masks an in-batch negative x_k^s of anchor x_i when the
*frozen pre-trained* model's cosine ``sim_eta(x_i, x_k^s) >= sigma``. The paper's P_eta is the
unsupervised SimCSE checkpoint of the same backbone, read as the CLS vector without the MLP
(method.md, stage 3). The offline stage-2 "guide scorer" uses the same model (cosine mapped to
0-5), so this module is the one place that loads it and embeds with it.

Because P_eta never changes, its embedding of a sentence is a constant: :class:`GuideEmbeddings`
computes each unique sentence once, stores it on disk (SQLite, keyed by the guide's fingerprint
and the text's SHA-256), and hands back unit-normalised float32 vectors. The training mask is
then a row lookup plus one matmul instead of a guide forward every step.

Difference from the official code, on purpose: the official mask model runs with dropout on,
so its mask is noisy from step to step. A cache can only hold a deterministic embedding, so
here the guide runs in eval mode (no dropout), which is also what "frozen" means in the paper.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sqlite3
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

__all__ = ["load_guide", "guide_fingerprint", "GuideEmbeddings", "default_cache_dir"]

_SIMCSE_MARKER = "simcse"


def _is_sentence_transformer_folder(name_or_path: str) -> bool:
    return (Path(name_or_path) / "modules.json").is_file()


def load_guide(
    name_or_path: str | os.PathLike,
    pooling: str | None = None,
    device: str = "cpu",
    max_seq_length: int | None = None,
):
    """Load the frozen guide model P_eta as a ``SentenceTransformer`` in eval mode.

    ``pooling``:
      - ``None`` (default): a SimCSE checkpoint (its name contains "simcse" and it is not a
        sentence-transformers folder) gets CLS pooling on the last hidden state, i.e. the CLS
        vector *without* SimCSE's MLP (``cls_before_pooler``, as the paper's mask model);
        anything else keeps its own pooling (a sentence-transformers folder or hub model loads
        its modules; a plain Hugging Face checkpoint gets sentence-transformers' default).
      - ``"cls"`` / ``"mean"`` / any sentence-transformers pooling mode: build
        Transformer -> Pooling(mode) explicitly, ignoring the folder's own pooling.
    ``max_seq_length``: truncate the guide's input (None keeps the model's own limit). The
    official code feeds the guide the training batch, i.e. truncated to 32 tokens.
    Gradients are switched off for every parameter: the guide is never trained.
    """
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Pooling, Transformer

    name = str(name_or_path)
    if pooling is None and _SIMCSE_MARKER in name.lower() and not _is_sentence_transformer_folder(name):
        pooling = "cls"
    if pooling is None:
        model = SentenceTransformer(name, device=device)
    else:
        transformer = Transformer(name)
        pool = Pooling(transformer.get_embedding_dimension(), pooling_mode=pooling)
        model = SentenceTransformer(modules=[transformer, pool], device=device)
    if max_seq_length is not None:
        model.max_seq_length = max_seq_length
    model.eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    # Remembered for provenance and the cache key (never a secret: a path or a hub id).
    model._multicsr_guide_source = {"name_or_path": name, "pooling": pooling or "own"}
    return model


def guide_fingerprint(model) -> str:
    """A content hash that changes whenever the guide's embeddings could.

    It covers the module stack (class names and configs, pooling, max_seq_length) and the bytes of
    every parameter and buffer, so two folders with identical weights share cache entries and a
    re-trained folder at the same path does not. Computed once per model object (about 0.1 s for
    MiniLM, 1 s for a base-size BERT).
    """
    cached = getattr(model, "_multicsr_guide_fingerprint", None)
    if cached is not None:
        return cached
    digest = hashlib.sha256()
    stack = [type(module).__name__ for module in model]
    digest.update(json.dumps({"modules": stack, "max_seq_length": model.max_seq_length}).encode())
    for module in model:
        get_config = getattr(module, "get_config_dict", None)
        if callable(get_config):
            digest.update(json.dumps(get_config(), sort_keys=True, default=str).encode())
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().to("cpu").contiguous().view(torch.uint8).numpy().tobytes())
    fingerprint = digest.hexdigest()[:32]
    model._multicsr_guide_fingerprint = fingerprint
    return fingerprint


def default_cache_dir() -> Path:
    """``$MULTICSR_GUIDE_CACHE`` if set, else ``~/.cache/multicsr/guide``."""
    env = os.environ.get("MULTICSR_GUIDE_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "multicsr" / "guide"


def _text_key(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8")).digest()


class GuideEmbeddings:
    """Unit-normalised float32 guide embeddings, computed once per unique sentence.

    ``embed(texts)`` returns an ``(len(texts), dim)`` float32 array whose rows have norm 1.
    Sentences already in the cache (same guide fingerprint, same text) are read from disk; only
    the missing unique ones go through the guide, in batches of ``batch_size``. With
    ``cache_dir=None`` nothing is written (an in-memory dictionary is used instead).

    Storage: one SQLite file ``guide_embeddings.sqlite`` in ``cache_dir`` with a table keyed by
    ``(guide fingerprint, sha256(text))`` holding the float32 bytes. SQLite gives atomic
    commits (a crash never leaves a half-written entry) and is safe for several processes.
    """

    _LOOKUP_CHUNK = 900  # stay under SQLite's default limit on bound parameters

    def __init__(self, model, cache_dir: str | os.PathLike | None = None, batch_size: int = 128):
        self.model = model
        self.batch_size = batch_size
        self.fingerprint = guide_fingerprint(model)
        self.dim = int(model.get_embedding_dimension())
        self._memory: dict[bytes, np.ndarray] = {}
        self.cache_path: Path | None = None
        if cache_dir is not None:
            cache_dir = Path(cache_dir)
            cache_dir.mkdir(parents=True, exist_ok=True)
            self.cache_path = cache_dir / "guide_embeddings.sqlite"
            from multicsr_core.sqlite_health import checked_open

            # a damaged file is moved aside (named in a warning) and the cache rebuilt: embeddings
            # are recomputable, but a malformed file must not block every later run
            with checked_open(self.cache_path), contextlib.closing(self._connect()) as connection, connection:
                connection.execute(
                    "CREATE TABLE IF NOT EXISTS guide_embeddings ("
                    " guide TEXT NOT NULL, text_sha256 BLOB NOT NULL, dim INTEGER NOT NULL,"
                    " vector BLOB NOT NULL, PRIMARY KEY (guide, text_sha256))"
                )
        self.encoded_count = 0  # sentences that went through the guide (for tests and logs)

    def _connect(self) -> sqlite3.Connection:
        connection = sqlite3.connect(self.cache_path, timeout=60)
        connection.execute("PRAGMA journal_mode=WAL")
        return connection

    def _lookup(self, keys: list[bytes]) -> dict[bytes, np.ndarray]:
        if self.cache_path is None:
            return {key: self._memory[key] for key in keys if key in self._memory}
        found: dict[bytes, np.ndarray] = {}
        with self._connect() as connection:
            for start in range(0, len(keys), self._LOOKUP_CHUNK):
                chunk = keys[start : start + self._LOOKUP_CHUNK]
                placeholders = ",".join("?" * len(chunk))
                rows = connection.execute(
                    f"SELECT text_sha256, vector FROM guide_embeddings WHERE guide = ? AND dim = ?"
                    f" AND text_sha256 IN ({placeholders})",
                    [self.fingerprint, self.dim, *chunk],
                )
                for key, blob in rows:
                    found[bytes(key)] = np.frombuffer(blob, dtype=np.float32)
        return found

    def _store(self, keys: list[bytes], vectors: np.ndarray) -> None:
        if self.cache_path is None:
            self._memory.update(zip(keys, vectors))
            return
        with self._connect() as connection:
            connection.executemany(
                "INSERT OR REPLACE INTO guide_embeddings (guide, text_sha256, dim, vector) VALUES (?, ?, ?, ?)",
                [(self.fingerprint, key, self.dim, vector.tobytes()) for key, vector in zip(keys, vectors)],
            )

    def _encode(self, texts: list[str]) -> np.ndarray:
        with torch.inference_mode():
            vectors = self.model.encode(
                texts,
                batch_size=self.batch_size,
                convert_to_numpy=True,
                normalize_embeddings=True,
                show_progress_bar=False,
            )
        self.encoded_count += len(texts)
        return np.ascontiguousarray(vectors, dtype=np.float32)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Guide embeddings of ``texts`` (duplicates allowed), shape ``(len(texts), dim)``, float32, unit norm."""
        texts = list(texts)
        for position, text in enumerate(texts):
            if not isinstance(text, str):
                raise TypeError(f"guide input {position} is {type(text).__name__}, expected str")
        all_keys = [_text_key(text) for text in texts]
        text_of = dict(zip(all_keys, texts))  # one entry per unique sentence, in first-seen order
        vectors = self._lookup(list(text_of))
        missing = [key for key in text_of if key not in vectors]
        if missing:
            encoded = self._encode([text_of[key] for key in missing])
            self._store(missing, encoded)
            vectors.update(zip(missing, encoded))
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        for row, key in enumerate(all_keys):
            out[row] = vectors[key]
        return out

    def similarity(self, texts_a: Sequence[str], texts_b: Sequence[str]) -> np.ndarray:
        """Row-wise guide cosine of aligned pairs (the stage-2 guide scorer maps it to 0-5)."""
        if len(texts_a) != len(texts_b):
            raise ValueError(f"similarity needs aligned lists, got {len(texts_a)} and {len(texts_b)} texts")
        a = self.embed(texts_a)
        b = self.embed(texts_b)
        return np.einsum("ij,ij->i", a, b)
