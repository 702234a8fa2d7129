"""What OpenTelemetry export adds per LM call, beside the SDK's own floor (run on demand).

    python bench/otel.py [--calls 2000] [--rounds 7]

One process, one runtime, ``dspex.LM`` against a fake OpenAI server on
127.0.0.1 answering at once (0 ms). The providers are the SDK's: a
``TracerProvider`` with a ``BatchSpanProcessor`` feeding an exporter that
drops every batch (the processor's queue and worker thread are counted; an
exporter's serialisation and network are not ours to count), and a
``MeterProvider`` with an ``InMemoryMetricReader`` (aggregation happens at
record time; nothing is collected during the bench).

Each round runs five modes, in an order that rotates between rounds:

- ``off``: export disabled (the hooks find no instrumentation);
- ``floor``: the SDK's minimum at dspex's own hook points: one bare span
  (no name beyond ``chat``, no attributes) started and ended where dspex's
  ``chat`` span is, and two histogram points recorded where dspex records
  its GenAI metrics (the Telemetry actor, for each answer from upstream);
- ``same``: the SDK doing what dspex asks of it, with no dspex code: a
  ``chat`` CLIENT span with the attributes dspex gives it (ten or eleven,
  prebuilt), created at the end of the call with the start time taken at
  its start, and three histogram points per upstream answer;
- ``api``: dspex's instrumentation with the ``chat`` span made through the
  SDK's span API (``Tracer.start_span``, ``Span.end``): what dspex did before
  departure 29, and what it still does for a provider that is not the SDK's;
- ``on``: dspex's instrumentation: the GenAI ``chat`` CLIENT span with its
  attributes, written to the provider's span processors as an ended span
  (departure 29), three histogram points per upstream answer.

Two call paths: upstream calls (``cache=False``: through the client's loop
and HTTP) and cache hits (no I/O, so the span's cost stands out). For each,
the calling thread's CPU time (``time.thread_time``: the work added to the
caller) and the whole process's CPU time (``time.process_time``: that plus
the Telemetry actor's metric records, the span processor's thread, the
fake's thread, identical across modes), per call. The figures are the
medians over rounds of each round's difference from ``off``: a shared
machine's drift moves all three modes of a round alike.

Also printed: the share of each mode's spans that reached the exporter (a
full batch queue drops the rest), the same SDK work in a tight loop (no
dspex call around it), and the check each disabled hook makes. Asserts
nothing.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import SpanKind

import dspex
from dspex.actors import _otel
from dspex.testing import FakeOpenAI

MODES = ("off", "floor", "same", "api", "on")
_POINT = {"gen_ai.operation.name": "chat"}


class Drop(SpanExporter):
    """Counts the spans it is given (those the batch queue did not drop)."""

    def __init__(self) -> None:
        self.count = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.count += len(spans)
        return SpanExportResult.SUCCESS


class Floor:
    """The SDK's least work at dspex's hooks: a bare span, two histogram points."""

    def __init__(self, tracer_provider: TracerProvider, meter_provider: MeterProvider) -> None:
        self.tracer = tracer_provider.get_tracer("floor")
        meter = meter_provider.get_meter("floor")
        self.first = meter.create_histogram("floor.first")
        self.second = meter.create_histogram("floor.second")

    def start_lm(self, *args: Any, **kwargs: Any) -> Any:
        return self.tracer.start_span("chat")

    def end_lm(self, span: Any, response: Any, error: BaseException | None) -> None:
        span.end()

    def on_event(self, name: str, data: Mapping[str, Any]) -> None:
        if name == "lm.request.stop" and not data.get("cache_hit"):
            self.first.record(1, _POINT)
            self.second.record(0.001, _POINT)


class Same(Floor):
    """The SDK's work for dspex's span and points, from prebuilt attributes."""

    END = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-4o-mini",
        "server.address": "127.0.0.1",
        "server.port": 8000,
        "gen_ai.usage.input_tokens": 10,
        "gen_ai.usage.output_tokens": 1,
        "gen_ai.response.model": "gpt-4o-mini",
        "gen_ai.response.finish_reasons": ("stop",),
        "dspex.lm.cost_usd": 0.0,
    }
    HIT = {**END, "dspex.lm.cache_hit": True}
    INPUT = {**_POINT, "gen_ai.provider.name": "openai", "gen_ai.token.type": "input"}
    OUTPUT = {**INPUT, "gen_ai.token.type": "output"}

    def __init__(self, tracer_provider: TracerProvider, meter_provider: MeterProvider) -> None:
        super().__init__(tracer_provider, meter_provider)
        self.kind = SpanKind.CLIENT

    def start_lm(self, *args: Any, **kwargs: Any) -> Any:
        return time.time_ns()

    def end_lm(self, started: Any, response: Any, error: BaseException | None) -> None:
        attributes = self.HIT if response.cache_hit else self.END
        self.tracer.start_span(
            "chat gpt-4o-mini", kind=self.kind, attributes=attributes, start_time=started
        ).end()

    def on_event(self, name: str, data: Mapping[str, Any]) -> None:
        if name == "lm.request.stop" and not data.get("cache_hit"):
            self.first.record(10, self.INPUT)
            self.first.record(1, self.OUTPUT)
            self.second.record(0.001, self.INPUT)


def timed(
    call: Callable[[int], Any], calls: int, settle: Callable[[], None]
) -> tuple[float, float]:
    """(calling thread's CPU µs, process CPU µs) per call; ``settle`` drains the
    work the calls left to other threads (counted in the process's time)."""
    thread, process = time.thread_time(), time.process_time()
    for i in range(calls):
        call(i)
    thread = time.thread_time() - thread
    settle()
    return thread / calls * 1e6, (time.process_time() - process) / calls * 1e6


def sdk_loop(floor: Floor, n: int = 20_000) -> tuple[float, float]:
    """µs per bare span, and per two histogram points, in a tight loop (this thread)."""
    started = time.thread_time()
    for _ in range(n):
        floor.tracer.start_span("chat").end()
    span = (time.thread_time() - started) / n * 1e6
    started = time.thread_time()
    for _ in range(n):
        floor.first.record(1, _POINT)
        floor.second.record(0.001, _POINT)
    return span, (time.thread_time() - started) / n * 1e6


def hook_cost(n: int = 1_000_000) -> float:
    """ns for the disabled check every hook makes (a module-global read)."""
    started = time.perf_counter()
    for _ in range(n):
        if _otel._tracing is not None:
            raise AssertionError
    return (time.perf_counter() - started) / n * 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000, help="upstream calls per mode and round")
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    tracer_provider = TracerProvider()
    exporter = Drop()
    tracer_provider.add_span_processor(BatchSpanProcessor(exporter))
    meter_provider = MeterProvider(metric_readers=[InMemoryMetricReader()])
    floor = Floor(tracer_provider, meter_provider)
    same = Same(tracer_provider, meter_provider)
    # dspex's tracer and meter (the same objects instrument() gets), on the span API.
    api = _otel.Tracing(
        tracer_provider.get_tracer("dspex", "0.1.0"),
        meter_provider.get_meter("dspex", "0.1.0"),
        direct=False,
    )
    rows: dict[tuple[str, str], list[tuple[float, float]]] = {}
    exported: dict[tuple[str, str], list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp, FakeOpenAI(api_key="sk-bench") as fake:
        fake.reply = "ok"
        rt = dspex.start(cache={"dir": tmp}, telemetry={"format": "off"})

        def settle() -> None:
            rt.flush()  # the Telemetry actor has recorded every call's metrics
            tracer_provider.force_flush()

        try:
            upstream = dspex.LM(
                "openai/gpt-4o-mini", api_base=fake.url, api_key="sk-bench", cache=False
            )
            cached = dspex.LM("openai/gpt-4o-mini", api_base=fake.url, api_key="sk-bench")
            cached("warm")
            paths: dict[str, tuple[Callable[[int], Any], int]] = {
                "upstream": (lambda i: upstream(f"call {i}"), args.calls),
                "cache hit": (lambda i: cached("warm"), args.calls * 5),
            }
            for mode in MODES:  # warm every path in every mode once
                _install(mode, tracer_provider, meter_provider, floor, same, api)
                for call, _ in paths.values():
                    timed(call, 200, settle)
            _otel.uninstrument()
            for r in range(args.rounds):
                turn = r % len(MODES)
                for mode in MODES[turn:] + MODES[:turn]:
                    _install(mode, tracer_provider, meter_provider, floor, same, api)
                    try:
                        for path, (call, calls) in paths.items():
                            before = exporter.count
                            rows.setdefault((path, mode), []).append(timed(call, calls, settle))
                            share = (exporter.count - before) / calls
                            exported.setdefault((path, mode), []).append(share)
                    finally:
                        _otel.uninstrument()
            loop_span, loop_points = sdk_loop(floor)
        finally:
            rt.stop()
            tracer_provider.shutdown()
            meter_provider.shutdown()
    print(f"µs per LM call, medians of {args.rounds} rounds (fake at 0 ms; CPU time)")
    print(f"{'':>24} {'caller thread':>14} {'process':>9}")
    for path in ("upstream", "cache hit"):
        off = rows[(path, "off")]
        print(f"{path + ', off':>24} {_median(off, 0):14.1f} {_median(off, 1):9.1f}")
        for mode, label in (
            ("floor", "SDK floor adds"),
            ("same", "SDK, same data, adds"),
            ("api", "dspex via span API adds"),
            ("on", "dspex adds"),
        ):
            got = rows[(path, mode)]
            added = [(a[0] - b[0], a[1] - b[1]) for a, b in zip(got, off, strict=True)]
            print(f"{label:>24} {_median(added, 0):+14.1f} {_median(added, 1):+9.1f}")
    for path in ("upstream", "cache hit"):
        shares = ", ".join(
            f"{mode} {statistics.median(exported[(path, mode)]):.1%}" for mode in MODES[1:]
        )
        print(f"spans exported, {path} (the rest dropped by a full batch queue): {shares}")
    print(f"SDK in a tight loop: a bare span {loop_span:.1f} µs, two points {loop_points:.1f} µs")
    check = hook_cost()
    share = 3 * check / 1000 / _median(rows[("cache hit", "off")], 0)
    print(
        f"disabled: each hook's check costs {check:.0f} ns; 3 per LM call (the call, its"
        f" 2 events) = {share:.2%} of a cache hit"
    )


def _install(
    mode: str,
    tracer_provider: TracerProvider,
    meter_provider: MeterProvider,
    floor: Floor,
    same: Same,
    api: _otel.Tracing,
) -> None:
    if mode == "on":
        _otel.instrument(tracer_provider, meter_provider)
    elif mode == "api":
        _otel._tracing = api
    elif mode in ("floor", "same"):
        # The hooks' protocol (start_lm, end_lm, on_event), nothing more.
        _otel._tracing = floor if mode == "floor" else same  # type: ignore[assignment]
    else:
        _otel.uninstrument()


def _median(values: Sequence[tuple[float, float]], index: int) -> float:
    return statistics.median(v[index] for v in values)


if __name__ == "__main__":
    main()
