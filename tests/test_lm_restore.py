"""LM clients survive a restart of the ``lms`` supervisor.

When ``lms`` exceeds its restart intensity it stops its clients and fails to
the root, which starts a new incarnation. The runtime's client table keeps the
specs of every client it started (the desired state, outside the supervisor)
and the new incarnation starts them all again before it is registered, so a
call with the same LM settings, or one waiting during the restart, is answered
by the restored client instead of waiting out its call timeout.
"""

from __future__ import annotations

import threading
from concurrent.futures import Future
from typing import Any

import pytest
from runtime_helpers import SECRET, StartRuntime, make_lm
from wait_helpers import wait_until

import dspex
from dspex.actors._lm._client import LMClient, Reconfigure
from dspex.actors._telemetry_emitter import TelemetryEvent
from dspex.errors import ActorStoppedError, ProviderError
from dspex.supervision import call, which_children
from dspex.testing import FakeOpenAI, Fault

WAIT = 30.0  # far below the LM's call timeout (70 s): an answer must not need it
LMS_MAX_RESTARTS = 10  # the runtime's lms supervisor allows this many restarts


class Restored:
    """Telemetry subscriber: signals each ``lm.clients.restored`` event."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.cond = threading.Condition()

    def __call__(self, event: TelemetryEvent) -> None:  # the Telemetry actor's thread
        if event.name == "lm.clients.restored":
            with self.cond:
                self.events.append(dict(event.data))
                self.cond.notify_all()

    def wait(self, count: int) -> list[dict[str, Any]]:
        with self.cond:
            ok = self.cond.wait_for(lambda: len(self.events) >= count, WAIT)
            assert ok, f"lm.clients.restored did not arrive {count} time(s)"
            return list(self.events)


def _client(rt: dspex.Runtime, child_id: str) -> Any:
    for child in which_children(rt.whereis("lms")):
        if child.id == child_id:
            return child.ref
    return None


def _crash(ref: Any) -> None:
    ref.tell(Reconfigure("not a config"))  # type: ignore[arg-type]  # raises in the actor


def crash_lms_past_its_intensity(rt: dspex.Runtime, child_id: str) -> None:
    """Crash client ``child_id`` until ``lms`` gives up and the root starts a new one."""
    old_lms = rt.whereis("lms")
    for _ in range(LMS_MAX_RESTARTS):
        ref = _client(rt, child_id)
        assert ref is not None
        _crash(ref)
        wait_until(
            lambda old=ref: (new := _client(rt, child_id)) is not None and new != old,
            WAIT,
            "the crashed client restarted",
        )
    _crash(_client(rt, child_id))  # one more: past the intensity
    new_lms = rt.registry.await_name("lms", WAIT, not_ref=old_lms)
    assert new_lms is not None and not old_lms.is_alive()


@pytest.fixture
def fake() -> Any:
    with FakeOpenAI(api_key=SECRET, reply="fine") as server:
        yield server


def test_clients_come_back_when_lms_exceeds_its_restart_intensity(
    start_runtime: StartRuntime, fake: FakeOpenAI
) -> None:
    rt = start_runtime(runtime={"max_seconds": 60.0}, cache={"enabled": False})
    restored = Restored()
    call(rt.whereis("telemetry"), "subscribe", restored, timeout=WAIT)
    lm = make_lm(fake, timeout=60, num_retries=0)
    assert lm("first") == ["fine"]
    [child] = [c.id for c in which_children(rt.whereis("lms")) if c.id.startswith("lm:")]
    slot = lm.handle(rt).slot
    old_lms = rt.whereis("lms")

    # Up to the last crash, then a call that waits at the server during the restart.
    for _ in range(LMS_MAX_RESTARTS):
        ref = _client(rt, child)
        _crash(ref)
        wait_until(
            lambda old=ref: (new := _client(rt, child)) is not None and new != old,
            WAIT,
            "the crashed client restarted",
        )
    fake.latency = 60.0  # the old incarnation never answers it
    pending: Future[list[str]] = Future()
    waiter = threading.Thread(target=lambda: pending.set_result(lm("pending")))
    waiter.start()
    wait_until(lambda: fake.in_flight == 1, WAIT, "the pending call at the server")
    fake.latency = 0.0
    _crash(_client(rt, child))  # past the intensity: lms gives up
    new_lms = rt.registry.await_name("lms", WAIT, not_ref=old_lms)
    assert new_lms is not None and not old_lms.is_alive()

    # The pending call is re-sent to the restored client, not left to time out.
    assert pending.result(timeout=WAIT) == ["fine"]
    waiter.join(WAIT)
    # Later calls with the same settings (same LM object or a new one) are answered.
    assert lm("after") == ["fine"]
    assert make_lm(fake, timeout=60, num_retries=0)("again") == ["fine"]
    assert [c.id for c in which_children(new_lms)] == [child]
    assert slot.incarnations == LMS_MAX_RESTARTS + 2  # first, 10 restarts, the restored one
    [event] = restored.wait(1)
    assert event["clients"] == (child,) and event["failed"] == ()

    # The restart metrics name the children that restarted.
    by_child = rt.metrics()["supervision"]["restarts_by_child"]
    assert by_child == {child: LMS_MAX_RESTARTS, "lms": 1}


def test_every_client_is_restored_in_order_and_configure_still_reaches_it(
    start_runtime: StartRuntime, fake: FakeOpenAI
) -> None:
    rt = start_runtime(
        runtime={"max_seconds": 60.0},
        cache={"enabled": False},
        lm_client={"num_retries": 3, "backoff_base": 0.01, "backoff_max": 0.01},
    )
    first = make_lm(fake)
    second = make_lm(fake, model="openai/other-model")
    assert first("a") == ["fine"] and second("b") == ["fine"]
    ids = [c.id for c in which_children(rt.whereis("lms"))]
    assert ids == ["lm:openai/test-model#1", "lm:openai/other-model#2"]
    assert rt.clients.wanted() == ids

    crash_lms_past_its_intensity(rt, ids[1])

    assert [c.id for c in which_children(rt.whereis("lms"))] == ids
    assert first("c") == ["fine"] and second("d") == ["fine"]
    # configure(lm_client=...) finds the restored incarnations by their ids.
    dspex.configure(lm_client={"num_retries": 0})
    fake.reset()
    fake.schedule = [Fault.error(500), None]
    with pytest.raises(ProviderError):
        first("not retried")
    assert fake.request_count == 1


def test_a_client_that_cannot_be_restored_fails_its_callers_fast_and_starts_afresh(
    start_runtime: StartRuntime, fake: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    rt = start_runtime(runtime={"max_seconds": 60.0}, cache={"enabled": False})
    restored = Restored()
    call(rt.whereis("telemetry"), "subscribe", restored, timeout=WAIT)
    lm = make_lm(fake, timeout=60, num_retries=0)
    assert lm("first") == ["fine"]
    [child] = rt.clients.wanted()
    old_lms = rt.whereis("lms")
    for _ in range(LMS_MAX_RESTARTS):
        ref = _client(rt, child)
        _crash(ref)
        wait_until(
            lambda old=ref: (new := _client(rt, child)) is not None and new != old,
            WAIT,
            "the crashed client restarted",
        )
    fake.latency = 60.0
    pending: Future[list[str]] = Future()

    def wait_for_answer() -> None:
        try:
            pending.set_result(lm("pending"))
        except Exception as exc:
            pending.set_exception(exc)

    waiter = threading.Thread(target=wait_for_answer)
    waiter.start()
    wait_until(lambda: fake.in_flight == 1, WAIT, "the pending call at the server")
    fake.latency = 0.0

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("injected: the client cannot start")

    monkeypatch.setattr(LMClient, "start", refuse)  # the restore of the client fails
    _crash(_client(rt, child))
    new_lms = rt.registry.await_name("lms", WAIT, not_ref=old_lms)
    assert new_lms is not None
    [event] = restored.wait(1)
    assert event["clients"] == () and event["failed"] == (child,)

    # The waiting call fails at once, saying why, instead of waiting out 70 s.
    with pytest.raises(ActorStoppedError, match="could not be restarted"):
        pending.result(timeout=WAIT)
    waiter.join(WAIT)
    assert rt.clients.wanted() == []
    monkeypatch.undo()
    # The next call with the same LM starts a new client.
    assert lm("afresh") == ["fine"]
    assert [c.id for c in which_children(new_lms)] == rt.clients.wanted() != [child]


def test_a_start_refused_by_a_dying_lms_is_not_lost_nor_made_twice(fake: FakeOpenAI) -> None:
    """A client started while ``lms`` goes away: its successor's restore starts it once."""
    from dspex.actors._lm._clients import LMClients
    from dspex.actors._lm._handle import LMHandle
    from dspex.config import load_settings
    from dspex.supervision import Registry, Supervisor, shutdown

    registry = Registry("lms-race")
    settings = load_settings(env={})
    old = Supervisor.start_link(name="lms", registry=registry)
    new: list[Any] = []

    def lms(not_ref: Any = None) -> Any:
        if not_ref is None:
            return old  # stale: the caller has not seen the restart yet
        # The root starts the successor and restores it before registering it.
        successor = Supervisor.start_link(name="lms", registry=registry)
        new.append(successor)
        assert clients.restore(successor) == ("lm:openai/test-model#1",)
        return successor

    clients = LMClients(lambda: settings, lms)
    try:
        assert shutdown(old, WAIT)  # gone before the start reaches it
        slot = clients.slot("openai/test-model", fake.url, SECRET, {})
        [successor] = new
        assert [c.id for c in which_children(successor)] == ["lm:openai/test-model#1"]
        assert clients.wanted() == ["lm:openai/test-model#1"]
        handle = LMHandle(slot, call_timeout=WAIT)
        assert handle.complete("hello") == ["fine"]
    finally:
        clients.close()
        for sup in new:
            assert shutdown(sup, WAIT)
