"""GEPA and SIMBA: each improves a program on a fake-provider task, under a coordinator."""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest
from runtime_helpers import SECRET
from upper_task import Task, make_set

import dspex
from dspex.errors import UsageError
from dspex.programs._teleprompt._gepa import auto_budget
from dspex.programs._teleprompt._simba import percentile, poisson
from dspex.testing import FakeOpenAI

pytest.importorskip("gepa")


def feedback_metric(
    gold: Any, pred: Any, trace: Any = None, pred_name: Any = None, pred_trace: Any = None
) -> dspex.Prediction:
    ok = pred.answer == gold.answer
    hint = "Correct." if ok else f"Expected {gold.answer!r}: answers must be in UPPERCASE."
    return dspex.Prediction(score=float(ok), feedback=hint)


def exact(gold: Any, pred: Any, trace: Any = None) -> float:
    return float(pred is not None and pred.answer == gold.answer)


# -- GEPA ---------------------------------------------------------------------------------


def test_gepa_evolves_the_instruction_from_the_feedback(start_runtime: Any) -> None:
    rt = start_runtime()
    task = Task()
    seen: list[Any] = []
    lock = threading.Lock()

    def peeking(gold: Any, pred: Any, trace: Any = None, name: Any = None, sub: Any = None) -> Any:
        with lock:
            if not seen:
                seen.append(rt.tree().find("GEPA"))
        return feedback_metric(gold, pred, trace, name, sub)

    with FakeOpenAI(api_key=SECRET, reply=task.reply) as server:
        lm = dspex.LM("openai/task", api_base=server.url, api_key=SECRET)
        reflection = dspex.LM("openai/reflect", api_base=server.url, api_key=SECRET)
        student = dspex.Predict("question -> answer")
        trainset, valset = make_set(6), make_set(4, start=6)
        with dspex.context(lm=lm):
            before = dspex.Evaluate(devset=valset, metric=exact)(student).score
            optimizer = GEPA_light(peeking, reflection)
            compiled = optimizer.compile(student, trainset=trainset, valset=valset)
            after = dspex.Evaluate(devset=valset, metric=exact)(compiled).score
    assert before == 0.0 and after == 100.0
    assert "UPPERCASE" in compiled.signature.instructions
    assert "UPPERCASE" not in student.signature.instructions  # the student is not changed
    assert task.proposals >= 1
    results = compiled.detailed_results
    assert results.val_aggregate_scores[0] == 0.0 and max(results.val_aggregate_scores) == 1.0
    assert results.best_candidate.signature.instructions == compiled.signature.instructions
    assert results.total_metric_calls <= optimizer.max_metric_calls + len(trainset) + len(valset)
    [node] = seen
    assert node.actor_class == "Coordinator"
    assert [(c.id, c.actor_class) for c in node.children] == [("workers", "PoolActor")]
    assert rt.tree().find("GEPA") is None  # gone after the compile


def GEPA_light(metric: Any, reflection: Any, **kwargs: Any) -> dspex.GEPA:
    return dspex.GEPA(
        metric=metric, auto="light", reflection_lm=reflection, track_stats=True, seed=3, **kwargs
    )


def test_gepa_is_deterministic_with_a_seed(start_runtime: Any) -> None:
    start_runtime()
    runs = []
    for _ in range(2):
        task = Task()
        with FakeOpenAI(api_key=SECRET, reply=task.reply) as server:
            lm = dspex.LM("openai/task", api_base=server.url, api_key=SECRET, cache=False)
            reflection = dspex.LM(
                "openai/reflect", api_base=server.url, api_key=SECRET, cache=False
            )
            with dspex.context(lm=lm):
                compiled = dspex.GEPA(
                    metric=feedback_metric,
                    max_metric_calls=60,
                    reflection_lm=reflection,
                    track_stats=True,
                    seed=7,
                    num_threads=4,
                ).compile(dspex.Predict("question -> answer"), trainset=make_set(6))
        details = compiled.detailed_results
        runs.append((details.to_dict()["candidates"], details.parents, details.val_subscores))
    assert runs[0] == runs[1]
    assert len(runs[0][0]) >= 2  # it did evolve something


