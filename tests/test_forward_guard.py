"""Calling ``module.forward(...)`` directly warns, as in DSPy; calling the module does not.

A direct call skips the program run (supervision, deadline, cancel), callbacks,
per-module history and usage tracking, so DSPy's warning points at the fix.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

import dspex
from dspex.utils.callback import BaseCallback

WARNING = "directly is discouraged. Please use module(...) instead."


class Echo(dspex.Module):
    def forward(self, x: str) -> str:
        return x


class Shout(Echo):
    def forward(self, x: str) -> str:
        return super().forward(x).upper()  # the super() chain is the same call


class Outer(dspex.Module):
    def __init__(self, direct: bool) -> None:
        super().__init__()
        self.inner = Shout()
        self.direct = direct

    def forward(self, x: str) -> str:
        return self.inner.forward(x) if self.direct else self.inner(x)


class Wrapped(dspex.Module):
    """A module whose own ``__call__`` runs ``forward`` (DSPy exempts this)."""

    def __call__(self, x: str) -> str:
        return self.forward(x)

    def forward(self, x: str) -> str:
        return x + "!"


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if WARNING in r.getMessage()]


def test_a_direct_forward_call_warns_once_naming_the_module(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="dspex.programs"):
        assert Shout().forward("hi") == "HI"
    assert _warnings(caplog) == [f"Calling module.forward(...) on Shout {WARNING}"]


def test_a_sub_module_forward_called_from_a_parent_warns(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="dspex.programs"):
        assert Outer(direct=True)("hi") == "HI"
    assert _warnings(caplog) == [f"Calling module.forward(...) on Shout {WARNING}"]


class _Seen(BaseCallback):
    def __init__(self) -> None:
        self.modules: list[str] = []

    def on_module_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        self.modules.append(type(instance).__name__)


def test_calling_the_module_does_not_warn(caplog: pytest.LogCaptureFixture) -> None:
    seen = _Seen()
    with caplog.at_level(logging.WARNING, logger="dspex.programs"):
        assert Outer(direct=False)("hi") == "HI"
        assert Wrapped()("hi") == "hi!"
        assert asyncio.run(Shout().acall("hi")) == "HI"
        with dspex.context(callbacks=[seen]):  # forward read through the callback path
            assert Shout()("cb") == "CB"
        assert Echo.forward(Echo(), "unbound") == "unbound"  # read from the class
    assert seen.modules == ["Shout"]
    assert _warnings(caplog) == []
