"""Example, Prediction and Completions behave as DSPy's do."""

from __future__ import annotations

import copy
import pickle

import pytest

from dspex.programs import Completions, Example, Prediction


def test_dict_and_attribute_access() -> None:
    ex = Example(question="2+2?", answer="4")
    assert ex.question == "2+2?"
    assert ex["answer"] == "4"
    ex.note = "x"
    ex["other"] = 1
    assert ex.toDict() == {"question": "2+2?", "answer": "4", "note": "x", "other": 1}
    del ex["other"]
    assert "other" not in ex
    assert "note" in ex
    with pytest.raises(AttributeError, match="no attribute 'missing'"):
        _ = ex.missing
    with pytest.raises(KeyError):
        _ = ex["missing"]


def test_base_and_kwargs() -> None:
    base = {"a": 1, "b": 2}
    ex = Example(base, b=3)
    assert ex.toDict() == {"a": 1, "b": 3}
    assert base == {"a": 1, "b": 2}  # the base dict is copied, not aliased
    again = Example(ex.with_inputs("a"), c=4)
    assert again.toDict() == {"a": 1, "b": 3, "c": 4}
    assert again.inputs().toDict() == {"a": 1}  # the input split survives Example(base=...)
    with pytest.raises(TypeError, match="dict or an Example"):
        Example([("a", 1)])  # type: ignore[arg-type]


def test_inputs_and_labels() -> None:
    ex = Example(question="q", context="c", answer="a").with_inputs("question", "context")
    assert ex.inputs().toDict() == {"question": "q", "context": "c"}
    assert ex.labels().toDict() == {"answer": "a"}
    assert isinstance(ex.inputs(), Example)
    with pytest.raises(ValueError, match="with_inputs"):
        Example(a=1).inputs()


def test_with_inputs_returns_a_copy() -> None:
    ex = Example(a=1, b=2)
    marked = ex.with_inputs("a")
    assert ex._input_keys is None
    assert marked._input_keys == {"a"}
    marked["c"] = 3
    assert "c" not in ex


def test_copy_and_without() -> None:
    ex = Example(a=1, b=2, c=3).with_inputs("a")
    cp = ex.copy(b=20)
    assert cp.toDict() == {"a": 1, "b": 20, "c": 3}
    assert cp.inputs().toDict() == {"a": 1}
    assert ex.b == 2
    less = ex.without("b", "c")
    assert less.toDict() == {"a": 1}
    assert ex.toDict() == {"a": 1, "b": 2, "c": 3}
    with pytest.raises(KeyError):
        ex.without("zzz")


def test_views_hide_internal_fields() -> None:
    ex = Example(a=1, dspy_uuid="u", dspy_split="train")
    assert len(ex) == 1
    assert ex.keys() == ["a"]
    assert ex.values() == [1]
    assert ex.items() == [("a", 1)]
    assert ex.keys(include_dspy=True) == ["a", "dspy_uuid", "dspy_split"]
    assert "dspy_uuid" not in repr(ex)
    assert list(ex) == ["a", "dspy_uuid", "dspy_split"]
    assert ex.get("a") == 1
    assert ex.get("zzz", "default") == "default"


def test_equality_and_hash() -> None:
    a = Example(q="x", tags=["t1", "t2"], meta={"k": [1, 2]})
    b = Example(q="x", tags=["t1", "t2"], meta={"k": [1, 2]}).with_inputs("q")
    assert a == b  # equality compares fields, not the input split
    assert hash(a) == hash(b)
    assert len({a, b}) == 1
    assert a != Example(q="y", tags=["t1", "t2"], meta={"k": [1, 2]})
    assert a != {"q": "x"}


def test_nested_to_dict() -> None:
    inner = Example(x=1)
    ex = Example(inner=inner, items=[Example(y=2)], d={"z": Example(w=3)})
    assert ex.toDict() == {"inner": {"x": 1}, "items": [{"y": 2}], "d": {"z": {"w": 3}}}


def test_repr_names_fields_and_inputs() -> None:
    ex = Example(q="x").with_inputs("q")
    assert repr(ex) == "Example({'q': 'x'}) (input_keys={'q'})"


def test_copy_module_and_pickle_round_trip() -> None:
    ex = Example(q="x", answer=["a"]).with_inputs("q")
    deep = copy.deepcopy(ex)
    deep.answer.append("b")
    assert ex.answer == ["a"]
    restored = pickle.loads(pickle.dumps(ex))
    assert restored == ex
    assert restored.inputs().toDict() == {"q": "x"}


def test_prediction_is_an_example_without_inputs() -> None:
    pred = Prediction(answer="4", reasoning="because")
    assert isinstance(pred, Example)
    assert pred.answer == "4"
    assert pred.completions is None
    assert "Prediction(" in repr(pred)
    with pytest.raises(ValueError):
        pred.inputs()


def test_prediction_from_completions() -> None:
    pred = Prediction.from_completions([{"answer": "a", "n": 1}, {"answer": "b", "n": 2}])
    assert pred.answer == "a"
    assert pred.n == 1
    comps = pred.completions
    assert isinstance(comps, Completions)
    assert len(comps) == 2
    assert comps.answer == ["a", "b"]
    assert comps["n"] == [1, 2]
    second = comps[1]
    assert isinstance(second, Prediction)
    assert second.toDict() == {"answer": "b", "n": 2}
    assert [c.answer for c in comps] == ["a", "b"]
    assert "answer" in comps
    assert "1 completions omitted" in repr(pred)
    with pytest.raises(IndexError):
        comps[2]
    with pytest.raises(AttributeError):
        _ = comps.nothing


def test_completions_from_dict_of_lists() -> None:
    comps = Completions({"answer": ["x", "y"]})
    assert len(comps) == 2
    assert comps[-1].answer == "y"
    with pytest.raises(ValueError, match="same length"):
        Completions({"a": [1, 2], "b": [1]})
    with pytest.raises(ValueError, match="same fields"):
        Completions([{"a": 1}, {"b": 2}])
    assert len(Completions([])) == 0


def test_prediction_score_arithmetic() -> None:
    p1 = Prediction(score=0.5)
    p2 = Prediction(score=1.0)
    assert float(p1) == 0.5
    assert p1 + p2 == 1.5
    assert 1 + p1 == 1.5
    assert sum([p1, p2]) == 1.5
    assert p2 / 2 == 0.5
    assert 1 / p2 == 1.0
    assert p1 < p2
    assert p2 >= 1
    assert max([p1, p2]) is p2
    with pytest.raises(ValueError, match="score"):
        float(Prediction(answer="x"))
    with pytest.raises(TypeError):
        p1 + "x"


def test_prediction_usage_slot() -> None:
    pred = Prediction(answer="x")
    pred.set_lm_usage({"dummy": {"prompt_tokens": 3}})
    assert pred.get_lm_usage() == {"dummy": {"prompt_tokens": 3}}
    assert "dummy" not in pred  # usage is not a field
