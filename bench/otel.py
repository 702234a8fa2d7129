"""What OpenTelemetry export adds per LM call (run on demand).

    python bench/otel.py [--calls 2000] [--rounds 7]

One runtime, one ``dspex.LM`` pointed at a fake OpenAI server on 127.0.0.1
answering at once (0 ms latency). Rounds alternate export off and on (an
SDK ``TracerProvider`` with a ``BatchSpanProcessor`` feeding an exporter
that drops spans, and a ``MeterProvider`` with an in-memory reader), so
background load moves both sides. Two paths are timed:

- upstream calls (``cache=False``): the whole call through the client's
  loop and HTTP, where the span and the two histograms are recorded;
- cache hits: no I/O, so the span's cost stands out against a few µs.

Prints µs per call for each mode, wall time and the calling thread's own
CPU time (``time.thread_time``: the work the instrumentation adds to the
caller, without the scheduling noise of a shared machine), and the
differences (target: enabled adds <= 30 µs per call; disabled, the hooks
are one module-global read each, measured separately). Asserts nothing.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Sequence
from typing import Any

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

import dspex
from dspex.actors import _otel
from dspex.testing import FakeOpenAI


class Drop(SpanExporter):
    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


def per_call(lm: dspex.LM, calls: int, prompt: str, *, fresh: bool) -> tuple[float, float]:
    """(wall µs, calling thread's CPU µs) per call."""
    started, cpu = time.perf_counter(), time.thread_time()
    for i in range(calls):
        lm(f"{prompt} {i}" if fresh else prompt)
    wall = (time.perf_counter() - started) / calls * 1e6
    return wall, (time.thread_time() - cpu) / calls * 1e6


def hook_cost(n: int = 1_000_000) -> float:
    """ns for the disabled check every hook makes (a module-global read)."""
    started = time.perf_counter()
    for _ in range(n):
        if _otel._tracing is not None:
            raise AssertionError
    return (time.perf_counter() - started) / n * 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(BatchSpanProcessor(Drop()))
    meter_provider = MeterProvider(metric_readers=[InMemoryMetricReader()])
    results: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp, FakeOpenAI(api_key="sk-bench") as fake:
        fake.reply = "ok"
        rt = dspex.start(cache={"dir": tmp}, telemetry={"format": "off"})
        try:
            upstream = dspex.LM(
                "openai/gpt-4o-mini", api_base=fake.url, api_key="sk-bench", cache=False
            )
            cached = dspex.LM("openai/gpt-4o-mini", api_base=fake.url, api_key="sk-bench")
            cached("warm")
            per_call(upstream, 200, "warm-up", fresh=True)
            for _ in range(args.rounds):
                for mode in ("off", "on"):
                    if mode == "on":
                        _otel.instrument(tracer_provider, meter_provider)
                    try:
                        up = per_call(upstream, args.calls, f"{mode}", fresh=True)
                        hit = per_call(cached, args.calls * 5, "warm", fresh=False)
                    finally:
                        _otel.uninstrument()
                    results.setdefault(f"upstream {mode}", []).append(up[0])
                    results.setdefault(f"upstream cpu {mode}", []).append(up[1])
                    results.setdefault(f"cache hit {mode}", []).append(hit[0])
                    results.setdefault(f"cache hit cpu {mode}", []).append(hit[1])
        finally:
            rt.stop()
            tracer_provider.shutdown()
    med: dict[str, Any] = {k: statistics.median(v) for k, v in results.items()}
    for name, value in med.items():
        print(f"{name:>17}: {value:8.1f} µs per call (median of {args.rounds})")
    for path in ("upstream", "cache hit"):
        wall = med[f"{path} on"] - med[f"{path} off"]
        cpu = med[f"{path} cpu on"] - med[f"{path} cpu off"]
        print(f"enabled adds, {path}: {wall:+.1f} µs wall, {cpu:+.1f} µs CPU in the caller")
    print(f"disabled: each hook's check costs {hook_cost():.0f} ns (4 hooks per Predict call)")


if __name__ == "__main__":
    main()
