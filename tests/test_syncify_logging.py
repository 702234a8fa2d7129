"""``syncify``, DSPy's logging switches, and the settings attributes DSPy programs read."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from typing import Any

import pytest

import dspex
from dspex.errors import UsageError
from dspex.testing import DummyLM
from dspex.utils import logging_utils


class AsyncQA(dspex.Module):
    def __init__(self) -> None:
        super().__init__()
        self.predict = dspex.Predict("question -> answer")

    async def aforward(self, question: str) -> dspex.Prediction:
        await asyncio.sleep(0)
        return dspex.Prediction(answer=f"async:{question}", lm=dspex.settings.lm)


def test_syncify_in_place_runs_aforward_from_sync_code() -> None:
    program = AsyncQA()
    assert dspex.syncify(program) is program
    lm = DummyLM([])
    with dspex.context(lm=lm):
        result = program(question="q")
    assert result.answer == "async:q"
    assert result.lm is lm  # the caller's context reaches the coroutine


def test_syncify_wrapper_leaves_the_program_alone() -> None:
    program = AsyncQA()
    wrapper = dspex.syncify(program, in_place=False)
    assert wrapper is not program and wrapper.program is program
    assert "forward" not in vars(program)
    assert wrapper(question="w").answer == "async:w"
    assert [name for name, _ in wrapper.named_predictors()] == ["program.predict"]


def test_syncify_works_while_an_event_loop_runs_in_the_thread() -> None:
    program = dspex.syncify(AsyncQA())
    lm = DummyLM([])

    async def main() -> Any:
        with dspex.context(lm=lm):
            return dspex.utils.syncify is dspex.syncify, program.forward(question="nested")

    same, result = asyncio.run(main())
    assert same
    assert result.answer == "async:nested" and result.lm is lm


def test_syncify_refuses_a_module_without_aforward() -> None:
    with pytest.raises(UsageError, match="aforward"):
        dspex.syncify(dspex.Module())


class Stderr:
    """What was written to ``sys.stderr`` (pytest's capture) so far."""

    def __init__(self, capsys: pytest.CaptureFixture[str]) -> None:
        self._capsys = capsys
        self._seen = ""

    def getvalue(self) -> str:
        self._seen += self._capsys.readouterr().err
        return self._seen


@pytest.fixture
def captured_stderr(capsys: pytest.CaptureFixture[str]) -> Iterator[Stderr]:
    logger = logging.getLogger("dspex_probe")
    yield Stderr(capsys)
    logger.handlers.clear()
    dspex.enable_logging()


def test_configure_dspy_loggers_writes_dspys_layout(captured_stderr: Stderr) -> None:
    dspex.configure_dspy_loggers("dspex_probe")
    dspex.configure_dspy_loggers("dspex_probe")  # a second call replaces the handler
    logger = logging.getLogger("dspex_probe")
    assert len(logger.handlers) == 1 and logger.propagate is False
    logger.info("hello")
    line = captured_stderr.getvalue()
    assert line.endswith(" INFO dspex_probe: hello\n")
    assert line.count("hello") == 1


def test_disable_logging_silences_the_stream_and_dspex_loggers(
    captured_stderr: Stderr, caplog: pytest.LogCaptureFixture
) -> None:
    dspex.configure_dspy_loggers("dspex_probe")
    dspex.disable_logging()
    logging.getLogger("dspex_probe").info("hidden")
    with caplog.at_level(logging.WARNING):
        logging.getLogger("dspex.cache").warning("muted")
    assert captured_stderr.getvalue() == ""
    assert "muted" not in caplog.text
    dspex.enable_logging()
    logging.getLogger("dspex_probe").info("shown")
    assert "shown" in captured_stderr.getvalue()
    assert logging.getLogger("dspex").level == logging.NOTSET  # restored
    assert logging_utils.DSPY_LOGGING_STREAM is logging_utils.LOGGING_STREAM


def test_telemetry_lines_go_through_the_switchable_stream(captured_stderr: Stderr) -> None:
    from dspex.actors._telemetry import Telemetry
    from dspex.actors._telemetry_emitter import TelemetryEvent

    def log_one(name: str) -> None:
        ref = Telemetry.start(format="json", level="info")
        try:
            ref.tell(TelemetryEvent(name, {"model": "m"}))
            ref.proxy().metrics().get(timeout=10)  # the event was handled before the reply
        finally:
            ref.stop(timeout=10)

    dspex.disable_logging()
    log_one("quiet.event")
    assert captured_stderr.getvalue() == ""
    dspex.enable_logging()
    log_one("loud.event")
    assert '"event": "loud.event"' in captured_stderr.getvalue()


DSPY_SETTINGS = [
    "lm", "adapter", "rm", "trace", "callbacks", "num_threads", "max_errors",
    "async_max_workers", "track_usage", "usage_tracker", "caller_predict", "caller_modules",
    "stream_listeners", "send_stream", "branch_idx", "disable_history", "provide_traceback",
    "max_trace_size", "max_history_size", "warn_on_type_mismatch",
    "allow_tool_async_sync_conversion", "interpreter_factory",
]  # fmt: skip


@pytest.mark.parametrize("name", DSPY_SETTINGS)
def test_every_setting_dspy_documents_reads_without_error(name: str) -> None:
    value = getattr(dspex.settings, name)
    assert value == dspex.settings[name] == dspex.settings.get(name, "absent")


def test_settings_usage_tracker_is_the_active_tracker() -> None:
    assert dspex.settings.usage_tracker is None
    with dspex.track_usage() as tracker:
        assert dspex.settings.usage_tracker is tracker
    assert dspex.settings.usage_tracker is None
