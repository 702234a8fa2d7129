"""The Telemetry actor: metrics, percentiles, history ring, logging, redaction."""

from __future__ import annotations

import io
import json
import threading
from typing import Any

import pytest

from dspex.actors._telemetry import Telemetry, percentile, redact, render_history
from dspex.actors._telemetry_emitter import TelemetryEmitter, TelemetryEvent
from dspex.supervision import EventBus


@pytest.fixture
def telemetry() -> Any:
    ref = Telemetry.start_link(history_size=3, latency_window=100)
    yield ref
    ref.stop()


def _barrier(ref: Any) -> None:
    # an ask queues behind every earlier tell, so it proves they were handled
    ref.proxy().metrics().get(timeout=5)


def test_percentile_nearest_rank() -> None:
    assert percentile([], 50) is None
    assert percentile([5.0], 95) == 5.0
    samples = [float(i) for i in range(1, 101)]
    assert percentile(samples, 50) == 50.0
    assert percentile(samples, 95) == 95.0


def test_lm_metrics_aggregate_per_model(telemetry: Any) -> None:
    emit = TelemetryEmitter(lambda: telemetry)
    for ms in (10.0, 20.0, 30.0):
        emit.emit(
            "lm.request.stop",
            model="openai/a",
            duration_ms=ms,
            prompt_tokens=5,
            completion_tokens=2,
            cache_hit=ms == 10.0,
            retries=1,
        )
    emit.emit("lm.request.exception", model="openai/a", error="RateLimitError", retries=2)
    emit.emit("lm.request.stop", model="openai/b", duration_ms=1.0)
    m = telemetry.proxy().metrics().get(timeout=5)
    a = m["models"]["openai/a"]
    assert a["requests"] == 4
    assert a["errors"] == {"RateLimitError": 1}
    assert a["retries"] == 5
    assert (a["prompt_tokens"], a["completion_tokens"], a["total_tokens"]) == (15, 6, 21)
    assert a["p50_ms"] == 20.0 and a["p95_ms"] == 30.0
    assert a["cache_hits"] == 1 and a["cache_hit_rate"] == round(1 / 3, 4)
    assert m["models"]["openai/b"]["requests"] == 1


def test_run_and_supervisor_metrics(telemetry: Any) -> None:
    emit = TelemetryEmitter(lambda: telemetry)
    bus = EventBus()
    bus.subscribe(emit.sink)
    emit.emit("program.run.start")
    emit.emit("program.run.stop", duration_ms=4.0)
    emit.emit("program.run.start")
    emit.emit("program.run.exception", error="ValueError")
    bus.emit("supervisor.child_restarted", supervisor="lms", child="lm")
    bus.emit("supervisor.child_restarted", supervisor="lms", child="lm")
    m = telemetry.proxy().metrics().get(timeout=5)
    assert m["runs"]["started"] == 2 and m["runs"]["succeeded"] == 1
    assert m["runs"]["failed"] == 1 and m["runs"]["errors"] == {"ValueError": 1}
    assert m["supervision"]["restarts"] == 2
    assert m["supervision"]["restarts_by_child"] == {"lm": 2}


def test_history_is_a_bounded_ring(telemetry: Any) -> None:
    emit = TelemetryEmitter(lambda: telemetry)
    for i in range(5):
        emit.emit(
            "lm.request.stop",
            model="m/x",
            messages=[{"role": "user", "content": f"q{i}"}],
            outputs=[f"a{i}"],
        )
    entries = telemetry.proxy().history(10).get(timeout=5)
    assert [e.outputs for e in entries] == [("a2",), ("a3",), ("a4",)]
    text = render_history(telemetry.proxy().history(1).get(timeout=5))
    assert "User message:" in text and "q4" in text and "Response:" in text and "a4" in text


def test_json_log_lines_and_no_secrets() -> None:
    stream = io.StringIO()
    ref = Telemetry.start_link(format="json", stream=stream)
    try:
        ref.tell(
            TelemetryEvent(
                "lm.request.stop",
                {
                    "model": "openai/a",
                    "api_key": "sk-SENTINEL-123",
                    "headers": {"Authorization": "Bearer sk-SENTINEL-123"},
                },
            )
        )
        _barrier(ref)
    finally:
        ref.stop()
    out = stream.getvalue()
    assert "sk-SENTINEL-123" not in out
    line = json.loads(out.strip().splitlines()[0])
    assert line["event"] == "lm.request.stop" and line["model"] == "openai/a"
    assert line["api_key"] == "***"


def test_redact_nested() -> None:
    assert redact({"x": 1, "inner": {"API_KEY": "k"}, "token": ""}) == {
        "x": 1,
        "inner": {"API_KEY": "***"},
        "token": "",
    }


def test_emit_never_blocks_and_counts_drops() -> None:
    emitter = TelemetryEmitter(lambda: None)
    emitter.emit("lm.request.stop")
    assert emitter.dropped == 1
    ref = Telemetry.start_link()
    ref.stop()
    late = TelemetryEmitter(lambda: ref)
    late.emit("x")
    assert late.dropped == 1


def test_subscribers_see_events(telemetry: Any) -> None:
    seen = threading.Event()
    telemetry.proxy().subscribe(lambda e: seen.set() if e.name == "cache.flush" else None).get(
        timeout=5
    )
    TelemetryEmitter(lambda: telemetry).emit("cache.flush", rows=3)
    assert seen.wait(5)


def test_a_telemetry_event_keeps_its_dataclass_behaviour() -> None:
    # A slotted class now (cheaper to define and to make): defaults, equality, repr.
    bare = TelemetryEvent("run.start")
    assert bare.data == {} and isinstance(bare.time, float) and bare.time > 0
    event = TelemetryEvent("lm.request.stop", {"model": "m"}, 1.5)
    assert event == TelemetryEvent("lm.request.stop", {"model": "m"}, time=1.5)
    assert event != TelemetryEvent("lm.request.stop", {"model": "n"}, 1.5)
    assert repr(event) == "TelemetryEvent(name='lm.request.stop', data={'model': 'm'}, time=1.5)"
