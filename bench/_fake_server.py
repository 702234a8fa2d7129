"""A FakeOpenAI for the benchmarks, run as a child process.

    python bench/_fake_server.py --latency 0.1 [--fail-rate 0.1 --fault 500|429]

Running the fake in its own process keeps its CPU (and its GIL) out of the
client's figures. It prints its base URL on the first stdout line, serves
until stdin reaches EOF (the parent closed the pipe or died) or SIGTERM, then
prints one JSON line of counts (requests, outcomes, most in flight at once,
connections) and exits.

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
import re
import signal
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dspex.testing import Fault

_ROLLOUT = re.compile(r"rollout (\d+)")


def expected_answer(n: int) -> str:
    """What the fake answers to a question holding ``rollout <n>``."""
    return str(n * 7)


def _reply(body: dict[str, Any]) -> str:
    messages = body.get("messages") or [{}]
    content = messages[-1].get("content", "")
    if not isinstance(content, str):  # list-of-parts content
        content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
    match = _ROLLOUT.search(content)
    answer = expected_answer(int(match.group(1))) if match else "unknown"
    return f"[[ ## answer ## ]]\n{answer}\n\n[[ ## completed ## ]]"


def _fault(name: str, retry_after: float) -> Fault:
    from dspex.testing import Fault

    if name == "429":
        return Fault.rate_limit(retry_after)
    return Fault.error(int(name))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency", type=float, default=0.0, help="seconds per answer")
    parser.add_argument("--fail-rate", type=float, default=0.0, help="share of faulty answers")
    parser.add_argument("--fault", default="500", help="an HTTP status, e.g. 500 or 429")
    parser.add_argument("--retry-after", type=float, default=1.0, help="Retry-After of a 429")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from dspex.testing import FakeOpenAI

    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())

    def wait_for_eof() -> None:
        sys.stdin.read()
        done.set()

    fake = FakeOpenAI(
        reply=_reply,
        latency=args.latency,
        fail_rate=args.fail_rate,
        faults=[_fault(args.fault, args.retry_after)],
        seed=args.seed,
        max_recorded=1,
    )
    with fake:
        print(fake.url, flush=True)
        threading.Thread(target=wait_for_eof, daemon=True).start()
        while not done.wait(1.0):
            pass
        stats = {
            "requests": fake.request_count,
            "outcomes": dict(fake.outcomes),
            "max_in_flight": fake.max_in_flight,
            "connections": fake.connections,
        }
    print(json.dumps(stats), flush=True)


if __name__ == "__main__":
    main()
