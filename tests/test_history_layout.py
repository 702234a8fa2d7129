"""``inspect_history()`` prints DSPy's layout (colours on a terminal only) and ``lm.history``
entries carry DSPy's keys.

tests/golden/inspect_history*.txt are DSPy 3.4.1's ``pretty_print_history`` output
for the entries in tests/golden/inspect_history_entries.json, printed to a file
(plain) and to stdout (coloured).
"""

from __future__ import annotations

import datetime
import io
import json
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from runtime_helpers import SECRET, StartRuntime, echo_answers, make_lm

import dspex
from dspex.actors._lm._types import Completion, LMResponse, Usage
from dspex.actors._telemetry import HistoryEntry, render_history
from dspex.testing import DummyLM, FakeOpenAI

GOLDEN = Path(__file__).parent / "golden"
DSPY_KEYS = {
    "prompt",
    "messages",
    "kwargs",
    "response",
    "outputs",
    "usage",
    "cost",
    "timestamp",
    "uuid",
    "model",
    "response_model",
    "model_type",
}


def _golden_entries() -> list[HistoryEntry]:
    entries = json.loads((GOLDEN / "inspect_history_entries.json").read_text(encoding="utf-8"))
    return [
        HistoryEntry(
            model="openai/test",
            messages=tuple(e["messages"]),
            outputs=tuple(e["outputs"]),
            usage={},
            duration_ms=1.0,
            cache_hit=False,
            time=datetime.datetime.fromisoformat(e["timestamp"]).timestamp(),
        )
        for e in entries
    ]


def test_render_matches_dspys_layout_plain_and_coloured() -> None:
    entries = _golden_entries()
    plain = (GOLDEN / "inspect_history.txt").read_text(encoding="utf-8")
    coloured = (GOLDEN / "inspect_history_colors.txt").read_text(encoding="utf-8")
    assert render_history(entries) == plain
    assert render_history(entries, colors=True) == coloured


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_inspect_history_colours_a_terminal_only(
    start_runtime: StartRuntime, monkeypatch: pytest.MonkeyPatch
) -> None:
    start_runtime()
    with dspex.context(lm=DummyLM([{"answer": "4"}])):
        dspex.Predict("question -> answer")(question="2+2?")
    terminal, piped, to_file = _Terminal(), io.StringIO(), io.StringIO()
    monkeypatch.setattr(sys, "stdout", terminal)
    text = dspex.inspect_history()
    monkeypatch.setattr(sys, "stdout", piped)
    assert dspex.inspect_history() == text
    assert dspex.inspect_history(file=to_file) == text
    assert "\x1b[31mUser message:\x1b[0m" in terminal.getvalue()
    assert "\x1b[32m[[ ## answer ## ]]" in terminal.getvalue()
    assert piped.getvalue() == to_file.getvalue() == text and "\x1b[" not in text
    assert text.startswith("\n\n\n\n[") and "\n\n\nUser message:\n\n[[ ## question" in text


def test_lm_history_entries_carry_dspys_keys(start_runtime: StartRuntime) -> None:
    start_runtime()
    with FakeOpenAI(api_key=SECRET) as fake:
        echo_answers(fake)
        lm = make_lm(fake, temperature=0.5)
        lm("first")
        lm("second", max_tokens=9, api_key_hint="x")
        history = lm.history
    assert len(history) == 2
    first, second = history
    assert DSPY_KEYS <= set(first)
    assert first["messages"] == [{"role": "user", "content": "first"}]
    # As DSPy: the call's own parameters, not the LM's defaults (temperature=0.5), and
    # never an api_* entry.
    assert first["kwargs"] == {} and second["kwargs"] == {"max_tokens": 9}
    assert isinstance(first["response"], LMResponse) and "first" in first["outputs"][0]
    assert first["usage"]["total_tokens"] == (
        first["usage"]["prompt_tokens"] + first["usage"]["completion_tokens"]
    )
    assert first["cost"] is None and first["prompt"] is None
    assert datetime.datetime.fromisoformat(first["timestamp"]) <= datetime.datetime.fromisoformat(
        second["timestamp"]
    )
    assert first["uuid"] != second["uuid"] and len(first["uuid"]) == 36
    assert {uuid.UUID(e["uuid"]).version for e in (first, second)} == {4}  # random UUIDs
    assert first["model"] == lm.model and first["response_model"]
    assert first["model_type"] == "chat"
    assert SECRET not in repr(history)


class _EchoLM:
    model = "custom/echo"

    def __init__(self) -> None:
        self.kwargs: dict[str, Any] = {}

    def generate(self, messages: Any, params: Any) -> LMResponse:
        return LMResponse((Completion("[[ ## answer ## ]]\nhi", "stop"),), Usage(2, 1), "echo-v2")


def test_a_custom_lms_calls_keep_their_parameters_and_response(
    start_runtime: StartRuntime,
) -> None:
    rt = start_runtime()
    with dspex.context(lm=_EchoLM()):
        dspex.Predict("question -> answer")(question="q", config={"temperature": 0.9})
    [entry] = rt.history(1)
    assert entry.kwargs["temperature"] == 0.9
    assert entry.response_model == "echo-v2" and entry.uuid


def test_dummy_lm_history_has_dspys_keys() -> None:
    lm = DummyLM([{"answer": "a"}, {"answer": "b"}])
    lm("hello")
    lm.generate([{"role": "user", "content": "x"}], {"n": 1})
    first, second = lm.history
    assert DSPY_KEYS <= set(first)
    assert first["prompt"] == "hello" and second["prompt"] is None
    assert first["response_model"] == "dummy" and first["model_type"] == "chat"
    assert second["kwargs"]["n"] == 1 and first["uuid"] != second["uuid"]
