"""The in-flight gate of the LM client's pipeline and connection pool."""

from __future__ import annotations

import asyncio

import pytest

from dspex.actors._lm._gate import Gate


def test_free_slots_are_taken_without_waiting_and_then_refused() -> None:
    gate = Gate(2)
    assert gate.try_take()
    assert gate.try_take()
    assert not gate.try_take()
    gate.give()
    assert gate.try_take()


def test_a_freed_slot_goes_to_the_oldest_waiter_not_to_a_newcomer() -> None:
    async def main() -> list[str]:
        gate = Gate(1)
        assert gate.try_take()
        order: list[str] = []

        async def wait(name: str) -> None:
            await gate.take()
            order.append(name)

        first = asyncio.create_task(wait("first"))
        second = asyncio.create_task(wait("second"))
        await asyncio.sleep(0)  # both queue
        gate.give()
        assert not gate.try_take()  # handed to "first", not free for a newcomer
        await asyncio.wait_for(first, 5)
        gate.give()
        await asyncio.wait_for(second, 5)
        gate.give()
        assert gate.try_take()  # back in the pool once nobody waits
        return order

    assert asyncio.run(main()) == ["first", "second"]


def test_a_cancelled_waiter_leaves_the_queue_and_loses_no_slot() -> None:
    async def main() -> None:
        gate = Gate(1)
        assert gate.try_take()
        waiter = asyncio.create_task(gate.take())
        await asyncio.sleep(0)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        gate.give()
        assert gate.try_take()

    asyncio.run(main())


def test_a_slot_handed_to_a_waiter_cancelled_meanwhile_is_passed_on() -> None:
    async def main() -> None:
        gate = Gate(1)
        assert gate.try_take()
        doomed = asyncio.create_task(gate.take())
        heir = asyncio.create_task(gate.take())
        await asyncio.sleep(0)
        gate.give()  # hands the slot to ``doomed``...
        doomed.cancel()  # ...which is cancelled before it runs again
        with pytest.raises(asyncio.CancelledError):
            await doomed
        await asyncio.wait_for(heir, 5)  # the slot moved on instead of leaking
        assert not gate.try_take()

    asyncio.run(main())
