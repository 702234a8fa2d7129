"""DSPy-compatible answer metrics."""

from __future__ import annotations

import pytest

from dspex.errors import UsageError
from dspex.programs._metrics import (
    answer_exact_match,
    answer_passage_match,
    f1_score,
    normalize_text,
)


class P:
    def __init__(self, **kw: object) -> None:
        self.__dict__.update(kw)


def test_normalize_text() -> None:
    assert normalize_text("  The Eiffel-Tower, in PARIS!  ") == "eiffeltower in paris"
    assert normalize_text("an apple a day") == "apple day"


def test_exact_match_str_and_list() -> None:
    assert answer_exact_match({"answer": "Paris"}, P(answer="paris."))
    assert not answer_exact_match({"answer": "Paris"}, P(answer="Lyon"))
    assert answer_exact_match({"answer": ["Lyon", "The Paris"]}, P(answer="paris"))


def test_exact_match_with_frac_uses_f1() -> None:
    ex = {"answer": "the quick brown fox"}
    assert answer_exact_match(ex, P(answer="quick brown dog"), frac=0.6)
    assert not answer_exact_match(ex, P(answer="slow dog"), frac=0.5)
    with pytest.raises(UsageError, match="frac"):
        answer_exact_match(ex, P(answer="x"), frac=0)


def test_f1() -> None:
    assert f1_score("a b c", "a b c") == 1.0
    assert f1_score("x", "y") == 0.0
    assert f1_score("", "") == 1.0
    assert f1_score("cat sat", "cat sat mat") == pytest.approx(0.8)


def test_passage_match() -> None:
    pred = P(context=["The capital of France is Paris.", "Lyon is big."])
    assert answer_passage_match({"answer": "paris"}, pred)
    assert not answer_passage_match({"answer": "Berlin"}, pred)
    assert answer_passage_match({"answer": ["Berlin", "Lyon"]}, pred)
