"""COPRO: proposals, candidates scored in parallel on its coordinator, DSPy's results."""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from typing import Any

import pytest

import dspex
from dspex.supervision import which_children
from dspex.teleprompt import COPRO
from dspex.testing import DummyLM

pytestmark = pytest.mark.usefixtures("clean_settings")

CAPS = "Answer in capital letters."


def trainset() -> list[dspex.Example]:
    rows = (("capital of France?", "PARIS"), ("capital of Peru?", "LIMA"))
    return [dspex.Example(question=q, answer=a).with_inputs("question") for q, a in rows]


def exact(example: Any, prediction: Any, trace: Any = None) -> bool:
    return bool(example.answer == prediction.answer)


class CapsLM(DummyLM):
    """Right (upper case) only when the system prompt carries the CAPS instruction.

    ``barrier`` (optional) makes every call wait for another one: calls that
    pass it ran at the same time.
    """

    def __init__(self, barrier: threading.Barrier | None = None) -> None:
        super().__init__()
        self.barrier = barrier
        self.met: list[bool] = []

    def generate(self, messages: Sequence[Any], params: Mapping[str, Any]) -> Any:
        if self.barrier is not None:
            try:
                self.barrier.wait()
                self.met.append(True)
            except threading.BrokenBarrierError:
                self.met.append(False)
        return super().generate(messages, params)

    def _answer(self, messages: Sequence[Any], as_json: bool) -> str:
        last = str(messages[-1]["content"])
        answer = "PARIS" if "France" in last else "LIMA"
        if CAPS not in str(messages[0]["content"]):
            answer = answer.lower()
        return f"[[ ## answer ## ]]\n{answer}\n\n[[ ## completed ## ]]"


def proposals(instruction: str, count: int = 20) -> DummyLM:
    answer = {"proposed_instruction": f'"{instruction}"', "proposed_prefix_for_output_field": "A:"}
    return DummyLM([answer] * count)


def test_copro_keeps_the_instruction_that_scores_best() -> None:
    prompt_lm = proposals(CAPS)
    student = dspex.Predict("question -> answer")
    dspex.configure(lm=CapsLM())
    best = COPRO(
        prompt_model=prompt_lm, metric=exact, breadth=2, depth=2, track_stats=True
    ).compile(student, trainset=trainset(), eval_kwargs={"num_threads": 1})
    signature = best.signature
    assert signature.instructions == CAPS  # quotes stripped, as DSPy does
    assert signature.output_fields["answer"].prefix == "A:"
    assert student.signature.instructions != CAPS  # the student is left as it was
    assert best.total_calls == 4  # 2 rounds of breadth (2) candidates
    scores = [c["score"] for c in best.candidate_programs]
    assert scores == [100.0, 0.0]  # the repeat of CAPS kept once; the original scores 0
    # the prompt model: breadth-1 proposals first, then breadth from the attempts
    assert [entry["kwargs"]["n"] for entry in prompt_lm.history] == [1, 2]
    assert prompt_lm.history[0]["kwargs"]["temperature"] == 1.4
    attempts = str(prompt_lm.history[1]["messages"][-1]["content"])
    assert "Resulting Score #2: 100.0" in attempts and "Resulting Score #1: 0.0" in attempts
    # stats per predictor name: latest per round, best before each new round and at the end
    assert list(best.results_best) == list(best.results_latest) == ["self"]
    assert best.results_latest["self"]["max"] == [100.0, 100.0]
    assert best.results_best["self"]["depth"] == [0, 1]


def test_copro_scores_a_rounds_candidates_at_the_same_time() -> None:
    # One example, one thread per evaluation: the two candidates' LM calls can only
    # meet at the barrier if their evaluations run in parallel.
    lm = CapsLM(threading.Barrier(2, timeout=10))
    dspex.configure(lm=lm, num_threads=4)
    best = COPRO(prompt_model=proposals(CAPS), metric=exact, breadth=2, depth=1).compile(
        dspex.Predict("question -> answer"), trainset=trainset()[:1], eval_kwargs={"num_threads": 1}
    )
    assert lm.met == [True, True]
    assert best.signature.instructions == CAPS


