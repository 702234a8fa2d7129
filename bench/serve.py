"""Issue 12's ``dspex serve`` benchmark: requests/s and tail latency over real HTTP.

    python bench/serve.py [--duration 10] [--quick]

Three processes: the fake OpenAI server (``bench/_fake_server.py``), ``dspex
serve bench/_serve_app.py:qa``, and this script, which drives ``POST
/v1/programs/qa`` over keep-alive HTTP/1.1 connections with a minimal asyncio
client (one connection per client, one request at a time on it; each
question is distinct and the LM cache is off, so every request reaches the
fake). Prints figures and asserts nothing.

(0) The serve layers alone: the same, on a program that calls no LM.
(a) Throughput: 64 keep-alive clients, fake at 0 ms. Target >= 1,500 req/s.
(b) Tail latency: 500 clients at once, fake at 100 ms. Target p99 < 150 ms
    (the LM's 100 ms plus at most 50 ms). Two readings: 500 closed-loop
    clients for the whole duration (500 always in flight), and bursts of 500
    requests sent at once on 500 open connections (p99 over the bursts).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from runtime import Server  # noqa: E402  (bench/runtime.py's child-process fake)


class Served:
    """``dspex serve`` in a child process."""

    def __init__(
        self, fake_url: str, max_concurrency: int, queue_limit: int, program: str = "qa"
    ) -> None:
        env = {
            **os.environ,
            "BENCH_FAKE_URL": fake_url,
            "PYTHONPATH": str(ROOT),
            "DSPEX_CACHE__ENABLED": "false",
        }
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "dspex.cli",
                "serve",
                f"{HERE / '_serve_app.py'}:{program}",
                "--name",
                "qa",
                "--port",
                "0",
                "--max-concurrency",
                str(max_concurrency),
                "--queue-limit",
                str(queue_limit),
            ],
            env=env,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        found = re.search(r"http://([\d.]+):(\d+)", line)
        if not found:
            raise RuntimeError(f"dspex serve did not start: {line!r}")
        self.host, self.port = found.group(1), int(found.group(2))
        self._rest = threading.Thread(target=self.proc.stdout.read, daemon=True)
        self._rest.start()

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(60)


async def _client(
    host: str, port: int, deadline: float, latencies: list[float], errors: list[str], cid: int
) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    n = 0
    try:
        while time.perf_counter() < deadline:
            body = json.dumps({"question": f"client {cid} question {n}"}).encode()
            n += 1
            head = (
                f"POST /v1/programs/qa HTTP/1.1\r\nHost: {host}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
            ).encode()
            started = time.perf_counter()
            writer.write(head + body)
            status_line = await reader.readline()
            length = 0
            while True:
                line = await reader.readline()
                if line in (b"\r\n", b""):
                    break
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            await reader.readexactly(length)
            latencies.append(time.perf_counter() - started)
            status = status_line.split(b" ", 2)[1] if status_line else b"EOF"
            if status != b"200":
                errors.append(status.decode())
    finally:
        writer.close()


async def _load(host: str, port: int, clients: int, seconds: float) -> dict[str, Any]:
    latencies: list[float] = []
    errors: list[str] = []
    started = time.perf_counter()
    deadline = started + seconds
    await asyncio.gather(
        *(_client(host, port, deadline, latencies, errors, i) for i in range(clients))
    )
    elapsed = time.perf_counter() - started
    ordered = sorted(latencies)

    def pct(p: float) -> float:
        return ordered[min(len(ordered) - 1, int(p * len(ordered)))] * 1000 if ordered else 0.0

    return {
        "requests": len(latencies),
        "rps": len(latencies) / elapsed,
        "p50_ms": pct(0.50),
        "p99_ms": pct(0.99),
        "mean_ms": statistics.fmean(ordered) * 1000 if ordered else 0.0,
        "errors": len(errors),
        "error_kinds": sorted(set(errors)),
    }


async def _burst(host: str, port: int, size: int, rounds: int) -> dict[str, Any]:
    """``rounds`` bursts of ``size`` requests sent at once on ``size`` open connections."""
    conns = [await asyncio.open_connection(host, port) for _ in range(size)]
    latencies: list[float] = []
    errors: list[str] = []

    async def one(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, q: str) -> None:
        body = json.dumps({"question": q}).encode()
        head = (
            f"POST /v1/programs/qa HTTP/1.1\r\nHost: {host}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode()
        started = time.perf_counter()
        writer.write(head + body)
        status_line = await reader.readline()
        length = 0
        while True:
            line = await reader.readline()
            if line in (b"\r\n", b""):
                break
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
        await reader.readexactly(length)
        latencies.append(time.perf_counter() - started)
        if status_line.split(b" ", 2)[1] != b"200":
            errors.append(status_line.decode().strip())

    try:
        for r in range(rounds):
            await asyncio.gather(
                *(one(rd, wr, f"burst {r} request {i}") for i, (rd, wr) in enumerate(conns))
            )
    finally:
        for _, writer in conns:
            writer.close()
    ordered = sorted(latencies)
    return {
        "requests": len(ordered),
        "p50_ms": ordered[len(ordered) // 2] * 1000,
        "p99_ms": ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))] * 1000,
        "max_ms": ordered[-1] * 1000,
        "errors": len(errors),
    }


def bursts(title: str, latency: float, size: int, rounds: int) -> dict[str, Any]:
    fake = Server(latency)
    served = Served(fake.url, max_concurrency=size, queue_limit=size)
    try:
        asyncio.run(_burst(served.host, served.port, size, 1))  # warm up
        result = asyncio.run(_burst(served.host, served.port, size, rounds))
    finally:
        code = served.stop()
        fake.stop()
    print(
        f"{title}\n  {rounds} bursts, {result['requests']} requests: p50 {result['p50_ms']:.1f} ms,"
        f" p99 {result['p99_ms']:.1f} ms, max {result['max_ms']:.1f} ms, "
        f"{result['errors']} non-200; serve exited {code}",
        flush=True,
    )
    return result


def in_process(seconds: float, threads: int = 64) -> float:
    """req/s of ``rt.ask`` on the same program from ``threads`` threads, no HTTP (baseline)."""
    import dspex

    fake = Server(0.0)
    os.environ["BENCH_FAKE_URL"] = fake.url
    os.environ["DSPEX_CACHE__ENABLED"] = "false"
    import _serve_app

    done: list[int] = []
    try:
        with dspex.start() as rt:
            rt.serve("qa", _serve_app.qa(), max_concurrency=threads, queue_limit=4 * threads)

            def loop(cid: int, deadline: float) -> None:
                n = 0
                while time.perf_counter() < deadline:
                    rt.ask("qa", question=f"client {cid} question {n}").result(60)
                    n += 1
                done.append(n)

            for span in (min(2.0, seconds / 3), seconds):  # warm-up, then the measured run
                done.clear()
                started = time.perf_counter()
                workers = [
                    threading.Thread(target=loop, args=(i, started + span)) for i in range(threads)
                ]
                for w in workers:
                    w.start()
                for w in workers:
                    w.join()
                rps = sum(done) / (time.perf_counter() - started)
    finally:
        fake.stop()
    print(
        f"(a0) baseline without HTTP: rt.ask from {threads} threads in one process, fake at 0 ms\n"
        f"  {rps:,.0f} req/s",
        flush=True,
    )
    return rps


def scenario(
    title: str,
    latency: float,
    clients: int,
    seconds: float,
    max_concurrency: int,
    program: str = "qa",
) -> dict[str, Any]:
    fake = Server(latency)
    served = Served(fake.url, max_concurrency, queue_limit=4 * clients, program=program)
    try:
        asyncio.run(_load(served.host, served.port, clients, min(2.0, seconds / 3)))  # warm up
        result = asyncio.run(_load(served.host, served.port, clients, seconds))
    finally:
        code = served.stop()
        fake.stop()
    print(
        f"{title}\n  {result['requests']} requests in {seconds:.0f} s: "
        f"{result['rps']:,.0f} req/s, p50 {result['p50_ms']:.1f} ms, "
        f"p99 {result['p99_ms']:.1f} ms, mean {result['mean_ms']:.1f} ms, "
        f"{result['errors']} non-200 {result['error_kinds']}; serve exited {code}",
        flush=True,
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per scenario")
    parser.add_argument("--quick", action="store_true", help="3 s per scenario")
    args = parser.parse_args()
    seconds = 3.0 if args.quick else args.duration
    print(f"dspex serve benchmark on {os.cpu_count()} CPUs (shared machine: figures vary)")
    scenario(
        "(0) the HTTP + program-server layers alone: a program without LM, 64 clients",
        latency=0.0,
        clients=64,
        seconds=seconds,
        max_concurrency=64,
        program="echo",
    )
    in_process(seconds)
    a = scenario(
        "(a) 64 keep-alive clients, fake at 0 ms  [target >= 1,500 req/s]",
        latency=0.0,
        clients=64,
        seconds=seconds,
        max_concurrency=64,
    )
    b = scenario(
        "(b) 500 concurrent clients, fake at 100 ms  [target p99 < 150 ms]",
        latency=0.1,
        clients=500,
        seconds=seconds,
        max_concurrency=500,
    )
    c = bursts(
        "(b') bursts of 500 requests at once, fake at 100 ms  [target p99 < 150 ms]",
        latency=0.1,
        size=500,
        rounds=3 if args.quick else 10,
    )
    print(
        f"\nsummary: {a['rps']:,.0f} req/s (target 1,500); at 100 ms LM latency, p99 "
        f"{b['p99_ms']:.0f} ms with 500 always in flight, {c['p99_ms']:.0f} ms over bursts "
        "of 500 (target < 150 ms)"
    )


if __name__ == "__main__":
    main()
