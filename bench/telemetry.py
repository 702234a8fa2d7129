"""How many wake-ups a burst of telemetry costs the Telemetry actor (run on demand).

    python bench/telemetry.py [--threads 4] [--events 100] [--rounds 7]

Each round starts a Telemetry actor that counts the nudges (drain requests)
reaching it, has ``--threads`` threads emit ``--events`` events each at once
through one ``TelemetryEmitter``, and prints the events handled, the nudges,
and the emit cost per event in the calling threads. With batching the actor
polls the queue every ``LINGER`` while events flow, so nudges stay far below
events (the suite's former bound was <= 40 for 400 events); without it,
every event would nudge. Prints figures, asserts nothing; the suite checks
the behaviour (tests/test_telemetry_batching.py).
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
from typing import Any

from dspex.actors._telemetry import Telemetry
from dspex.actors._telemetry_emitter import TelemetryEmitter, _Drain


class CountingTelemetry(Telemetry):
    def __init__(self) -> None:
        super().__init__()
        self.nudges = 0

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, _Drain):
            self.nudges += 1
        return super().on_receive(message)


def one_round(threads: int, events: int) -> tuple[int, int, float]:
    """(events handled, nudges, emit µs per event)."""
    ref = CountingTelemetry.start_link()
    try:
        emitter = TelemetryEmitter(lambda: ref)
        go = threading.Barrier(threads + 1, timeout=10)

        def burst() -> None:
            go.wait()
            for i in range(events):
                emitter.emit("cache.flush", rows=i)

        workers = [threading.Thread(target=burst) for _ in range(threads)]
        for worker in workers:
            worker.start()
        go.wait()
        started = time.perf_counter()
        for worker in workers:
            worker.join(30)
        elapsed = time.perf_counter() - started
        handled = int(ref.proxy().metrics().get(timeout=10)["events"])
        nudges: int = ref.proxy().nudges.get(timeout=10)
    finally:
        ref.stop(block=True, timeout=10)
    return handled, nudges, elapsed / (threads * events) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--events", type=int, default=100, help="events per thread")
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    nudges: list[int] = []
    costs: list[float] = []
    for _ in range(args.rounds):
        handled, nudged, cost = one_round(args.threads, args.events)
        nudges.append(nudged)
        costs.append(cost)
        print(f"{handled} events handled, {nudged} nudges, {cost:.1f} µs per emit")
    total = args.threads * args.events
    print(
        f"median: {statistics.median(nudges):.0f} nudges for {total} events "
        f"({args.threads} threads), {statistics.median(costs):.1f} µs per emit"
    )


if __name__ == "__main__":
    main()
