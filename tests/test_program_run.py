"""ProgramRun: one job per transient actor, context carried, failures isolated."""

from __future__ import annotations

import contextvars
import threading
import traceback
from concurrent.futures import Future
from typing import Any

import pytest

from dspex.actors._program_run import (
    CancelEvent,
    ProgramRun,
    RunContext,
    RunJob,
    current_run,
    wrap_program_error,
)
from dspex.errors import AdapterParseError, ProgramError
from dspex.supervision import wait_dead

VAR: contextvars.ContextVar[str] = contextvars.ContextVar("VAR", default="unset")


def _run(fn: Any, run: RunContext | None = None) -> Future[Any]:
    ref = ProgramRun.start_link()
    reply: Future[Any] = Future()
    ref.tell(RunJob(fn, contextvars.copy_context(), run or RunContext(label="t"), reply))
    assert wait_dead(ref, 5)  # the run stops itself after replying
    return reply


def test_result_and_context_travel_into_the_run() -> None:
    token = VAR.set("from-caller")
    try:
        seen: dict[str, Any] = {}

        def job() -> int:
            seen["var"] = VAR.get()
            seen["run"] = current_run()
            return 42

        run = RunContext(label="ctx")
        assert _run(job, run).result(timeout=5) == 42
    finally:
        VAR.reset(token)
    assert seen["var"] == "from-caller"
    assert seen["run"] is run
    assert current_run() is None


def test_user_error_keeps_type_traceback_and_is_a_program_error() -> None:
    def job() -> None:
        raise ValueError("bad value in user code")

    with pytest.raises(ValueError, match="bad value") as info:
        _run(job).result(timeout=5)
    err = info.value
    assert isinstance(err, ProgramError)
    assert isinstance(err.original, ValueError)
    assert err.__cause__ is err.original
    frames = traceback.extract_tb(err.original.__traceback__)
    assert any(f.name == "job" for f in frames)


def test_base_exception_in_user_code_is_contained() -> None:
    def job() -> None:
        raise SystemExit(2)

    with pytest.raises(ProgramError) as info:
        _run(job).result(timeout=5)
    assert isinstance(info.value.original, SystemExit)


def test_layout_conflicts_fall_back_to_plain_program_error() -> None:
    err = wrap_program_error(FileNotFoundError(2, "nope"), RunContext(label="x"))
    assert isinstance(err, ProgramError)
    assert isinstance(err.original, FileNotFoundError)


def test_errors_with_required_keywords_keep_their_type() -> None:
    # AdapterParseError's __init__ needs raw=: the wrapper must not call it.
    original = AdapterParseError("no answer field", raw="???", adapter="chat", field="answer")
    err = wrap_program_error(original, RunContext(label="x"))
    assert isinstance(err, AdapterParseError) and isinstance(err, ProgramError)
    assert (err.raw, err.adapter, err.field) == ("???", "chat", "answer")
    assert err.original is original and err.__cause__ is original
    assert str(err) == "no answer field"  # the user's message, as DSPy re-raises it
    assert err.run_label == "x" and any("raised in program run" in n for n in err.__notes__)


def test_a_wrapped_user_error_keeps_its_message_and_names_the_run_elsewhere() -> None:
    def job() -> None:
        raise ValueError("empty question")

    with pytest.raises(ValueError) as info:
        _run(job).result(timeout=5)
    err = info.value
    assert str(err) == "empty question"
    assert isinstance(err, ProgramError) and err.run_id is not None
    assert err.__notes__ == [f"raised in program run {err.run_id} ({err.run_label}): ValueError"]
    key = wrap_program_error(KeyError("answer"), RunContext(label="x"))
    assert str(key) == str(KeyError("answer")) and isinstance(key, KeyError)
    plain = wrap_program_error(FileNotFoundError(2, "nope"), RunContext(label="x"))
    assert str(plain) == str(FileNotFoundError(2, "nope"))


