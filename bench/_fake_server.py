"""A FakeOpenAI for the benchmarks, run as a child process.

    python bench/_fake_server.py --latency 0.1 [--fail-rate 0.1 --fault 500|429]

Running the fake in its own process keeps its CPU (and its GIL) out of the
client's figures. It prints its base URL on the first stdout line, serves
until stdin reaches EOF (the parent closed the pipe or died) or SIGTERM, then
prints one JSON line of counts (requests, outcomes, most in flight at once,
connections) and exits.

With ``--fail-rate`` the line also holds the **path bound**: the faults are
drawn here, per request index, so the script knows which request met which
fault, and it groups the requests by question (one example's attempts share
it). An example's attempts run one after another, each taking the latency,
and a client that honours ``Retry-After`` waits that long after each 429
before the next attempt; so the slowest example's ``attempts x latency +
waited 429s x Retry-After`` is a lower bound on the wall time that no
scheduler and no number of workers can beat.

Every reply answers the question in ChatAdapter's format: a question holding
``rollout <n>`` gets ``expected_answer(n)``, so an exact-match metric can tell a right
answer from a mixed-up one (other questions get ``unknown``). The script
needs only the repository on the path (it inserts it), so any Python with
dspex's dependencies can run it; importing it (for ``expected_answer``)
needs only the standard library.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import signal
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dspex.testing import Fault, RecordedRequest

_ROLLOUT = re.compile(r"rollout (\d+)")
_MAX_RECORDED = 200_000  # the fault scenarios send about 700 requests


def expected_answer(n: int) -> str:
    """What the fake answers to a question holding ``rollout <n>``."""
    return str(n * 7)


def _question_text(body: Any) -> str:
    """The last message's text: the same for every attempt of one example."""
    messages = (body.get("messages") if isinstance(body, dict) else None) or [{}]
    content = messages[-1].get("content", "")
    if not isinstance(content, str):  # list-of-parts content
        content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return content


def _reply(body: dict[str, Any]) -> str:
    match = _ROLLOUT.search(_question_text(body))
    answer = expected_answer(int(match.group(1))) if match else "unknown"
    return f"[[ ## answer ## ]]\n{answer}\n\n[[ ## completed ## ]]"


def _fault(name: str, retry_after: float) -> Fault:
    from dspex.testing import Fault

    if name == "429":
        return Fault.rate_limit(retry_after)
    return Fault.error(int(name))


class FaultDraws:
    """A ``schedule`` for the fake: each request faulty with probability ``fail_rate``.

    Draws in request-index order from ``random.Random(seed)`` exactly as the
    fake's own ``fail_rate`` does (one ``random()``, then a ``choice`` of the
    faults when drawn), so a seed gives the same faults by index as before;
    the difference is that it remembers what each index was served. Called on
    the fake's loop thread once a request's latency is over (so not always in
    index order; the draws are made in index order regardless).
    """

    def __init__(self, fail_rate: float, faults: list[Fault], seed: int) -> None:
        self._fail_rate = fail_rate
        self._faults = faults
        self._rng = random.Random(seed)
        self._draws: list[Fault | None] = []
        self.served: dict[int, Fault | None] = {}  # request index -> its fault (None: ok)

    def __call__(self, index: int) -> Fault | None:
        while len(self._draws) <= index:
            drawn = self._rng.random() < self._fail_rate
            self._draws.append(self._rng.choice(self._faults) if drawn else None)
        self.served[index] = fault = self._draws[index]
        return fault


def _wait_after(fault: Fault | None) -> float:
    """Seconds a client honouring ``Retry-After`` must wait after ``fault``."""
    if fault is None or fault.status != 429 or not isinstance(fault.retry_after, int | float):
        return 0.0
    return float(fault.retry_after)


