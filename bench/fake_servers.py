"""How fast the test kit's fake provider serves a concurrent burst (run on demand).

    python bench/fake_servers.py [--requests 300] [--latency 0.2] [--rounds 5]

A ``FakeOpenAI`` and an ``httpx.AsyncClient`` in the same process (as in the
tests) send ``--requests`` POSTs at once; the fake holds each for
``--latency`` seconds. Prints the wall time of each round against the ideal
(one latency: every request held at the same time), the median, and the most
requests the server held at once. A serial server would take requests x
latency. Prints figures, asserts nothing; the test suite checks the
behaviour (tests/test_fake_servers.py: all requests held at once).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

import httpx

from dspex.testing import FakeOpenAI

CHAT = {"model": "gpt-test", "messages": [{"role": "user", "content": "hello there"}]}
AUTH = {"authorization": "Bearer sk-bench"}


async def burst(url: str, n: int) -> list[int]:
    limits = httpx.Limits(max_connections=n, max_keepalive_connections=n)
    async with httpx.AsyncClient(limits=limits, timeout=120) as client:
        replies = await asyncio.gather(
            *(client.post(f"{url}/chat/completions", json=CHAT, headers=AUTH) for _ in range(n))
        )
    return [r.status_code for r in replies]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--latency", type=float, default=0.2)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    walls: list[float] = []
    for _ in range(args.rounds):
        with FakeOpenAI(latency=args.latency) as fake:
            started = time.perf_counter()
            statuses = asyncio.run(burst(fake.url, args.requests))
            walls.append(time.perf_counter() - started)
            peak = fake.max_in_flight
        ok = statuses.count(200)
        print(
            f"{args.requests} requests, {args.latency * 1000:.0f} ms latency: "
            f"{walls[-1]:.2f} s wall, {ok} answered 200, {peak} held at once"
        )
    median = statistics.median(walls)
    print(
        f"median {median:.2f} s (ideal {args.latency:.2f} s, serial "
        f"{args.requests * args.latency:.0f} s): {median / args.latency:.1f}x ideal"
    )


if __name__ == "__main__":
    main()
