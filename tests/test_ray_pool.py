"""The Ray pool backend, end to end on one local Ray cluster shared by the module.

The cluster (2 CPUs, no dashboard, usage stats off, loopback only) and the
driver's crew of worker actors start once for the module and stop at its
end. Programs and metrics come from ``tests/ray_programs.py``, which the
workers import (it is on their code search path). LM calls go to a fake
OpenAI server on 127.0.0.1; the workers read its key from their
environment, never from what the driver ships.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import re
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from ray_programs import QA, Sized, exact
from runtime_helpers import SECRET, echo_answers
from wait_helpers import wait_until

import dspex
from dspex.errors import UsageError
from dspex.testing import FakeOpenAI, Fault

pytestmark = [pytest.mark.timeout(180), pytest.mark.usefixtures("clean_settings")]

TESTS = Path(__file__).parent
_QUESTION = re.compile(r"\[\[ ## question ## \]\]\n(\S+)")


@pytest.fixture(scope="module")
def crew() -> Iterator[Any]:
    """A local Ray cluster and the driver's worker actors, for the whole module."""
    from dspex.programs._ray._cluster import import_ray

    ray = import_ray()  # sets RAY_USAGE_STATS_ENABLED=0 before Ray loads
    previous = os.environ.get("OPENAI_API_KEY")
    os.environ["OPENAI_API_KEY"] = SECRET  # the workers' own environment holds the key
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        object_store_memory=100 * 1024 * 1024,
        logging_level="WARNING",
        log_to_driver=False,
        job_config=ray.job_config.JobConfig(code_search_path=[str(TESTS), str(TESTS.parent)]),
    )
    from dspex.programs._ray._dispatch import crew as start_crew
    from dspex.programs._ray._dispatch import shutdown_crew

    try:
        yield start_crew()  # started here, so its threads predate every test's leak check
    finally:
        shutdown_crew()
        ray.shutdown()
        if previous is None:
            os.environ.pop("OPENAI_API_KEY", None)
        else:
            os.environ["OPENAI_API_KEY"] = previous


@pytest.fixture(autouse=True)
def runtime(start_runtime: Any) -> Any:
    """A runtime per test: the LM clients a local run starts stop with it."""
    return start_runtime()


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(api_key=SECRET) as server:
        echo_answers(server)
        yield server


def devset(n: int, wrong_every: int | None = 3) -> list[Any]:
    """``n`` questions; every ``wrong_every``-th one's label differs from the echoed answer."""
    out = []
    for i in range(n):
        wrong = wrong_every is not None and i % wrong_every == 0
        out.append(dspex.Example(question=f"q{i}", answer="x" if wrong else f"q{i}"))
    return [example.with_inputs("question") for example in out]


def remote_lm(fake: FakeOpenAI) -> dspex.LM:
    """No key: the driver ships none; the workers take OPENAI_API_KEY from their environment."""
    return dspex.LM("openai/test-model", api_base=fake.url, cache=False)


def journal_lines(path: Path) -> dict[int, dict[str, Any]]:
    entries: dict[int, dict[str, Any]] = {}
    for line in path.read_text().splitlines():
        record = json.loads(line)
        if "index" in record:
            assert record["index"] not in entries, f"example {record['index']} journaled twice"
            entries[record["index"]] = record
    return entries


def questions_sent(fake: FakeOpenAI) -> list[str]:
    sent = []
    for request in fake.requests:
        match = _QUESTION.search(fake.messages_of(request.json)[-1]["content"])
        assert match is not None, request.json
        sent.append(match.group(1))
    return sent


# -- Evaluate: same score, same journal ------------------------------------------------


def test_evaluate_on_ray_gives_the_local_score_and_journal(
    crew: Any, fake: FakeOpenAI, tmp_path: Path
) -> None:
    examples = devset(300)
    dspex.configure(lm=remote_lm(fake))
    evaluate = dspex.Evaluate(devset=examples, metric=exact, num_threads=16)
    local = evaluate(QA(), journal=tmp_path / "local.jsonl", backend="local")
    assert fake.request_count == 300
    remote = evaluate(QA(), journal=tmp_path / "ray.jsonl", backend="ray")
    assert fake.request_count == 600  # every example ran again, on the workers

    assert local.score == remote.score == 66.67
    assert [(e.question, p.answer, s) for e, p, s in remote.results] == [
        (e.question, p.answer, s) for e, p, s in local.results
    ]
    local_journal = journal_lines(tmp_path / "local.jsonl")
    remote_journal = journal_lines(tmp_path / "ray.jsonl")
    assert len(remote_journal) == 300
    assert remote_journal == local_journal


