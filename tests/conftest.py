"""Shared fixtures: every test must stop what it started.

The autouse ``no_leaks`` fixture snapshots live threads before a test and,
after it, waits (bounded) for any new thread to finish. A thread still alive,
or a pykka actor still registered, fails the test and is then cleaned up so
one leak does not cascade into every later test.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pykka
import pytest

try:  # tqdm's monitor thread would look like a leak
    import tqdm

    tqdm.tqdm.monitor_interval = 0
except ImportError:  # pragma: no cover
    pass

LEAK_GRACE_SECONDS = 5.0


def _new_threads(before: set[threading.Thread]) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t not in before and t.is_alive()]


@pytest.fixture(autouse=True)
def no_leaks() -> Iterator[None]:
    before = set(threading.enumerate())
    yield
    deadline = time.monotonic() + LEAK_GRACE_SECONDS
    for thread in _new_threads(before):
        thread.join(max(0.0, deadline - time.monotonic()))
    actors = pykka.ActorRegistry.get_all()
    leaked = _new_threads(before)
    if actors:
        pykka.ActorRegistry.stop_all(block=True, timeout=5)
    if actors or leaked:
        names = [type(ref.actor).__name__ if hasattr(ref, "actor") else str(ref) for ref in actors]
        pytest.fail(
            f"test leaked actors {names} and threads {[t.name for t in leaked]}; "
            "stop what the test started (use fixtures with teardown)",
            pytrace=False,
        )
