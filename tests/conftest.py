"""Shared fixtures: every test must stop what it started.

The autouse ``no_leaks`` fixture snapshots live threads before a test and,
after it, waits (bounded) for any new thread to finish. A thread still alive,
or a pykka actor still registered, fails the test and is then cleaned up so
one leak does not cascade into every later test.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pykka
import pytest

try:  # tqdm's monitor thread would look like a leak
    import tqdm

    tqdm.tqdm.monitor_interval = 0
except ImportError:  # pragma: no cover
    pass

LEAK_GRACE_SECONDS = 5.0

# Ray (tests/test_ray_*.py) reads these when it is imported: no usage stats, and
# a local cluster bound to loopback (by default Ray binds to the address the
# route to a public DNS server would use).
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")


def _new_threads(before: set[threading.Thread]) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t not in before and t.is_alive()]


@pytest.fixture(scope="session", autouse=True)
def default_runtime(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """The lazily started default runtime, started up front so tests share it.

    Module calls outside an explicit ``dspex.start()`` run in it; starting it
    before any test keeps its long-lived actors out of the per-test leak check.
    Its cache lives in a temporary directory, never the user's home.
    """
    import os

    os.environ["DSPEX_CACHE__DIR"] = str(tmp_path_factory.mktemp("dspex-cache"))
    # No pre-started run actor in the shared runtime: one created during a test
    # would outlive it and look like a leak. Explicit runtimes in tests keep it.
    os.environ["DSPEX_RUNTIME__WARM_RUNS"] = "0"
    from dspex.actors import default_runtime as start_default
    from dspex.actors import stop_default_runtime

    runtime = start_default()
    yield runtime
    stop_default_runtime()


@pytest.fixture(autouse=True)
def no_leaks() -> Iterator[None]:
    before = set(threading.enumerate())
    actors_before = {ref.actor_urn for ref in pykka.ActorRegistry.get_all()}
    yield
    deadline = time.monotonic() + LEAK_GRACE_SECONDS
    for thread in _new_threads(before):
        thread.join(max(0.0, deadline - time.monotonic()))
    actors = [ref for ref in pykka.ActorRegistry.get_all() if ref.actor_urn not in actors_before]
    leaked = _new_threads(before)
    for ref in actors:
        ref.stop(block=True, timeout=5)
    if actors or leaked:
        names = [ref.actor_class.__name__ for ref in actors]
        pytest.fail(
            f"test leaked actors {names} and threads {[t.name for t in leaked]}; "
            "stop what the test started (use fixtures with teardown)",
            pytrace=False,
        )


@pytest.fixture
def clean_settings() -> Iterator[None]:
    """Program settings (``dspex.configure``'s global layer) reset before and after.

    Modules whose tests configure settings globally opt in with
    ``pytestmark = pytest.mark.usefixtures("clean_settings")``.
    """
    from dspex.programs import settings

    settings.reset()
    yield
    settings.reset()


@pytest.fixture
def start_runtime(tmp_path: Path) -> Iterator[Callable[..., Any]]:
    """Start runtimes (cache in ``tmp_path``) that are all stopped after the test."""
    from runtime_helpers import runtime_starter

    with runtime_starter(tmp_path) as start:
        yield start


@pytest.fixture
def make_pool() -> Iterator[Callable[..., Any]]:
    """Make WorkerPools that are all stopped after the test."""
    from dspex.supervision import WorkerPool

    pools: list[WorkerPool] = []

    def make(**options: Any) -> WorkerPool:
        pool = WorkerPool(**options)
        pools.append(pool)
        return pool

    yield make
    for pool in pools:
        pool.stop()