def test_units_run_in_the_worker_processes(crew: Any, fake: FakeOpenAI) -> None:
    from ray_programs import scoring_pid

    pids = {w["pid"] for w in crew.where()}
    assert len(pids) == 2 and os.getpid() not in pids
    dspex.configure(lm=remote_lm(fake))
    result = dspex.Evaluate(devset=devset(40), metric=scoring_pid, num_threads=8)(
        QA(), backend="ray"
    )
    scored_by = {int(score) for _, _, score in result.results}
    assert scored_by == pids  # both workers scored; the driver scored none


def test_runtime_backend_setting_selects_ray(
    crew: Any, fake: FakeOpenAI, start_runtime: Any
) -> None:
    from ray_programs import scoring_pid

    start_runtime(runtime={"backend": "ray"})
    dspex.configure(lm=remote_lm(fake))
    result = dspex.Evaluate(devset=devset(10), metric=scoring_pid, num_threads=4)(QA())
    assert {int(s) for _, _, s in result.results} <= {w["pid"] for w in crew.where()}


def test_max_errors_stops_the_ray_run_early(crew: Any, fake: FakeOpenAI) -> None:
    fake.configure(fail_rate=1.0, faults=(Fault.error(400),))  # every call fails at once
    dspex.configure(lm=remote_lm(fake))
    result = dspex.Evaluate(devset=devset(200), metric=exact, num_threads=4, max_errors=3)(
        QA(), backend="ray"
    )
    assert result.stopped_early
    assert 3 <= len(result.errors) < 200
    assert fake.request_count < 200  # the rest were never sent


def test_stopping_early_cancels_the_units_running_on_workers(crew: Any, fake: FakeOpenAI) -> None:
    from ray_programs import FailsOnQ0

    fake.latency = 60.0  # only a cancel ends these calls before the test's timeout
    dspex.configure(lm=remote_lm(fake))
    result = dspex.Evaluate(devset=devset(40), metric=exact, num_threads=4, max_errors=1)(
        FailsOnQ0(), backend="ray"
    )
    assert result.stopped_early
    assert [type(e).__name__ for _, e in result.errors] == ["ValueError"]
    assert fake.request_count <= 3  # the 3 started with q0; none after the stop
    # The units on the workers were cancelled: their 60 s LM calls ended, and with
    # them every unit the driver was waiting for.
    wait_until(
        lambda: all(not w.pending for w in crew.workers),
        timeout=15,
        what="the cancelled units to come back from the workers",
    )


# -- a killed worker -------------------------------------------------------------------


