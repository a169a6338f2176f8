"""Every prompt text of the project, as data.

Stage 1 (generation) prompt sets, method.md "Stage 1":

- ``syncse-pool`` (paper default, MultiCSR App. A): SynCSE's four entailment and four
  contradiction instructions. For each premise one instruction of each kind is drawn, seeded
  by ``(seed, premise)`` so a premise gets the same draw whatever else is in the list.
- ``official-2shot``: the two-shot templates of the official MultiCSR code, verbatim.
- ``base-2shot``: the same two shots for base (not instruction- or chat-tuned) causal models:
  the query ends where the examples' answers begin, at the opening quote (``'{premise}': '``),
  and the set carries the stop strings that end the answer (the closing quote before a newline,
  a newline), so a base model writes one quoted sentence and stops. The official text ends in
  ``': `` (colon, space), after which a base model such as Gemma 3 270M writes a blank line and
  the next instruction (measured: 90-95% of rows rejected as echoed instructions).
  :func:`base_model_prompt_set` gives it to a causal model that has no chat template.
- a user prompt file (YAML or JSON) of the same shape::

      name: my-prompts            # optional; defaults to the file's stem
      entailment: ["...", "..."]
      contradiction: ["...", "..."]
      template: "{instruction}\\nInput: {premise}\\nOutput:"   # optional

How a pool instruction and the sentence are joined is not published, so it is ours and
configurable: a *template* with the two fields ``{instruction}`` and ``{premise}``. The default
(``DEFAULT_POOL_TEMPLATE``) is::

    {instruction}
    Input: {premise}
    Output:

i.e. the instruction, a newline, ``Input: `` and the premise, a newline, and ``Output:`` as a
cue for the answer; the instruction-then-input layout Flan-T5 was tuned on. An instruction may
instead carry its own ``{premise}`` slot (the 2-shot templates do); it is then a complete prompt
and the set's template must be ``"{instruction}"``. Exactly one of the two holds the premise slot,
otherwise ``PromptError``. Literal braces in instructions or templates are written ``{{`` / ``}}``.

The prompt ids (``"syncse-pool/entailment/2"``) number instructions from 1, as method.md lists
them. For each premise the *opposite* instruction of the entailment prompt is that premise's
contradiction prompt and vice versa (contrastive decoding, paper section 3.1).

Stage 2 scoring prompts (method.md "Stage 2") and the CLAIF prompts (method.md "CLAIF") are
constants here too, with small ``format_*`` helpers.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import random
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

__all__ = [
    "PromptError",
    "PromptSet",
    "GenerationPrompts",
    "SYNCSE_ENTAILMENT_POOL",
    "SYNCSE_CONTRADICTION_POOL",
    "DEFAULT_POOL_TEMPLATE",
    "OFFICIAL_2SHOT_ENTAILMENT",
    "OFFICIAL_2SHOT_CONTRADICTION",
    "BASE_2SHOT_ENTAILMENT",
    "BASE_2SHOT_CONTRADICTION",
    "BASE_MODEL_STOP_STRINGS",
    "PROMPT_SETS",
    "base_model_prompt_set",
    "get_prompt_set",
    "load_prompt_file",
    "resolve_prompt_set",
    "render_prompt",
    "build_generation_prompts",
    "SCORING_PROMPT",
    "SCORING_PROMPT_OFFICIAL_17_SPACES",
    "SCORING_PROMPT_FEW_SHOT",
    "SCORING_PROMPT_VARIANTS",
    "SCORING_PROMPT_CHOICES",
    "SCORING_FEW_SHOT_EXAMPLES",
    "scoring_messages",
    "format_scoring_prompt",
    "CLAIF_MASK_TOKEN",
    "CLAIF_SCORING_PROMPT",
    "CLAIF_MASK_FILL_PROMPT",
    "CLAIF_PARAPHRASE_PROMPT",
    "format_claif_scoring_prompt",
    "format_claif_generation_prompt",
]


class PromptError(ValueError):
    """A prompt set, template or prompt file that cannot be used (the message says where)."""


# --------------------------------------------------------------------------------------------
# Stage 1: generation prompt sets
# --------------------------------------------------------------------------------------------

SYNCSE_ENTAILMENT_POOL: tuple[str, ...] = (
    "Please paraphrase the input sentence or phrase, providing an alternative expression with the same meaning.",
    "Rewrite the following sentence or phrase using different words and sentence structure while preserving its original meaning.",
    "Create a sentence or phrase that is also true, assuming the provided input sentence or phrase is true.",
    "Please provide a concise paraphrase of the input sentence or phrase, maintaining the core meaning while altering the words and sentence structure. Feel free to omit some of the non-essential details like adjectives or adverbs.",
)

SYNCSE_CONTRADICTION_POOL: tuple[str, ...] = (
    "Revise the provided sentence by swapping, changing, or contradicting some details in order to express a different meaning, while maintaining the general context and structure.",
    "Generate a slightly modified version of the provided sentence to express an opposing or alternate meaning by changing one or two specific elements, while maintaining the overall context and sentence structure.",
    "Transform the input sentence by adjusting, altering, or contradicting its original meaning to create a logical and sensible output sentence with a different meaning from the input sentence.",
    "Generate a sentence that conveys a altering, contrasting or opposite idea to the given input sentence, while ensuring the new sentence is logical, realistic, and grounded in common sense.",
)

#: Our join of a pool instruction and the premise (see the module docstring).
DEFAULT_POOL_TEMPLATE = "{instruction}\nInput: {premise}\nOutput:"

# The official code's two-shot prompts, verbatim; "{premise}" is the only field.
OFFICIAL_2SHOT_CONTRADICTION = (
    "Help me write a sentence that is negative with a given sentence. Here are some examples:\n\n"
    "Write a sentence that is negative with 'One of our number will carry out your instructions minutely.': "
    "'We have no one free at the moment so you have to take action yourself.'\n\n"
    "Write a sentence that is negative with 'How do you know? All this is their information again.': "
    "'They have no information at all.'\n\n"
    "Write a sentence that is negative with '{premise}': "
)
OFFICIAL_2SHOT_ENTAILMENT = (
    "Help me write a sentence that is entailment with a given sentence. Here are some examples:\n\n"
    "Write a sentence that is entailment with 'One of our number will carry out your instructions minutely.': "
    "'A member of my team will execute your orders with immense precision.'\n\n"
    "Write a sentence that is entailment with 'How do you know? All this is their information again.': "
    "'This information belongs to them.'\n\n"
    "Write a sentence that is entailment with '{premise}': "
)

#: For base models: the official two shots, the query ending at the answer's opening quote.
BASE_2SHOT_CONTRADICTION = OFFICIAL_2SHOT_CONTRADICTION + "'"
BASE_2SHOT_ENTAILMENT = OFFICIAL_2SHOT_ENTAILMENT + "'"
#: Where a base model's answer ends: the examples close the quote and start a new line. Decoding
#: stops at the first token holding a newline; the text is cut at the first stop string in this
#: order, so "A dog sleeps.'\n" gives "A dog sleeps." (a possessive "dog's" never stops it).
BASE_MODEL_STOP_STRINGS = ("'\n", "\n")

_KINDS = ("entailment", "contradiction")
_FIELDS = {"instruction", "premise"}


def _fields(text: str, what: str) -> list[str]:
    """The named ``{fields}`` of a format string (raises ``PromptError`` naming ``what``)."""
    try:
        names = [name for _, name, _, _ in string.Formatter().parse(text) if name is not None]
    except ValueError as exc:  # unbalanced braces
        raise PromptError(f"{what}: {exc} (write literal braces as '{{{{' and '}}}}')") from exc
    for name in names:
        if name not in _FIELDS:
            raise PromptError(f"{what}: unknown field {{{name}}}; only {{instruction}} and {{premise}} exist")
    return names


@dataclass(frozen=True)
class PromptSet:
    """Instruction pools for both kinds plus the template that joins an instruction and a premise."""

    name: str
    entailment: tuple[str, ...]
    contradiction: tuple[str, ...]
    template: str = DEFAULT_POOL_TEMPLATE
    #: Decoding of an answer ends at a token holding one of these; its text is cut at the first.
    stop_strings: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.name or "/" in self.name:
            raise PromptError(f"prompt set name {self.name!r}: must be non-empty and contain no '/'")
        template_fields = _fields(self.template, f"prompt set {self.name!r}: template")
        if template_fields.count("instruction") != 1:
            raise PromptError(
                f"prompt set {self.name!r}: template must contain {{instruction}} exactly once: {self.template!r}"
            )
        template_has_premise = template_fields.count("premise")
        if template_has_premise > 1:
            raise PromptError(f"prompt set {self.name!r}: template has {{premise}} more than once")
        for kind in _KINDS:
            pool = getattr(self, kind)
            if not pool:
                raise PromptError(f"prompt set {self.name!r}: the {kind} pool is empty")
            for number, instruction in enumerate(pool, start=1):
                where = f"prompt set {self.name!r}: {kind} instruction {number}"
                if not isinstance(instruction, str) or not instruction.strip():
                    raise PromptError(f"{where}: must be a non-empty string")
                names = _fields(instruction, where)
                if "instruction" in names:
                    raise PromptError(f"{where}: may not contain {{instruction}}")
                if names.count("premise") + template_has_premise != 1:
                    raise PromptError(
                        f"{where}: the premise slot {{premise}} must appear exactly once, either in the "
                        f"template or in the instruction (template {self.template!r})"
                    )

    def prompt_id(self, kind: str, number: int) -> str:
        """``"<set>/<kind>/<number>"`` with ``number`` counted from 1."""
        return f"{self.name}/{kind}/{number}"


def render_prompt(template: str, instruction: str, premise: str) -> str:
    """The exact text fed to the model for one instruction and one premise.

    The premise is inserted as a value, so braces inside it are kept literally.
    """
    if "premise" in _fields(instruction, "instruction"):
        instruction = instruction.format(premise=premise)
    else:
        instruction = instruction.format()  # unescape '{{' / '}}'
    if "premise" in _fields(template, "template"):
        return template.format(instruction=instruction, premise=premise)
    return template.format(instruction=instruction)


PROMPT_SETS: dict[str, PromptSet] = {
    "syncse-pool": PromptSet("syncse-pool", SYNCSE_ENTAILMENT_POOL, SYNCSE_CONTRADICTION_POOL),
    "official-2shot": PromptSet(
        "official-2shot", (OFFICIAL_2SHOT_ENTAILMENT,), (OFFICIAL_2SHOT_CONTRADICTION,), template="{instruction}"
    ),
    "base-2shot": PromptSet(
        "base-2shot", (BASE_2SHOT_ENTAILMENT,), (BASE_2SHOT_CONTRADICTION,), template="{instruction}",
        stop_strings=BASE_MODEL_STOP_STRINGS,
    ),
}
#: Built-in sets written for instruction-following models, and what a base model gets instead.
_BASE_MODEL_COUNTERPART = {"syncse-pool": "base-2shot", "official-2shot": "base-2shot"}


def base_model_prompt_set(name: str, *, chat_template: bool, encoder_decoder: bool) -> str:
    """The built-in set a model gets for ``name``: ``base-2shot`` for a causal model without a
    chat template (a base model) asked for an instruction set, ``name`` otherwise.

    Encoder-decoder models (Flan-T5, the official presets) have no chat template either but follow
    instructions: they keep the set asked for, so the official prompt stays verbatim. Prompt
    files are never replaced."""
    if chat_template or encoder_decoder:
        return name
    return _BASE_MODEL_COUNTERPART.get(name, name)


def get_prompt_set(name: str, template: str | None = None) -> PromptSet:
    """A built-in prompt set by name, optionally with its template replaced."""
    try:
        prompt_set = PROMPT_SETS[name]
    except KeyError:
        raise PromptError(f"unknown prompt set {name!r}; known: {sorted(PROMPT_SETS)} (or pass a prompt file)") from None
    if template is not None:
        prompt_set = dataclasses.replace(prompt_set, template=template)
    return prompt_set


def _yaml_nodes(path: Path, text: str):
    """Top-level mapping of a YAML file as {key: (value_node, line)} keeping line numbers."""
    import yaml

    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f", line {mark.line + 1}" if mark is not None else ""
        raise PromptError(f"{path}{line}: not valid YAML: {getattr(exc, 'problem', exc)}") from exc
    if not isinstance(root, yaml.MappingNode):
        line = root.start_mark.line + 1 if root is not None else 1
        raise PromptError(f"{path}, line {line}: expected a mapping with keys entailment, contradiction, template")
    return {key.value: (value, key.start_mark.line + 1) for key, value in root.value}


def _prompt_file_text(path: Path) -> str:
    """The text of a prompt file: UTF-8, ending in .yaml/.yml/.json, and (JSON) well-formed."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PromptError(f"{path}: prompt file not found") from None
    except UnicodeDecodeError as exc:
        line = text_line_of_offset(path.read_bytes(), exc.start)
        raise PromptError(f"{path}, line {line}: not UTF-8 ({exc.reason})") from exc

    suffix = path.suffix.lower()
    if suffix == ".json":
        try:
            json.loads(text)  # for JSON's own line/column message on syntax errors
        except json.JSONDecodeError as exc:
            raise PromptError(f"{path}, line {exc.lineno}: not valid JSON: {exc.msg}") from exc
    elif suffix not in (".yaml", ".yml"):
        raise PromptError(f"{path}: prompt files must end in .yaml, .yml or .json")
    return text


