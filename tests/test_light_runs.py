"""Top-level runs as light processes: executed by the calling thread, still supervised.

A run without a deadline borrows its caller's thread (docs/architecture.md,
"Runs as light processes"); these tests pin what the run actor used to
give: a place under ``programs`` in ``rt.tree()`` while it runs, a monitor's
``Down`` with the exit reason, cancellation, a caller's deadline that holds
even when the forward blocks, and failures (``SystemExit``,
``KeyboardInterrupt``) that fail only that run.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from runtime_helpers import StartRuntime
from wait_helpers import wait_until

import dspex
from dspex.actors import current_run
from dspex.errors import ProgramError
from dspex.supervision import (
    NORMAL,
    ChildSpec,
    Down,
    LightProcess,
    adopt_child,
    count_children,
    monitor,
    terminate_child,
    which_children,
)

WAIT = 30.0
VAR: contextvars.ContextVar[str] = contextvars.ContextVar("light_runs_var", default="unset")


class Gate(dspex.Module):
    """A forward that says it entered, then blocks until released (or its run is cancelled)."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        self.threads: list[threading.Thread] = []

    def forward(self, question: str) -> dspex.Prediction:
        run = current_run()
        assert run is not None
        self.threads.append(threading.current_thread())
        self.entered.set()
        # Wakes on release or on the run's cancel, whichever comes first.
        run.cancelled.add_waker(self.release.set)
        try:
            assert self.release.wait(WAIT)
        finally:
            run.cancelled.discard_waker(self.release.set)
        run.check_deadline()  # a cancelled run stops here
        return dspex.Prediction(answer=question)


def _live_runs(rt: dspex.Runtime) -> list[Any]:
    return [c for c in which_children(rt.whereis("programs")) if c.id.startswith("run-")]


def test_a_live_run_is_in_the_tree_and_runs_in_its_callers_thread(
    start_runtime: StartRuntime,
) -> None:
    rt = start_runtime()
    gate = Gate()
    with ThreadPoolExecutor(1) as pool:
        future = pool.submit(gate, question="q")
        assert gate.entered.wait(WAIT)
        node = rt.tree().find("programs")
        assert node is not None
        runs = [c for c in node.children if c.id.startswith("run-")]
        assert [(c.actor_class, c.status) for c in runs] == [("ProgramRun", "alive")]
        (child,) = _live_runs(rt)
        assert isinstance(child.ref, LightProcess) and child.ref.is_alive()
        gate.release.set()
        assert future.result(WAIT).answer == "q"
    # It ran in the caller's thread (the pool's worker), not in an actor's.
    assert gate.threads[0].name.startswith("ThreadPoolExecutor")
    assert not _live_runs(rt)  # booked by the time the caller has its answer


def test_a_monitor_gets_the_runs_exit_reason(start_runtime: StartRuntime) -> None:
    rt = start_runtime()
    downs: list[Down] = []
    got = threading.Event()

    def watcher(down: Down) -> None:
        downs.append(down)
        got.set()

    class Fails(Gate):
        def forward(self, question: str) -> dspex.Prediction:
            super().forward(question)
            raise ValueError(f"bad {question}")

    for program, expect in ((Gate(), NORMAL), (Fails(), ValueError)):
        got.clear()
        with ThreadPoolExecutor(1) as pool:
            future = pool.submit(program, question="q")
            assert program.entered.wait(WAIT)
            (child,) = _live_runs(rt)
            monitor(child.ref, watcher)
            program.release.set()
            assert got.wait(WAIT)
            if expect is NORMAL:
                assert future.result(WAIT).answer == "q"
                assert downs[-1].reason == NORMAL
            else:
                with pytest.raises(ValueError, match="bad q"):
                    future.result(WAIT)
                assert isinstance(downs[-1].reason, ValueError)  # the crash, not "normal"
            assert downs[-1].ref is child.ref
    # A monitor set after the exit hears of it at once.
    late: list[Down] = []
    monitor(downs[0].ref, late.append)
    assert [d.reason for d in late] == ["noproc"]


