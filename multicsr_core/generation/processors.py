"""Small composable pieces of one decoding step, in the style of transformers' LogitsProcessor.

A step is: raw logits of the stacked batch ``[intended; opposite]`` -> ``ContrastiveLogitsProcessor``
(``l - w * l_hat``) -> the usual processors and warpers (minimum length, temperature, top-k,
top-p; transformers' own classes) -> ``TokenSelector`` (argmax, or one draw per row from that row's
own seeded generator).
"""

from __future__ import annotations

import hashlib
from typing import Sequence

import torch

__all__ = [
    "ContrastiveLogitsProcessor",
    "TokenSelector",
    "row_seed",
]


class ContrastiveLogitsProcessor:
    """Contrastive decoding of MultiCSR (Wang et al., NAACL 2024, section 3.1, Eq. 1-2).

    With intended instruction I and noisy (opposite) instruction I_hat run on the same prefix
    y_<t, the next token is chosen from::

        s_t = l_t - w * l_hat_t,    l_t = C(I, x, y_<t),  l_hat_t = C(I_hat, x, y_<t)

    on *raw* logits (before any softmax). ``scores`` holds the stacked batch: rows ``[0, N)`` are
    the intended branches and rows ``[N, 2N)`` the opposite branches of the same N sequences; the
    result has N rows. ``w = 0`` returns the intended logits unchanged (plain decoding).
    Unlike transformers' processors this one halves the batch, which is why it runs first.
    """

    def __init__(self, omega: float):
        # the one check of omega (as transformers' ClassifierFreeGuidanceLogitsProcessor checks its scale):
        # DecodingSettings builds this processor to check its omega where the settings are built
        if not isinstance(omega, (int, float)) or omega != omega:
            raise ValueError(f"omega must be a number, got {omega!r}")
        self.omega = float(omega)

    def __call__(self, input_ids: torch.LongTensor | None, scores: torch.FloatTensor) -> torch.FloatTensor:
        if scores.shape[0] % 2:
            raise ValueError(f"contrastive scores need an even number of rows [intended; opposite], got {scores.shape[0]}")
        intended, opposite = scores.chunk(2, dim=0)
        if self.omega == 0.0:
            return intended
        return intended - self.omega * opposite


def row_seed(seed: int, key: str) -> int:
    """A 63-bit seed that depends only on (seed, key): a row's draws never depend on its batch-mates."""
    digest = hashlib.sha256(f"{int(seed)}\x00{key}".encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") >> 1


class TokenSelector:
    """Picks the next token per row: argmax (greedy), or a draw from softmax(scores).

    For sampling each row owns a ``torch.Generator`` seeded by ``row_seed(seed, key)`` and draws one
    uniform number per step; the token is found by inverting the cumulative distribution (in
    float64). So a row's sample depends on its own key and scores only, not on which rows share
    the batch or on the order of the batch, and a fixed seed reproduces every draw.
    """

    def __init__(self, do_sample: bool, row_seeds: Sequence[int] | None = None):
        self.do_sample = bool(do_sample)
        self._generators: list[torch.Generator] = []
        if self.do_sample:
            if row_seeds is None:
                raise ValueError("sampling needs one seed per row")
            for s in row_seeds:
                g = torch.Generator(device="cpu")
                g.manual_seed(int(s))
                self._generators.append(g)

    def __call__(self, scores: torch.FloatTensor, rows: torch.LongTensor) -> torch.LongTensor:
        """Next tokens for ``scores`` [n, V]; ``rows`` [n] gives each score row's original index."""
        if not self.do_sample:
            return scores.argmax(dim=-1)
        uniforms = torch.cat([torch.rand(1, generator=self._generators[i], dtype=torch.float64) for i in rows.tolist()])
        probs = torch.softmax(scores.to(torch.float64), dim=-1)
        cdf = probs.cumsum(dim=-1)
        targets = (uniforms.to(cdf.device) * cdf[:, -1]).unsqueeze(-1)
        tokens = torch.searchsorted(cdf, targets, right=True).squeeze(-1)
        # u * total < total always, but guard the rounding edge: never return a zero-probability token
        last_positive = (probs > 0).cumsum(dim=-1).argmax(dim=-1)
        return torch.minimum(tokens, last_positive)