def _prompt_file_values(path: Path, nodes: dict) -> dict[str, object]:
    """The checked values of a prompt file's keys: the two instruction lists, and name/template if given."""
    import yaml

    unknown = sorted(set(nodes) - {"name", "entailment", "contradiction", "template"})
    if unknown:
        key = unknown[0]
        raise PromptError(
            f"{path}, line {nodes[key][1]}: unknown key {key!r}; allowed: name, entailment, contradiction, template"
        )
    values: dict[str, object] = {}
    for key in ("entailment", "contradiction"):
        if key not in nodes:
            raise PromptError(f"{path}: missing key {key!r} (a list of instructions)")
        node, line = nodes[key]
        if not isinstance(node, yaml.SequenceNode) or not node.value:
            raise PromptError(f"{path}, line {line}: {key!r} must be a non-empty list of strings")
        items = []
        for item in node.value:
            if not isinstance(item, yaml.ScalarNode) or not str(item.value).strip():
                raise PromptError(f"{path}, line {item.start_mark.line + 1}: {key!r} entries must be non-empty strings")
            items.append(str(item.value))
        values[key] = tuple(items)
    for key in ("name", "template"):
        if key in nodes:
            node, line = nodes[key]
            if not isinstance(node, yaml.ScalarNode) or not str(node.value):
                raise PromptError(f"{path}, line {line}: {key!r} must be a string")
            values[key] = str(node.value)
    return values