def test_speculation_prefetches_through_the_cache_and_changes_no_result(
    start_runtime: Any,
) -> None:
    start_runtime()
    runs = []
    for speculate in (False, True):
        task = Task()
        bodies: list[str] = []

        def reply(body: dict[str, Any], task: Task = task, bodies: list[str] = bodies) -> str:
            with task.lock:
                bodies.append(json.dumps({**body, "model": "-"}, sort_keys=True))
            return task.reply(body)

        with FakeOpenAI(api_key=SECRET, reply=reply) as server:
            # A model name per run: each run starts from an empty cache.
            lm = dspex.LM(f"openai/task-{speculate}", api_base=server.url, api_key=SECRET)
            reflection = dspex.LM(
                f"openai/reflect-{speculate}", api_base=server.url, api_key=SECRET
            )
            optimizer = dspex.GEPA(
                metric=feedback_metric,
                max_metric_calls=60,
                reflection_lm=reflection,
                track_stats=True,
                seed=7,
                num_threads=4,
                speculate=speculate,
            )
            with dspex.context(lm=lm):
                compiled = optimizer.compile(
                    dspex.Predict("question -> answer"), trainset=make_set(6), valset=make_set(4, 6)
                )
        details = compiled.detailed_results
        runs.append(
            (details.to_dict()["candidates"], details.parents, details.val_subscores, bodies)
        )
    plain, speculative = runs
    assert plain[:3] == speculative[:3]  # the same search, candidate for candidate
    assert len(plain[0]) >= 2
    # Every call the engine made was made with speculation too (the prefetch makes the same
    # calls, so the cache answers the engine), and the prefetch cost extra calls.
    assert set(plain[3]) <= set(speculative[3])
    assert len(set(speculative[3])) > len(set(plain[3]))
    # Each prompt reached the provider once: the engine's own evaluations were answered by
    # the cache, or joined the prefetch still in flight.
    assert len(speculative[3]) == len(set(speculative[3]))


def test_gepa_speculate_is_checked() -> None:
    reflection = dspex.DummyLM([])
    for level, expected in ((False, "off"), (True, "all"), ("valset", "valset"), ("all", "all")):
        optimizer = dspex.GEPA(
            metric=feedback_metric, auto="light", reflection_lm=reflection, speculate=level
        )
        assert optimizer.speculate == expected
        # A checkpoint does not depend on it: speculation never changes the results.
        plain = dspex.GEPA(metric=feedback_metric, auto="light", reflection_lm=reflection)
        assert optimizer._settings() == plain._settings()
    with pytest.raises(UsageError, match="speculate='sometimes'"):
        dspex.GEPA(
            metric=feedback_metric,
            auto="light",
            reflection_lm=reflection,
            speculate="sometimes",  # type: ignore[arg-type]
        )


def test_gepa_checks_its_arguments() -> None:
    def four(gold: Any, pred: Any, trace: Any, pred_name: Any) -> float:
        return 1.0

    reflection = dspex.DummyLM([])
    with pytest.raises(UsageError, match="five arguments"):
        dspex.GEPA(metric=four, auto="light", reflection_lm=reflection)
    with pytest.raises(UsageError, match="exactly one of auto, max_full_evals"):
        dspex.GEPA(
            metric=feedback_metric, auto="light", max_metric_calls=5, reflection_lm=reflection
        )
    with pytest.raises(UsageError, match="reflection_lm=None"):
        dspex.GEPA(metric=feedback_metric, auto="light")
    with pytest.raises(UsageError, match="auto='huge'"):
        dspex.GEPA(metric=feedback_metric, auto="huge", reflection_lm=reflection)  # type: ignore[arg-type]


def test_gepa_auto_budget_is_dspys() -> None:
    # DSPy 3.4.1 gives these (GEPA.auto_budget, computed with dspy==3.4.1).
    assert auto_budget(1, 6, 10) == 420
    assert auto_budget(1, 12, 100) == 1190
    assert auto_budget(2, 18, 100) == 2045


def test_gepa_is_exported_where_dspy_has_it() -> None:
    from dspex.teleprompt import GEPA, SIMBA

    assert dspex.GEPA is GEPA and dspex.SIMBA is SIMBA


# -- SIMBA --------------------------------------------------------------------------------


