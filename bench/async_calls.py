"""Concurrent ``await Predict(...).acall(...)`` on one event loop (issue 11).

    PYTHONPATH=. python bench/async_calls.py [--runs 3] [--latency 0.1]

Starts the fake OpenAI server (``bench/_fake_server.py``, its own process) at
100 ms latency, then times 200 and 1,000 concurrent ``acall``s of
``Predict("question -> answer")`` through the DSPy-compatible path
(``configure(lm=LM("openai/...", api_base=...))``), each question distinct,
cache off. If ``/tmp/dspy-venv`` has DSPy installed, the same script runs
there (``--dspy``) against the same fake and its figures print beside ours;
otherwise the DSPy column says why it is missing. "raw HTTP" is the same
requests sent by bare asyncio (a connection each, no framework): the floor
this fake and this machine allow. Prints medians of ``--runs`` runs and the
threads the process had at the peak.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))

from _evaluate_common import FakeServer, Scenario, expected_answer, question  # noqa: E402

DSPY_PYTHON = Path("/tmp/dspy-venv/bin/python")
SIZES = (200, 1000)
TARGET = {1000: 0.4}  # seconds, issue 11


async def _timed(program: Any, n: int, run: int) -> tuple[float, int, int]:
    """Wall time of ``n`` concurrent acalls, how many were right, peak threads."""
    peak = threading.active_count()
    t0 = time.perf_counter()
    tasks = [asyncio.ensure_future(program.acall(question=question(i, run))) for i in range(n)]
    while not all(t.done() for t in tasks):
        peak = max(peak, threading.active_count())
        await asyncio.wait(tasks, timeout=0.01)
    elapsed = time.perf_counter() - t0
    right = sum(t.result().answer.strip() == expected_answer(i) for i, t in enumerate(tasks))
    return elapsed, right, peak


async def _raw(url: str, n: int, run: int) -> float:
    """Wall time of ``n`` concurrent bare asyncio HTTP requests (one connection each)."""
    host, _, port = url.removeprefix("http://").partition("/")[0].partition(":")

    async def one(i: int) -> None:
        reader, writer = await asyncio.open_connection(host, int(port))
        body = {"model": "bench", "messages": [{"role": "user", "content": question(i, run)}]}
        data = json.dumps(body).encode()
        head = (
            "POST /v1/chat/completions HTTP/1.1\r\nHost: fake\r\n"
            "Authorization: Bearer sk-bench\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n"
        )
        writer.write(head.encode() + data)
        await writer.drain()
        await reader.read()
        writer.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(n)))
    return time.perf_counter() - t0


def raw_floor(url: str, runs: int) -> dict[str, list[float]]:
    """The same requests with no framework: what this fake and machine allow at best."""
    return {str(n): [asyncio.run(_raw(url, n, run)) for run in range(runs)] for n in SIZES}


def measure(lib: str, url: str, runs: int) -> dict[str, Any]:
    """``{n: [seconds per run], "right": ..., "peak_threads": ...}`` with ``lib`` (dspex/dspy)."""
    if lib == "dspy":
        # bench/ off the path: no script here may shadow a package DSPy imports.
        sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != BENCH_DIR]
        import dspy  # type: ignore[import-not-found]

        dspy.configure_cache(enable_disk_cache=False, enable_memory_cache=False)
    else:
        import dspex as dspy  # type: ignore[no-redef]

    lm = dspy.LM("openai/bench", api_base=url, api_key="sk-bench", cache=False)
    dspy.configure(lm=lm)
    program = dspy.Predict("question -> answer")
    out: dict[str, Any] = {"right": True, "peak_threads": 0}

    async def main() -> None:
        await program.acall(question="rollout 0: warm up")
        for n in SIZES:
            times = []
            for run in range(runs):
                elapsed, right, peak = await _timed(program, n, run)
                times.append(elapsed)
                out["right"] = out["right"] and right == n
                out["peak_threads"] = max(out["peak_threads"], peak)
            out[str(n)] = times

    asyncio.run(main())
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--latency", type=float, default=0.1)
    parser.add_argument("--dspy", action="store_true", help="(internal) measure DSPy at --url")
    parser.add_argument("--url", help="(internal) the fake's base URL")
    args = parser.parse_args()
    if args.dspy:
        print(json.dumps(measure("dspy", args.url, args.runs)))
        return

    scenario = Scenario("async", "concurrent acalls", n=0, latency=args.latency, workers=1)
    with FakeServer(scenario, python=sys.executable) as server:
        floor = raw_floor(server.url, args.runs)
        ours = measure("dspex", server.url, args.runs)
        theirs: dict[str, Any] | str
        if not DSPY_PYTHON.exists():
            theirs = f"skipped: {DSPY_PYTHON} not found"
        else:
            done = subprocess.run(
                [
                    str(DSPY_PYTHON),
                    __file__,
                    "--dspy",
                    "--url",
                    server.url,
                    "--runs",
                    str(args.runs),
                ],
                capture_output=True,
                text=True,
                check=False,
            )
            lines = done.stdout.strip().splitlines()
            if done.returncode != 0 or not lines:
                theirs = f"skipped: DSPy run failed ({done.stderr.strip().splitlines()[-1:]})"
            else:
                theirs = json.loads(lines[-1])

    print(
        f"concurrent `await Predict(...).acall(...)` on one event loop, "
        f"fake LM at {args.latency * 1000:g} ms, median of {args.runs}"
    )
    print(f"{'calls':>6}  {'raw HTTP':>9}  {'dspex':>9}  {'DSPy 3.4.1':>10}  {'target':>7}")
    for n in SIZES:
        mine = statistics.median(ours[str(n)])
        other = (
            f"{statistics.median(theirs[str(n)]):8.3f} s"
            if isinstance(theirs, dict)
            else "     n/a"
        )
        target = f"{TARGET[n]:.1f} s" if n in TARGET else ""
        raw = statistics.median(floor[str(n)])
        print(f"{n:>6}  {raw:7.3f} s  {mine:7.3f} s  {other:>10}  {target:>7}")
    print(f"dspex: all answers right={ours['right']}, peak threads={ours['peak_threads']}")
    if isinstance(theirs, dict):
        print(f"DSPy:  all answers right={theirs['right']}, peak threads={theirs['peak_threads']}")
    else:
        print(f"DSPy:  {theirs}")


if __name__ == "__main__":
    main()