def load_prompt_file(path: str | Path, template: str | None = None) -> PromptSet:
    """Read a user prompt set from YAML (``.yaml``/``.yml``) or JSON (``.json``).

    Errors name the file and, where the parser knows it, the line. ``template`` overrides the
    file's template.
    """
    path = Path(path)
    text = _prompt_file_text(path)
    # JSON is (practically) a subset of YAML: composing it gives line numbers for both formats.
    values = _prompt_file_values(path, _yaml_nodes(path, text))
    try:
        return PromptSet(
            name=str(values.get("name", path.stem)),
            entailment=values["entailment"],  # type: ignore[arg-type]
            contradiction=values["contradiction"],  # type: ignore[arg-type]
            template=template if template is not None else str(values.get("template", DEFAULT_POOL_TEMPLATE)),
        )
    except PromptError as exc:
        raise PromptError(f"{path}: {exc}") from exc


def text_line_of_offset(data: bytes, offset: int) -> int:
    """1-based line number of a byte offset."""
    return data.count(b"\n", 0, offset) + 1


def resolve_prompt_set(
    prompt_set: str | PromptSet = "syncse-pool", template: str | None = None, prompt_file: str | Path | None = None
) -> PromptSet:
    """The prompt set in use: ``prompt_file`` if given, else the named or given set; ``template``
    replaces the set's template."""
    if prompt_file is not None:
        return load_prompt_file(prompt_file, template=template)
    if isinstance(prompt_set, PromptSet):
        if template is None:
            return prompt_set
        return dataclasses.replace(prompt_set, template=template)
    return get_prompt_set(prompt_set, template=template)


