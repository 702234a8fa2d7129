"""SemanticF1 and CompleteAndGrounded: DSPy's judge prompts and its scoring rules."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import dspex
from dspex.errors import UsageError
from dspex.evaluate import CompleteAndGrounded, SemanticF1
from dspex.programs import _judged_metrics as judged
from dspex.testing import DummyLM

GOLDEN = Path(__file__).resolve().parent / "golden" / "judges_dspy341.json"


def _example() -> dspex.Example:
    return dspex.Example(question="Who?", response="Ada wrote it.").with_inputs("question")


@pytest.mark.parametrize(
    "name",
    [
        "SemanticRecallPrecision",
        "DecompositionalSemanticRecallPrecision",
        "AnswerCompleteness",
        "AnswerGroundedness",
    ],
)
def test_judge_prompts_are_dspys_byte_for_byte(name: str) -> None:
    # The golden file holds DSPy 3.4.1's ChatAdapter messages for ChainOfThought(<judge>).
    expected = json.loads(GOLDEN.read_text(encoding="utf-8"))[name]
    cot = dspex.ChainOfThought(getattr(judged, name))
    signature = cot.predict.signature
    inputs = {key: "x" for key in signature.input_fields}
    assert dspex.ChatAdapter().format(signature, [], inputs) == expected


def test_semantic_f1_scores_the_f1_of_precision_and_recall() -> None:
    lm = DummyLM([{"reasoning": "r", "recall": "0.5", "precision": "1.0"}])
    metric = SemanticF1()
    with dspex.context(lm=lm):
        result = metric(_example(), dspex.Prediction(response="Ada."))
    assert result.score == pytest.approx(2 * 0.5 / 1.5)
    sent = lm.history[0]["messages"][-1]["content"]
    assert "Ada wrote it." in sent and "Ada." in sent


def test_with_a_trace_the_score_is_the_threshold_decision() -> None:
    lm = DummyLM([{"reasoning": "r", "recall": "0.5", "precision": "0.5"}] * 2)
    with dspex.context(lm=lm):
        assert (
            SemanticF1(threshold=0.4)(_example(), dspex.Prediction(response="x"), []).score is True
        )
        assert (
            SemanticF1(threshold=0.6)(_example(), dspex.Prediction(response="x"), []).score is False
        )


def test_scores_are_clamped_to_the_unit_interval() -> None:
    lm = DummyLM([{"reasoning": "r", "recall": "1.7", "precision": "-0.2"}])
    with dspex.context(lm=lm):
        assert SemanticF1()(_example(), dspex.Prediction(response="x")).score == 0.0
    assert judged.clamped_f1(3.0, 1.0) == 1.0


def test_decompositional_judge_lists_key_ideas_first() -> None:
    answer = {
        "reasoning": "r",
        "ground_truth_key_ideas": "1. Ada",
        "system_response_key_ideas": "1. Ada",
        "discussion": "same",
        "recall": "1.0",
        "precision": "1.0",
    }
    lm = DummyLM([answer])
    metric = SemanticF1(decompositional=True)
    assert metric.module.predict.signature.output_fields.keys() >= {"discussion", "recall"}
    with dspex.context(lm=lm):
        assert metric(_example(), dspex.Prediction(response="Ada")).score == 1.0


def test_complete_and_grounded_combines_two_judges() -> None:
    lm = DummyLM(
        {
            "Estimate the completeness": {
                "reasoning": "r",
                "ground_truth_key_ideas": "a",
                "system_response_key_ideas": "a",
                "discussion": "d",
                "completeness": "1.0",
            },
            "Estimate the groundedness": {
                "reasoning": "r",
                "system_response_claims": "c",
                "discussion": "d",
                "groundedness": "0.5",
            },
        }
    )
    pred = dspex.Prediction(response="Ada wrote it.", context="Ada Lovelace wrote the notes.")
    with dspex.context(lm=lm):
        result = CompleteAndGrounded()(_example(), pred)
    assert result.score == pytest.approx(2 * 0.5 / 1.5)
    assert any("Ada Lovelace wrote the notes." in str(h["messages"]) for h in lm.history)


def test_a_missing_field_names_it_and_what_the_metric_reads() -> None:
    with pytest.raises(UsageError, match="`response`"):
        SemanticF1()(_example(), dspex.Prediction(answer="Ada"))
    with pytest.raises(UsageError, match="threshold"):
        SemanticF1(threshold="high")  # type: ignore[arg-type]


def test_metrics_run_under_evaluate() -> None:
    lm = DummyLM([{"reasoning": "r", "recall": "1.0", "precision": "1.0"}] * 4)

    class Echo(dspex.Module):
        def forward(self, question: str) -> dspex.Prediction:
            return dspex.Prediction(response="Ada wrote it.")

    with dspex.context(lm=lm):
        result = dspex.Evaluate(devset=[_example()] * 2, metric=SemanticF1(), num_threads=1)(Echo())
    assert result.score == 100.0