class TwoSteps(dspex.Module):
    def __init__(self) -> None:
        super().__init__()
        self.first = dspex.Predict("question -> answer")
        self.second = dspex.Predict("question -> answer")

    def forward(self, question: str) -> dspex.Prediction:
        self.first(question=question)
        return self.second(question=question)


def test_copro_is_deterministic_and_rescores_all_candidates_with_several_predictors() -> None:
    def run() -> tuple[Any, ...]:
        dspex.configure(lm=CapsLM(), num_threads=8)
        best = COPRO(prompt_model=proposals(CAPS), metric=exact, breadth=3, depth=2).compile(
            TwoSteps(), trainset=trainset(), eval_kwargs={"num_threads": 2}
        )
        return (
            best.total_calls,
            [(c["instruction"], c["score"], c["depth"]) for c in best.candidate_programs],
            best.dump_state(),
        )

    first = run()
    assert run() == first
    # round 1: 3 candidates per predictor; round 2: all 3 + 3 new ones, per predictor
    assert first[0] == 2 * 3 + 2 * 6
    assert first[2]["second"]["signature"]["instructions"] == CAPS


def test_the_compile_runs_under_a_coordinator_that_is_gone_afterwards(start_runtime: Any) -> None:
    rt = start_runtime()
    seen: list[list[str]] = []

    def peeking(example: Any, prediction: Any, trace: Any = None) -> bool:
        node = rt.tree().find("COPRO")
        seen.append([node.actor_class, *(c.id for c in node.children)])
        return exact(example, prediction)

    dspex.configure(lm=CapsLM())
    COPRO(prompt_model=proposals(CAPS), metric=peeking, breadth=2, depth=1).compile(
        dspex.Predict("question -> answer"), trainset=trainset(), eval_kwargs={"num_threads": 1}
    )
    assert seen and all(ids[0] == "Coordinator" and ids[1] == "workers" for ids in seen)
    assert any(any(i.startswith("evaluate-") for i in ids[2:]) for ids in seen)
    assert which_children(rt.whereis("coordinators"), timeout=5) == []


def test_copro_fails_on_a_prompt_model_error_and_cleans_up(start_runtime: Any) -> None:
    rt = start_runtime()
    dspex.configure(lm=CapsLM())
    with pytest.raises(dspex.AdapterParseError):  # DummyLM out of answers: no fields parse
        COPRO(prompt_model=DummyLM([]), metric=exact, breadth=2, depth=1).compile(
            dspex.Predict("question -> answer"), trainset=trainset()
        )
    assert which_children(rt.whereis("coordinators"), timeout=5) == []


def test_copro_checks_its_arguments() -> None:
    with pytest.raises(dspex.UsageError, match="Breadth must be greater than 1"):
        COPRO(metric=exact, breadth=1)
    with pytest.raises(dspex.UsageError, match=r"COPRO\(depth=0\)"):
        COPRO(metric=exact, depth=0)
    with pytest.raises(dspex.UsageError, match="needs metric"):
        COPRO().compile(dspex.Predict("q -> a"), trainset=trainset())
    with pytest.raises(dspex.UsageError, match="eval_kwargs"):
        COPRO(metric=exact).compile(
            dspex.Predict("q -> a"), trainset=trainset(), eval_kwargs=[("num_threads", 1)]
        )
    with pytest.raises(dspex.UsageError, match="with_inputs"):
        COPRO(metric=exact).compile(
            dspex.Predict("q -> a"), trainset=[dspex.Example(question="q", answer="a")]
        )


def test_dspy_import_paths_name_the_same_classes() -> None:
    from dspex.teleprompt import ensemble, knn_fewshot, signature_opt

    assert signature_opt.COPRO is COPRO is dspex.COPRO
    assert ensemble.Ensemble is dspex.Ensemble is dspex.teleprompt.Ensemble
    assert knn_fewshot.KNNFewShot is dspex.KNNFewShot
    assert dspex.KNN is dspex.programs.KNN
    assert dspex.BootstrapFewShotWithOptuna is dspex.teleprompt.BootstrapFewShotWithOptuna
