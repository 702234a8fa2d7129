"""``majority``: voting over completions, DSPy's rules (normalization, ties, no-votes)."""

from __future__ import annotations

import pytest

from dspex.errors import UsageError
from dspex.programs import Completions, Predict, Prediction, majority
from dspex.testing import DummyLM


def _sampled(answers: list[str]) -> Prediction:
    lm = DummyLM([{"answer": a} for a in answers])
    pred: Prediction = Predict("question -> answer", n=len(answers))(question="q", lm=lm)
    return pred


def test_votes_on_normalized_text_and_returns_the_first_winning_completion() -> None:
    pred = _sampled(["Lyon", "paris.", "Paris", "Lyon!", "PARIS"])
    winner = majority(pred)
    assert isinstance(winner, Prediction)
    assert winner.answer == "paris."  # the first completion holding the winning value
    assert winner.completions is not None and winner.completions.answer == ["paris."]
    assert winner.completions.signature is pred.completions.signature  # type: ignore[union-attr]


def test_a_tie_goes_to_the_value_seen_first() -> None:
    assert majority(_sampled(["Rome", "Oslo", "Oslo", "Rome"])).answer == "Rome"


def test_values_normalizing_to_nothing_do_not_vote_unless_none_votes() -> None:
    # "the" normalizes to "" (an article): no vote, so the single "Bern" wins
    assert majority(_sampled(["the", "the", "Bern"])).answer == "Bern"
    assert majority(_sampled(["the", "a"])).answer == "the"


def test_field_defaults_to_the_last_output_and_can_be_chosen() -> None:
    lm = DummyLM([{"answer": "x", "label": "yes"}, {"answer": "y", "label": "no"}] * 2)
    pred = Predict("question -> answer, label", n=3)(question="q", lm=lm)
    assert pred.completions.label == ["yes", "no", "yes"]
    assert majority(pred).label == "yes"
    assert majority(pred, field="answer").answer == "x"


def test_accepts_completions_lists_of_dicts_and_raw_values() -> None:
    comps = Completions([{"answer": "Y"}, {"answer": "X"}, {"answer": "x"}])
    assert majority(comps).answer == "X"
    assert majority([{"answer": 1}, {"answer": 2}, {"answer": 2}], normalize=None).answer == 2
    # numbers are normalized through their text by default
    assert majority([{"n": 4}, {"n": 3}, {"n": 3}]).n == 3


def test_a_hand_built_prediction_is_its_own_single_completion() -> None:
    assert majority(Prediction(answer="Oslo")).answer == "Oslo"


def test_bad_inputs_raise_clear_errors() -> None:
    with pytest.raises(UsageError, match="at least one completion"):
        majority([])
    with pytest.raises(UsageError, match="has no field 'score'"):
        majority([{"answer": "a"}], field="score")
    with pytest.raises(UsageError, match="takes a Prediction"):
        majority("Paris")  # type: ignore[arg-type]
