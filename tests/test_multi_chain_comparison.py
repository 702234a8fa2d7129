"""``MultiChainComparison``: M sampled attempts in, one corrected prediction out."""

from __future__ import annotations

import pytest

from dspex.errors import UsageError
from dspex.programs import ChainOfThought, MultiChainComparison, Predict, context
from dspex.testing import DummyLM


def test_signature_gets_attempt_inputs_and_a_rationale_output() -> None:
    mcc = MultiChainComparison("question -> answer", M=2)
    signature = mcc.predict.signature
    assert list(signature.input_fields) == [
        "question",
        "reasoning_attempt_1",
        "reasoning_attempt_2",
    ]
    assert list(signature.output_fields) == ["rationale", "answer"]
    assert signature.input_fields["reasoning_attempt_2"].prefix == "Student Attempt #2:"
    assert mcc.predict.config == {"temperature": 0.7}
    assert [name for name, _ in mcc.named_predictors()] == ["predict"]


def test_compares_sampled_chain_of_thought_completions() -> None:
    lm = DummyLM(
        [
            {"reasoning": "2 plus 2\nmore lines", "answer": "4"},
            {"reasoning": "a guess", "answer": "5"},
            {"reasoning": "count", "answer": "4"},
            {"rationale": "two of three say 4", "answer": "4"},
        ]
    )
    with context(lm=lm):
        sampled = ChainOfThought("question -> answer", n=3)(question="2+2?")
        final = MultiChainComparison("question -> answer", M=3)(
            sampled.completions, question="2+2?"
        )
    assert final.answer == "4"
    assert final.rationale == "two of three say 4"
    prompt = lm.history[-1]["messages"][-1]["content"]
    assert "[[ ## reasoning_attempt_1 ## ]]\n«Reasoning: 2 plus 2 Answer: 4»" in prompt
    assert "[[ ## reasoning_attempt_2 ## ]]\n«Reasoning: a guess Answer: 5»" in prompt
    assert lm.history[-1]["params"]["temperature"] == 0.7


def test_plain_dicts_with_rationale_work_too() -> None:
    lm = DummyLM([{"rationale": "r", "label": "spam"}])
    mcc = MultiChainComparison("text -> label", M=1)
    assert mcc(
        [{"rationale": "looks like spam", "label": "spam"}], text="win $$$", lm=lm
    ).label == ("spam")


def test_the_number_of_completions_must_be_m() -> None:
    mcc = MultiChainComparison("question -> answer", M=3)
    with pytest.raises(UsageError, match="got 2 completions but was built for M=3"):
        mcc([{"reasoning": "r", "answer": "a"}] * 2, question="?")


def test_completions_without_reasoning_are_refused() -> None:
    with pytest.raises(UsageError, match="needs a 'reasoning'"):
        MultiChainComparison("question -> answer", M=1)([{"answer": "a"}], question="?")
    with pytest.raises(UsageError, match="M=0"):
        MultiChainComparison(Predict("q -> a").signature, M=0)


def test_acall_compares_the_same_way() -> None:
    import asyncio

    lm = DummyLM([{"rationale": "both say 4", "answer": "4"}])
    mcc = MultiChainComparison("question -> answer", M=2)
    attempts = [{"reasoning": "sum", "answer": "4"}, {"reasoning": "count", "answer": "4"}]
    with context(lm=lm):
        final = asyncio.run(mcc.acall(attempts, question="2+2?"))
    assert (final.answer, final.rationale) == ("4", "both say 4")
    prompt = lm.history[-1]["messages"][-1]["content"]
    assert "«Reasoning: count Answer: 4»" in prompt