def test_terminating_a_live_run_cancels_it(start_runtime: StartRuntime) -> None:
    rt = start_runtime()
    gate = Gate()
    downs: list[Down] = []
    with ThreadPoolExecutor(1) as pool:
        future = pool.submit(gate, question="q")
        assert gate.entered.wait(WAIT)
        (child,) = _live_runs(rt)
        monitor(child.ref, downs.append)
        # Waits (bounded) until the run stopped at its next check.
        assert terminate_child(rt.whereis("programs"), child.ref) is True
        with pytest.raises(ProgramError, match="was cancelled"):
            future.result(WAIT)
    assert len(downs) == 1 and isinstance(downs[0].reason, ProgramError)
    assert not _live_runs(rt)
    gate.release.set()
    assert gate(question="again").answer == "again"  # the runtime keeps serving


def test_a_caller_deadline_returns_while_the_forward_still_blocks(
    start_runtime: StartRuntime,
) -> None:
    rt = start_runtime()
    blocked = threading.Event()
    release = threading.Event()
    finished = threading.Event()

    runs: list[Any] = []

    def forward() -> str:
        runs.append(current_run())
        blocked.set()
        try:
            release.wait(WAIT)  # user code that ignores its deadline
        finally:
            finished.set()
        return "late"

    try:
        with pytest.raises(ProgramError, match="passed its deadline"):
            rt.run(forward, timeout=0.2)
        assert blocked.is_set()
        assert not finished.is_set()  # the caller came back; the forward is still blocked
        assert runs[0] is not None and runs[0].cancelled.is_set()  # told to stop
    finally:
        release.set()
    assert finished.wait(WAIT)
    programs = rt.whereis("programs")
    wait_until(lambda: count_children(programs).active == 0, what="the run actor ends")
    assert rt.run(lambda: "next") == "next"


@pytest.mark.parametrize("raised", [SystemExit(3), KeyboardInterrupt()])
def test_system_exit_or_ctrl_c_from_user_code_fails_only_that_run(
    start_runtime: StartRuntime, raised: BaseException
) -> None:
    rt = start_runtime()

    def forward() -> None:
        raise raised

    # In a thread other than the main one nothing but user code raises
    # KeyboardInterrupt, so both are contained as in a run actor.
    with ThreadPoolExecutor(1) as pool:
        error = pool.submit(lambda: _outcome(lambda: rt.run(forward))).result(WAIT)
    assert isinstance(error, ProgramError) and error.original is raised
    assert rt.run(lambda: "still serving") == "still serving"
    assert not _live_runs(rt)
    runs = rt.metrics()["runs"]
    assert (runs["succeeded"], runs["failed"]) == (1, 1)


def test_ctrl_c_in_the_main_thread_fails_the_run_and_goes_on(
    start_runtime: StartRuntime,
) -> None:
    rt = start_runtime()
    assert threading.current_thread() is threading.main_thread()
    runs: list[Any] = []

    def forward() -> None:
        runs.append(current_run())
        raise KeyboardInterrupt  # what Ctrl-C does to the main thread, here inside the run

    with pytest.raises(KeyboardInterrupt):
        rt.run(forward)
    assert runs[0] is not None and runs[0].cancelled.is_set()  # its fan-outs stop
    assert rt.run(lambda: "still serving") == "still serving"
    assert rt.metrics()["runs"]["failed"] == 1


def test_a_run_sees_the_callers_contextvars_and_leaks_none_back(
    start_runtime: StartRuntime,
) -> None:
    rt = start_runtime()
    token = VAR.set("caller")
    try:

        def forward() -> str:
            seen = VAR.get()
            VAR.set("changed inside the run")
            return seen

        assert rt.run(forward) == "caller"
        assert VAR.get() == "caller"
        assert current_run() is None
    finally:
        VAR.reset(token)


def test_stopping_the_runtime_cancels_a_live_run(start_runtime: StartRuntime) -> None:
    rt = start_runtime()
    gate = Gate()
    downs: list[Down] = []
    with ThreadPoolExecutor(1) as pool:
        future = pool.submit(gate, question="q")
        assert gate.entered.wait(WAIT)
        (child,) = _live_runs(rt)
        monitor(child.ref, downs.append)
        assert rt.stop() is True  # the run stops at its next check, so nothing is abandoned
        with pytest.raises(ProgramError, match="was cancelled"):
            future.result(WAIT)
    # It ended at its cancel check, with that error as its exit reason.
    assert len(downs) == 1 and isinstance(downs[0].reason, ProgramError)


def _outcome(fn: Any) -> BaseException | None:
    try:
        fn()
    except BaseException as exc:
        return exc
    return None


