"""Issue 12's streaming benchmark: first upstream chunk -> first SSE byte.

    python bench/streaming.py [--requests 50] [--delay 0.02]

A FakeOpenAI in this process streams its reply word by word, ``--delay``
seconds apart; ``dspex serve bench/_serve_app.py:qa`` runs as a child
process; this script sends ``POST /v1/programs/qa`` with ``Accept:
text/event-stream`` and reads the raw bytes as they arrive. For each request
it takes the moment the fake wrote the first word of the answer's value
(after ChatAdapter's ``[[ ## answer ## ]]`` header) and the moment the first
``event: chunk`` bytes reached the client; the difference is the path
fake -> h11 transport -> SSE parsing -> chunk sink -> stream listener ->
Starlette -> client, two localhost hops included. Target: 5 ms or less.
Prints figures and asserts nothing.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

import httpx  # noqa: E402
from serve import Served  # noqa: E402  (bench/serve.py's dspex serve child process)

from dspex.testing import FakeOpenAI  # noqa: E402
from dspex.testing._fake_http import ConnectionAction, StreamedResponse  # noqa: E402

REPLY = "[[ ## answer ## ]]\nParis is the capital of France\n\n[[ ## completed ## ]]"
HEADER_FRAMES = 5  # "[[ ", "## ", "answer ", "## ", "]]\n": then the value's first word


class TimedFake(FakeOpenAI):
    """Notes when each streamed text frame is handed to the socket."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.lock = threading.Lock()
        self.first_value_at: list[float] = []

    def _streamed(self, frames: Any, script: Any) -> StreamedResponse:
        inner = super()._streamed(frames, script)
        times = self.first_value_at

        async def timed() -> AsyncIterator[bytes | ConnectionAction]:
            texts = 0
            async for frame in inner.chunks:
                if isinstance(frame, bytes) and b'"content"' in frame:
                    if texts == HEADER_FRAMES:
                        times.append(time.monotonic())  # written right after this yield
                    texts += 1
                yield frame

        return StreamedResponse(timed(), on_disconnect=inner.on_disconnect)


def one(client: httpx.Client, i: int) -> float:
    with client.stream(
        "POST",
        "/v1/programs/qa",
        json={"question": f"question {i}"},
        headers={"accept": "text/event-stream"},
    ) as reply:
        seen = b""
        at: float | None = None
        for raw in reply.iter_raw():  # read to the end: the connection is reused
            if at is None:
                seen += raw
                if b"event: chunk" in seen:
                    at = time.monotonic()
    if at is None:
        raise RuntimeError(f"the stream had no chunk event: {seen[:300]!r}")
    return at


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=50)
    parser.add_argument("--delay", type=float, default=0.02, help="seconds between words")
    args = parser.parse_args()
    with TimedFake(reply=REPLY) as fake:
        fake.configure(stream_delay=args.delay)
        served = Served(fake.url, max_concurrency=4, queue_limit=16)
        try:
            base = f"http://{served.host}:{served.port}"
            deltas: list[float] = []
            with httpx.Client(base_url=base, timeout=30) as client:
                one(client, -1)  # warm up: connections, first imports
                fake.first_value_at.clear()
                for i in range(args.requests):
                    received = one(client, i)
                    deltas.append((received - fake.first_value_at[-1]) * 1000.0)
        finally:
            served.stop()
    ordered = sorted(deltas)
    p90 = ordered[int(0.9 * (len(ordered) - 1))]
    print(f"first upstream chunk -> first SSE chunk byte, {len(deltas)} streams:")
    print(
        f"  p50 {statistics.median(ordered):.2f} ms   p90 {p90:.2f} ms   "
        f"min {ordered[0]:.2f} ms   max {ordered[-1]:.2f} ms   (target <= 5 ms)"
    )


if __name__ == "__main__":
    main()