@dataclass(frozen=True)
class GenerationPrompts:
    """The two prompts for one premise: each is the other's opposite (noisy) instruction."""

    premise: str
    entailment_prompt: str  # the exact text fed to the model to write x+
    contradiction_prompt: str  # the exact text fed to the model to write x-
    entailment_prompt_id: str  # e.g. "syncse-pool/entailment/2"
    contradiction_prompt_id: str


def _premise_rng(seed: int, premise: str) -> random.Random:
    """A generator that depends only on (seed, premise), never on the other premises."""
    digest = hashlib.sha256(f"{int(seed)}\x00{premise}".encode("utf-8")).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def build_generation_prompts(
    premises: Iterable[str],
    prompt_set: str | PromptSet = "syncse-pool",
    seed: int = 42,
    template: str | None = None,
    prompt_file: str | Path | None = None,
) -> list[GenerationPrompts]:
    """One ``GenerationPrompts`` per premise, in input order.

    ``prompt_set`` names a built-in set (``syncse-pool``, ``official-2shot``) or is a
    ``PromptSet``; ``prompt_file`` (YAML/JSON) takes precedence over it; ``template`` replaces
    the set's template. The instruction of each kind is drawn uniformly from its pool with a
    generator seeded by ``sha256(seed, premise)``, so the draw is stable per premise.
    """
    chosen = resolve_prompt_set(prompt_set, template=template, prompt_file=prompt_file)
    out = []
    for premise in premises:
        if not isinstance(premise, str):
            raise PromptError(f"premise {premise!r} is not a string")
        rng = _premise_rng(seed, premise)
        entailment_index = rng.randrange(len(chosen.entailment))
        contradiction_index = rng.randrange(len(chosen.contradiction))
        out.append(
            GenerationPrompts(
                premise=premise,
                entailment_prompt=render_prompt(chosen.template, chosen.entailment[entailment_index], premise),
                contradiction_prompt=render_prompt(chosen.template, chosen.contradiction[contradiction_index], premise),
                entailment_prompt_id=chosen.prompt_id("entailment", entailment_index + 1),
                contradiction_prompt_id=chosen.prompt_id("contradiction", contradiction_index + 1),
            )
        )
    return out


