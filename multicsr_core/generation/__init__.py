"""Stage 1: contrastive generation (MultiCSR section 3.1) and CLAIF mask-and-fill generation.

- ``settings``: ``DecodingSettings``, how to decode (w, lengths, sampling, stop strings), one frozen object
  passed whole from the config mapping down to the decoding loop; its fields are its fingerprint
- ``engine``: ``load_generator``, ``generate_contrastive``, ``generate_texts``, ``generation_fingerprint``
- ``decoding``: ``contrastive_decode``, the one decoding loop over token ids (seq2seq and decoder-only)
- ``processors``: the contrast step ``l - w * l_hat``, warpers, per-row seeded token selection
- ``cleaning``: ``clean_generation``
- ``claif``: CLAIF masking and generation
"""

from .claif import (CLAIF_DECODING, CLAIF_MASK_RATES, ClaifItem, ClaifPair, build_claif_items, generate_claif_pairs,
                    mask_words)
from .cleaning import CleanedText, clean_generation
from .decoding import SpecialTokens, contrastive_decode, special_token_ids
from .engine import (
    ENGINE_VERSION,
    GeneratedText,
    GeneratedTriplet,
    encode_prompt,
    generate_contrastive,
    generate_texts,
    generation_fingerprint,
    length_buckets,
    load_generator,
    reject_counts,
)
from .processors import ContrastiveLogitsProcessor, TokenSelector, row_seed
from .settings import DecodingSettings, build_logits_processors

__all__ = [
    "DecodingSettings",
    "CLAIF_DECODING",
    "CLAIF_MASK_RATES",
    "ClaifItem",
    "ClaifPair",
    "build_claif_items",
    "generate_claif_pairs",
    "mask_words",
    "CleanedText",
    "clean_generation",
    "contrastive_decode",
    "SpecialTokens",
    "special_token_ids",
    "ENGINE_VERSION",
    "GeneratedText",
    "GeneratedTriplet",
    "encode_prompt",
    "generate_contrastive",
    "generate_texts",
    "generation_fingerprint",
    "length_buckets",
    "load_generator",
    "reject_counts",
    "ContrastiveLogitsProcessor",
    "TokenSelector",
    "build_logits_processors",
    "row_seed",
]
