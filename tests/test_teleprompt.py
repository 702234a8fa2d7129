"""Optimizers: LabeledFewShot, BootstrapFewShot and its random search, and their coordinator."""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from runtime_helpers import SECRET, chat_answer
from wait_helpers import wait_past

import dspex
from dspex.actors import current_run
from dspex.errors import UsageError
from dspex.programs import _fanout
from dspex.programs._teleprompt import _coordinator
from dspex.supervision import which_children
from dspex.teleprompt import (
    BootstrapFewShot,
    BootstrapFewShotWithRandomSearch,
    LabeledFewShot,
    Teleprompter,
)
from dspex.testing import DummyLM, FakeOpenAI


def make_trainset(n: int) -> list[dspex.Example]:
    # Two-digit questions: DummyLM matches answers by substring ("q1" is in "q10").
    return [
        dspex.Example(question=f"q{i:02d}", answer=f"A{i}").with_inputs("question")
        for i in range(n)
    ]


def oracle(n: int, wrong: tuple[int, ...] = (), prefix: str = "A") -> DummyLM:
    """Answers ``A<i>`` for ``q<i>`` (``nope`` for the ``wrong`` ones), whatever the order."""
    return DummyLM(
        {f"q{i:02d}": {"answer": "nope" if i in wrong else f"{prefix}{i}"} for i in range(n)}
    )


def exact(example: Any, prediction: Any, trace: Any = None) -> bool:
    return bool(example.answer == prediction.answer)


def fields(demos: list[Any]) -> list[dict[str, Any]]:
    return [dict(d.items()) for d in demos]


class TwoStep(dspex.Module):
    """Two predictors: a draft from the question, then the answer from the draft."""

    def __init__(self) -> None:
        super().__init__()
        self.draft = dspex.Predict("question -> draft")
        self.final = dspex.Predict("draft -> answer")

    def forward(self, question: str) -> dspex.Prediction:
        draft = self.draft(question=question).draft
        return self.final(draft=draft)


# -- LabeledFewShot --------------------------------------------------------------------------


def test_labeled_few_shot_samples_k_demos_reproducibly_for_each_predictor() -> None:
    trainset = make_trainset(10)
    student = TwoStep()
    compiled = LabeledFewShot(k=3).compile(student, trainset=trainset)
    rng = random.Random(0)
    assert compiled.draft.demos == rng.sample(trainset, 3)
    assert compiled.final.demos == rng.sample(trainset, 3)  # the next draw of the same rng
    assert student.draft.demos == [] and compiled is not student
    assert not compiled._compiled  # DSPy leaves it uncompiled

    first = LabeledFewShot(k=3).compile(student, trainset=trainset, sample=False)
    assert first.draft.demos == trainset[:3] == first.final.demos
    assert len(LabeledFewShot(k=50).compile(student, trainset=trainset).draft.demos) == 10
    assert LabeledFewShot().compile(student, trainset=[]).draft.demos == []
    with pytest.raises(UsageError, match="k=-1"):
        LabeledFewShot(k=-1)


# -- BootstrapFewShot: what gets accepted ------------------------------------------------------


def test_only_runs_passing_the_metric_become_demos_then_labeled_ones_fill_up() -> None:
    trainset = make_trainset(8)
    lm = oracle(8, wrong=(0, 1, 3))
    student = dspex.Predict("question -> answer")
    optimizer = BootstrapFewShot(
        metric=exact, max_bootstrapped_demos=2, max_labeled_demos=5, num_threads=3
    )
    with dspex.context(lm=lm):
        compiled = optimizer.compile(student, trainset=trainset)
    demos = compiled.demos
    assert fields(demos[:2]) == [
        {"augmented": True, "question": "q02", "answer": "A2"},
        {"augmented": True, "question": "q04", "answer": "A4"},
    ]
    labeled = demos[2:]
    assert len(labeled) == 3  # up to max_labeled_demos in all
    assert all(d in trainset and d not in (trainset[2], trainset[4]) for d in labeled)
    assert compiled._compiled and not getattr(student, "_compiled", False)
    assert student.demos == []
    assert optimizer.error_count == 0


