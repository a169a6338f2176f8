"""Output cleaning for generated hypotheses, learnt from real chat-model output.

A chat model asked for "an alternative expression" of a sentence often answers around the
sentence instead of with it. Each pattern below was seen in outputs of SmolLM2-135M-Instruct on
SNLI premises with the SynCSE pools (``tests/data/smollm2_generations.json`` holds them with
the cleaning each gets). ``clean_generation`` either extracts the sentence, naming what it
removed in ``CleanedText.fixes``, or rejects the output with a named reason:

Extracted (``fixes``; all but ``quotes`` count as meta-text, ``META_FIXES``):

- ``wrapper``: the answer after a label sentence such as ``The original sentence is: "...".
  The alternative expression is: "..."`` or ``A paraphrase would be: "..."`` (the text after
  the last answer label; the restated original is dropped);
- ``lead_in``: a chatty opener ``Sure! Here is a paraphrase:`` / ``Here's the revised sentence:``;
- ``label``: a bare label ``Paraphrase:``, ``Output:``, ``Opposing:``, ``Contradiction:``
  (after an ``Original: ...`` line restating the input, which is dropped: ``wrapper``);
- ``first_of_list``: several candidates (``1. ...`` / ``- ...`` lines): the first is taken;
- ``trailing_explanation``: a second paragraph, or a following sentence that explains the first
  (``This sentence ...``, ``Note: ...``, ``(This maintains ...)``);
- ``meta_suffix``: a predicate about the sentence itself (``... is a true statement.``);
- ``markdown``: ``**bold**`` markers;
- ``quotes``: surrounding quotes (straight or typographic, one of a pair may be missing).

Rejected (``reject_reason``):

- ``empty``: nothing left (an empty output, or only quotes);
- ``meta_only``: meta-text with no sentence to extract (``Here is a paraphrase:`` and nothing),
  or a remark about the sentence instead of one (``The sentence is a classic example of ...``);
- ``refusal``: the model declined (``I'm sorry, but ...``, ``As an AI ...``);
- ``echoed_instruction``: the output repeats the prompt: an ``Input:``/``Output:`` line of the
  template, or four or more consecutive words of a generation instruction that are not in the
  premise (``... while ensuring the new sentence is logical, realistic ...``);
- ``repetition``: a degenerate loop (some four-word sequence three or more times);
- ``truncated``: the model hit ``max_new_tokens`` mid-answer: a quoted answer that never
  closes, or (only when the caller passes ``finished=False``; stage 1 does not, as a length
  cut alone is no verdict on plain text) an answer the cut went through, without closing
  punctuation;
- ``copy_of_premise``: the premise again, up to case, spacing and punctuation
  (``a dog gnawing on a bone`` copies ``A dog gnawing on a bone .``).

Whitespace runs (newlines included) become single spaces in the result.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..prompts import OFFICIAL_2SHOT_CONTRADICTION, OFFICIAL_2SHOT_ENTAILMENT, SYNCSE_CONTRADICTION_POOL, SYNCSE_ENTAILMENT_POOL

__all__ = [
    "CleanedText",
    "clean_generation",
    "comparable",
    "META_FIXES",
    "REJECT_REASONS",
    "REJECT_EMPTY",
    "REJECT_COPY",
    "REJECT_META_ONLY",
    "REJECT_REFUSAL",
    "REJECT_ECHO",
    "REJECT_REPETITION",
    "REJECT_TRUNCATED",
]

REJECT_EMPTY = "empty"
REJECT_COPY = "copy_of_premise"
REJECT_META_ONLY = "meta_only"
REJECT_REFUSAL = "refusal"
REJECT_ECHO = "echoed_instruction"
REJECT_REPETITION = "repetition"
REJECT_TRUNCATED = "truncated"
REJECT_REASONS = (REJECT_EMPTY, REJECT_META_ONLY, REJECT_REFUSAL, REJECT_ECHO, REJECT_REPETITION, REJECT_TRUNCATED,
                  REJECT_COPY)

FIX_WRAPPER = "wrapper"
FIX_LEAD_IN = "lead_in"
FIX_LABEL = "label"
FIX_LIST = "first_of_list"
FIX_EXPLANATION = "trailing_explanation"
FIX_META_SUFFIX = "meta_suffix"
FIX_MARKDOWN = "markdown"
FIX_QUOTES = "quotes"
#: Fixes that mean the raw output held meta-text (everything but quotes).
META_FIXES = frozenset({FIX_WRAPPER, FIX_LEAD_IN, FIX_LABEL, FIX_LIST, FIX_EXPLANATION, FIX_META_SUFFIX, FIX_MARKDOWN})

# straight and typographic quotes a model wraps its answer in (the 2-shot prompt teaches '...')
_QUOTES = "\"'`\u201c\u201d\u2018\u2019\u00ab\u00bb"
_OPEN_QUOTES = "\"\u201c\u00ab'\u2018`"
_APOSTROPHES = "'\u2019"
_SPACES = re.compile(r"\s+")

# What the answer is called: "the alternative expression", "a paraphrase", "the revised sentence".
_ANSWER_NOUN = (
    r"(?:alternative|alternate|new|revised|rewritten|rephrased|modified|transformed|paraphrased|opposite|opposing"
    r"|contrasting|contradictory|different|altered|changed|output|resulting|final|generated|concise|possible)?\s*"
    r"(?:expression|paraphrase|sentence|phrase|version|statement|rewrite|revision|output|answer|result"
    r"|contradiction|hypothesis|meaning|idea)"
)
# "The alternative expression is:", "A paraphrase would be:", "Here's a revised sentence:"
_ANSWER_LABEL = re.compile(
    r"(?:^|(?<=[\s.!:\"'\u201d]))(?:here(?:'s| is| are)\s+)?(?:the|an?|my|one|your)?\s*" + _ANSWER_NOUN
    + r"(?:\s+(?:of|for|to)\s+(?:the|this|that|your)\s+(?:input|given|original|provided)?\s*(?:sentence|phrase|text)"
      r"(?:\s+or\s+phrase)?)?"
    r"(?:\s*(?:(?:is|would be|could be|might be|will be|reads|becomes)\s*)?:\s*"
    r"|\s+(?:is|would be|could be|might be|reads)\s+(?=[\"\u201c]))",  # or no colon, then a quote
    re.IGNORECASE,
)
_SOURCE_BEFORE = re.compile(r"(?:original|input|given|provided)\s+(?:sentence\s+or\s+)?$", re.IGNORECASE)
# "The original sentence is: "..."" (the restated input a wrapper starts with)
_SOURCE_LABEL = re.compile(
    r"^(?:the\s+)?(?:original|input|given|provided)\s+(?:sentence|phrase|text)(?:\s+or\s+phrase)?\s*(?:is|was|reads)?\s*:",
    re.IGNORECASE,
)
_LEAD_IN = re.compile(
    r"^(?:(?:sure|certainly|of course|okay|ok|absolutely|great|yes)\b[!.,]*\s*)+"
    r"|^(?:here(?:'s| is| are)\b[^:\n]{0,80}:\s*)",
    re.IGNORECASE,
)
_BARE_LABEL = re.compile(
    r"^(?:output|answer|result|paraphrase|paraphrased|rewrite|rewritten|revised|revision|rephrased|opposing"
    r"|opposite|contradiction|contradictory|entailment|alternative|alternate|hypothesis|response|sentence|swapped"
    r"|changed|modified|altered|transformed|new|contrast|contrasting"
    r"|new sentence|modified sentence|revised sentence|transformed sentence)\s*[:\-\u2013\u2014]\s*",
    re.IGNORECASE,
)
_SOURCE_LINE = re.compile(r"^(?:original|input|given)(?:\s+(?:sentence|phrase|text))?\s*:", re.IGNORECASE)
# a remark about the sentence instead of a sentence: "The sentence is a classic example of ..."
_COMMENTARY = re.compile(
    r"^(?:the|this)\s+(?:original\s+|input\s+|given\s+|new\s+|revised\s+)?(?:sentence|phrase|statement)\s+"
    r"(?:is|was|uses|has|describes|means|contains|conveys|expresses|implies)\b",
    re.IGNORECASE,
)
_LIST_ITEM = re.compile(r"^\s*(?:\d+[.)]|[-*\u2022])\s+")
_MARKDOWN = re.compile(r"\*\*|__")
_EXPLANATION_START = re.compile(
    r"(?:this|these|that|it|here|in this|by|note|explanation|i |i'|we |the (?:original|revised|new|modified"
    r"|input|output|sentence|phrase|paraphrase|change|word)|changing|the above|alternatively|\()",
    re.IGNORECASE,
)
_META_SUFFIX = re.compile(
    r",?\s+(?:is|are|would be)\s+(?:a|an|the)?\s*(?:true|valid|correct|logical|good|possible|perfect|real)\s+"
    r"(?:statement|example|sentence|paraphrase|one|fact)\b.*$",
    re.IGNORECASE,
)
_REFUSAL = re.compile(
    r"^(?:i'm sorry|i am sorry|sorry,|i cannot|i can't|i can not|as an ai|i'm not able|i am not able|i apologi[sz]e)",
    re.IGNORECASE,
)
_TEMPLATE_INPUT = re.compile(r"(?:^|\s)input\s*:", re.IGNORECASE)
_TEMPLATE_OUTPUT = re.compile(r"(?:^|\s)output\s*:\s*", re.IGNORECASE)
_WORDS = re.compile(r"[a-z0-9]+")
_ECHO_WORDS = 4


def comparable(text: str) -> str:
    """The letters and digits of ``text``, casefolded: case, spacing, quotes and punctuation do not
    make a new sentence (``child 's`` and ``child's`` compare equal)."""
    return "".join(ch for ch in text.casefold() if ch.isalnum())


def _ngrams(words: list[str], n: int) -> set[tuple[str, ...]]:
    return {tuple(words[i:i + n]) for i in range(len(words) - n + 1)}


def _instruction_ngrams() -> set[tuple[str, ...]]:
    # the 2-shot prompts without their quoted example sentences (an answer may resemble those)
    shots = [re.sub(r"'[^']*'", "\n", t.split("{premise}")[0]) for t in (OFFICIAL_2SHOT_ENTAILMENT, OFFICIAL_2SHOT_CONTRADICTION)]
    grams: set[tuple[str, ...]] = set()
    for t in [*SYNCSE_ENTAILMENT_POOL, *SYNCSE_CONTRADICTION_POOL, *(part for s in shots for part in s.split("\n"))]:
        grams |= _ngrams(_WORDS.findall(t.casefold()), _ECHO_WORDS)
    return grams


_INSTRUCTION_NGRAMS = _instruction_ngrams()


@dataclass(frozen=True)
class CleanedText:
    text: str
    reject_reason: str | None  # None or one of REJECT_REASONS
    fixes: tuple[str, ...] = ()  # what was removed to get ``text`` (see the module docstring)

    @property
    def kept(self) -> bool:
        return self.reject_reason is None

    @property
    def meta(self) -> bool:
        """Whether the raw output held meta-text (extracted or rejected for it)."""
        return bool(META_FIXES & set(self.fixes)) or self.reject_reason in (REJECT_META_ONLY, REJECT_ECHO)


def _strip_quotes(text: str) -> tuple[str, bool]:
    before = text
    while len(text) >= 2 and text[0] in _QUOTES and text[-1] in _QUOTES:
        text = text[1:-1].strip()
    # unmatched quotes too (models often drop one of the pair), but keep a possessive "the players'"
    text = text.lstrip(_QUOTES + " ")
    while text and text[-1] in _QUOTES and (text[-1] not in _APOSTROPHES or not text[-2:-1].isalnum()):
        text = text[:-1].rstrip()
    # a quoted answer followed by its closing punctuation: "A dog runs.". or "A dog runs".
    m = re.fullmatch(r"[\"\u201c](.+)[\"\u201d]([.!?]?)", text)
    if m and not any(q in m.group(1) for q in "\"\u201c\u201d"):
        text = m.group(1).strip()
    return text, text != before


def _after_wrapper(text: str) -> tuple[str, bool, bool]:
    """(text after the last answer label, whether a label was found, whether its quote never closes)."""
    last = None
    for m in _ANSWER_LABEL.finditer(text):
        if m.end() < len(text) and not _SOURCE_BEFORE.search(text[max(0, m.start() - 40):m.start()]):
            last = m
    if last is None:
        return text, False, False
    rest = text[last.end():].strip()
    unclosed = False
    if rest[:1] in _OPEN_QUOTES and rest[:1] not in _APOSTROPHES:
        opener = rest[0]
        closer = {"\u201c": "\u201d", "\u00ab": "\u00bb"}.get(opener, opener)
        end = rest.find(closer, 1)
        if end == -1:
            unclosed = True
            rest = rest[1:]
        else:
            rest = rest[1:end]
    return rest.strip(), True, unclosed


def _first_sentence_block(text: str) -> tuple[str, bool]:
    """Cut a trailing explanation: a later sentence that talks about the first one."""
    for m in re.finditer(r"(?:(?<=[.!?])|(?<=[.!?][\"\u201d]))\s+(?=\S)", text):
        head, tail = text[:m.start()], text[m.end():]
        if len(_WORDS.findall(head.casefold())) >= 3 and _EXPLANATION_START.match(tail):
            return head.strip(), True
    m = re.search(r"\s+\((?:this|that|it|note|here|the|i)\b[^)]*\)?[.!?]?\s*$", text, re.IGNORECASE)
    if m and m.start() > 0:
        return text[:m.start()].strip(), True
    return text, False


def _is_repetitive(text: str) -> bool:
    words = _WORDS.findall(text.casefold())
    counts: dict[tuple[str, ...], int] = {}
    for i in range(len(words) - 3):
        gram = tuple(words[i:i + 4])
        counts[gram] = counts.get(gram, 0) + 1
        if counts[gram] >= 3:
            return True
    return False


def _echoes_instruction(text: str, premise: str) -> bool:
    grams = _ngrams(_WORDS.findall(text.casefold()), _ECHO_WORDS) - _ngrams(_WORDS.findall(premise.casefold()), _ECHO_WORDS)
    return bool(grams & _INSTRUCTION_NGRAMS)


def _unwrap(raw: str, fixes: list[str]) -> tuple[str, bool, str | None]:
    """The answer inside its wrappers (template continuation, markdown, lead-in, answer label, restated
    input, bare label): (text, whether an answer label's quote never closes, a reject reason or None).
    Appends each fix to ``fixes``."""
    work = raw
    outputs = list(_TEMPLATE_OUTPUT.finditer(work))
    if outputs and outputs[-1].end() < len(work):
        # the template continued ("Input: ...\nOutput: ..."): the answer is after the last Output:
        work = work[outputs[-1].end():].strip()
        fixes.append(FIX_WRAPPER)
    elif _TEMPLATE_INPUT.search(work) or outputs:
        return work, False, REJECT_ECHO
    if _MARKDOWN.search(work):
        work = _MARKDOWN.sub("", work)
        fixes.append(FIX_MARKDOWN)
    # a chatty opener first ("Sure! Here's a paraphrase: ..."), then the answer label
    m = _LEAD_IN.match(work)
    if m:
        work = work[m.end():].strip()
        fixes.append(FIX_LEAD_IN)
    extracted, found, unclosed = _after_wrapper(work)
    if found:
        work = extracted
        fixes.append(FIX_WRAPPER)
    elif _SOURCE_LABEL.match(work):
        # "The original sentence is: "..."" and no answer after it: only the input restated
        fixes.append(FIX_WRAPPER)
        return work, unclosed, REJECT_META_ONLY
    lines = [line.strip() for line in work.split("\n") if line.strip()]
    if len(lines) >= 2 and _SOURCE_LINE.match(lines[0]):
        # "Original: <the input>\nSwapped: <the answer>": drop the restated input
        work = "\n".join(line for line in lines if not _SOURCE_LINE.match(line))
        fixes.append(FIX_WRAPPER)
    m = _BARE_LABEL.match(work)
    if m:
        work = work[m.end():].strip()
        fixes.append(FIX_LABEL)
    return work, unclosed, None


def _first_block(work: str, fixes: list[str]) -> str:
    """The first candidate of several, or the answer before a blank line and an explanation, cut to its
    first sentence block, without a meta suffix or enclosing quotes. Appends each fix to ``fixes``."""
    lines = [line.strip() for line in work.split("\n") if line.strip()]
    items = [line for line in lines if _LIST_ITEM.match(line)]
    paragraphs = [p.strip() for p in re.split(r"\n\s*\n", work) if p.strip()]
    if items and (len(items) >= 2 or items[0] == lines[0]):
        work = _LIST_ITEM.sub("", items[0]).strip()
        if len(lines) > 1:
            fixes.append(FIX_LIST)
    elif len(paragraphs) > 1:
        work = paragraphs[0]
        fixes.append(FIX_EXPLANATION)
    else:
        work = paragraphs[0] if paragraphs else ""
    work = _SPACES.sub(" ", work).strip()
    work, cut = _first_sentence_block(work)
    if cut:
        fixes.append(FIX_EXPLANATION)
    suffix = _META_SUFFIX.search(work)
    if suffix and suffix.start() > 0:
        work = work[:suffix.start()].rstrip(" ,") + ("." if work.rstrip().endswith(".") else "")
        fixes.append(FIX_META_SUFFIX)
    work, quoted = _strip_quotes(work)
    if quoted:
        fixes.append(FIX_QUOTES)
    return work


def _verdict(work: str, raw: str, premise: str, finished: bool, unclosed: bool, fixes: list[str]) -> CleanedText:
    """The extracted sentence ``work`` kept, or rejected with the first reason that applies."""
    fixes_t = tuple(dict.fromkeys(fixes))
    if not work:
        return CleanedText("", REJECT_META_ONLY if META_FIXES & set(fixes_t) else REJECT_EMPTY, fixes_t)
    if _COMMENTARY.match(work):
        return CleanedText(work, REJECT_META_ONLY, fixes_t)
    cut_through = not finished and _WORDS.findall(work.casefold())[-1:] == _WORDS.findall(raw.casefold())[-1:]
    if (unclosed or cut_through) and not work.rstrip(_QUOTES).endswith((".", "!", "?")):
        return CleanedText(work, REJECT_TRUNCATED, fixes_t)
    if _echoes_instruction(work, premise):
        return CleanedText(work, REJECT_ECHO, fixes_t)
    if comparable(work) == comparable(premise):
        return CleanedText(work, REJECT_COPY, fixes_t)
    return CleanedText(work, None, fixes_t)


def clean_generation(text: str, premise: str, finished: bool = True) -> CleanedText:
    """The sentence in a generated output, or a named reason to reject it (see the module docstring).

    ``text`` is the decoded output; ``premise`` the sentence it was written for; ``finished``
    False when decoding stopped at ``max_new_tokens`` (the sentence is then ``truncated`` if
    the cut went through it: it ends the raw output without closing punctuation).
    """
    fixes: list[str] = []
    raw = text.replace("\r", "").strip()
    if not raw.strip(_QUOTES + " \n\t"):
        return CleanedText("", REJECT_EMPTY)
    if _REFUSAL.match(raw.lstrip(_QUOTES + " ")):
        return CleanedText(_SPACES.sub(" ", raw), REJECT_REFUSAL)
    if _is_repetitive(raw):  # before extraction: a loop of labels would yield a fragment
        return CleanedText(_SPACES.sub(" ", raw), REJECT_REPETITION)
    work, unclosed, reject = _unwrap(raw, fixes)
    if reject is not None:  # a template echo, or only the input restated: the whole raw text is the evidence
        return CleanedText(_SPACES.sub(" ", raw), reject, tuple(fixes))
    return _verdict(_first_block(work, fixes), raw, premise, finished, unclosed, fixes)
