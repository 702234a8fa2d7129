"""Helpers for the runtime-level tests: starting and stopping Runtimes and a
ChatAdapter-format reply that echoes the question (bounded waits: wait_helpers).

Every runtime started through :func:`runtime_starter` is stopped on exit, so
the autouse leak check in ``conftest.py`` holds.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from wait_helpers import wait_until  # noqa: F401  (re-exported; it lives in wait_helpers)

import dspex
from dspex.programs import settings as program_settings
from dspex.supervision import which_children
from dspex.testing import FakeProvider

SECRET = "sk-SENTINEL-7f3a9c2e5b1d4e8f"  # a key that must never show up anywhere

_QUESTION = re.compile(r"\[\[ ## question ## \]\]\n(.*?)(?:\n\n|$)", re.S)


def chat_answer(answer: str) -> str:
    """What ChatAdapter parses as ``answer``."""
    return f"[[ ## answer ## ]]\n{answer}\n\n[[ ## completed ## ]]"


def echo_answers(fake: FakeProvider, prefix: str = "") -> None:
    """Script ``fake`` to answer each question with ``prefix + question``."""

    def reply(body: dict[str, Any]) -> str:
        content = fake.messages_of(body)[-1]["content"]
        match = _QUESTION.search(content)
        return chat_answer(prefix + (match.group(1) if match else content))

    fake.reply = reply


def lm_client_refs(rt: dspex.Runtime) -> list[Any]:
    """The live LMClient actors under the runtime's LMSupervisor."""
    return [c.ref for c in which_children(rt.whereis("lms")) if c.id.startswith("lm:")]


StartRuntime = Callable[..., dspex.Runtime]


@contextlib.contextmanager
def runtime_starter(tmp_path: Path) -> Iterator[StartRuntime]:
    """Yield ``start(**settings)``: ``dspex.start(...)``, every one stopped on exit.

    Test modules wrap it in a ``start_runtime`` fixture. The cache lives under
    ``tmp_path`` unless ``cache=`` says otherwise, and the program settings
    (``dspex.configure``'s global layer) are restored on exit.
    """
    snapshot = dict(program_settings.config)
    started: list[dspex.Runtime] = []

    def start(*args: Any, **kwargs: Any) -> dspex.Runtime:
        cache = dict(kwargs.pop("cache", {}))
        cache.setdefault("dir", tmp_path / "cache")
        rt = dspex.start(*args, cache=cache, **kwargs)
        started.append(rt)
        return rt

    try:
        yield start
    finally:
        for rt in reversed(started):
            rt.stop()
        program_settings.reset()
        program_settings.configure(**snapshot)


def make_lm(fake: FakeProvider, model: str = "openai/test-model", **kwargs: Any) -> dspex.LM:
    """An LM pointed at ``fake`` with the sentinel key."""
    return dspex.LM(model, api_base=fake.url, api_key=SECRET, **kwargs)
