"""The score parsers (method.md stage 2 and CLAIF) and the distribution-to-score rules."""

import math

import pytest

from multicsr_core.scoring.llm import distribution_to_score, logprobs_to_distribution
from multicsr_core.scoring.parsing import (
    get_parser,
    parse_first_number,
    parse_lenient_score,
    parse_official_score,
)


@pytest.mark.parametrize(
    "reply, expected",
    [("0", 0.0), ("5", 5.0), ("3", 3.0), ("3.5", 3.5), ("0.0", 0.0), ("5.9", 5.9), (" 4\n", 4.0), ("4.0\n", 4.0)],
)
def test_official_parser_accepts_single_digit_and_d_dot_d(reply, expected):
    assert parse_official_score(reply) == expected


@pytest.mark.parametrize(
    "reply",
    ["6", "9", "6.0", "35", "3.55", "3.", ".5", "3,5", "x", "", "Score: 3", "3 5", "3/5", "a.5", "3.x", "-1",
     "３", "3.٣", None],
)
def test_official_parser_rejects_everything_else(reply):
    assert parse_official_score(reply) is None


@pytest.mark.parametrize(
    "reply, expected",
    [(" 0.8", 0.8), ("The score is 0.75.", 0.75), ("1", 1.0), (".5 or so", 0.5), ("-0.2 then 0.4", -0.2),
     ("score: 0.9/1.0", 0.9), ("none", None), ("", None), (None, None)],
)
def test_claif_parser_takes_the_first_number(reply, expected):
    assert parse_first_number(reply) == expected


def test_lenient_parser_skips_numbers_out_of_range():
    assert parse_lenient_score("On a scale of 10, I'd say 3.5") == 3.5
    assert parse_lenient_score("Score: 4/5") == 4.0
    assert parse_lenient_score("7 out of 10") is None
    assert parse_lenient_score("0.7", low=0.0, high=1.0) == 0.7


def test_get_parser_names_the_choices():
    assert get_parser("official") is parse_official_score
    with pytest.raises(ValueError, match="official"):
        get_parser("fuzzy")


def test_distribution_to_score_argmax_and_expected():
    dist = {"0": 0.1, "1": 0.0, "2": 0.0, "3": 0.6, "4": 0.3, "5": 0.0}
    assert distribution_to_score(dist, "argmax") == 3.0
    assert distribution_to_score(dist, "expected") == pytest.approx(0.1 * 0 + 0.6 * 3 + 0.3 * 4)
    with pytest.raises(ValueError):
        distribution_to_score(dist, "median")


def test_logprobs_to_distribution_merges_spellings_and_renormalises():
    logprobs = [{"token": "3", "logprob": math.log(0.5),
                 "top": {"3": math.log(0.5), " 3": math.log(0.1), "4": math.log(0.2), "The": math.log(0.2)}}]
    dist = logprobs_to_distribution(logprobs)
    assert dist["3"] == pytest.approx(0.6 / 0.8)
    assert dist["4"] == pytest.approx(0.2 / 0.8)
    assert sum(dist.values()) == pytest.approx(1.0)
    assert logprobs_to_distribution([{"token": "The", "logprob": 0.0, "top": {"The": 0.0}}]) is None
    # a non-answer whose alternatives happen to include a digit gives no distribution
    refusal = [{"token": "I", "logprob": math.log(0.9), "top": {"I": math.log(0.9), "3": math.log(0.01)}}]
    assert logprobs_to_distribution(refusal) is None
    assert logprobs_to_distribution(None) is None


def test_a_reply_that_is_not_a_score_is_an_unparsable_verdict_keeping_the_reply():
    from multicsr_core.scoring.base import PairScore, is_unparsable_error
    from multicsr_core.scoring.llm import text_verdict

    prose = text_verdict("The two sentences are quite similar.", parse_official_score, "official")
    assert prose.score is None and prose.unparsable and not prose.failed
    assert prose.raw == "The two sentences are quite similar."
    assert prose.error.startswith("unparsable_score") and "quite similar" in prose.error
    assert text_verdict("4", parse_official_score, "official") == PairScore(score=4.0, raw="4")
    transport = PairScore(score=None, error="APITimeoutError: Request timed out.")
    assert transport.failed and not transport.unparsable and not is_unparsable_error(transport.error)


def test_logprobs_mass_counts_the_listed_score_tokens():
    from multicsr_core.scoring.llm import logprobs_to_distribution_and_mass

    first = {"token": "3", "logprob": math.log(0.5), "top": {"3": math.log(0.5), " 4": math.log(0.2), "The": math.log(0.3)}}
    distribution, mass = logprobs_to_distribution_and_mass([first])
    assert mass == pytest.approx(0.7)
    assert distribution["3"] == pytest.approx(0.5 / 0.7) and distribution["4"] == pytest.approx(0.2 / 0.7)
    assert logprobs_to_distribution_and_mass([{**first, "token": "The"}]) == (None, None)  # a non-answer
