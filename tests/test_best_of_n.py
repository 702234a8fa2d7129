"""BestOfN and Refine: rollouts at temperature 1.0, rewards, thresholds, failures, hints."""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import pytest

from dspex.actors._lm._types import LMResponse, Message
from dspex.errors import UsageError
from dspex.programs import (
    BestOfN,
    ChainOfThought,
    Module,
    Predict,
    Prediction,
    Refine,
    configure,
    context,
)
from dspex.testing import DummyLM

pytestmark = pytest.mark.usefixtures("clean_settings")


def one_word(args: dict[str, Any], pred: Any) -> float:
    return 1.0 if len(pred.answer.split()) == 1 else 0.0


def _params(lm: DummyLM, key: str) -> list[Any]:
    return [entry["params"].get(key) for entry in lm.history]


def _user(lm: DummyLM, index: int) -> str:
    content: str = lm.history[index]["messages"][-1]["content"]
    return content


# -- BestOfN ---------------------------------------------------------------------------


def test_stops_at_the_first_attempt_reaching_the_threshold() -> None:
    lm = DummyLM([{"answer": "two words"}, {"answer": "Brussels"}, {"answer": "never asked"}])
    configure(lm=lm)
    qa = Predict("question -> answer")
    best = BestOfN(module=qa, N=3, reward_fn=one_word, threshold=1.0)
    assert best(question="Capital of Belgium?").answer == "Brussels"
    assert lm.calls == 2
    assert _params(lm, "rollout_id") == [0, 1]
    assert _params(lm, "temperature") == [1.0, 1.0]
    assert qa.lm is None  # attempts ran on private copies


def test_returns_the_best_reward_when_none_reaches_the_threshold() -> None:
    lm = DummyLM([{"answer": "a b c"}, {"answer": "one two"}, {"answer": "x y z w"}])
    rewards = {"a b c": 0.3, "one two": 0.8, "x y z w": 0.5}
    best = BestOfN(
        Predict("q -> answer"), N=3, reward_fn=lambda a, p: rewards[p.answer], threshold=1
    )
    with context(lm=lm):
        assert best(q="?").answer == "one two"
    assert lm.calls == 3


def test_rollout_ids_start_after_the_lms_own() -> None:
    lm = DummyLM([{"answer": "no no"}] * 3, rollout_id=7)
    best = BestOfN(Predict("q -> answer"), N=3, reward_fn=one_word, threshold=1.0)
    best.set_lm(lm)  # the module's own LM (not the settings') is the one rolled out
    best(q="?")
    assert _params(lm, "rollout_id") == [7, 8, 9]