# --------------------------------------------------------------------------------------------
# Stage 2: scoring prompts (method.md "Stage 2")
# --------------------------------------------------------------------------------------------

#: Default: the official scoring prompt with a single space before "(a)".
SCORING_PROMPT = (
    "Scoring the semantic similarity of the following sentences between 0.0 and 5.0: (a) {premise} (b) {hypothesis}"
)
#: The official string exactly, with the 17 spaces a Python line continuation left before "(a)".
#: T5's tokeniser collapses them, so for Flan-T5 both variants give the same input ids; for other
#: tokenisers (and API models) they differ, which is why the clean one is the default.
SCORING_PROMPT_OFFICIAL_17_SPACES = (
    "Scoring the semantic similarity of the following sentences between 0.0 and 5.0:"
    + " " * 17
    + "(a) {premise} (b) {hypothesis}"
)
#: Ours (``scoring.prompt = few-shot``): four worked examples before the pair, each asked with the
#: official prompt and answered with a bare score.
#:
#: Why: a small chat model given the zero-shot prompt answers with prose: SmolLM2-135M-Instruct
#: puts about 2% of its first-token probability on the digits, and greedy decoding never starts
#: with one. Shown how the exchange goes, it answers with a digit (about 93% of the first-token
#: probability). For a chat model the examples are chat turns (user: the official prompt,
#: assistant: the score; :func:`scoring_messages`); the same examples written out as one text
#: (:data:`SCORING_PROMPT_FEW_SHOT`) failed on SmolLM2: it continued the list ("(b) A ...") with
#: 8% on the digits. Models without a chat template (Flan-T5) get that text.
#:
#: The examples anchor the scale where the paper's thresholds act (alpha = beta = 3): a paraphrase
#: 5, an entailment that drops a detail 4, a related sentence that changes the event 2, a
#: contradiction 0. They are written for this prompt in the style of NLI captions, not taken
#: from SNLI or STS (``benchmarks/bench_judges.py`` measures the judges on SNLI pairs), and they
#: alternate high and low so that the last example's score is not the one to copy.
SCORING_FEW_SHOT_EXAMPLES: tuple[tuple[str, str, str], ...] = (
    ("A woman is slicing an onion in a small kitchen.", "A woman cuts an onion.", "4"),
    ("Two boys are playing football in the park.", "The boys are asleep in their beds.", "0"),
    ("An old man sits on a bench reading a newspaper.", "An elderly man reads a newspaper on a bench.", "5"),
    ("A dog runs along the beach.", "A dog is swimming in a lake.", "2"),
)
#: The few-shot prompt as one text (models without a chat template): example prompts, each
#: followed by its score on the next line, blank lines between, then the pair's prompt and a
#: newline, so the text ends where the examples' scores begin (without it a base model continues
#: the pair's second sentence instead of answering).
#: (The example sentences hold no braces, so the result is a template with the pair's two fields.)
SCORING_PROMPT_FEW_SHOT = "".join(
    SCORING_PROMPT.format(premise=a, hypothesis=b) + f"\n{score}\n\n" for a, b, score in SCORING_FEW_SHOT_EXAMPLES
) + SCORING_PROMPT + "\n"
SCORING_PROMPT_VARIANTS: dict[str, str] = {
    "single-space": SCORING_PROMPT,
    "official-17-spaces": SCORING_PROMPT_OFFICIAL_17_SPACES,
    "few-shot": SCORING_PROMPT_FEW_SHOT,
}
#: Variants whose chat form is several turns (:func:`scoring_messages`).
MULTI_TURN_SCORING_VARIANTS = frozenset({"few-shot"})
#: ``scoring.prompt`` in the config -> the variant above.
SCORING_PROMPT_CHOICES: dict[str, str] = {
    "official": "single-space",
    "official-verbatim": "official-17-spaces",
    "few-shot": "few-shot",
}


