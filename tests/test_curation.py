import pytest

from multicsr_core.curation import (REASON_EQUAL_SCORES, REASON_HIGH_CONTRADICTION, REASON_LOW_ENTAILMENT,
                                    REASON_OFFICIAL_DROP, REASON_SMALL_MARGIN, REASON_UNSCORED, curate_table,
                                    curation_funnel, official_rule, paper_rule)
from multicsr_core.io.corpus import corpus_table


@pytest.mark.parametrize("a,b,kept,reason", [
    (3.0, 2.0, True, None),           # boundaries are inclusive: a >= 3, b <= 3, a >= b + 1
    (4.0, 3.0, True, None),
    (2.9, 0.0, False, REASON_LOW_ENTAILMENT),
    (5.0, 3.1, False, REASON_HIGH_CONTRADICTION),
    (3.5, 2.6, False, REASON_SMALL_MARGIN),
    (None, 1.0, False, REASON_UNSCORED),
])
def test_paper_rule(a, b, kept, reason):
    d = paper_rule(a, b)
    assert (d.kept, d.reason, d.swapped) == (kept, reason, False)


def test_paper_rule_thresholds_configurable():
    assert paper_rule(4.0, 3.5, alpha=4, beta=4, gamma=0.5).kept
    assert not paper_rule(4.0, 3.5, alpha=4, beta=4, gamma=1.0).kept


def test_official_generation_swap():
    # c <= 4 and e >= c: as is
    assert official_rule(4.0, 1.0).kept and not official_rule(4.0, 1.0).swapped
    # e <= 4 and e <= c: swapped, then filter15 on swapped scores (a=4.5? no: c=... )
    d = official_rule(1.0, 3.5)
    assert d.swapped and d.kept  # after swap a=3.5, b=1.0
    # neither (e > 4 and c > 4 with e < c): dropped
    assert official_rule(4.5, 4.8).reason == REASON_OFFICIAL_DROP
    # a != b, not a margin
    assert official_rule(3.0, 3.0).reason == REASON_EQUAL_SCORES
    assert official_rule(3.5, 3.0).kept  # margin 0.5 is fine for the official rule
    assert not paper_rule(3.5, 3.0).kept


def test_official_corpus_swap():
    d = official_rule(1.0, 4.0, swap_mode="corpus")
    assert d.swapped and d.kept
    assert not official_rule(4.0, 1.0, swap_mode="corpus").swapped


def test_curate_table_swaps_columns_and_is_idempotent():
    t = corpus_table([
        {"premise": "p1", "entailment": "E1", "contradiction": "C1", "entailment_score": 1.0, "contradiction_score": 3.5,
         "entailment_prompt_id": "pe", "contradiction_prompt_id": "pc"},
        {"premise": "p2", "entailment": "E2", "contradiction": "C2", "entailment_score": 4.0, "contradiction_score": 1.0},
        {"premise": "p3", "entailment": "E3", "contradiction": "C3", "entailment_score": None, "contradiction_score": 1.0},
    ])
    once = curate_table(t, rule="official")
    assert once.column("entailment").to_pylist() == ["C1", "E2", "E3"]
    assert once.column("entailment_score").to_pylist() == [3.5, 4.0, None]
    assert once.column("entailment_prompt_id").to_pylist()[0] == "pc"
    assert once.column("kept").to_pylist() == [True, True, False]
    twice = curate_table(once, rule="official")
    assert twice.equals(once)
    paper = curate_table(once, rule="paper")  # re-curating undoes the swap first
    assert paper.column("entailment").to_pylist() == ["E1", "E2", "E3"]
    assert paper.column("reject_reason").to_pylist() == [REASON_LOW_ENTAILMENT, None, REASON_UNSCORED]
    funnel = curation_funnel(paper)
    assert funnel["total"] == 3 and funnel["scored"] == 2 and funnel["kept"] == 1
    assert funnel[f"rejected:{REASON_UNSCORED}"] == 1


def test_curation_disabled_keeps_all_scored():
    t = corpus_table([{"premise": "p", "entailment": "e", "contradiction": "c", "entailment_score": 0.0,
                       "contradiction_score": 5.0}])
    assert curate_table(t, enabled=False).column("kept").to_pylist() == [True]