def path_bound(
    records: list[RecordedRequest], served: dict[int, Fault | None], latency: float
) -> dict[str, Any]:
    """The critical-path lower bound on the wall time, from what was served.

    Requests are grouped into examples by their question; a request that was
    cancelled before its latency was over (absent from ``served``) is left
    out, which keeps the figure a lower bound. The last attempt of an example
    costs no wait even when it was a 429: nothing came after it.
    """
    attempts: dict[str, list[int]] = {}
    for record in records:
        if record.index in served:
            attempts.setdefault(_question_text(record.json), []).append(record.index)
    bound, bound_faults = 0.0, 0
    histogram: dict[int, int] = {}  # faults met -> examples
    for indexes in attempts.values():
        faults = [served[i] for i in sorted(indexes)]
        met = sum(1 for f in faults if f is not None)
        histogram[met] = histogram.get(met, 0) + 1
        path = len(faults) * latency + sum(_wait_after(f) for f in faults[:-1])
        if path > bound:
            bound, bound_faults = path, met
    return {
        "path_bound": round(bound, 3),
        "path_faults": bound_faults,  # faults met by the example that sets the bound
        "max_faults_per_example": max(histogram, default=0),
        "examples_by_faults": {str(k): histogram[k] for k in sorted(histogram)},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency", type=float, default=0.0, help="seconds per answer")
    parser.add_argument("--fail-rate", type=float, default=0.0, help="share of faulty answers")
    parser.add_argument("--fault", default="500", help="an HTTP status, e.g. 500 or 429")
    parser.add_argument("--retry-after", type=float, default=1.0, help="Retry-After of a 429")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--raw",
        action="store_true",
        help="the bare asyncio Protocol of bench/_raw_fake.py (no faults): the least CPU",
    )
    args = parser.parse_args()
    if args.raw:
        if args.fail_rate > 0:
            parser.error("--raw serves no faults: drop --fail-rate or --raw")
        _main_raw(args.latency)
        return
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from dspex.testing import FakeOpenAI
    from dspex.testing._fake_http import HTTPServerThread

    try:  # the fake's CPU per request is noise in a client's figures: keep it small
        import uvloop

        HTTPServerThread.loop_factory = uvloop.new_event_loop
    except ImportError:
        pass

    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())

    def wait_for_eof() -> None:
        sys.stdin.read()
        done.set()

    draws = None
    if args.fail_rate > 0:
        draws = FaultDraws(args.fail_rate, [_fault(args.fault, args.retry_after)], args.seed)
    fake = FakeOpenAI(
        reply=_reply,
        latency=args.latency,
        schedule=draws,
        # every request when faults are drawn (the path bound needs their
        # questions); otherwise one, to keep the fake's per-request cost down
        max_recorded=_MAX_RECORDED if draws else 1,
    )
    with fake:
        print(fake.url, flush=True)
        threading.Thread(target=wait_for_eof, daemon=True).start()
        while not done.wait(1.0):
            pass
        stats: dict[str, Any] = {
            "requests": fake.request_count,
            "outcomes": dict(fake.outcomes),
            "max_in_flight": fake.max_in_flight,
            "connections": fake.connections,
        }
    if draws is not None:
        records = fake.requests
        stats.update(path_bound(records, draws.served, args.latency))
        if len(records) < stats["requests"]:
            stats["path_bound_partial"] = True  # the oldest requests were not kept
    print(json.dumps(stats), flush=True)


def _main_raw(latency: float) -> None:
    """``--raw``: the Protocol fake on uvloop, same stdout contract as the FakeOpenAI mode."""
    import asyncio

    from _raw_fake import Counts, serve

    try:
        import uvloop

        factory: Any = uvloop.new_event_loop
    except ImportError:
        factory = None
    counts = Counts()

    def answer(n: int | None) -> str:
        return "unknown" if n is None else expected_answer(n)

    async def run() -> None:
        loop = asyncio.get_running_loop()
        done = asyncio.Event()
        loop.add_signal_handler(signal.SIGTERM, done.set)
        threading.Thread(
            target=lambda: (sys.stdin.read(), loop.call_soon_threadsafe(done.set)), daemon=True
        ).start()
        await serve(latency, answer, counts, lambda url: print(url, flush=True), done)

    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(run())
    stats = {
        "requests": counts.requests,
        "outcomes": {"ok": counts.requests},
        "max_in_flight": counts.max_in_flight,
        "connections": counts.connections,
    }
    print(json.dumps(stats), flush=True)


if __name__ == "__main__":
    main()