def test_max_bootstrapped_and_max_labeled_demos_bound_the_demos() -> None:
    trainset = make_trainset(6)
    lm = oracle(6)
    with dspex.context(lm=lm):
        only_bootstrapped = BootstrapFewShot(
            metric=exact, max_bootstrapped_demos=3, max_labeled_demos=0, num_threads=2
        ).compile(dspex.Predict("question -> answer"), trainset=trainset)
        calls_before = len(lm.history)
        only_labeled = BootstrapFewShot(
            metric=exact, max_bootstrapped_demos=0, max_labeled_demos=4
        ).compile(dspex.Predict("question -> answer"), trainset=trainset)
    assert [d.question for d in only_bootstrapped.demos] == ["q00", "q01", "q02"]
    assert all(d.augmented for d in only_bootstrapped.demos)
    assert len(lm.history) == calls_before  # no bootstrapping: the teacher never ran
    assert len(only_labeled.demos) == 4
    assert not any("augmented" in d for d in only_labeled.demos)


def test_demos_follow_trainset_order_whatever_finishes_first() -> None:
    later_done = threading.Event()
    finished: list[str] = []
    lock = threading.Lock()

    class Gated(dspex.Module):
        """q00 waits until q02 has finished, so completion order differs from input order."""

        def __init__(self) -> None:
            super().__init__()
            self.predict = dspex.Predict("question -> answer")

        def forward(self, question: str) -> dspex.Prediction:
            if question == "q00" and not later_done.wait(10):
                raise RuntimeError("q02 never finished")
            prediction = self.predict(question=question)
            with lock:
                finished.append(question)
            if question == "q02":
                later_done.set()
            return prediction

    trainset = make_trainset(6)
    with dspex.context(lm=oracle(6)):
        compiled = BootstrapFewShot(
            metric=exact, max_bootstrapped_demos=2, max_labeled_demos=0, num_threads=4
        ).compile(Gated(), trainset=trainset)
    assert finished.index("q02") < finished.index("q00")
    assert [d.question for d in compiled.predict.demos] == ["q00", "q01"]


def test_the_teacher_never_sees_its_own_example_among_its_demos() -> None:
    # follow_examples answers from a matching demo: only a leaked example could pass.
    lm = DummyLM(follow_examples=True)
    with dspex.context(lm=lm):
        compiled = BootstrapFewShot(metric=exact, max_labeled_demos=16).compile(
            dspex.Predict("question -> answer"), trainset=make_trainset(4)
        )
    assert not any("augmented" in d for d in compiled.demos)
    assert len(lm.history) == 4  # every example was tried, none passed


def test_a_given_teacher_produces_the_demos_and_stays_untouched() -> None:
    trainset = make_trainset(4)
    student_lm, teacher_lm = oracle(4), oracle(4, prefix="T")
    teacher = dspex.Predict("question -> answer")
    teacher.lm = teacher_lm
    with dspex.context(lm=student_lm):
        compiled = BootstrapFewShot(max_bootstrapped_demos=2, max_labeled_demos=0).compile(
            dspex.Predict("question -> answer"), teacher=teacher, trainset=trainset
        )
        assert student_lm.history == [] and len(teacher_lm.history) >= 2
        default = BootstrapFewShot(max_bootstrapped_demos=2, max_labeled_demos=0).compile(
            dspex.Predict("question -> answer"), trainset=trainset
        )
    assert [d.answer for d in compiled.demos] == ["T0", "T1"]  # metric=None accepts all
    assert [d.answer for d in default.demos] == ["A0", "A1"]
    assert len(student_lm.history) >= 2
    assert teacher.demos == [] and teacher.lm is teacher_lm
    assert compiled.lm is None  # the student is a reset copy