class CopyableLM(DummyLM):
    """A DummyLM with DSPy's ``copy(**overrides)``, as ``dspex.LM`` has."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.copies: list[dict[str, Any]] = []

    def copy(self, **overrides: Any) -> Any:
        self.copies.append(overrides)
        parent = self

        class Copy:
            model = parent.model
            kwargs = {**parent.kwargs, **overrides}

            def generate(
                self, messages: Sequence[Message], params: Mapping[str, Any]
            ) -> LMResponse:
                return parent.generate(messages, {**overrides, **params})

        return Copy()


def test_an_lm_with_copy_is_copied_per_attempt() -> None:
    lm = CopyableLM([{"answer": "too long"}, {"answer": "fine"}])
    configure(lm=lm)
    assert BestOfN(Predict("q -> answer"), N=2, reward_fn=one_word, threshold=1)(q="?").answer == (
        "fine"
    )
    assert lm.copies == [
        {"rollout_id": 0, "temperature": 1.0},
        {"rollout_id": 1, "temperature": 1.0},
    ]


class Flaky(Module):
    """Fails on the attempts listed, answers through its predictor otherwise."""

    def __init__(self, fail_on: set[int]) -> None:
        super().__init__()
        self.qa = Predict("q -> answer")
        self.fail_on = fail_on

    def forward(self, q: str) -> Any:
        rollout = self.qa.lm.kwargs["rollout_id"]
        if rollout in self.fail_on:
            raise RuntimeError(f"attempt {rollout} broke")
        return self.qa(q=q)


def test_failed_attempts_are_skipped_up_to_fail_count(caplog: pytest.LogCaptureFixture) -> None:
    configure(lm=DummyLM([{"answer": "ok"}]))
    with caplog.at_level(logging.WARNING, logger="dspex.programs"):
        pred = BestOfN(Flaky({0, 1}), N=3, reward_fn=one_word, threshold=1.0)(q="?")
    assert pred.answer == "ok"
    assert "attempt 1 (rollout_id=0) failed: RuntimeError: attempt 0 broke" in caplog.text


def test_more_failures_than_fail_count_raise_the_error() -> None:
    configure(lm=DummyLM([{"answer": "ok"}]))
    best = BestOfN(Flaky({0, 1}), N=3, reward_fn=one_word, threshold=1.0, fail_count=1)
    with pytest.raises(RuntimeError, match="attempt 1 broke"):
        best(q="?")


def test_when_every_attempt_fails_the_last_error_is_raised() -> None:
    configure(lm=DummyLM([{"answer": "ok"}]))
    with pytest.raises(RuntimeError, match="attempt 2 broke"):
        BestOfN(Flaky({0, 1, 2}), N=3, reward_fn=one_word, threshold=1.0)(q="?")


def test_rewards_may_be_score_objects_or_dicts() -> None:
    lm = DummyLM([{"answer": "x"}] * 4)
    configure(lm=lm)

    def as_prediction(args: Any, pred: Any) -> Prediction:
        return Prediction(score=1.0, feedback="fine")

    assert BestOfN(Predict("q -> answer"), N=2, reward_fn=as_prediction, threshold=1)(q="?")
    assert lm.calls == 1
    assert BestOfN(Predict("q -> answer"), N=2, reward_fn=lambda a, p: {"score": 0.0}, threshold=1)(
        q="?"
    )
    assert lm.calls == 3
    with pytest.raises(UsageError, match="reward_fn returned 'high'"):
        BestOfN(Predict("q -> answer"), N=1, reward_fn=lambda a, p: "high", threshold=1)(q="?")


def test_only_the_chosen_attempts_trace_reaches_the_caller() -> None:
    lm = DummyLM([{"answer": "no no"}, {"answer": "yes"}])
    configure(lm=lm)
    trace: list[Any] = []
    with context(trace=trace):
        BestOfN(Predict("q -> answer"), N=2, reward_fn=one_word, threshold=1.0)(q="?")
    assert [(inputs, out.answer) for _, inputs, out in trace] == [({"q": "?"}, "yes")]


def test_a_reward_module_is_not_a_parameter_of_the_search() -> None:
    judge = Predict("answer -> verdict")
    best = BestOfN(ChainOfThought("q -> answer"), N=2, reward_fn=judge, threshold=1)
    assert [name for name, _ in best.named_predictors()] == ["module.predict"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"module": lambda q: q}, "needs a dspex Module"),
        ({"N": 0}, "N=0"),
        ({"reward_fn": 1.0}, "must be callable"),
        ({"threshold": "high"}, "threshold='high'"),
        ({"fail_count": -1}, "fail_count=-1"),
    ],
)
def test_bad_arguments_name_the_field(kwargs: dict[str, Any], message: str) -> None:
    args: dict[str, Any] = {
        "module": Predict("q -> answer"),
        "N": 2,
        "reward_fn": one_word,
        "threshold": 1.0,
        **kwargs,
    }
    with pytest.raises(UsageError, match=message):
        BestOfN(**args)


def test_no_lm_anywhere_is_a_clear_error() -> None:
    with pytest.raises(UsageError, match="needs an LM"):
        BestOfN(Predict("q -> answer"), N=2, reward_fn=one_word, threshold=1.0)(q="?")


# -- Refine ----------------------------------------------------------------------------


def test_refine_asks_a_critic_and_hints_the_next_attempt() -> None:
    lm = DummyLM(
        [
            {"answer": "It is Brussels"},
            {"discussion": "too long", "advice": {"self": "Answer with one word."}},
            {"answer": "Brussels"},
        ]
    )
    configure(lm=lm)
    trace: list[Any] = []
    refine = Refine(Predict("question -> answer"), N=3, reward_fn=one_word, threshold=1.0)
    with context(trace=trace):
        assert refine(question="Capital of Belgium?").answer == "Brussels"
    critic, hinted = _user(lm, 1), _user(lm, 2)
    assert "[[ ## reward_code ## ]]\ndef one_word" in critic
    assert '[[ ## module_names ## ]]\n["self"]' in critic
    assert "It is Brussels" in critic  # the failed attempt's trajectory
    assert "[[ ## hint_ ## ]]\nAnswer with one word." in hinted
    assert "hint_" not in _user(lm, 0)
    # the merged trace matches the declared signature: no hint input
    assert [inputs for _, inputs, _ in trace] == [{"question": "Capital of Belgium?"}]
    assert _params(lm, "rollout_id") == [0, None, 1]  # the critic is not a rollout


def test_refine_uses_the_rewards_own_feedback_without_a_critic() -> None:
    lm = DummyLM([{"reasoning": "r", "answer": "two words"}, {"reasoning": "r", "answer": "one"}])
    configure(lm=lm)

    def reward(args: Any, pred: Any) -> Prediction:
        ok = len(pred.answer.split()) == 1
        return Prediction(score=float(ok), feedback="" if ok else "Use exactly one word.")

    refine = Refine(ChainOfThought("question -> answer"), N=3, reward_fn=reward, threshold=1)
    assert refine(question="?").answer == "one"
    assert lm.calls == 2
    assert "[[ ## hint_ ## ]]\nUse exactly one word." in _user(lm, 1)


class TwoStep(Module):
    def __init__(self) -> None:
        super().__init__()
        self.draft = Predict("question -> draft")
        self.polish = Predict("draft -> answer")

    def forward(self, question: str) -> Any:
        return self.polish(draft=self.draft(question=question).draft)


def test_each_predictor_gets_its_own_advice_or_na() -> None:
    lm = DummyLM(
        [
            {"draft": "d1"},
            {"answer": "bad answer"},
            {"discussion": "polish erred", "advice": {"polish": "Keep it short."}},
            {"draft": "d2"},
            {"answer": "good"},
        ]
    )
    configure(lm=lm)
    assert Refine(TwoStep(), N=2, reward_fn=one_word, threshold=1)(question="?").answer == "good"
    assert "[[ ## hint_ ## ]]\nN/A" in _user(lm, 3)
    assert "[[ ## hint_ ## ]]\nKeep it short." in _user(lm, 4)


def test_a_failing_critic_is_logged_and_the_search_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    no_advice = {"discussion": "no advice field"}  # unparseable for the critic's signature
    # the critic's chat reply fails, and so does the JSON retry the adapter makes
    lm = DummyLM([{"answer": "two words"}, no_advice, no_advice, {"answer": "x y"}])
    configure(lm=lm)
    refine = Refine(Predict("question -> answer"), N=2, reward_fn=one_word, threshold=None)
    with caplog.at_level(logging.WARNING, logger="dspex.programs"):
        pred = refine(question="?")
    assert pred.answer == "two words"  # both scored 0: the first best is kept
    assert "feedback critic failed (AdapterParseError" in caplog.text
    assert lm.calls == 4
    assert _params(lm, "rollout_id")[-1] == 1  # the second attempt ran...
    assert "hint_" not in _user(lm, -1)  # ...without a hint


def test_refine_with_no_threshold_runs_all_attempts() -> None:
    answers: list[dict[str, Any]] = [
        {"answer": "w"},
        {"discussion": "d", "advice": {"self": "more"}},
        {"answer": "w w"},
    ]
    lm = DummyLM(answers)
    configure(lm=lm)
    pred = Refine(
        Predict("q -> answer"), N=2, reward_fn=lambda a, p: len(p.answer), threshold=None
    )(q="?")
    assert pred.answer == "w w"
    assert lm.calls == 3


def test_after_a_failing_critic_the_previous_hints_stay() -> None:
    broken = {"discussion": "no advice"}
    lm = DummyLM(
        [
            {"answer": "a b"},
            {"discussion": "d", "advice": {"self": "Shorter."}},
            {"answer": "c d"},
            broken,
            broken,  # the critic's chat reply and its JSON retry both fail
            {"answer": "ok"},
        ]
    )
    configure(lm=lm)
    assert Refine(Predict("q -> answer"), N=3, reward_fn=one_word, threshold=1)(q="?").answer == (
        "ok"
    )
    assert "[[ ## hint_ ## ]]\nShorter." in _user(lm, 2)
    assert "[[ ## hint_ ## ]]\nShorter." in _user(lm, 5)


def test_a_cancelled_run_stops_the_search_at_once() -> None:
    from dspex.actors._program_run import RunContext, activate_run
    from dspex.errors import ProgramError

    lm = DummyLM([{"answer": "never"}])
    configure(lm=lm)
    run = RunContext(label="test")
    run.cancelled.set()

    def call() -> Any:
        activate_run(run)  # as if inside a run that was then cancelled
        return BestOfN(Predict("q -> answer"), N=5, reward_fn=one_word, threshold=1)(q="?")

    with pytest.raises(ProgramError, match="was cancelled"):
        contextvars.copy_context().run(call)
    assert lm.calls == 0
