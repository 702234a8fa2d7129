"""Calls on a running supervisor from any thread, each bounded by a timeout.

These work for both :class:`~dspex.supervision.Supervisor` and
:class:`~dspex.supervision.DynamicSupervisor` refs. ``start_child`` and
``terminate_child`` on a dynamic supervisor run in the caller's thread; every
other call is a message to the supervisor (pykka's ``ProxyCall``, without the
cost of building a proxy).
"""

from __future__ import annotations

from typing import Any

import pykka
from pykka.messages import ProxyCall

from dspex.errors import ActorStoppedError, CallTimeoutError, UsageError
from dspex.supervision._actor import LightProcess, ProcessRef
from dspex.supervision._ask import ask
from dspex.supervision._base import SupervisorStats
from dspex.supervision._child import ChildCounts, ChildInfo
from dspex.supervision._dynamic import dynamic_of
from dspex.supervision._spec import ChildSpec

__all__ = [
    "adopt_child",
    "call",
    "count_children",
    "delete_child",
    "restart_child",
    "start_child",
    "statistics",
    "terminate_child",
    "which_children",
]


def call(ref: pykka.ActorRef[Any], method: str, *args: Any, timeout: float, **kwargs: Any) -> Any:
    """Run ``method(*args, **kwargs)`` in the actor's thread and return its result.

    Raises :class:`CallTimeoutError` after ``timeout`` seconds and
    :class:`ActorStoppedError` if the actor is (or dies while) not running.
    """
    try:
        return ask(ref, ProxyCall(attr_path=(method,), args=args, kwargs=kwargs), timeout)
    except pykka.Timeout as exc:
        raise CallTimeoutError(
            f"{ref} did not answer {method}() within {timeout}s; raise the timeout or check "
            "whether it is busy (a supervisor blocks while it stops a slow child)"
        ) from exc
    except pykka.ActorDeadError as exc:
        if ref.is_alive():
            raise
        raise ActorStoppedError(f"{ref} is not running, so {method}() cannot be called") from exc


def which_children(sup: pykka.ActorRef[Any], *, timeout: float = 5.0) -> list[ChildInfo]:
    """``(id, ref | None, restart, kind)`` for each child, in start order."""
    result: list[ChildInfo] = call(sup, "which_children", timeout=timeout)
    return result


def count_children(sup: pykka.ActorRef[Any], *, timeout: float = 5.0) -> ChildCounts:
    """Child specs, running children, supervisors and workers."""
    result: ChildCounts = call(sup, "count_children", timeout=timeout)
    return result


def statistics(sup: pykka.ActorRef[Any], *, timeout: float = 5.0) -> SupervisorStats:
    """Restarts, failures, abandoned children and uptime of the supervisor."""
    result: SupervisorStats = call(sup, "statistics", timeout=timeout)
    return result


def start_child(
    sup: pykka.ActorRef[Any], spec: ChildSpec, *, timeout: float | None = None
) -> pykka.ActorRef[Any]:
    """Start a new child under ``sup`` and return its ref once it acknowledged.

    On a dynamic supervisor this runs in the calling thread (bounded by the
    spec's ``start_timeout``); on a static one it is a call with ``timeout``
    (default: the spec's start timeout plus 5 s).
    """
    dynamic = dynamic_of(sup)
    if dynamic is not None:
        return dynamic.start_child(spec)
    budget = timeout if timeout is not None else spec.start_timeout + 5.0
    ref: pykka.ActorRef[Any] = call(sup, "start_child", spec, timeout=budget)
    return ref


def adopt_child(sup: pykka.ActorRef[Any], process: LightProcess, spec: ChildSpec) -> None:
    """Put a running light process under a dynamic supervisor (calling thread, no message).

    See :meth:`DynamicSupervisor.adopt`; raises :class:`ActorStoppedError` if
    ``sup`` is not a live dynamic supervisor.
    """
    dynamic = dynamic_of(sup)
    if dynamic is None:
        if sup.is_alive():
            raise UsageError(f"adopt_child: {sup} is not a DynamicSupervisor")
        raise ActorStoppedError(f"{sup} is not running, so it cannot adopt {process}")
    dynamic.adopt(process, spec)


def terminate_child(
    sup: pykka.ActorRef[Any],
    child: str | ProcessRef,
    *,
    timeout: float = 30.0,
) -> bool:
    """Stop a child without restarting it; True if it was running.

    Dynamic supervisors take the child's ref (and stop it in the calling
    thread); static ones take its id or its current ref. A light process
    child is asked to stop (it exits at its next check) and waited for.
    """
    dynamic = dynamic_of(sup)
    if dynamic is not None and isinstance(child, pykka.ActorRef | LightProcess):
        return dynamic.terminate_child(child)
    return bool(call(sup, "terminate_child", child, timeout=timeout))


def restart_child(
    sup: pykka.ActorRef[Any], child_id: str, *, timeout: float = 30.0
) -> pykka.ActorRef[Any]:
    """Start a terminated child of a static supervisor again."""
    ref: pykka.ActorRef[Any] = call(sup, "restart_child", child_id, timeout=timeout)
    return ref


def delete_child(sup: pykka.ActorRef[Any], child_id: str, *, timeout: float = 5.0) -> None:
    """Remove a terminated child's spec from a static supervisor."""
    call(sup, "delete_child", child_id, timeout=timeout)