def test_killed_worker_loses_nothing_and_counts_nothing_twice(
    crew: Any, fake: FakeOpenAI, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from dspex.programs._ray._cluster import import_ray

    ray = import_ray()
    n, threads = 60, 8
    fake.latency = 0.2
    victim = crew.workers[0]
    pid_before = crew.where()[0]["pid"]
    killed = threading.Event()

    def kill_mid_run() -> None:
        wait_until(lambda: fake.request_count >= 12, what="the run to be under way")
        wait_until(lambda: victim.busy > 0, what="the victim to hold units")
        ray.kill(victim.handle, no_restart=False)  # Ray restarts it (max_restarts)
        killed.set()

    killer = threading.Thread(target=kill_mid_run, name="test-killer")
    killer.start()
    dspex.configure(lm=remote_lm(fake))
    try:
        with caplog.at_level(logging.WARNING, logger="dspex.programs"):
            result = dspex.Evaluate(devset=devset(n), metric=exact, num_threads=threads)(
                QA(), journal=tmp_path / "run.jsonl", backend="ray"
            )
    finally:
        killer.join(timeout=60)
    assert killed.is_set()
    resent = [r for r in caplog.records if "died holding unit" in r.getMessage()]
    assert resent, "no unit was re-sent: the kill did not hit in-flight work"

    # Nothing lost: every example has its result, right score, no error.
    assert not result.errors
    assert [e.question for e, _, _ in result.results] == [f"q{i}" for i in range(n)]
    assert result.score == round(100 * sum(1 for i in range(n) if i % 3) / n, 2)
    # Nothing counted twice: one journal line per example.
    assert sorted(journal_lines(tmp_path / "run.jsonl")) == list(range(n))
    # Upstream: every question asked; only the re-sent units may be asked again.
    asked = Counter(questions_sent(fake))
    assert set(asked) == {f"q{i}" for i in range(n)}
    assert n <= fake.request_count <= n + len(resent)
    # Ray restarted the worker: a new process answers on the same handle.
    assert crew.where()[0]["pid"] != pid_before


# -- parking across the wire -------------------------------------------------------------


def test_an_example_waiting_out_retry_after_on_a_worker_lends_its_driver_slot(
    crew: Any, fake: FakeOpenAI
) -> None:
    fake.schedule = lambda index: Fault.rate_limit(0.5) if index == 0 else None
    dspex.configure(lm=remote_lm(fake))
    result = dspex.Evaluate(devset=devset(4, wrong_every=None), metric=exact, num_threads=1)(
        QA(), backend="ray"
    )
    assert result.score == 100.0
    # q0 parked on its worker; the driver ran the others in its slot meanwhile.
    assert questions_sent(fake) == ["q0", "q1", "q2", "q3", "q0"]
    assert fake.max_in_flight == 1  # the resumed retry waited for the driver's slot


# -- shipping ----------------------------------------------------------------------------


def test_a_program_that_cannot_be_shipped_fails_before_any_work(
    crew: Any, fake: FakeOpenAI
) -> None:
    dspex.configure(lm=remote_lm(fake))
    evaluate = dspex.Evaluate(devset=devset(5), metric=exact, num_threads=2, backend="ray")

    class Local(dspex.Module):  # defined in a function: no import path
        def __init__(self) -> None:
            super().__init__()
            self.answer = dspex.Predict("question -> answer")

        def forward(self, question: str) -> Any:
            return self.answer(question=question)

    with pytest.raises(UsageError, match="inside a function"):
        evaluate(Local())
    with pytest.raises(UsageError, match=r"metric .*lambda"):
        evaluate(QA(), metric=lambda example, prediction, trace=None: 1.0)
    with pytest.raises(UsageError, match="state differs"):
        evaluate(Sized(steps=2))  # Sized() alone builds one step, not two
    assert fake.request_count == 0


def test_no_api_key_is_shipped(fake: FakeOpenAI) -> None:
    from dspex.programs._ray._node import shippable_settings
    from dspex.programs._ray._shipping import ship, ship_settings

    lm = dspex.LM("openai/test-model", api_base=fake.url, api_key=SECRET)
    program = QA()
    program.answer.lm = lm
    settings = dspex.config.Settings(models={"openai/test-model": {"api_key": SECRET}})
    shipped = (ship(program), ship_settings({"lm": lm}), shippable_settings(settings))
    assert SECRET.encode() not in pickle.dumps(shipped)
    assert "api_key" not in shipped[2]["models"]["openai/test-model"]
    assert shipped[0].build().answer.lm.model == "openai/test-model"


def test_bare_predict_with_a_string_signature_ships() -> None:
    from dspex.programs._ray._shipping import ship

    program = dspex.ChainOfThought("question -> answer: int")
    program.predict.demos = [dspex.Example(question="1+1", reasoning="sum", answer=2)]
    rebuilt = ship(program).build()
    assert rebuilt.dump_state() == program.dump_state()
    assert rebuilt.predict.signature.output_fields["answer"].annotation is int


# -- optimizers ----------------------------------------------------------------------------


def test_bootstrap_fewshot_compiles_on_ray_as_locally(crew: Any, fake: FakeOpenAI) -> None:
    trainset = devset(12)
    dspex.configure(lm=remote_lm(fake))

    def compile_on(backend: str) -> Any:
        optimizer = dspex.BootstrapFewShot(
            metric=exact, max_bootstrapped_demos=3, max_labeled_demos=0
        )
        return optimizer.compile(QA(), trainset=trainset, backend=backend)

    local = compile_on("local")
    asked_locally = fake.request_count
    remote = compile_on("ray")
    assert fake.request_count > asked_locally  # the teacher ran again, on the workers
    demos = remote.answer.demos
    assert [d.question for d in demos] == ["q1", "q2", "q4"]  # the first 3 it accepted
    assert all(d.augmented for d in demos)
    assert remote.dump_state() == local.dump_state()


def test_compile_backend_is_checked() -> None:
    optimizer = dspex.BootstrapFewShot(metric=exact)
    with pytest.raises(UsageError, match=r"backend='spark'.*'local'.*'ray'"):
        optimizer.compile(QA(), trainset=devset(2), backend="spark")


def units_sent() -> int:
    """How many units the driver has sent to Ray workers so far (ids count up from 1)."""
    from dspex.programs._ray import _dispatch

    return next(_dispatch._units) - 1  # the peek itself takes one id: ids need not be dense


def test_gepa_compiles_on_ray_as_locally(
    crew: Any, fake: FakeOpenAI, caplog: pytest.LogCaptureFixture
) -> None:
    from ray_programs import SCORED_HERE, upper_feedback
    from upper_task import Task, make_set

    fake.reply = Task().reply
    dspex.configure(lm=remote_lm(fake))
    reflection = dspex.LM("openai/reflect", api_base=fake.url, cache=False)

    def compile_on(backend: str) -> tuple[Any, int, int]:
        SCORED_HERE.clear()
        before = units_sent()
        compiled = dspex.GEPA(
            speculate="valset" if backend == "ray" else False,  # ignored on Ray: same result
            metric=upper_feedback,
            max_metric_calls=40,
            reflection_lm=reflection,
            track_stats=True,
            seed=7,
            num_threads=4,
        ).compile(QA(), trainset=make_set(6), backend=backend)
        return compiled, units_sent() - before - 1, len(SCORED_HERE)

    local, sent_locally, scored_locally = compile_on("local")
    with caplog.at_level(logging.WARNING, logger="dspex.programs"):
        remote, sent_remotely, scored_remotely = compile_on("ray")
    assert any("speculate='valset' is ignored" in r.getMessage() for r in caplog.records)
    assert sent_locally == 0 and scored_locally >= 40
    # Every run was scored on a worker: the driver's metric scored none of them.
    assert scored_remotely == 0 and sent_remotely >= 40
    assert "UPPERCASE" in remote.answer.signature.instructions  # it did evolve
    assert remote.dump_state() == local.dump_state()
    details = [
        (r.to_dict()["candidates"], r.parents, r.val_subscores)
        for r in (local.detailed_results, remote.detailed_results)
    ]
    assert details[0] == details[1]


def test_simba_compiles_on_ray_as_locally(crew: Any, fake: FakeOpenAI) -> None:
    from ray_programs import SCORED_HERE, upper_exact
    from upper_task import Task, make_set

    fake.reply = Task().reply
    dspex.configure(lm=remote_lm(fake))
    trainset = [  # the even questions already in capitals: their rollouts make good demos
        dspex.Example(question=q.upper() if i % 2 == 0 else q, answer=x.answer).with_inputs(
            "question"
        )
        for i, (q, x) in enumerate((x.question, x) for x in make_set(8))
    ]

    def compile_on(backend: str) -> tuple[Any, int, int]:
        SCORED_HERE.clear()
        before = units_sent()
        optimizer = dspex.SIMBA(
            metric=upper_exact, bsize=4, num_candidates=3, max_steps=2, max_demos=2
        )
        compiled = optimizer.compile(QA(), trainset=trainset, seed=1, backend=backend)
        return compiled, units_sent() - before - 1, len(SCORED_HERE)

    local, sent_locally, scored_locally = compile_on("local")
    remote, sent_remotely, scored_remotely = compile_on("ray")
    assert sent_locally == 0 and scored_locally > 0
    assert scored_remotely == 0 and sent_remotely == scored_locally
    assert remote.answer.demos and all(d.answer.isupper() for d in remote.answer.demos)
    assert remote.dump_state() == local.dump_state()
    assert [c["score"] for c in remote.candidate_programs] == [
        c["score"] for c in local.candidate_programs
    ]


def test_gepa_and_simba_refuse_an_unshippable_metric_before_any_work(
    crew: Any, fake: FakeOpenAI
) -> None:
    from upper_task import make_set

    dspex.configure(lm=remote_lm(fake))
    reflection = dspex.LM("openai/reflect", api_base=fake.url, cache=False)
    gepa = dspex.GEPA(
        metric=lambda g, p, t=None, n=None, s=None: 1.0,
        max_metric_calls=10,
        reflection_lm=reflection,
    )
    with pytest.raises(UsageError, match=r"metric .*lambda"):
        gepa.compile(QA(), trainset=make_set(4), backend="ray")
    simba = dspex.SIMBA(metric=exact, bsize=2, num_candidates=2, max_steps=1)
    with pytest.raises(UsageError, match="state differs"):
        simba.compile(Sized(steps=2), trainset=make_set(4), backend="ray")
    assert fake.request_count == 0


def test_gepa_on_ray_resumes_from_its_checkpoint(
    crew: Any, fake: FakeOpenAI, tmp_path: Path
) -> None:
    from ray_programs import upper_feedback
    from upper_task import Task, make_set

    fake.reply = Task().reply
    dspex.configure(lm=remote_lm(fake))
    reflection = dspex.LM("openai/reflect", api_base=fake.url, cache=False)

    def compile_once() -> tuple[Any, int]:
        before = units_sent()
        compiled = dspex.GEPA(
            metric=upper_feedback, max_metric_calls=20, reflection_lm=reflection, seed=7
        ).compile(QA(), trainset=make_set(4), checkpoint=tmp_path / "gepa", backend="ray")
        return compiled, units_sent() - before - 1

    first, sent_first = compile_once()
    asked = fake.request_count
    again, sent_again = compile_once()
    assert sent_first >= 20
    # The journal kept the workers' rollouts (traces by predictor name): all replayed.
    assert sent_again == 0 and fake.request_count == asked
    assert again.dump_state() == first.dump_state()