def test_each_predictor_of_a_multi_step_program_gets_its_own_demos() -> None:
    answers: dict[str, dict[str, str]] = {}
    for i in range(4):
        answers[f"q{i:02d}"] = {"draft": f"draft-{i}x"}
        answers[f"draft-{i}x"] = {"answer": f"A{i}"}
    with dspex.context(lm=DummyLM(answers)):
        compiled = BootstrapFewShot(
            metric=exact, max_bootstrapped_demos=2, max_labeled_demos=3, num_threads=2
        ).compile(TwoStep(), trainset=make_trainset(4))
    draft, final = compiled.draft.demos, compiled.final.demos
    assert fields(draft[:2]) == [
        {"augmented": True, "question": "q00", "draft": "draft-0x"},
        {"augmented": True, "question": "q01", "draft": "draft-1x"},
    ]
    assert fields(final[:2]) == [
        {"augmented": True, "draft": "draft-0x", "answer": "A0"},
        {"augmented": True, "draft": "draft-1x", "answer": "A1"},
    ]
    assert len(draft) == len(final) == 3  # one labeled demo each on top


def test_chain_of_thought_demos_carry_the_reasoning() -> None:
    lm = DummyLM({f"q{i:02d}": {"reasoning": f"because {i}", "answer": f"A{i}"} for i in range(3)})
    with dspex.context(lm=lm):
        compiled = BootstrapFewShot(
            metric=exact, max_bootstrapped_demos=1, max_labeled_demos=1
        ).compile(dspex.ChainOfThought("question -> answer"), trainset=make_trainset(3))
    [name] = [name for name, _ in compiled.named_predictors()]
    assert name == "predict"
    assert fields(compiled.predict.demos[:1]) == [
        {"augmented": True, "question": "q00", "reasoning": "because 0", "answer": "A0"}
    ]


def test_a_predictor_called_twice_keeps_one_demo_chosen_the_same_way_each_time() -> None:
    class Twice(dspex.Module):
        def __init__(self) -> None:
            super().__init__()
            self.step = dspex.Predict("question -> answer")

        def forward(self, question: str) -> dspex.Prediction:
            self.step(question=question + "-first")
            return self.step(question=question)

    lm = DummyLM({f"q{i:02d}": {"answer": f"A{i}"} for i in range(3)})

    def compile_once() -> list[dict[str, Any]]:
        with dspex.context(lm=lm):
            compiled = BootstrapFewShot(
                metric=exact, max_bootstrapped_demos=3, max_labeled_demos=0, num_threads=3
            ).compile(Twice(), trainset=make_trainset(3))
        return fields(compiled.step.demos)

    first = compile_once()
    assert len(first) == 3  # one demo per example, not two
    assert [d["question"].removesuffix("-first") for d in first] == ["q00", "q01", "q02"]
    assert compile_once() == first


# -- rounds, errors --------------------------------------------------------------------------


def test_later_rounds_retry_with_a_fresh_rollout_at_temperature_one() -> None:
    lm = DummyLM([{"answer": "wrong"}, {"answer": "A0"}])  # in order: one thread
    with dspex.context(lm=lm):
        compiled = BootstrapFewShot(
            metric=exact, max_rounds=3, max_labeled_demos=0, num_threads=1
        ).compile(dspex.Predict("question -> answer"), trainset=make_trainset(1))
    assert fields(compiled.demos) == [{"augmented": True, "question": "q00", "answer": "A0"}]
    first, second = (entry["params"] for entry in lm.history)
    assert "rollout_id" not in first and first["temperature"] == 0.0
    assert second["rollout_id"] == 1 and second["temperature"] == 1.0
    assert len(lm.history) == 2  # accepted in round 1: no round 2


