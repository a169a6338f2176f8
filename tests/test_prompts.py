"""Prompt sets, prompt files and the scoring/CLAIF prompt constants (multicsr_core.prompts)."""

from __future__ import annotations

import collections
import json
import re
from pathlib import Path

import pytest

from multicsr_core import prompts
from multicsr_core.prompts import (
    DEFAULT_POOL_TEMPLATE,
    SYNCSE_CONTRADICTION_POOL,
    SYNCSE_ENTAILMENT_POOL,
    PromptError,
    PromptSet,
    build_generation_prompts,
    format_claif_generation_prompt,
    format_claif_scoring_prompt,
    format_scoring_prompt,
    load_prompt_file,
)

METHOD_MD = Path(__file__).resolve().parents[1] / ".." / "shared" / "docs" / "method.md"
SNLI = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "nli" / "snli_devtest_for_simcse.csv"


def _method_text() -> str:
    if not METHOD_MD.exists():
        pytest.fail(f"method.md not found at {METHOD_MD}; the shared docs must sit beside the repo")
    return METHOD_MD.read_text(encoding="utf-8")


def _real_premises(n: int) -> list[str]:
    import csv

    if not SNLI.exists():
        pytest.fail(f"shared SNLI file missing: {SNLI}")
    with SNLI.open(encoding="utf-8") as f:
        rows = csv.DictReader(f)
        out = []
        for row in rows:
            if row["sent0"] not in out:
                out.append(row["sent0"])
            if len(out) == n:
                return out
    return out


def test_pools_are_verbatim_from_method_md():
    text = _method_text()
    for instruction in SYNCSE_ENTAILMENT_POOL + SYNCSE_CONTRADICTION_POOL:
        assert f'"{instruction}"' in text
    assert len(SYNCSE_ENTAILMENT_POOL) == 4 and len(SYNCSE_CONTRADICTION_POOL) == 4


def test_official_2shot_pieces_are_in_method_md():
    text = _method_text()
    # method.md writes the 2-shot as quoted pieces of one Python string: every piece must appear in our constant
    pieces = re.findall(r'`"(.*?)"`', text[text.index("2-shot template") : text.index("Models:")])
    assert len(pieces) == 4
    joined = "".join(p.replace("\\n", "\n") for p in pieces)
    assert prompts.OFFICIAL_2SHOT_CONTRADICTION == joined
    ent = prompts.OFFICIAL_2SHOT_ENTAILMENT
    assert ent == (
        joined.replace("negative", "entailment")
        .replace("'We have no one free at the moment so you have to take action yourself.'",
                 "'A member of my team will execute your orders with immense precision.'")
        .replace("'They have no information at all.'", "'This information belongs to them.'")
    )


def test_syncse_pool_prompt_shape_and_ids():
    premise = "A man is playing a guitar on stage."
    (row,) = build_generation_prompts([premise], seed=42)
    assert row.premise == premise
    e = int(row.entailment_prompt_id.rsplit("/", 1)[1])
    c = int(row.contradiction_prompt_id.rsplit("/", 1)[1])
    assert row.entailment_prompt_id == f"syncse-pool/entailment/{e}"
    assert row.contradiction_prompt_id == f"syncse-pool/contradiction/{c}"
    assert row.entailment_prompt == f"{SYNCSE_ENTAILMENT_POOL[e - 1]}\nInput: {premise}\nOutput:"
    assert row.contradiction_prompt == f"{SYNCSE_CONTRADICTION_POOL[c - 1]}\nInput: {premise}\nOutput:"


def test_draw_is_stable_per_premise_and_covers_the_pools():
    premises = _real_premises(200)
    full = build_generation_prompts(premises, seed=42)
    # the same premise gets the same draw alone, reversed, or in another company
    alone = [build_generation_prompts([p], seed=42)[0] for p in premises[:20]]
    assert alone == full[:20]
    assert build_generation_prompts(premises[::-1], seed=42) == full[::-1]
    # a different seed changes some draws; all 4 x 4 instructions are used, roughly uniformly
    other = build_generation_prompts(premises, seed=7)
    assert sum(a != b for a, b in zip(full, other)) > 50
    counts = collections.Counter(r.entailment_prompt_id for r in full)
    assert len(counts) == 4 and min(counts.values()) > 25
    counts = collections.Counter(r.contradiction_prompt_id for r in full)
    assert len(counts) == 4 and min(counts.values()) > 25


def test_official_2shot_and_premise_with_braces():
    premise = "He said {hello} and left."
    (row,) = build_generation_prompts([premise], prompt_set="official-2shot")
    assert row.entailment_prompt.endswith(f"Write a sentence that is entailment with '{premise}': ")
    assert row.contradiction_prompt.endswith(f"Write a sentence that is negative with '{premise}': ")
    assert row.entailment_prompt_id == "official-2shot/entailment/1"
    assert row.contradiction_prompt_id == "official-2shot/contradiction/1"


def test_custom_template():
    (row,) = build_generation_prompts(["Dogs bark."], template="Task: {instruction}\nSentence: \"{premise}\"\nAnswer:")
    assert row.entailment_prompt.startswith("Task: ")
    assert row.entailment_prompt.endswith('\nSentence: "Dogs bark."\nAnswer:')


@pytest.mark.parametrize(
    "template, message",
    [
        ("{instruction}", "premise slot"),
        ("{premise}", "{instruction} exactly once"),
        ("{instruction} {premise} {premise}", "more than once"),
        ("{instruction} {sentence}", "unknown field {sentence}"),
        ("{instruction} {premise", "literal braces"),
    ],
)
def test_bad_templates_are_rejected(template, message):
    with pytest.raises(PromptError, match=re.escape(message)):
        build_generation_prompts(["x"], template=template)


