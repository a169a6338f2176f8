"""Turning an LLM's reply text into a similarity score.

Three parsers, each a pure function ``str -> float | None`` (None: the reply holds no usable
score, and the pair is a failure, never a kept triplet):

- :func:`parse_official_score`: the MultiCSR official rule (method.md, stage 2). The reply is
  accepted only if it is a single character in ``012345``, or exactly three characters
  ``d.d`` whose first character is in ``012345``. Surrounding whitespace is stripped first:
  T5's decoded output has none, so this changes nothing for the official model, but a chat
  API commonly ends its reply with a newline.
- :func:`parse_first_number`: CLAIF (Cheng et al. 2023, App. B): the label is the first number
  in the reply; rows with none are dropped.
- :func:`parse_lenient_score`: ours, off by default. The first number in the reply that lies in
  ``[low, high]`` (so ``"Score: 3.5/5"`` gives 3.5). Useful for chatty API models that ignore
  the terse format; it accepts replies the official rule drops, so results are not comparable
  with the paper's when it is on.
"""

from __future__ import annotations

import re
from typing import Callable

SCORE_CHARS = "012345"

# A decimal number: "3", "3.5", ".5", "-1". The sign is kept so that "-1" is not read as 1.
_NUMBER = re.compile(r"[-+]?(?:\d+(?:\.\d+)?|\.\d+)")


def parse_official_score(text: str | None) -> float | None:
    """MultiCSR official parser: ``"3"`` -> 3.0, ``"3.5"`` -> 3.5, anything else -> None."""
    if text is None:
        return None
    reply = text.strip()
    if len(reply) == 1 and reply in SCORE_CHARS:
        return float(reply)
    if len(reply) == 3 and reply[0] in SCORE_CHARS and reply[1] == "." and reply[2].isdigit() and reply[2].isascii():
        return float(reply)
    return None


def parse_first_number(text: str | None) -> float | None:
    """CLAIF parser: the first number anywhere in the reply, or None if there is none."""
    if text is None:
        return None
    match = _NUMBER.search(text)
    return float(match.group()) if match else None


def parse_lenient_score(text: str | None, low: float = 0.0, high: float = 5.0) -> float | None:
    """The first number in the reply within ``[low, high]``; None if there is none."""
    if text is None:
        return None
    for match in _NUMBER.finditer(text):
        value = float(match.group())
        if low <= value <= high:
            return value
    return None


PARSERS: dict[str, Callable[[str | None], float | None]] = {
    "official": parse_official_score,
    "first-number": parse_first_number,
    "lenient": parse_lenient_score,
}


def get_parser(name: str) -> Callable[[str | None], float | None]:
    """Look a parser up by name (``official``, ``first-number``, ``lenient``)."""
    try:
        return PARSERS[name]
    except KeyError:
        raise ValueError(f"unknown score parser {name!r}; choose one of {sorted(PARSERS)}") from None