def test_a_full_programs_supervisor_still_adopts_a_light_process(
    start_runtime: StartRuntime,
) -> None:
    # max_children bounds the threads children take; a light process takes none
    # (the runtime's admission gate, max_runs, bounds how many runs go on).
    rt = start_runtime(runtime={"max_runs": 1, "warm_runs": 0})
    programs = rt.whereis("programs")
    release = threading.Event()
    started = threading.Event()

    def hold() -> str:
        started.set()
        release.wait(WAIT)
        return "held"

    with ThreadPoolExecutor(1) as pool:
        actor_run = pool.submit(rt.run, hold, timeout=WAIT)  # its run actor fills programs
        assert started.wait(WAIT)
        try:
            process = LightProcess(Gate)
            adopt_child(programs, process, ChildSpec("light", _never_started))
            assert [c.ref for c in which_children(programs)][-1] is process
            process.exit()
            assert all(c.ref is not process for c in which_children(programs))
        finally:
            release.set()
        assert actor_run.result(WAIT) == "held"


def _never_started() -> Any:
    raise AssertionError("a light child is adopted, never started")


# -- awaited runs: `await module.acall(...)` at top level ----------------------------------


class AsyncGate(dspex.Module):
    """An ``aforward`` that says it entered, then waits until released."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release: asyncio.Event | None = None

    async def aforward(self, question: str) -> dspex.Prediction:
        assert current_run() is not None
        self.release = asyncio.Event()
        self.entered.set()
        await self.release.wait()
        return dspex.Prediction(answer=question)


async def _off_loop(fn: Any, *args: Any) -> Any:
    """``fn(*args)`` in a helper thread: a supervisor call that waits for the loop to act."""
    return await asyncio.get_running_loop().run_in_executor(None, fn, *args)


def test_an_awaited_run_is_a_light_process_in_the_tree(start_runtime: StartRuntime) -> None:
    rt = start_runtime()
    gate = AsyncGate()
    downs: list[Down] = []

    async def main() -> None:
        task = asyncio.ensure_future(gate.acall(question="q"))
        await _off_loop(gate.entered.wait, WAIT)
        (child,) = _live_runs(rt)
        node = rt.tree().find(child.id)
        assert node is not None and (node.actor_class, node.status) == ("ProgramRun", "alive")
        monitor(child.ref, downs.append)
        assert current_run() is None  # the run is current inside the call only
        assert gate.release is not None
        gate.release.set()
        assert (await asyncio.wait_for(task, WAIT)).answer == "q"

    asyncio.run(main())
    assert [d.reason for d in downs] == [NORMAL]
    assert not _live_runs(rt)


def test_terminating_an_awaited_run_cancels_it_and_its_awaiter_gets_an_error(
    start_runtime: StartRuntime,
) -> None:
    rt = start_runtime()
    gate = AsyncGate()
    downs: list[Down] = []

    async def main() -> None:
        task = asyncio.ensure_future(gate.acall(question="q"))
        await _off_loop(gate.entered.wait, WAIT)
        (child,) = _live_runs(rt)
        monitor(child.ref, downs.append)
        assert await _off_loop(terminate_child, rt.whereis("programs"), child.ref) is True
        with pytest.raises(ProgramError, match="was cancelled"):
            await asyncio.wait_for(task, WAIT)
        # The stop reached that run only: this task goes on awaiting.
        await asyncio.sleep(0)
        again = AsyncGate()
        second = asyncio.ensure_future(again.acall(question="again"))
        await _off_loop(again.entered.wait, WAIT)
        assert again.release is not None
        again.release.set()
        assert (await asyncio.wait_for(second, WAIT)).answer == "again"

    asyncio.run(main())
    assert len(downs) == 1 and isinstance(downs[0].reason, ProgramError)
    assert not _live_runs(rt)


def test_cancelling_the_awaiter_of_a_run_ends_the_run(start_runtime: StartRuntime) -> None:
    rt = start_runtime()
    gate = AsyncGate()
    downs: list[Down] = []

    async def main() -> None:
        task = asyncio.ensure_future(gate.acall(question="q"))
        await _off_loop(gate.entered.wait, WAIT)
        (child,) = _live_runs(rt)
        monitor(child.ref, downs.append)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert len(downs) == 1 and isinstance(downs[0].reason, asyncio.CancelledError)
    assert not _live_runs(rt)
