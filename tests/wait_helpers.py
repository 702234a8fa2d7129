"""Bounded waits for tests: poll a condition until it holds or fail the test.

Prefer an Event, a future or ``EventLog.wait`` when the code under test
signals what you wait for; poll with these only when it does not (a count
on a fake server, a thread that ends, a field that changes).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest

WAIT = 30.0  # generous: only a failing test waits this long


def wait_until(condition: Callable[[], bool], timeout: float = WAIT, what: str = "") -> None:
    """Block (bounded) until ``condition()`` holds; fail the test otherwise."""
    deadline = time.monotonic() + timeout
    pause = threading.Event()  # never set: a bounded pause between polls
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {timeout}s: {what or condition}")
        pause.wait(0.005)


def wait_past(deadline: float) -> None:
    """Block until ``deadline`` (``time.monotonic()``) has passed: a condition, not a guess.

    For work that must overrun its run's deadline: ``wait_past(run.deadline)``.
    """
    pause = threading.Event()
    while time.monotonic() <= deadline:
        pause.wait(0.005)
