"""``asyncify``: programs awaited from asyncio, in worker threads, as cancellable runs."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from dspex.errors import ProgramError, UsageError
from dspex.programs import Module, Predict, asyncify, configure, context
from dspex.testing import DummyLM

pytestmark = pytest.mark.usefixtures("clean_settings")


def test_calls_run_at_once_off_the_loop_with_the_callers_context() -> None:
    barrier = threading.Barrier(2, timeout=10)
    lm = DummyLM({"France": {"answer": "Paris"}, "Spain": {"answer": "Madrid"}})

    class Meet(Module):
        def __init__(self) -> None:
            super().__init__()
            self.qa = Predict("question -> answer")

        def forward(self, question: str) -> Any:
            barrier.wait()  # both calls must be running together
            return self.qa(question=question)

    async def main() -> list[str]:
        loop_thread = threading.current_thread()
        with context(lm=lm):
            run = asyncify(Meet())
            ticks = 0

            async def tick() -> None:
                nonlocal ticks
                ticks += 1

            results = await asyncio.gather(run(question="France"), run(question="Spain"), tick())
        assert ticks == 1 and threading.current_thread() is loop_thread
        return [r.answer for r in results[:2]]

    assert asyncio.run(main()) == ["Paris", "Madrid"]


def test_errors_arrive_with_their_own_type() -> None:
    class Broken(Module):
        def forward(self) -> Any:
            raise KeyError("missing")

    async def main() -> None:
        with pytest.raises(KeyError, match="missing"):
            await asyncify(Broken())()

    asyncio.run(main())


def test_async_max_workers_bounds_how_many_run_at_once() -> None:
    lock = threading.Lock()
    running = peak = 0
    meet: threading.Barrier | None = None

    class Counted(Module):
        def forward(self, i: int) -> int:
            nonlocal running, peak
            with lock:
                running += 1
                peak = max(peak, running)
            if meet is not None:
                meet.wait()  # the first three calls must all be in at once
            else:
                threading.Event().wait(0.02)  # room for an unbounded second call to overlap
            with lock:
                running -= 1
            return i

    async def main(calls: int) -> list[int]:
        run = asyncify(Counted())
        return list(await asyncio.gather(*(run(i=i) for i in range(calls))))

    configure(async_max_workers=1)
    assert asyncio.run(main(4)) == [0, 1, 2, 3]
    assert peak == 1
    meet = threading.Barrier(3, timeout=10)
    configure(async_max_workers=3)
    assert asyncio.run(main(3)) == [0, 1, 2]
    assert peak == 3


def test_cancelling_the_task_cancels_the_run() -> None:
    started, release, done = threading.Event(), threading.Event(), threading.Event()
    outcome: list[BaseException] = []
    lm = DummyLM([{"answer": "never"}])

    class Waits(Module):
        def __init__(self) -> None:
            super().__init__()
            self.qa = Predict("question -> answer")

        def forward(self, question: str) -> Any:
            started.set()
            release.wait(10)
            try:
                return self.qa(question=question, lm=lm)  # checks the run before calling
            except BaseException as exc:
                outcome.append(exc)
                raise
            finally:
                done.set()

    async def main() -> None:
        task = asyncio.ensure_future(asyncify(Waits())(question="?"))
        assert await asyncio.to_thread(started.wait, 10)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        release.set()
        assert await asyncio.to_thread(done.wait, 10)

    asyncio.run(main())
    assert len(outcome) == 1 and isinstance(outcome[0], ProgramError)
    assert "was cancelled" in str(outcome[0])
    assert lm.calls == 0


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(UsageError, match="needs a callable"):
        asyncify("qa")  # type: ignore[arg-type]

    # Refused when set, before any asyncified call could use it.
    with pytest.raises(UsageError, match=r"configure\(async_max_workers=0\): must be an int"):
        configure(async_max_workers=0)
