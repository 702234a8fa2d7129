"""BootstrapFewShotWithOptuna: optuna picks one bootstrapped demo per predictor (optional extra)."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

import pytest

import dspex
from dspex.supervision import which_children
from dspex.teleprompt import BootstrapFewShotWithOptuna
from dspex.testing import DummyLM

pytestmark = pytest.mark.usefixtures("clean_settings")

ANSWERS = {"first?": "one", "second MAGIC?": "two", "third?": "three", "fourth?": "four"}


class MagicDemoLM(DummyLM):
    """Right only when a demo in the prompt (not the question itself) says MAGIC."""

    def _answer(self, messages: Sequence[Any], as_json: bool) -> str:
        last = str(messages[-1]["content"])
        question = next(q for q in ANSWERS if q in last)
        good = any("MAGIC" in str(m["content"]) for m in messages[1:-1])
        answer = ANSWERS[question] if good else "wrong"
        return f"[[ ## answer ## ]]\n{answer}\n\n[[ ## completed ## ]]"


def examples(*questions: str) -> list[dspex.Example]:
    return [dspex.Example(question=q, answer=ANSWERS[q]).with_inputs("question") for q in questions]


def exact(example: Any, prediction: Any, trace: Any = None) -> bool:
    return bool(example.answer == prediction.answer)


def test_missing_optuna_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "optuna", None)  # as if it were not installed
    optimizer = BootstrapFewShotWithOptuna(metric=exact)
    with pytest.raises(ImportError, match=r"pip install 'dspex\[optuna\]'"):
        optimizer.compile(dspex.Predict("question -> answer"), max_demos=2, trainset=examples())


def test_the_search_finds_the_demo_that_helps(start_runtime: Any) -> None:
    import optuna  # noqa: F401  (the [dev] extra installs it)

    rt = start_runtime()
    dspex.configure(lm=MagicDemoLM())
    trees: list[list[str]] = []

    def metric(example: Any, prediction: Any, trace: Any = None) -> bool:
        node = rt.tree().find("BootstrapFewShotWithOptuna")
        trees.append([node.actor_class, *(c.id for c in node.children)])
        return exact(example, prediction)

    def run() -> tuple[Any, list[Any]]:
        optimizer = BootstrapFewShotWithOptuna(
            metric=metric, num_candidate_programs=12, num_threads=2, seed=0
        )
        best = optimizer.compile(
            dspex.Predict("question -> answer"),
            max_demos=3,
            trainset=examples("first?", "second MAGIC?", "third?"),
            valset=examples("fourth?"),
        )
        # the bootstrap: the teacher (labeled demos) is right on first/third only
        demos = optimizer.compiled_teleprompter.demos
        return best, [(d.question, d.get("augmented", False)) for d in demos]

    best, demos = run()
    assert demos == [("first?", True), ("third?", True), ("second MAGIC?", False)]
    assert [d.question for d in best.demos] == ["second MAGIC?"]  # the one demo that helps
    assert best(question="fourth?").answer == "four"
    assert trees and all(t[:2] == ["Coordinator", "workers"] for t in trees)
    assert any(any(i.startswith("evaluate-") for i in t[2:]) for t in trees)
    assert which_children(rt.whereis("coordinators"), timeout=5) == []
    again, _ = run()  # seeded: the same trials, the same result
    assert again.dump_state() == best.dump_state()


def test_arguments_are_checked() -> None:
    with pytest.raises(dspex.UsageError, match="metric"):
        BootstrapFewShotWithOptuna(metric=None)  # type: ignore[arg-type]
    with pytest.raises(dspex.UsageError, match="num_candidate_programs"):
        BootstrapFewShotWithOptuna(metric=exact, num_candidate_programs=0)
    import optuna  # noqa: F401  (the [dev] extra installs it)

    with pytest.raises(dspex.UsageError, match="max_demos"):
        BootstrapFewShotWithOptuna(metric=exact).compile(
            dspex.Predict("question -> answer"), max_demos=0, trainset=examples("first?")
        )
