"""Framework CPU time per Predict call (issue 3's benchmark; prints, asserts nothing).

A 2-input, 2-output signature with 4 demos, called N times through the
ChatAdapter against ``DummyLM`` returning a canned reply. Reported:

* total CPU and wall time per call (everything: Predict, adapter formatting
  and parsing, and DummyLM itself);
* DummyLM's own share, timed separately on the same messages, and the
  remainder (the framework) - shown, not hidden;
* the same call against a bare LM object that returns a prebuilt response,
  which has no DummyLM work at all.

These calls run *inside* a program run, as a module nested in another
module, an Evaluate example or a served program's call does: that is the
programming model's own cost, which issue 3's target is about. A top-level
call outside any run is also a program run of its own (a light process
executed in the calling thread, supervised under ``programs``); that cost is
printed on its own line (issue 11's target: <= 100 µs), with the bare cost
of ``rt.run`` of a no-op beside it.

Run: ``python bench/programs.py [N]``.
"""

from __future__ import annotations

import contextvars
import gc
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from dspex.actors._lm._types import Completion, LMResponse
from dspex.actors._program_run import RunContext, activate_run
from dspex.programs import ChainOfThought, Example, Predict, context
from dspex.programs._runtime_access import current_runtime
from dspex.testing import DummyLM

SIGNATURE = "question, context -> answer, confidence: float"
ANSWER = {"answer": "Paris is the capital of France.", "confidence": 0.93}
DEMOS = [
    Example(
        question=f"Demo question number {i}?",
        context=f"Some supporting context for demo {i}, a sentence or two long.",
        answer=f"Demo answer {i}",
        confidence=0.5 + i / 10,
    )
    for i in range(4)
]
INPUTS = {"question": "What is the capital of France?", "context": "France is in Europe."}


class CannedLM:
    """The cheapest possible LM: one prebuilt response, no bookkeeping."""

    model = "canned"
    kwargs: Mapping[str, Any] = {"temperature": 0.0, "max_tokens": 1000}

    def __init__(self, text: str) -> None:
        self._response = LMResponse(completions=(Completion(text, "stop"),), model="canned")

    def generate(self, messages: Sequence[Any], params: Mapping[str, Any]) -> LMResponse:
        return self._response


def _measure(call: Callable[[], Any], n: int) -> tuple[float, float]:
    """(CPU µs per call, wall µs per call) over n calls, after a warm-up."""
    for _ in range(min(200, n)):
        call()
    gc.collect()
    cpu0, wall0 = time.process_time(), time.perf_counter()
    for _ in range(n):
        call()
    cpu1, wall1 = time.process_time(), time.perf_counter()
    return (cpu1 - cpu0) / n * 1e6, (wall1 - wall0) / n * 1e6


def _inside_a_run(fn: Callable[[], Any]) -> Any:
    """Call ``fn`` with a program run current, so modules execute inline."""

    def body() -> Any:
        activate_run(RunContext(label="bench"))
        return fn()

    return contextvars.copy_context().run(body)


RUN_CPU: list[float] = []


def main(n: int = 5000) -> None:
    predict = Predict(SIGNATURE)
    predict.demos = list(DEMOS)
    dummy = DummyLM([ANSWER] * (n + 400))
    with context(lm=dummy):
        top_cpu, top_wall = _measure(lambda: predict(**INPUTS), n)
    runtime = current_runtime()
    RUN_CPU.append(_measure(lambda: runtime.run(lambda: None), n)[0])
    _inside_a_run(lambda: _main(n, predict, top_cpu, top_wall))


def _main(n: int, predict: Predict, top_cpu: float, top_wall: float) -> None:

    dummy = DummyLM([ANSWER] * (n + 400))
    with context(lm=dummy):
        cpu, wall = _measure(lambda: predict(**INPUTS), n)
    messages = dummy.history[-1]["messages"]
    params = dummy.history[-1]["params"]
    lm_only = DummyLM([ANSWER] * (n + 400))
    lm_cpu, _ = _measure(lambda: lm_only.generate(messages, params), n)

    canned = CannedLM(dummy.history[-1]["outputs"][0])
    with context(lm=canned):
        canned_cpu, canned_wall = _measure(lambda: predict(**INPUTS), n)

    cot = ChainOfThought(SIGNATURE)
    cot.predict.demos = list(DEMOS)
    cot_lm = DummyLM([{"reasoning": "France's capital is Paris.", **ANSWER}] * (n + 400))
    with context(lm=cot_lm):
        cot_cpu, _ = _measure(lambda: cot(**INPUTS), n)

    print(f"Predict({SIGNATURE!r}), 4 demos, ChatAdapter, N={n}, inside a program run")
    print(f"  with DummyLM      : {cpu:8.1f} µs CPU/call  ({wall:.1f} µs wall)")
    print(f"    DummyLM itself  : {lm_cpu:8.1f} µs CPU/call (same messages, timed alone)")
    print(f"    framework       : {cpu - lm_cpu:8.1f} µs CPU/call (total minus DummyLM)")
    print(f"  with a canned LM  : {canned_cpu:8.1f} µs CPU/call  ({canned_wall:.1f} µs wall)")
    print(f"  ChainOfThought    : {cot_cpu:8.1f} µs CPU/call (with DummyLM)")
    print("  target: <= 150 µs framework CPU per call")
    print(
        f"  top-level call    : {top_cpu:8.1f} µs CPU/call  ({top_wall:.1f} µs wall; "
        "with DummyLM, a program run per call)"
    )
    print(f"    rt.run(no-op)   : {RUN_CPU[0]:8.1f} µs CPU/call (the run's own cost)")
    print("  target (issue 11): <= 100 µs CPU for the top-level call")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 5000)
