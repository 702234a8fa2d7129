"""Names that survive restarts: a registry of actors and handles that re-resolve.

A restart makes a new ``ActorRef``, so callers of a restartable actor hold a
name, not a ref. :class:`Registry` maps each name to the current incarnation;
an entry disappears when its actor dies, unless the supervisor registers the
new incarnation first. :class:`NamedRef` resolves its name on every call and,
when the actor it reached has died, waits (on a condition, bounded by the
call's timeout) for the next incarnation to be registered and tries again.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from threading import Condition
from typing import Any

import pykka
from pykka.messages import ProxyCall

from dspex.errors import ActorStoppedError, CallTimeoutError, RegistryError, UsageError
from dspex.supervision._actor import Actor, Down, MonitorRef, ProcessRef, demonitor, monitor
from dspex.supervision._ask import ask as ask_once

__all__ = ["NamedRef", "Registry", "default_registry"]


class _Entry:
    __slots__ = ("mref", "ref")

    def __init__(self, ref: pykka.ActorRef[Any], mref: MonitorRef | None = None) -> None:
        self.ref = ref
        self.mref = mref


def _same(a: ProcessRef | None, b: ProcessRef | None) -> bool:
    return a is not None and b is not None and a.actor_urn == b.actor_urn


class Registry:
    """Unique names for live actors; thread-safe, any thread may call any method.

    Entries of :class:`~dspex.supervision.Actor` subclasses are removed when the
    actor dies (a monitor whose watcher runs in the dying thread); other pykka
    actors are dropped lazily once they are found dead.
    """

    def __init__(self, label: str = "registry") -> None:
        self.label = label
        self._cond = Condition()
        self._entries: dict[str, _Entry] = {}
        # Names whose actor died registered: a supervisor may be restarting it.
        self._gone: set[str] = set()

    def _live(self, name: str) -> pykka.ActorRef[Any] | None:
        entry = self._entries.get(name)
        if entry is None:
            return None
        if not entry.ref.is_alive():
            return None
        return entry.ref

    def register(
        self,
        name: str,
        ref: pykka.ActorRef[Any],
        *,
        replacing: pykka.ActorRef[Any] | None = None,
    ) -> None:
        """Bind ``name`` to ``ref``.

        Raises :class:`RegistryError` if a different live actor holds the name,
        unless that actor is ``replacing`` (a supervisor re-registering a
        restarted child while the old incarnation is still winding down).
        """
        if not isinstance(name, str) or not name:
            raise UsageError(f"Registry.register(name={name!r}): name must be a non-empty string")
        if not isinstance(ref, pykka.ActorRef):
            raise UsageError(
                f"Registry.register({name!r}, ref={ref!r}): ref must be a pykka ActorRef"
            )
        with self._cond:
            holder = self._live(name)
            if _same(holder, ref):
                return
            if holder is not None and not _same(holder, replacing):
                raise RegistryError(
                    f"name {name!r} is already registered to live actor {holder} in {self.label}; "
                    "pick another name or unregister the holder first"
                )
            old = self._entries.pop(name, None)
            self._gone.discard(name)
            entry = _Entry(ref)
            self._entries[name] = entry
            self._cond.notify_all()
        if old is not None and old.mref is not None:
            demonitor(old.mref)
        if issubclass(ref.actor_class, Actor):
            # Outside the lock: a dead ref yields Down(noproc) synchronously,
            # and its watcher takes the lock to drop the entry.
            mref = monitor(ref, lambda down: self._on_down(name, down))
            with self._cond:
                if self._entries.get(name) is entry:
                    entry.mref = mref
                    return
            demonitor(mref)

    def _on_down(self, name: str, down: Down) -> None:
        with self._cond:
            entry = self._entries.get(name)
            if entry is not None and _same(entry.ref, down.ref):
                del self._entries[name]
                self._gone.add(name)

    def unregister(self, name: str, *, ref: pykka.ActorRef[Any] | None = None) -> bool:
        """Remove ``name`` (only if bound to ``ref``, when given); True if removed."""
        with self._cond:
            entry = self._entries.get(name)
            if entry is None or (ref is not None and not _same(entry.ref, ref)):
                return False
            del self._entries[name]
        if entry.mref is not None:
            demonitor(entry.mref)
        return True

    def whereis(self, name: str) -> pykka.ActorRef[Any] | None:
        """The live actor registered as ``name``, or None."""
        with self._cond:
            return self._live(name)

    def known(self, name: str) -> bool:
        """True if ``name`` is registered, or was until its actor died.

        A known name without a live actor may be re-registered soon (its
        supervisor restarting it): worth a bounded wait. An unknown name never
        was registered here, or was unregistered on purpose.
        """
        with self._cond:
            return name in self._entries or name in self._gone

    def names(self) -> list[str]:
        """Sorted names currently bound to live actors."""
        with self._cond:
            return sorted(n for n in self._entries if self._live(n) is not None)

    def await_name(
        self,
        name: str,
        timeout: float,
        *,
        not_ref: pykka.ActorRef[Any] | None = None,
    ) -> pykka.ActorRef[Any] | None:
        """Wait up to ``timeout`` s for a live actor under ``name`` other than ``not_ref``."""
        found: list[pykka.ActorRef[Any]] = []

        def ready() -> bool:
            ref = self._live(name)
            if ref is None or _same(ref, not_ref):
                return False
            found.append(ref)
            return True

        with self._cond:
            if self._cond.wait_for(ready, max(0.0, timeout)):
                return found[-1]
        return None

    def handle(self, name: str, *, timeout: float = 5.0) -> NamedRef:
        """A :class:`NamedRef` for ``name`` in this registry."""
        return NamedRef(self, name, timeout=timeout)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.whereis(name) is not None

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __repr__(self) -> str:
        return f"Registry({self.label!r}, names={self.names()})"


_default = Registry("the default registry")


def default_registry() -> Registry:
    """The process-wide registry used when a supervisor is given none."""
    return _default


class NamedRef:
    """Talks to whichever incarnation is registered under ``name`` right now.

    ``timeout`` is the default budget (seconds) for each call: it covers waiting
    for a restarted actor to be re-registered as well as the reply.
    """

    def __init__(self, registry: Registry, name: str, *, timeout: float = 5.0) -> None:
        if not isinstance(name, str) or not name:
            raise UsageError(f"NamedRef(name={name!r}): name must be a non-empty string")
        if timeout <= 0:
            raise UsageError(f"NamedRef({name!r}, timeout={timeout!r}): must be > 0 seconds")
        self.registry = registry
        self.name = name
        self.timeout = timeout

    def whereis(self) -> pykka.ActorRef[Any] | None:
        """The current incarnation, without waiting."""
        return self.registry.whereis(self.name)

    def resolve(
        self,
        timeout: float | None = None,
        *,
        not_ref: pykka.ActorRef[Any] | None = None,
    ) -> pykka.ActorRef[Any]:
        """The current incarnation, waiting up to ``timeout`` for one to be registered."""
        budget = self.timeout if timeout is None else timeout
        ref = self.registry.await_name(self.name, budget, not_ref=not_ref)
        if ref is not None:
            return ref
        if not_ref is not None:
            raise ActorStoppedError(
                f"{self.name!r} died and no new incarnation was registered within {budget}s; "
                "is it supervised with a restart type that restarts it?"
            )
        raise RegistryError(
            f"no live actor is registered as {self.name!r} in {self.registry.label} "
            f"(waited {budget}s); start it, or give its ChildSpec name={self.name!r}"
        )

    def tell(self, message: Any, *, timeout: float | None = None) -> None:
        """Send without a reply; waits (bounded) for a registered incarnation."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        dead: pykka.ActorRef[Any] | None = None
        while True:
            ref = self.resolve(max(0.0, deadline - time.monotonic()), not_ref=dead)
            try:
                ref.tell(message)
                return
            except pykka.ActorDeadError:
                dead = ref

    def ask(self, message: Any, *, timeout: float | None = None) -> Any:
        """Send and wait for the reply, retrying on a new incarnation if the actor died.

        Retrying is safe: pykka raises ``ActorDeadError`` only for messages the
        dead actor never handled.
        """
        budget = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + budget
        dead: pykka.ActorRef[Any] | None = None
        while True:
            ref = self.resolve(max(0.0, deadline - time.monotonic()), not_ref=dead)
            try:
                return ask_once(ref, message, max(0.0, deadline - time.monotonic()))
            except pykka.ActorDeadError:
                if ref.is_alive():  # raised by the handler itself: not ours to retry
                    raise
                dead = ref
            except pykka.Timeout as exc:
                raise CallTimeoutError(
                    f"{self.name!r} did not reply within {budget}s; raise the timeout or "
                    "check that the actor is not blocked"
                ) from exc

    def call(self, method: str, *args: Any, timeout: float | None = None, **kwargs: Any) -> Any:
        """Call ``method`` on the current incarnation (like a proxy call, but re-resolving)."""
        return self.ask(ProxyCall(attr_path=(method,), args=args, kwargs=kwargs), timeout=timeout)

    def __repr__(self) -> str:
        return f"NamedRef({self.name!r}, {self.registry.label})"