def test_deadline_and_cancel_checks() -> None:
    RunContext().check_deadline()
    with pytest.raises(ProgramError, match="deadline"):
        RunContext(deadline=0.0).check_deadline()
    run = RunContext()
    run.cancelled.set()
    with pytest.raises(ProgramError, match="cancelled"):
        run.check_deadline()


def test_run_context_behaves_as_the_dataclass_it_was() -> None:
    # A slotted class now (cheaper to define on a cold start and to make per run):
    # the same defaults, equality without runtime/lease, repr, and a replace().
    first, second = RunContext(label="a"), RunContext(label="a")
    assert first.run_id != second.run_id and first.trace == [] and first.deadline is None
    assert isinstance(first.cancelled, CancelEvent) and first.runtime is None
    twin = first.replace(runtime=object(), lease=object())
    assert twin == first and twin is not first and twin.trace is first.trace
    linked = threading.Event()
    moved = first.replace(cancelled=linked)
    assert moved.cancelled is linked and moved.run_id == first.run_id and moved != first
    assert repr(first).startswith(f"RunContext(run_id={first.run_id}, deadline=None, trace=[]")
    assert "runtime" not in repr(twin)
    with pytest.raises(TypeError):
        hash(first)


def test_before_hook_runs_in_the_run_thread_before_the_job() -> None:
    order: list[tuple[str, int]] = []

    def before() -> None:
        order.append(("before", threading.get_ident()))

    def job() -> int:
        order.append(("job", threading.get_ident()))
        return 1

    ref = ProgramRun.start_link()
    reply: Future[Any] = Future()
    ref.tell(RunJob(job, contextvars.copy_context(), RunContext(), reply, before))
    assert reply.result(timeout=5) == 1
    assert wait_dead(ref, 5)
    assert [name for name, _ in order] == ["before", "job"]
    assert order[0][1] == order[1][1] != threading.get_ident()


def test_a_failing_before_hook_does_not_fail_the_run(caplog: pytest.LogCaptureFixture) -> None:
    def before() -> None:
        raise RuntimeError("refill broke")

    ref = ProgramRun.start_link()
    reply: Future[Any] = Future()
    run = RunContext()
    ref.tell(RunJob(lambda: 7, contextvars.copy_context(), run, reply, before))
    assert reply.result(timeout=5) == 7
    assert wait_dead(ref, 5)
    assert f"before-hook of program run {run.run_id} failed" in caplog.text


def test_cancel_event_waits_wakes_and_runs_wakers() -> None:
    from concurrent.futures import ThreadPoolExecutor

    from dspex.actors._program_run import CancelEvent

    event = CancelEvent()
    assert isinstance(event, threading.Event) and not event.is_set()
    assert event.wait(0.01) is False  # unset: the wait times out
    woken: list[str] = []
    event.add_waker(lambda: woken.append("waker"))
    entered = threading.Event()

    def waiter() -> bool:
        entered.set()
        return event.wait(30)

    with ThreadPoolExecutor(2) as pool:
        waiting = [pool.submit(waiter) for _ in range(2)]
        assert entered.wait(5)
        event.set()
        assert [f.result(timeout=30) for f in waiting] == [True, True]
    assert woken == ["waker"] and event.is_set() and event.wait() is True
    late: list[str] = []
    event.add_waker(lambda: late.append("late"))  # already set: called at once
    assert late == ["late"]
    event.clear()
    assert not event.is_set() and event.wait(0.01) is False


def test_a_light_process_can_be_waited_for_from_other_threads() -> None:
    from concurrent.futures import ThreadPoolExecutor

    from dspex.supervision import LightProcess, wait_dead

    process = LightProcess(ProgramRun)
    assert process.is_alive() and wait_dead(process, 0.01) is False
    with ThreadPoolExecutor(2) as pool:
        waits = [pool.submit(wait_dead, process, 30) for _ in range(2)]
        process.exit()
        assert [f.result(timeout=30) for f in waits] == [True, True]
    assert not process.is_alive() and process.exit_reason == "normal"
