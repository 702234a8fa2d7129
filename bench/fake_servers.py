"""How fast the test kit's fake provider serves a concurrent burst (run on demand).

    python bench/fake_servers.py [--requests 300] [--latency 0.2] [--rounds 5]

A ``FakeOpenAI`` and a client in the same process (as in the tests) send
``--requests`` POSTs at once; the fake holds each for ``--latency`` seconds.
Two clients, interleaved: ``httpx.AsyncClient`` (what the tests use) and
dspex's own ``HttptoolsTransport`` (the LM client's default transport), so the fake's share
can be told from the client's. Prints each round's wall time against the
ideal (one latency: every request held at the same time), the medians, and
the most requests the server held at once; a serial server would take
requests x latency. Prints figures, asserts nothing; the suite checks the
behaviour (tests/test_fake_servers.py: all requests held at once).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from collections.abc import Awaitable, Callable

import httpx

from dspex.actors._lm._transport_httptools import HttptoolsTransport
from dspex.testing import FakeOpenAI

CHAT = {"model": "gpt-test", "messages": [{"role": "user", "content": "hello there"}]}
AUTH = {"authorization": "Bearer sk-bench"}


async def burst_httpx(url: str, n: int) -> list[int]:
    limits = httpx.Limits(max_connections=n, max_keepalive_connections=n)
    async with httpx.AsyncClient(limits=limits, timeout=120) as client:
        replies = await asyncio.gather(
            *(client.post(f"{url}/chat/completions", json=CHAT, headers=AUTH) for _ in range(n))
        )
    return [r.status_code for r in replies]


async def burst_pool(url: str, n: int) -> list[int]:
    pool = HttptoolsTransport()
    body = json.dumps(CHAT).encode()
    headers = {"content-type": "application/json", **AUTH}
    try:
        replies = await asyncio.gather(
            *(pool.request("POST", f"{url}/chat/completions", headers, body) for _ in range(n))
        )
    finally:
        await pool.aclose()
    return [r.status for r in replies]


CLIENTS: dict[str, Callable[[str, int], Awaitable[list[int]]]] = {
    "httpx.AsyncClient": burst_httpx,
    "dspex HttptoolsTransport": burst_pool,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--latency", type=float, default=0.2)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    walls: dict[str, list[float]] = {name: [] for name in CLIENTS}
    for _ in range(args.rounds):
        for name, burst in CLIENTS.items():
            with FakeOpenAI(latency=args.latency) as fake:
                started = time.perf_counter()
                statuses = asyncio.run(burst(fake.url, args.requests))
                walls[name].append(time.perf_counter() - started)
                peak = fake.max_in_flight
            print(
                f"{name:18s} {args.requests} requests, {args.latency * 1000:.0f} ms latency: "
                f"{walls[name][-1]:.2f} s wall, {statuses.count(200)} answered 200, "
                f"{peak} held at once"
            )
    print(f"ideal {args.latency:.2f} s, serial {args.requests * args.latency:.0f} s")
    for name, times in walls.items():
        median = statistics.median(times)
        print(f"median {name:18s} {median:.2f} s ({median / max(args.latency, 1e-9):.1f}x ideal)")


if __name__ == "__main__":
    main()
