"""Cluster-wide rate limits on Ray: one named budget actor per model endpoint.

:class:`RateBudget` is the Ray actor holding a model's rpm/tpm allowance (a
:class:`~dspex.actors.RateLimiter`, so the buckets and AIMD on 429 are the
same as in one process). :func:`install_ray_limits` makes the LM clients of
the calling process draw from these budgets (through
:class:`~dspex.actors._lm._resilience.SharedRateLimiter`, in leases of up to
about a second's allowance); Ray worker processes of dspex call it before
their runtime starts any client.

The budgets are *detached* named actors in the ``dspex`` namespace: a
budget created by a replica must outlive that replica (a non-detached actor
dies with the worker that created it). Their names carry the Ray job id, so
the processes of one driver share them and a later job starts afresh.
:func:`kill_budgets` removes them; the driver's ray servers and pool do so
when they stop. The first client to create a budget sets its rpm/tpm; later
clients with other values share it as is.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from typing import Any

from dspex.actors._lm._resilience import RateLimiter, install_shared_limits
from dspex.actors._lm._resilience._shared import LeaseSource

__all__ = ["BUDGET_PREFIX", "NAMESPACE", "budget_stats", "install_ray_limits", "kill_budgets"]

NAMESPACE = "dspex"
BUDGET_PREFIX = "dspex.ratelimit:"
CREATE_TIMEOUT = 60.0  # seconds for a budget actor to be placed and started

_actor_class: Any = None
_class_lock = threading.Lock()


class _Budget:
    """The actor body (decorated with ``ray.remote`` on first use)."""

    def __init__(self, rpm: int | None, tpm: int | None) -> None:
        self.limiter = RateLimiter(rpm, tpm)
        self.leases = 0
        self.requests = 0  # requests granted in leases
        self.tokens = 0
        self.immediate = 0  # leases covered at once
        self.delayed = 0  # leases the holder must wait for
        self.throttled = 0

    def lease(self, requests: int, tokens: int, successes: int) -> float:
        for _ in range(min(successes, 1000)):  # bounded: recovery is capped at 1.0 anyway
            self.limiter.on_success()
        wait = self.limiter.reserve(tokens, requests)
        self.leases += 1
        self.requests += requests
        self.tokens += tokens
        if wait > 0:
            self.delayed += 1
        else:
            self.immediate += 1
        return wait

    def charge(self, tokens: int) -> None:
        self.limiter.settle(0, tokens)
        self.tokens += tokens

    def throttle(self) -> None:
        self.throttled += 1
        self.limiter.on_rate_limited()

    def stats(self) -> dict[str, Any]:
        return {
            "rpm": self.limiter.rpm,
            "tpm": self.limiter.tpm,
            "current_rpm": self.limiter.current_rpm,
            "current_tpm": self.limiter.current_tpm,
            "leases": self.leases,
            "requests": self.requests,
            "tokens": self.tokens,
            "immediate": self.immediate,
            "delayed": self.delayed,
            "throttled": self.throttled,
        }


def _remote_class() -> Any:
    global _actor_class
    import ray

    with _class_lock:
        if _actor_class is None:
            # num_cpus=0: a budget must never wait for a free CPU to be placed.
            _actor_class = ray.remote(num_cpus=0, max_restarts=-1)(_Budget)
        return _actor_class


class _RaySource:
    """A budget actor's handle seen as a :class:`LeaseSource` (its lease is awaited)."""

    def __init__(self, handle: Any) -> None:
        self.handle = handle

    async def lease(self, requests: int, tokens: int, successes: int) -> float:
        ref = self.handle.lease.remote(requests, tokens, successes)
        wait: float = await asyncio.wrap_future(ref.future())
        return wait

    def charge(self, tokens: int) -> None:
        self.handle.charge.remote(tokens)

    def throttled(self) -> None:
        self.handle.throttle.remote()


def _prefix() -> str:
    """Budget names of this Ray job: a later job never inherits an old job's rpm/tpm."""
    import ray

    return f"{BUDGET_PREFIX}{ray.get_runtime_context().get_job_id()}:"


def budget(key: str, rpm: int | None, tpm: int | None) -> LeaseSource:
    """The lease source of budget ``key``, creating the actor on first use."""
    handle = (
        _remote_class()
        .options(
            name=_prefix() + key,
            namespace=NAMESPACE,
            lifetime="detached",
            get_if_exists=True,
        )
        .remote(rpm, tpm)
    )
    return _RaySource(handle)


def install_ray_limits() -> None:
    """Make this process's LM clients draw from the cluster's shared budgets (idempotent)."""
    install_shared_limits(budget)


def _budget_names() -> list[str]:
    import ray

    prefix = _prefix()
    return sorted(
        entry["name"]
        for entry in ray.util.list_named_actors(all_namespaces=True)
        if entry.get("namespace") == NAMESPACE and entry["name"].startswith(prefix)
    )


def budget_stats(timeout: float = 10.0) -> dict[str, dict[str, Any]]:
    """Counters of this job's budgets, by model key (leases, grants, 429s)."""
    import ray

    names = _budget_names()
    handles = [ray.get_actor(name, namespace=NAMESPACE) for name in names]
    values: list[dict[str, Any]] = ray.get([h.stats.remote() for h in handles], timeout=timeout)
    start = len(_prefix())
    return {name[start:]: value for name, value in zip(names, values, strict=True)}


def kill_budgets() -> int:
    """Remove this job's budget actors (a fresh allowance next time); returns how many."""
    import ray

    if not ray.is_initialized():  # the cluster (and its budgets) is already gone
        return 0
    names = _budget_names()
    for name in names:
        with contextlib.suppress(ValueError):  # gone meanwhile
            ray.kill(ray.get_actor(name, namespace=NAMESPACE), no_restart=True)
    return len(names)
