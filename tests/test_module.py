"""Module introspection and copying: names, nesting, deepcopy, reset_copy."""

from __future__ import annotations

from typing import Any

import pytest

from dspex.errors import UsageError
from dspex.programs import ChainOfThought, Example, Module, Parameter, Predict
from dspex.testing import DummyLM


class Inner(Module):
    def __init__(self) -> None:
        super().__init__()
        self.qa = ChainOfThought("question -> answer")
        self.summ = Predict("text -> summary")

    def forward(self, question: str) -> Any:
        return self.qa(question=question)


class Outer(Module):
    def __init__(self) -> None:  # no super().__init__(): the metaclass covers it
        self.inner = Inner()
        self.layers = [Predict("a -> b"), ChainOfThought("b -> c")]
        self.by_name = {"first": Predict("x -> y"), "second": Predict("y -> z")}
        self.not_a_module = "text"

    def forward(self, **kwargs: Any) -> Any:
        return kwargs


def test_named_predictors_walks_attributes_lists_and_dicts() -> None:
    names = [name for name, _ in Outer().named_predictors()]
    assert names == [
        "inner.qa.predict",
        "inner.summ",
        "layers[0]",
        "layers[1].predict",
        "by_name['first']",
        "by_name['second']",
    ]


def test_predictors_and_parameters_agree() -> None:
    prog = Outer()
    assert prog.predictors() == [p for _, p in prog.named_predictors()]
    assert prog.parameters() == prog.predictors()
    assert all(isinstance(p, Parameter) for p in prog.parameters())


def test_top_level_predict_and_cot_names() -> None:
    assert [n for n, _ in Predict("a -> b").named_predictors()] == ["self"]
    assert [n for n, _ in ChainOfThought("a -> b").named_predictors()] == ["predict"]


def test_shared_predictor_is_listed_once() -> None:
    class Shared(Module):
        def __init__(self) -> None:
            super().__init__()
            self.p = Predict("a -> b")
            self.alias = self.p

    assert [n for n, _ in Shared().named_predictors()] == ["p"]


def test_compiled_submodules_are_frozen() -> None:
    prog = Outer()
    prog.inner._compiled = True
    names = [name for name, _ in prog.named_predictors()]
    assert not any(n.startswith("inner.") for n in names)
    assert "layers[0]" in names


def test_named_sub_modules() -> None:
    prog = Outer()
    subs = dict(prog.named_sub_modules())
    assert subs["self"] is prog
    assert subs["self.inner"] is prog.inner
    assert subs["self.inner.qa.predict"] is prog.inner.qa.predict
    assert "self.layers[1]" in subs
    only_predict = [n for n, _ in prog.named_sub_modules(type_=Predict)]
    assert "self.inner.summ" in only_predict
    assert "self.inner" not in only_predict


def test_metaclass_initialises_bookkeeping_without_super_init() -> None:
    prog = Outer()
    assert prog.callbacks == []
    assert prog.history == []
    assert prog._compiled is False


def test_forward_runs_on_call() -> None:
    assert Outer()(x=1) == {"x": 1}

    class NoForward(Module):
        pass

    with pytest.raises(NotImplementedError, match="must define forward"):
        NoForward()()


def test_deepcopy_is_independent_but_shares_the_lm() -> None:
    prog = Outer()
    lm = DummyLM([{"answer": "x"}])
    prog.set_lm(lm)
    prog.inner.summ.demos = [Example(text="t", summary="s")]
    prog.inner.summ.config["temperature"] = 0.3

    clone = prog.deepcopy()
    assert [n for n, _ in clone.named_predictors()] == [n for n, _ in prog.named_predictors()]
    assert clone.inner.summ is not prog.inner.summ
    assert clone.inner.summ.demos == prog.inner.summ.demos
    clone.inner.summ.demos.append(Example(text="u", summary="v"))
    clone.inner.summ.demos[0]["summary"] = "changed"
    clone.inner.summ.config["temperature"] = 0.9
    clone.by_name["first"].demos.append(Example(x=1, y=2))
    assert prog.inner.summ.demos == [Example(text="t", summary="s")]
    assert prog.inner.summ.config == {"temperature": 0.3}
    assert prog.by_name["first"].demos == []
    assert clone.inner.qa.predict.signature == prog.inner.qa.predict.signature
    assert clone.get_lm() is lm  # an LM is a service handle: shared, not copied


def test_reset_copy_clears_learned_state_only_in_the_copy() -> None:
    prog = Outer()
    for _, p in prog.named_predictors():
        p.demos = [Example(a=1)]
        p.traces = ["t"]
    fresh = prog.reset_copy()
    assert all(p.demos == [] and p.traces == [] and p.lm is None for p in fresh.predictors())
    assert all(p.demos == [Example(a=1)] for p in prog.predictors())


def test_deepcopy_falls_back_per_attribute() -> None:
    import threading

    class WithLock(Module):
        def __init__(self) -> None:
            super().__init__()
            self.lock = threading.Lock()  # deepcopy refuses locks
            self.p = Predict("a -> b")

        def forward(self) -> None:
            return None

    prog = WithLock()
    prog.p.demos = [Example(a=1, b=2)]
    clone = prog.deepcopy()
    assert clone.lock is prog.lock  # shared, with a warning
    clone.p.demos.append(Example(a=3, b=4))
    assert len(prog.p.demos) == 1


def test_set_lm_get_lm_and_mixed_lms() -> None:
    prog = Outer()
    lm1, lm2 = DummyLM([]), DummyLM([])
    prog.set_lm(lm1)
    assert prog.get_lm() is lm1
    prog.predictors()[2].lm = lm2  # layers[0]
    with pytest.raises(UsageError, match="2 different LMs"):
        prog.get_lm()


def test_map_named_predictors_replaces_in_place() -> None:
    prog = Outer()

    def upgrade(p: Predict) -> Predict:
        new = Predict(p.signature)
        new.demos = [Example(tag="new")]
        return new

    prog.map_named_predictors(upgrade)
    assert all(p.demos == [Example(tag="new")] for p in prog.predictors())
    assert len(prog.predictors()) == 6


def test_repr_lists_predictors() -> None:
    text = repr(Inner())
    assert "qa.predict = Predict(" in text
    assert "summ = Predict(" in text


def test_update_and_get_config() -> None:
    p = Predict("a -> b", temperature=0.2)
    p.update_config(max_tokens=50)
    assert p.get_config() == {"temperature": 0.2, "max_tokens": 50}


def test_chain_of_thought_prepends_reasoning() -> None:
    cot = ChainOfThought("question, context -> answer, confidence: float")
    sig = cot.predict.signature
    assert list(sig.input_fields) == ["question", "context"]
    assert list(sig.output_fields) == ["reasoning", "answer", "confidence"]
    reasoning = sig.output_fields["reasoning"]
    assert (
        reasoning.json_schema_extra["prefix"] == "Reasoning: Let's think step by step in order to"
    )
    assert reasoning.json_schema_extra["desc"] == "${reasoning}"
    assert reasoning.annotation is str


def test_chain_of_thought_custom_rationale_field() -> None:
    from dspex.programs import OutputField

    field = OutputField(prefix="Thoughts:", desc="think aloud")
    cot = ChainOfThought("q -> a", rationale_field=field)
    reasoning = cot.predict.signature.output_fields["reasoning"]
    assert reasoning.json_schema_extra["prefix"] == "Thoughts:"
    assert reasoning.json_schema_extra["desc"] == "think aloud"
