"""What a cluster-wide rate limit costs per LM call: local bucket vs remote budget.

Prints the time of one ``RateLimiter.reserve`` in-process, one remote call to
the Ray budget actor (what an unbatched design would pay per request), and
the amortised cost per request of the leased draw ``SharedRateLimiter``
uses. Starts a local Ray cluster on loopback (no dashboard, no usage stats).

    PYTHONPATH=. python bench/ray_lease.py [--requests 2000] [--rpm 60000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # bind to loopback


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--rpm", type=int, default=60_000_000)
    args = parser.parse_args()

    import ray

    from dspex.actors._lm._resilience import RateLimiter, SharedRateLimiter
    from dspex.programs._ray._limits import budget, kill_budgets

    n, rpm = args.requests, args.rpm
    local = RateLimiter(rpm)
    start = time.perf_counter()
    for _ in range(n):
        local.reserve(0)
    local_us = (time.perf_counter() - start) / n * 1e6

    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        source = budget("bench/model#0", rpm, None)

        async def unbatched() -> float:
            await source.lease(1, 0, 0)  # creates and warms the actor
            start = time.perf_counter()
            for _ in range(n):
                await source.lease(1, 0, 0)
            return (time.perf_counter() - start) / n * 1e6

        async def leased() -> tuple[float, int]:
            limiter = SharedRateLimiter(source, rpm, None)
            start = time.perf_counter()
            for _ in range(n):
                await limiter.acquire(0)
            return (time.perf_counter() - start) / n * 1e6, limiter.leases

        remote_us = asyncio.run(unbatched())
        leased_us, leases = asyncio.run(leased())
        kill_budgets()
    finally:
        ray.shutdown()
    print(f"requests               {n}")
    print(f"local reserve          {local_us:8.2f} us/request")
    print(f"remote call / request  {remote_us:8.2f} us/request")
    print(f"leased (SharedRate..)  {leased_us:8.2f} us/request ({leases} leases)")


if __name__ == "__main__":
    main()