def format_scoring_prompt(premise: str, hypothesis: str, variant: str = "single-space") -> str:
    """The stage-2 prompt asking for sim(premise, hypothesis) on 0.0-5.0."""
    try:
        template = SCORING_PROMPT_VARIANTS[variant]
    except KeyError:
        raise PromptError(f"unknown scoring prompt variant {variant!r}; known: {sorted(SCORING_PROMPT_VARIANTS)}") from None
    return template.format(premise=premise, hypothesis=hypothesis)


def scoring_messages(premise: str, hypothesis: str, variant: str = "single-space") -> list[dict[str, str]]:
    """The stage-2 prompt as chat messages: one user turn, or for ``few-shot`` the examples as
    user/assistant turns (each user turn the official prompt) and then the pair's user turn."""
    if variant not in MULTI_TURN_SCORING_VARIANTS:
        return [{"role": "user", "content": format_scoring_prompt(premise, hypothesis, variant)}]
    messages: list[dict[str, str]] = []
    for a, b, score in SCORING_FEW_SHOT_EXAMPLES:
        messages += [{"role": "user", "content": SCORING_PROMPT.format(premise=a, hypothesis=b)},
                     {"role": "assistant", "content": score}]
    return messages + [{"role": "user", "content": SCORING_PROMPT.format(premise=premise, hypothesis=hypothesis)}]


# --------------------------------------------------------------------------------------------
# CLAIF (Cheng et al. 2023; method.md "CLAIF and CLHAIF")
# --------------------------------------------------------------------------------------------

CLAIF_MASK_TOKEN = "<mask>"

#: Paper App. B, verbatim; the label is the first number in the reply.
CLAIF_SCORING_PROMPT = (
    "The similarity score for two sentences is in the range from 0.0 to 1.0, 0.0 means completely different "
    "and 1.0 means almost the same. Now given two sentences '{a}' and '{b}', please give a similarity score "
    "for these two sentences: The similarity score for these two sentences is"
)
#: Mask rates above 0: the model fills the masks; the open quote is closed by the stop string '"'.
CLAIF_MASK_FILL_PROMPT = 'Replace all <mask> tokens in "{masked}" to make a new sentence. The new sentence is: "'
#: Mask rate 0: a plain paraphrase.
CLAIF_PARAPHRASE_PROMPT = 'Write two sentences that mean the same thing.\nSentence 1: "{sentence}"\nSentence 2: "'


def format_claif_scoring_prompt(a: str, b: str) -> str:
    """CLAIF's 0.0-1.0 similarity prompt for the pair (a, b)."""
    return CLAIF_SCORING_PROMPT.format(a=a, b=b)


def format_claif_generation_prompt(original: str, masked: str, mask_rate: float) -> str:
    """The CLAIF generation prompt: paraphrase at rate 0, mask filling otherwise."""
    if mask_rate == 0:
        return CLAIF_PARAPHRASE_PROMPT.format(sentence=original)
    return CLAIF_MASK_FILL_PROMPT.format(masked=masked)
