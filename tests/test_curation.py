import pytest

from multicsr_core.curation import (REASON_EQUAL_SCORES, REASON_HIGH_CONTRADICTION, REASON_LOW_ENTAILMENT,
                                    REASON_OFFICIAL_DROP, REASON_SMALL_MARGIN, REASON_UNPARSABLE, REASON_UNSCORED,
                                    curate_table,
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


def _row(premise, a, b, a_error=None, b_error=None, **extra):
    return {"premise": premise, "entailment": f"E {premise}", "contradiction": f"C {premise}", "entailment_score": a,
            "contradiction_score": b, "entailment_score_error": a_error, "contradiction_score_error": b_error, **extra}


@pytest.mark.parametrize("rule", ["paper", "official"])
@pytest.mark.parametrize("enabled", [True, False])
def test_unparsable_scores_reject_with_their_reason_and_transport_failures_stay_unscored(rule, enabled):
    prose = "unparsable_score: reply 'I would rather not say.' is not a score (official parser)"
    t = corpus_table([
        _row("p1", None, 1.0, a_error=prose, entailment_reply="I would rather not say."),
        _row("p2", None, None, a_error="InternalServerError: 500", b_error=prose),  # the verdict decides
        _row("p3", None, 1.0, a_error="APITimeoutError: Request timed out."),      # retried next run
        _row("p4", 4.0, 1.0),
    ])
    curated = curate_table(t, rule=rule, enabled=enabled)
    assert curated.column("reject_reason").to_pylist() == [REASON_UNPARSABLE, REASON_UNPARSABLE, REASON_UNSCORED, None]
    assert curated.column("kept").to_pylist() == [False, False, False, True]
    assert curated.column("entailment_reply").to_pylist()[0] == "I would rather not say."  # the reply is kept
    funnel = curation_funnel(curated)
    assert funnel[f"rejected:{REASON_UNPARSABLE}"] == 2 and funnel[f"rejected:{REASON_UNSCORED}"] == 1
    assert REASON_UNPARSABLE == "unparsable_score"


def test_a_swap_moves_the_score_masses_with_their_sides():
    t = corpus_table([_row("p", 2.0, 4.0, entailment_score_mass=0.9, contradiction_score_mass=0.4)])
    swapped = curate_table(t, rule="official")  # e <= 4 and e <= c: the official code swaps
    assert swapped.column("swapped").to_pylist() == [True]
    assert swapped.column("entailment_score_mass").to_pylist() == [0.4]
    assert swapped.column("contradiction_score_mass").to_pylist() == [0.9]


def test_a_corpus_written_before_the_mass_columns_still_reads(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from multicsr_core.io.corpus import CORPUS_SCHEMA, OPTIONAL_COLUMNS, read_corpus

    old_schema = pa.schema([f for f in CORPUS_SCHEMA if f.name not in OPTIONAL_COLUMNS])
    old = corpus_table([_row("p", 4.0, 1.0)]).select(old_schema.names).cast(old_schema)
    pq.write_table(old, tmp_path / "old.parquet")
    table = read_corpus(tmp_path / "old.parquet")
    assert table.schema.names == CORPUS_SCHEMA.names
    assert table.column("entailment_score_mass").to_pylist() == [None]
    assert curate_table(table).column("kept").to_pylist() == [True]
