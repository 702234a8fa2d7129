"""DSPy signature behaviours: append_instructions, field constraints in the prompt,
TypeError for a malformed class, Union from ``|`` in strings, cloudpickle round trips,
and the Parallel timeout default."""

from __future__ import annotations

import typing

import pytest

import dspex
from dspex.errors import SignatureError


def test_append_instructions_keeps_the_old_ones() -> None:
    sig = dspex.Signature("text -> french", "Translate to French.")
    new = sig.append_instructions("Use a formal register.")
    assert new.instructions == "Translate to French.\n\nUse a formal register."
    assert sig.instructions == "Translate to French." and new is not sig
    assert list(new.fields) == ["text", "french"]
    with pytest.raises(SignatureError, match="needs a str"):
        sig.append_instructions(3)  # type: ignore[arg-type]


def test_field_constraints_are_described_to_the_lm() -> None:
    class Scored(dspex.Signature):
        text: str = dspex.InputField(min_length=5, max_length=100)
        score: float = dspex.OutputField(ge=0.0, le=1.0)

    assert Scored.output_fields["score"].json_schema_extra["constraints"] == (
        "greater than or equal to: 0.0, less than or equal to: 1.0"
    )
    system = dspex.ChatAdapter().format(Scored, [], {"text": "hello"})[0]["content"]
    assert "1. `text` (str): \nConstraints: minimum length: 5, maximum length: 100" in system


def test_a_malformed_signature_class_is_a_type_error_too() -> None:
    with pytest.raises(TypeError):

        class Bare(dspex.Signature):
            question: str

    with pytest.raises(ValueError, match="distinct names"):
        dspex.Signature("value -> value")


def test_a_union_written_with_a_bar_is_typing_union() -> None:
    sig = dspex.Signature("a: int | str, b: None | int -> c: str | None")
    assert typing.get_origin(sig.input_fields["a"].annotation) is typing.Union
    assert sig.input_fields["b"].annotation == typing.Optional[int]  # noqa: UP045
    assert sig.output_fields["c"].annotation == (str | None)


def test_signatures_and_observed_methods_survive_cloudpickle() -> None:
    import cloudpickle  # the [dev] extra installs it

    from dspex.utils.callback import with_callbacks

    def make() -> type[dspex.Signature]:
        class QA(dspex.Signature):
            """Answer questions."""

            question: str = dspex.InputField()
            answer: str = dspex.OutputField()

        return QA

    qa = make()
    again = cloudpickle.loads(cloudpickle.dumps(qa))
    assert again == qa and again.instructions == "Answer questions."
    predictor = cloudpickle.loads(cloudpickle.dumps(dspex.Predict(qa)))
    assert predictor.signature == qa
    observed = cloudpickle.loads(cloudpickle.dumps(with_callbacks(lambda self: "sync")))
    assert observed(object()) == "sync"


def test_an_equal_value_may_be_reassigned_but_not_a_new_one() -> None:
    sig = dspex.Signature("q -> a", "Do it.")
    sig.__doc__ = sig.__doc__  # a no-op, as cloudpickle does it
    with pytest.raises(SignatureError, match="immutable"):
        sig.__doc__ = "Something else."


def test_parallel_has_dspys_timeout_default() -> None:
    assert dspex.Parallel().timeout == 120
    assert dspex.Parallel(timeout=None).timeout is None


def test_evaluation_result_repr_is_dspys_plus_what_happened() -> None:
    from dspex.programs import EvaluationResult

    ok = EvaluationResult(score=100.0, results=[(dspex.Example(q="1"), {"a": "2"}, 100.0)])
    assert repr(ok) == "EvaluationResult(score=100.0, results=<list of 1 results>)"
    failed = EvaluationResult(score=0.0, results=[], errors=[(0, ValueError("x"))])
    assert repr(failed) == "EvaluationResult(score=0.0, results=<list of 0 results>, errors=1)"