def test_unknown_prompt_set():
    with pytest.raises(PromptError, match="unknown prompt set 'nope'"):
        build_generation_prompts(["x"], prompt_set="nope")


def test_prompt_file_yaml_and_json(tmp_path):
    yaml_file = tmp_path / "mine.yaml"
    yaml_file.write_text(
        "entailment:\n  - Say the same thing differently.\n  - Paraphrase it.\n"
        "contradiction:\n  - Say the opposite.\n"
        "template: \"{instruction} => {premise}\"\n",
        encoding="utf-8",
    )
    rows = build_generation_prompts(["Cats sleep.", "Birds fly."], prompt_file=yaml_file, seed=1)
    assert rows[0].contradiction_prompt == "Say the opposite. => Cats sleep."
    assert rows[0].contradiction_prompt_id == "mine/contradiction/1"
    assert rows[0].entailment_prompt_id.startswith("mine/entailment/")

    json_file = tmp_path / "other.json"
    json_file.write_text(json.dumps({"name": "set-b", "entailment": ["E {premise}"], "contradiction": ["C {premise}"],
                                     "template": "{instruction}"}), encoding="utf-8")
    (row,) = build_generation_prompts(["Cats sleep."], prompt_file=json_file)
    assert (row.entailment_prompt, row.contradiction_prompt) == ("E Cats sleep.", "C Cats sleep.")
    assert row.entailment_prompt_id == "set-b/entailment/1"
    # no template in the file: the default pool template
    no_template = tmp_path / "plain.yaml"
    no_template.write_text("entailment: [A]\ncontradiction: [B]\n", encoding="utf-8")
    assert load_prompt_file(no_template).template == DEFAULT_POOL_TEMPLATE


@pytest.mark.parametrize(
    "name, text, message",
    [
        ("a.yaml", "entailment:\n  - ok\ncontradiction: [ok]\ncolour: red\n", "a.yaml, line 4: unknown key 'colour'"),
        ("b.yaml", "entailment: [ok]\n", "b.yaml: missing key 'contradiction'"),
        ("c.yaml", "entailment: [ok]\ncontradiction:\n  - ok\n  - ''\n", "c.yaml, line 4: 'contradiction' entries"),
        ("d.yaml", "entailment: [ok\ncontradiction: [ok]\n", "d.yaml, line"),
        ("e.json", '{"entailment": ["ok"],\n "contradiction": ["ok"],,\n}', "e.json, line 2: not valid JSON"),
        ("f.yaml", "entailment: []\ncontradiction: [ok]\n", "f.yaml, line 1: 'entailment' must be a non-empty list"),
        ("g.txt", "entailment: [ok]\n", "must end in .yaml"),
        ("h.yaml", "- a\n- b\n", "h.yaml, line 1: expected a mapping"),
        ("i.yaml", "entailment: [ok]\ncontradiction: [ok]\ntemplate: '{premise}'\n", "i.yaml: prompt set"),
    ],
)
def test_bad_prompt_files_name_file_and_line(tmp_path, name, text, message):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    with pytest.raises(PromptError, match=re.escape(message)):
        load_prompt_file(path)


def test_prompt_file_missing_and_not_utf8(tmp_path):
    with pytest.raises(PromptError, match="prompt file not found"):
        load_prompt_file(tmp_path / "none.yaml")
    bad = tmp_path / "latin.yaml"
    bad.write_bytes(b"entailment: [ok]\ncontradiction: [caf\xe9]\n")
    with pytest.raises(PromptError, match=re.escape("latin.yaml, line 2: not UTF-8")):
        load_prompt_file(bad)


def test_prompt_set_rejects_empty_pool():
    with pytest.raises(PromptError, match="entailment pool is empty"):
        PromptSet("x", (), ("a",))


def test_scoring_prompts():
    text = _method_text()
    official = format_scoring_prompt("P", "H")
    assert official == "Scoring the semantic similarity of the following sentences between 0.0 and 5.0: (a) P (b) H"
    assert '`"' + prompts.SCORING_PROMPT.replace("{premise}", "{x}") + '"`' in text
    seventeen = format_scoring_prompt("P", "H", variant="official-17-spaces")
    assert seventeen == official.replace("5.0: (a)", "5.0:" + " " * 17 + "(a)")
    with pytest.raises(PromptError, match="unknown scoring prompt variant"):
        format_scoring_prompt("P", "H", variant="x")


def test_claif_prompts():
    text = _method_text()
    flat = " ".join(text.split())
    scoring = format_claif_scoring_prompt("S1", "S2")
    assert scoring == prompts.CLAIF_SCORING_PROMPT.format(a="S1", b="S2")
    assert " ".join(prompts.CLAIF_SCORING_PROMPT.split()) in flat
    assert "`" + prompts.CLAIF_MASK_FILL_PROMPT + "`" in text
    assert "`" + prompts.CLAIF_PARAPHRASE_PROMPT.replace("\n", "\\n").replace("{sentence}", "{s}") + "`" in text
    assert format_claif_generation_prompt("A b c.", "A <mask> c.", 0.3) == (
        'Replace all <mask> tokens in "A <mask> c." to make a new sentence. The new sentence is: "'
    )
    assert format_claif_generation_prompt("A b c.", "A b c.", 0.0) == (
        'Write two sentences that mean the same thing.\nSentence 1: "A b c."\nSentence 2: "'
    )
