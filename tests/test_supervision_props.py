"""Random crash schedules against a two-level tree, checked against a small model.

The tree::

    root (strategy R, max_restarts MR)
    ├── a    permanent worker
    ├── sub  permanent supervisor (strategy S, max_restarts MS)
    │   ├── b  permanent
    │   ├── c  transient
    │   └── d  temporary
    └── e    transient worker

A schedule crashes (or cleanly stops) live workers and advances a virtual
clock. After every step the test waits for the deaths it caused and for the
supervisors involved to answer a call, so the system is quiescent before the
model is compared: restart counters, escalations, which children exist and
whether they run, events, and no thread left after ``stop()``.
"""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pykka
from _supervision_helpers import Crash, Exit, worker
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from dspex.errors import ActorStoppedError, SupervisionError
from dspex.supervision import (
    CHILD_RESTARTED,
    INTENSITY_EXCEEDED,
    ChildSpec,
    Down,
    Event,
    EventBus,
    Restart,
    Strategy,
    Supervisor,
    VirtualClock,
    monitor,
    statistics,
    tree,
    which_children,
)

MAX_SECONDS = 10.0
ROOT_IDS = ("a", "sub", "e")
SUB_IDS = ("b", "c", "d")
RESTART = {
    "a": Restart.PERMANENT,
    "sub": Restart.PERMANENT,
    "e": Restart.TRANSIENT,
    "b": Restart.PERMANENT,
    "c": Restart.TRANSIENT,
    "d": Restart.TEMPORARY,
}


# -- the model ------------------------------------------------------------------------


@dataclass
class MChild:
    id: str
    alive: bool = True
    restarts: int = 0


@dataclass
class MSup:
    name: str
    strategy: Strategy
    max_restarts: int
    children: list[MChild]
    history: list[float] = field(default_factory=list)
    total: int = 0

    def child(self, id: str) -> MChild:
        return next(c for c in self.children if c.id == id)


class Model:
    def __init__(self, root: Strategy, root_max: int, sub: Strategy, sub_max: int) -> None:
        self.now = 0.0
        self.sub_options = (sub, sub_max)
        self.root = MSup("root", root, root_max, [MChild(i) for i in ROOT_IDS])
        self.sub = self._fresh_sub()
        self.restarted: Counter[tuple[str, str]] = Counter()
        self.escalations: Counter[str] = Counter()
        self.root_dead = False

    def _fresh_sub(self) -> MSup:
        strategy, max_restarts = self.sub_options
        return MSup("sub", strategy, max_restarts, [MChild(i) for i in SUB_IDS])

    def targets(self) -> list[str]:
        root = [c.id for c in self.root.children if c.alive and c.id != "sub"]
        return root + [c.id for c in self.sub.children if c.alive]

    def _exit(self, sup: MSup, id: str, abnormal: bool) -> bool:
        """Apply one child exit; True if ``sup`` gives up."""
        child = sup.child(id)
        child.alive = False
        restart = RESTART[id]
        if restart is Restart.TEMPORARY or (restart is Restart.TRANSIENT and not abnormal):
            if restart is Restart.TEMPORARY:
                sup.children.remove(child)
            return False
        sup.history = [t for t in sup.history if self.now - t < MAX_SECONDS] + [self.now]
        sup.total += 1
        if len(sup.history) > sup.max_restarts:
            self.escalations[sup.name] += 1
            for c in sup.children:
                c.alive = False
            return True
        if sup.strategy is Strategy.ONE_FOR_ONE:
            group = [child]
        elif sup.strategy is Strategy.ONE_FOR_ALL:
            group = list(sup.children)
        else:
            group = sup.children[sup.children.index(child) :]
        for sib in group:
            if sib is not child and not sib.alive:
                continue
            if sib is not child and RESTART[sib.id] is Restart.TEMPORARY:
                sup.children.remove(sib)
                continue
            sib.alive = True
            sib.restarts += 1
            self.restarted[(sup.name, sib.id)] += 1
            if sib.id == "sub":
                self.sub = self._fresh_sub()
        return False

    def exit(self, id: str, abnormal: bool) -> tuple[bool, bool]:
        """A worker exits; returns (sub escalated, root escalated)."""
        if id in SUB_IDS:
            if not self._exit(self.sub, id, abnormal):
                return False, False
            self.root_dead = self._exit(self.root, "sub", True)
            return True, self.root_dead
        self.root_dead = self._exit(self.root, id, abnormal)
        return False, self.root_dead


# -- the real system ---------------------------------------------------------------------


def _children(sup: pykka.ActorRef[Any]) -> dict[str, pykka.ActorRef[Any] | None]:
    return {i.id: i.ref for i in which_children(sup)}


def _running(sup: pykka.ActorRef[Any], id: str) -> pykka.ActorRef[Any]:
    ref = _children(sup)[id]
    assert ref is not None, f"{id} should be running"
    return ref