def test_simba_improves_the_program_with_demos(start_runtime: Any) -> None:
    rt = start_runtime()
    task = Task()
    seen: list[Any] = []
    lock = threading.Lock()

    def peeking(gold: Any, pred: Any, trace: Any = None) -> float:
        with lock:
            if not seen:
                seen.append(rt.tree().find("SIMBA"))
        return exact(gold, pred)

    with FakeOpenAI(api_key=SECRET, reply=task.reply) as server:
        lm = dspex.LM("openai/task", api_base=server.url, api_key=SECRET)
        student = dspex.Predict("question -> answer")
        # Some gold answers leak into the rollouts: a demo made of one fixes the rest.
        trainset = make_set(8)
        with dspex.context(lm=lm):
            optimizer = dspex.SIMBA(
                metric=peeking, bsize=4, num_candidates=3, max_steps=2, max_demos=2
            )
            compiled = optimizer.compile(student, trainset=_leaky(trainset), seed=1)
            after = dspex.Evaluate(devset=make_set(4, start=20), metric=exact)(compiled).score
    assert after == 100.0
    assert compiled.demos and all(d.answer.isupper() for d in compiled.demos)
    assert compiled.candidate_programs[0]["score"] == 1.0
    assert compiled.candidate_programs[-1]["score"] < 1.0
    assert set(compiled.trial_logs) == {0, 1}
    [node] = seen
    assert node.actor_class == "Coordinator"
    assert [(c.id, c.actor_class) for c in node.children] == [("workers", "PoolActor")]


def _leaky(trainset: list[dspex.Example]) -> list[dspex.Example]:
    """Questions whose even-numbered ones are already in capitals (so the model gets them right)."""
    out = []
    for i, ex in enumerate(trainset):
        q = ex.question.upper() if i % 2 == 0 else ex.question
        out.append(dspex.Example(question=q, answer=ex.answer).with_inputs("question"))
    return out


def test_simba_checks_its_arguments() -> None:
    with pytest.raises(UsageError, match="bsize=0"):
        dspex.SIMBA(metric=exact, bsize=0)
    with pytest.raises(UsageError, match="temperature_for_sampling"):
        dspex.SIMBA(metric=exact, temperature_for_sampling=0)
    with pytest.raises(UsageError, match="fewer than bsize=32"):
        dspex.SIMBA(metric=exact).compile(dspex.Predict("question -> answer"), trainset=make_set(3))


def test_simba_percentile_and_poisson_match_numpy_semantics() -> None:
    import random

    assert percentile([0.0, 1.0], 10) == pytest.approx(0.1)
    assert percentile([3.0, 1.0, 2.0], 90) == pytest.approx(2.8)
    draws = [poisson(random.Random(i), 2.0) for i in range(4000)]
    assert sum(draws) / len(draws) == pytest.approx(2.0, abs=0.1)
    assert poisson(random.Random(0), 0.0) == 0


def test_dspy_import_paths_name_the_same_classes() -> None:
    from dspex.teleprompt import gepa, simba

    assert gepa.GEPA is dspex.GEPA and simba.SIMBA is dspex.SIMBA
    assert gepa.DspyGEPAResult.__name__ == "DspyGEPAResult"


def test_a_checkpoint_of_another_compile_is_refused(start_runtime: Any, tmp_path: Any) -> None:
    start_runtime()
    task = Task()
    with FakeOpenAI(api_key=SECRET, reply=task.reply) as server:
        lm = dspex.LM("openai/task", api_base=server.url, api_key=SECRET)
        reflection = dspex.LM("openai/reflect", api_base=server.url, api_key=SECRET)
        optimizer = dspex.GEPA(
            metric=feedback_metric, max_metric_calls=12, reflection_lm=reflection
        )
        with dspex.context(lm=lm):
            optimizer.compile(
                dspex.Predict("question -> answer"), trainset=make_set(4), checkpoint=tmp_path
            )
            with pytest.raises(UsageError, match="trainset differs"):
                optimizer.compile(
                    dspex.Predict("question -> answer"), trainset=make_set(5), checkpoint=tmp_path
                )
            with pytest.raises(UsageError, match="program differs"):
                optimizer.compile(
                    dspex.Predict("question -> reply"), trainset=make_set(4), checkpoint=tmp_path
                )
            with pytest.raises(UsageError, match="another optimizer"):
                dspex.SIMBA(metric=exact, bsize=2).compile(
                    dspex.Predict("question -> answer"), trainset=make_set(4), checkpoint=tmp_path
                )


def test_a_program_that_cannot_run_ends_the_gepa_compile() -> None:
    # No LM configured: a UsageError, not a "compiled" seed program after a silent budget.
    with dspex.context(lm=None), pytest.raises(UsageError, match="LM"):
        dspex.GEPA(
            metric=feedback_metric, max_metric_calls=50, reflection_lm=dspex.DummyLM([])
        ).compile(dspex.Predict("question -> answer"), trainset=make_set(3))


def test_a_program_that_cannot_run_ends_the_simba_compile() -> None:
    with dspex.context(lm=None), pytest.raises(UsageError, match="LM"):
        dspex.SIMBA(metric=exact, bsize=2, num_candidates=2, max_steps=1).compile(
            dspex.Predict("question -> answer"), trainset=make_set(3)
        )