def test_each_rollout_is_a_new_request_past_the_cache(start_runtime: Any) -> None:
    start_runtime()
    seen: list[dict[str, Any]] = []

    def reply(body: dict[str, Any]) -> str:
        seen.append(body)
        return chat_answer("A0" if len(seen) == 3 else "wrong")

    with FakeOpenAI(api_key=SECRET, reply=reply) as server:
        lm = dspex.LM("openai/test-model", api_base=server.url, api_key=SECRET)
        optimizer = BootstrapFewShot(metric=exact, max_rounds=3, max_labeled_demos=0)
        with dspex.context(lm=lm):
            compiled = optimizer.compile(
                dspex.Predict("question -> answer"), trainset=make_trainset(1)
            )
            again = optimizer.compile(
                dspex.Predict("question -> answer"), trainset=make_trainset(1)
            )
        count = server.request_count
    assert count == 3  # rounds 1 and 2 differ only by rollout_id; the rerun is all cached
    assert [body.get("temperature") for body in seen[1:]] == [1.0, 1.0]
    assert not any("rollout_id" in body for body in seen)  # never sent to the provider
    assert [d.answer for d in compiled.demos] == ["A0"] == [d.answer for d in again.demos]


def test_a_raising_metric_counts_as_an_error_up_to_max_errors(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def picky(example: Any, prediction: Any, trace: Any = None) -> bool:
        if example.question in ("q01", "q03"):
            raise ValueError(f"cannot judge {example.question}")
        return exact(example, prediction)

    trainset = make_trainset(5)
    with dspex.context(lm=oracle(5)):
        lenient = BootstrapFewShot(metric=picky, max_errors=5, max_labeled_demos=0)
        compiled = lenient.compile(dspex.Predict("question -> answer"), trainset=trainset)
        strict = BootstrapFewShot(metric=picky, max_errors=2, max_labeled_demos=0, num_threads=4)
        with pytest.raises(ValueError, match="cannot judge q03") as raised:
            strict.compile(dspex.Predict("question -> answer"), trainset=trainset)
    assert [d.question for d in compiled.demos] == ["q00", "q02", "q04"]
    assert lenient.error_count == 2
    assert "cannot judge q01" in caplog.text
    assert any("max_errors=2" in note for note in raised.value.__notes__)


def test_timeout_cancels_a_teacher_run_at_its_next_lm_call() -> None:
    class Slow(dspex.Module):
        def __init__(self) -> None:
            super().__init__()
            self.predict = dspex.Predict("question -> answer")

        def forward(self, question: str) -> dspex.Prediction:
            if question == "q00":  # overruns its deadline, then calls the LM
                run = current_run()
                assert run is not None and run.deadline is not None
                wait_past(run.deadline)
            return self.predict(question=question)

    with dspex.context(lm=oracle(3)):
        # Long enough that q01 and q02 finish in time on a busy machine.
        optimizer = BootstrapFewShot(metric=exact, max_labeled_demos=0, timeout=1.0)
        compiled = optimizer.compile(Slow(), trainset=make_trainset(3))
    assert [d.question for d in compiled.predict.demos] == ["q01", "q02"]
    assert optimizer.error_count == 1


# -- the coordinator -----------------------------------------------------------------------


def test_the_compile_runs_under_a_coordinator_that_is_gone_afterwards(start_runtime: Any) -> None:
    rt = start_runtime()
    coordinators = rt.whereis("coordinators")
    seen: list[tuple[list[str], Any]] = []

    def peeking(example: Any, prediction: Any, trace: Any = None) -> bool:
        if example.question == "q00":
            ids = [child.id for child in which_children(coordinators, timeout=5)]
            seen.append((ids, rt.tree().find("BootstrapFewShot")))
        return True

    with dspex.context(lm=oracle(3)):
        BootstrapFewShot(metric=peeking, num_threads=2).compile(
            dspex.Predict("question -> answer"), trainset=make_trainset(3)
        )
    [(ids, node)] = seen
    assert ids == ["BootstrapFewShot"]
    assert node.actor_class == "Coordinator" and node.restart is dspex.Restart.TEMPORARY
    assert [(c.id, c.actor_class) for c in node.children] == [("workers", "PoolActor")]
    assert which_children(coordinators, timeout=5) == []


def test_a_crashed_worker_is_restarted_and_its_example_retried(start_runtime: Any) -> None:
    start_runtime()
    crashed: list[str] = []

    class CrashOnce(dspex.Module):
        def __init__(self) -> None:
            super().__init__()
            self.predict = dspex.Predict("question -> answer")

        def forward(self, question: str) -> dspex.Prediction:
            if question == "q01" and not crashed:
                crashed.append(question)
                raise SystemExit("worker down")
            return self.predict(question=question)

    with dspex.context(lm=oracle(3)):
        optimizer = BootstrapFewShot(metric=exact, max_labeled_demos=0, num_threads=2)
        compiled = optimizer.compile(CrashOnce(), trainset=make_trainset(3))
    assert crashed == ["q01"]
    assert [d.question for d in compiled.predict.demos] == ["q00", "q01", "q02"]
    assert optimizer.error_count == 0


def test_without_a_runtime_the_pool_runs_unsupervised(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_coordinator, "fan_out_runtime", lambda: None)
    inside: list[Any] = []

    def metric(example: Any, prediction: Any, trace: Any = None) -> bool:
        inside.append(_fanout.coordination.get())
        return exact(example, prediction)

    with dspex.context(lm=oracle(2)):
        compiled = BootstrapFewShot(metric=metric, num_threads=2).compile(
            dspex.Predict("question -> answer"), trainset=make_trainset(2)
        )
    assert [d.question for d in compiled.demos[:2]] == ["q00", "q01"]
    assert inside == [None, None]  # a compile nested in an example would get its own pool


# -- BootstrapFewShotWithRandomSearch -----------------------------------------------------------


def _search_setup(n: int) -> tuple[list[dspex.Example], dspex.Predict, DummyLM]:
    """A teacher that knows every answer; students answer only what their demos show."""
    teacher = dspex.Predict("question -> answer")
    teacher.lm = oracle(n)
    return make_trainset(n), teacher, DummyLM(follow_examples=True)


def test_random_search_keeps_the_best_candidate_and_lists_them_all(start_runtime: Any) -> None:
    rt = start_runtime()
    trainset, teacher, student_lm = _search_setup(6)
    during: list[list[str]] = []
    evaluating: list[list[str]] = []

    def metric(example: Any, prediction: Any, trace: Any = None) -> bool:
        coordinators = which_children(rt.whereis("coordinators"), timeout=5)
        if trace is not None:  # a bootstrap run (Evaluate passes no trace)
            during.append([c.id for c in coordinators])
        else:  # an Evaluate of a candidate: its pool sits inside the coordinator
            [coordinator] = coordinators
            assert coordinator.ref is not None
            evaluating.append([c.id for c in which_children(coordinator.ref, timeout=5)])
        return exact(example, prediction)

    search = BootstrapFewShotWithRandomSearch(
        metric=metric,
        max_bootstrapped_demos=3,
        max_labeled_demos=0,
        num_candidate_programs=3,
        num_threads=2,
    )
    with dspex.context(lm=student_lm):
        best = search.compile(
            dspex.Predict("question -> answer"), teacher=teacher, trainset=trainset
        )
    candidates = best.candidate_programs
    sizes = {seed: random.Random(seed).randint(1, 3) for seed in range(3)}
    expected = {-3: 0.0, -2: 0.0, -1: 50.0} | {s: round(100 * k / 6, 2) for s, k in sizes.items()}
    assert {c["seed"]: c["score"] for c in candidates} == expected
    assert [c["score"] for c in candidates] == sorted(expected.values(), reverse=True)
    assert candidates[0]["seed"] == -1 and candidates[0]["program"] is best
    assert all(len(c["subscores"]) == 6 for c in candidates)
    assert [d.question for d in best.demos] == ["q00", "q01", "q02"]
    assert best._compiled
    assert during and all(ids == ["BootstrapFewShotWithRandomSearch"] for ids in during)
    assert evaluating and all(
        len(ids) == 2 and ids[0] == "workers" and ids[1].startswith("evaluate-")
        for ids in evaluating
    )
    assert which_children(rt.whereis("coordinators"), timeout=5) == []


def test_random_search_restrict_and_stop_at_score() -> None:
    trainset, teacher, student_lm = _search_setup(4)
    make = lambda **kw: BootstrapFewShotWithRandomSearch(  # noqa: E731
        metric=exact, max_bootstrapped_demos=2, max_labeled_demos=0, num_threads=2, **kw
    )
    student = dspex.Predict("question -> answer")
    with dspex.context(lm=student_lm):
        only = make(num_candidate_programs=5).compile(
            student, teacher=teacher, trainset=trainset, restrict=[-1]
        )
        once = make(num_candidate_programs=5).compile(  # a single-use iterator works too
            student, teacher=teacher, trainset=trainset, restrict=iter([-1])
        )
        stopped = make(num_candidate_programs=5, stop_at_score=50.0).compile(
            student, teacher=teacher, trainset=trainset
        )
        with pytest.raises(UsageError, match="restrict"):
            make().compile(student, teacher=teacher, trainset=trainset, restrict=[99])
    assert [c["seed"] for c in only.candidate_programs] == [-1]
    assert [c["seed"] for c in once.candidate_programs] == [-1]
    assert sorted(c["seed"] for c in stopped.candidate_programs) == [-3, -2, -1]


# -- state, arguments, import paths ------------------------------------------------------------


def test_a_compiled_program_saves_and_loads_its_demos(tmp_path: Path) -> None:
    with dspex.context(lm=oracle(5, wrong=(1,))):
        compiled = BootstrapFewShot(
            metric=exact, max_bootstrapped_demos=2, max_labeled_demos=3
        ).compile(TwoStepAsOne(), trainset=make_trainset(5))
    path = tmp_path / "program.json"
    compiled.save(path)
    loaded = TwoStepAsOne().load(path)
    assert loaded.predict.demos == [d.toDict() for d in compiled.predict.demos]
    assert loaded.predict.demos[0]["augmented"] is True
    assert loaded.dump_state() == compiled.dump_state()


class TwoStepAsOne(dspex.Module):
    def __init__(self) -> None:
        super().__init__()
        self.predict = dspex.Predict("question -> answer")

    def forward(self, question: str) -> dspex.Prediction:
        return self.predict(question=question)


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: BootstrapFewShot(max_rounds=0), "max_rounds=0"),
        (lambda: BootstrapFewShot(metric="exact"), "metric='exact'"),
        (lambda: BootstrapFewShot(teacher_settings=[1]), "teacher_settings"),
        (lambda: BootstrapFewShot(max_errors=-1), "max_errors=-1"),
        (lambda: BootstrapFewShotWithRandomSearch(metric=None), "metric=None"),
    ],
)
def test_bad_options_raise_errors_naming_the_field(make: Callable[[], Any], match: str) -> None:
    with pytest.raises(UsageError, match=match):
        make()


def test_bad_compile_arguments_raise_errors_naming_the_fix() -> None:
    optimizer = BootstrapFewShot(metric=exact)
    unmarked = [dspex.Example(question="q", answer="a")]
    with pytest.raises(UsageError, match="with_inputs"):
        optimizer.compile(dspex.Predict("question -> answer"), trainset=unmarked)
    with pytest.raises(UsageError, match="structure"):
        optimizer.compile(TwoStep(), teacher=TwoStepAsOne(), trainset=make_trainset(2))
    compiled = dspex.Predict("question -> answer")
    compiled._compiled = True
    with pytest.raises(UsageError, match="already compiled"):
        optimizer.compile(compiled, trainset=make_trainset(2))


def test_dspy_import_paths() -> None:
    import dspex.programs._teleprompt as impl
    from dspex import teleprompt

    assert teleprompt.BootstrapFewShot is impl.BootstrapFewShot
    assert issubclass(BootstrapFewShotWithRandomSearch, Teleprompter)
    assert BootstrapFewShot(metric=exact).get_params()["metric"] is exact