def _alive(sup: pykka.ActorRef[Any]) -> bool:
    """Sync with ``sup``: True once it handled what is queued, False if it died."""
    try:
        which_children(sup)
    except ActorStoppedError:
        return False
    return True


def _death(ref: pykka.ActorRef[Any]) -> threading.Event:
    seen = threading.Event()
    monitor(ref, lambda down: seen.set())
    return seen


def _check_supervisor(ref: pykka.ActorRef[Any], model: MSup) -> None:
    kids = _children(ref)
    assert list(kids) == [c.id for c in model.children]
    for c in model.children:
        current = kids[c.id]
        if c.alive:
            assert current is not None and current.is_alive(), f"{c.id} should run"
        else:
            assert current is None, f"{c.id} should be terminated"
    assert statistics(ref).restarts == model.total


Step = tuple[str, float, bool]  # ("exit", pick, abnormal) or ("advance", seconds, _)

exit_step = st.tuples(st.just("exit"), st.integers(0, 20), st.booleans())
advance_step = st.tuples(
    st.just("advance"), st.sampled_from([0.5, 3.0, MAX_SECONDS]), st.just(False)
)
steps = st.lists(st.one_of(exit_step, exit_step, exit_step, advance_step), min_size=1, max_size=20)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    root_strategy=st.sampled_from(list(Strategy)),
    sub_strategy=st.sampled_from(list(Strategy)),
    root_max=st.integers(0, 2),
    sub_max=st.integers(0, 2),
    schedule=steps,
)
def test_random_crash_schedules_match_the_model(
    root_strategy: Strategy,
    sub_strategy: Strategy,
    root_max: int,
    sub_max: int,
    schedule: list[Step],
) -> None:
    threads_before = set(threading.enumerate())
    actors_before = {ref.actor_urn for ref in pykka.ActorRegistry.get_all()}
    clock, bus = VirtualClock(), EventBus()
    events: list[Event] = []
    bus.subscribe(events.append)
    model = Model(root_strategy, root_max, sub_strategy, sub_max)
    sub_spec = Supervisor.spec(
        "sub",
        [ChildSpec(i, worker(i), restart=RESTART[i]) for i in SUB_IDS],
        strategy=sub_strategy,
        max_restarts=sub_max,
        max_seconds=MAX_SECONDS,
        clock=clock,
        events=bus,
    )
    root_children = [
        ChildSpec("a", worker("a")),
        sub_spec,
        ChildSpec("e", worker("e"), restart=Restart.TRANSIENT),
    ]
    root = Supervisor.start_link(
        root_children,
        strategy=root_strategy,
        max_restarts=root_max,
        max_seconds=MAX_SECONDS,
        clock=clock,
        events=bus,
        name="root",
    )
    root_reason: list[Any] = []
    root_down = threading.Event()

    def on_root_down(down: Down) -> None:
        root_reason.append(down.reason)
        root_down.set()

    monitor(root, on_root_down)
    try:
        for step in schedule:
            kind, amount, abnormal = step
            if kind == "advance":
                clock.advance(amount)
                model.now += amount
                continue
            targets = model.targets()
            id = targets[int(amount) % len(targets)]
            sub = _running(root, "sub")
            target = _running(sub, id) if id in SUB_IDS else _running(root, id)
            target_down, sub_down = _death(target), _death(sub)
            target.tell(Crash() if abnormal else Exit())
            assert target_down.wait(5)
            sub_gave_up, root_gave_up = model.exit(id, abnormal)
            event(f"sub gave up: {sub_gave_up}")
            if id in SUB_IDS:
                assert _alive(sub) is not sub_gave_up
                if not sub_gave_up:
                    continue
                assert sub_down.wait(5)
            assert _alive(root) is not root_gave_up
            if root_gave_up:
                break
            _check_supervisor(root, model.root)
            _check_supervisor(_running(root, "sub"), model.sub)

        event(f"root gave up: {model.root_dead}")
        if model.root_dead:
            assert root_down.wait(5)
            assert len(root_reason) == 1 and isinstance(root_reason[0], SupervisionError)
        else:
            _check_supervisor(root, model.root)
            _check_supervisor(_running(root, "sub"), model.sub)
            node = tree(root)
            for c in model.root.children + model.sub.children:
                found = node.find(c.id)
                assert found is not None and found.restarts == c.restarts
                assert found.status == ("alive" if c.alive else "dead")
        restarted = Counter(
            (e.data["supervisor"], e.data["child"]) for e in events if e.name == CHILD_RESTARTED
        )
        assert restarted == model.restarted
        exceeded = Counter(e.data["supervisor"] for e in events if e.name == INTENSITY_EXCEEDED)
        assert exceeded == model.escalations
    finally:
        if root.is_alive():
            assert root.stop(block=True, timeout=10)
    for thread in set(threading.enumerate()) - threads_before:
        thread.join(5)
    leaked = [t.name for t in threading.enumerate() if t not in threads_before and t.is_alive()]
    assert leaked == []
    assert [r for r in pykka.ActorRegistry.get_all() if r.actor_urn not in actors_before] == []
