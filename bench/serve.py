"""Issue 12's ``dspex serve`` benchmark: requests/s and tail latency over real HTTP.

    python bench/serve.py [--duration 10] [--quick] [--runs 3] [--workers N] [--load wrk|python]

Three processes: the fake OpenAI server (``bench/_fake_server.py``), ``dspex
serve bench/_serve_app.py:qa``, and a load generator driving ``POST
/v1/programs/qa`` over keep-alive HTTP/1.1 connections (one request at a time
on each; each question is distinct and the LM cache is off, so every request
reaches the fake). The load generator is ``wrk`` when it is on PATH (C: about
15 µs of CPU per request, so the 2 cores go to the server; ``apt-get install
wrk``), else a minimal asyncio client in this process (several times that).
The fake is ``--raw`` by default (``bench/_raw_fake.py``: an asyncio Protocol
on uvloop with canned replies, 15-30 µs per request; it stands in for a
remote provider, whose CPU is not dspex's); ``--fake full`` runs the
FakeOpenAI instead (140-170 µs). Each scenario also prints the CPU time per
request of the server (all its
processes), the fake and the load generator, read from /proc: on a 2-core box
these three share the cores, so their sum bounds the requests/s
(2 s / sum) and, by Little's law, the latency at a given concurrency.
Prints figures and asserts nothing. ``BENCH_SERVE_ARGS`` adds options to every
``dspex serve`` it starts (for example ``BENCH_SERVE_ARGS="--gc-threshold 0"``).

(0) The serve layers alone: the same, on a program that calls no LM.
(a) Throughput: 64 keep-alive clients, fake at 0 ms. Target >= 1,500 req/s.
(b) Tail latency: 500 clients at once, fake at 100 ms, at least 30 s. Target p99 < 150 ms
    (the LM's 100 ms plus at most 50 ms added by dspex: the reading used
    here, since no server answers faster than its LM). Two readings: 500
    closed-loop clients for the whole duration (500 always in flight), and
    bursts of 500 requests sent at once on 500 open connections (p99 over
    the bursts).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from runtime import Server  # noqa: E402  (bench/runtime.py's child-process fake)


class RawServer(Server):
    """The fake in ``--raw`` mode (bench/_raw_fake.py): a stand-in for a remote
    provider whose CPU is not dspex's, so it is made as cheap as it can be."""

    def __init__(self, latency: float = 0.0) -> None:
        self._proc = subprocess.Popen(
            [sys.executable, str(HERE / "_fake_server.py"), "--raw", "--latency", str(latency)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self._proc.stdout is not None
        self.url = self._proc.stdout.readline().strip()
        if not self.url.startswith("http://"):
            raise RuntimeError(f"the raw fake did not start (printed {self.url!r})")


FAKE: list[type[Server]] = [RawServer]  # --fake full: the FakeOpenAI (set by main)
WORKERS = [1]  # --workers of the dspex serve processes (set by main)
B_SECONDS = 30.0  # the least duration of (b), the steady-state p99 (see main)
LOAD = ["python"]  # the load generator: "wrk" or "python" (set by main)


def tree_cpu(pid: int) -> float:
    """CPU seconds (user + system) of process ``pid`` and its descendants, from /proc."""
    children: dict[int, list[int]] = {}
    own: dict[int, float] = {}
    tick = os.sysconf("SC_CLK_TCK")
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(entry))
        own[int(entry)] = (int(fields[11]) + int(fields[12])) / tick
    total, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        total += own.get(p, 0.0)
        todo.extend(children.get(p, []))
    return total


class Served:
    """``dspex serve`` in a child process."""

    def __init__(
        self,
        fake_url: str,
        max_concurrency: int,
        queue_limit: int,
        program: str = "qa",
        workers: int | None = None,
    ) -> None:
        workers = WORKERS[0] if workers is None else workers
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
                *(["--workers", str(workers)] if workers != 1 else []),
                *os.environ.get("BENCH_SERVE_ARGS", "").split(),  # e.g. "--gc-threshold 0"
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
    fake = FAKE[0](latency)
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

    fake = FAKE[0](0.0)
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


_WRK_SCRIPT = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local n = 0
request = function()
  n = n + 1
  return wrk.format(nil, "/v1/programs/qa", nil, '{"question":"wrk question ' .. n .. '"}')
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "JSON {\\"requests\\": %d, \\"us\\": %d, \\"non200\\": %d, \\"socket_errors\\": %d, "
    .. "\\"p50_ms\\": %.3f, \\"p99_ms\\": %.3f, \\"mean_ms\\": %.3f}\\n",
    summary.requests, summary.duration, e.status, e.connect + e.read + e.write + e.timeout,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000, latency.mean / 1000))
end
"""


def _wrk(host: str, port: int, clients: int, seconds: float) -> dict[str, Any]:
    """``wrk`` (one thread: it needs little CPU) for ``seconds``; its figures."""
    script = Path(tempfile.gettempdir()) / f"dspex-bench-serve-{os.getpid()}.lua"
    script.write_text(_WRK_SCRIPT)
    before = os.times()
    out = subprocess.run(
        [
            *("wrk", "-t1", f"-c{clients}", f"-d{max(1, round(seconds))}s", "--timeout", "30s"),
            *("-s", str(script), f"http://{host}:{port}"),
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    after = os.times()
    line = next(x for x in out.splitlines() if x.startswith("JSON "))
    got = json.loads(line[5:])
    return {
        "requests": got["requests"],
        "rps": got["requests"] / (got["us"] / 1e6),
        "p50_ms": got["p50_ms"],
        "p99_ms": got["p99_ms"],
        "mean_ms": got["mean_ms"],
        "errors": got["non200"] + got["socket_errors"],
        "error_kinds": ["non-200"] * bool(got["non200"]) + ["socket"] * bool(got["socket_errors"]),
        "load_cpu_us": (after.children_user + after.children_system)
        - (before.children_user + before.children_system),
    }


def _drive(host: str, port: int, clients: int, seconds: float) -> dict[str, Any]:
    if LOAD[0] == "wrk":
        result = _wrk(host, port, clients, seconds)
    else:
        before = time.process_time()
        result = asyncio.run(_load(host, port, clients, seconds))
        result["load_cpu_us"] = time.process_time() - before
    result["load_cpu_us"] *= 1e6 / max(1, result["requests"])
    return result


def scenario(
    title: str,
    latency: float,
    clients: int,
    seconds: float,
    max_concurrency: int,
    program: str = "qa",
) -> dict[str, Any]:
    fake = FAKE[0](latency)
    served = Served(fake.url, max_concurrency, queue_limit=4 * clients, program=program)
    try:
        _drive(served.host, served.port, clients, min(2.0, seconds / 3))  # warm up
        serve0, fake0 = tree_cpu(served.proc.pid), tree_cpu(fake._proc.pid)
        result = _drive(served.host, served.port, clients, seconds)
        n = max(1, result["requests"])
        result["serve_cpu_us"] = (tree_cpu(served.proc.pid) - serve0) / n * 1e6
        result["fake_cpu_us"] = (tree_cpu(fake._proc.pid) - fake0) / n * 1e6
    finally:
        code = served.stop()
        fake.stop()
    cpu = result["serve_cpu_us"] + result["fake_cpu_us"] + result["load_cpu_us"]
    cores = os.cpu_count() or 1
    print(
        f"{title}\n  {result['requests']} requests in {seconds:.0f} s: "
        f"{result['rps']:,.0f} req/s, p50 {result['p50_ms']:.1f} ms, "
        f"p99 {result['p99_ms']:.1f} ms, mean {result['mean_ms']:.1f} ms, "
        f"{result['errors']} errors {result['error_kinds']}; serve exited {code}\n"
        f"  CPU per request: serve {result['serve_cpu_us']:.0f} µs, fake "
        f"{result['fake_cpu_us']:.0f} µs, load ({LOAD[0]}) {result['load_cpu_us']:.0f} µs; "
        f"{cores} cores bound {cores / cpu * 1e6:,.0f} req/s and, with {clients} in flight, "
        f"a mean of {clients * cpu / cores / 1000:.0f} ms",
        flush=True,
    )
    if latency > 0:  # the budget the target sets: clients in flight within 150 ms
        budget = cores * 0.150 / clients * 1e6
        print(
            f"  budget for {clients} in flight within 150 ms: {clients / 0.150:,.0f} req/s, "
            f"<= {budget:.0f} µs CPU per request summed; spent {cpu:.0f} µs",
            flush=True,
        )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per scenario")
    parser.add_argument("--quick", action="store_true", help="3 s per scenario")
    parser.add_argument("--workers", type=int, default=1, help="dspex serve --workers")
    parser.add_argument(
        "--load",
        choices=["wrk", "python"],
        default="wrk" if shutil.which("wrk") else "python",
        help="load generator (default: wrk when on PATH)",
    )
    parser.add_argument(
        "--fake",
        choices=["raw", "full"],
        default="raw",
        help="the fake provider: raw (bench/_raw_fake.py, least CPU) or full (FakeOpenAI)",
    )
    parser.add_argument("--only", help="run only these scenarios of 0,a0,a,b,c, e.g. 'a,b'")
    parser.add_argument("--runs", type=int, default=1, help="runs per scenario (medians)")
    args = parser.parse_args()
    WORKERS[0], LOAD[0] = args.workers, args.load
    FAKE[0] = RawServer if args.fake == "raw" else Server
    seconds = 3.0 if args.quick else args.duration
    only = set(args.only.split(",")) if args.only else None
    print(
        f"dspex serve benchmark on {os.cpu_count()} CPUs, {args.workers} worker(s), load from "
        f"{args.load}, {args.fake} fake (shared machine: figures vary)"
    )

    def want(key: str) -> bool:
        return only is None or key in only

    def median(runs: list[dict[str, Any]], key: str) -> float:
        return statistics.median(r[key] for r in runs)

    def repeat(fn: Any, *fargs: Any, **kwargs: Any) -> list[dict[str, Any]]:
        return [fn(*fargs, **kwargs) for _ in range(args.runs)]

    lines = []
    if want("0"):
        z = repeat(
            scenario,
            "(0) the HTTP + program-server layers alone: a program without LM, 64 clients",
            latency=0.0,
            clients=64,
            seconds=seconds,
            max_concurrency=64,
            program="echo",
        )
        lines.append(
            f"(0) no LM: {median(z, 'rps'):,.0f} req/s, serve "
            f"{median(z, 'serve_cpu_us'):.0f} µs CPU/request"
        )
    if want("a0"):
        in_process(seconds)
    if want("a"):
        a = repeat(
            scenario,
            "(a) 64 keep-alive clients, fake at 0 ms  [target >= 1,500 req/s]",
            latency=0.0,
            clients=64,
            seconds=seconds,
            max_concurrency=64,
        )
        lines.append(
            f"(a) {median(a, 'rps'):,.0f} req/s (target 1,500), p99 {median(a, 'p99_ms'):.0f} "
            f"ms; CPU/request: serve {median(a, 'serve_cpu_us'):.0f} µs, fake "
            f"{median(a, 'fake_cpu_us'):.0f} µs, load {median(a, 'load_cpu_us'):.0f} µs"
        )
    if want("b"):
        # wrk opens its 500 connections at once, so each run starts with one burst of
        # 500 (the (b') reading). Over 8 s that burst is ~1.4% of the requests, and
        # the p99 is the burst's; (b) is the steady state, so it runs >= 30 s, where
        # the opening burst is under 0.4% (--quick keeps 3 s).
        b = repeat(
            scenario,
            "(b) 500 concurrent clients, fake at 100 ms  [target p99 < 150 ms]",
            latency=0.1,
            clients=500,
            seconds=seconds if args.quick else max(seconds, B_SECONDS),
            max_concurrency=500,
        )
        lines.append(
            f"(b) 500 in flight at 100 ms: p99 {median(b, 'p99_ms'):.0f} ms (target < 150), "
            f"{median(b, 'rps'):,.0f} req/s; CPU/request: serve "
            f"{median(b, 'serve_cpu_us'):.0f} µs, fake {median(b, 'fake_cpu_us'):.0f} µs, "
            f"load {median(b, 'load_cpu_us'):.0f} µs"
        )
    if want("c"):
        c = repeat(
            bursts,
            "(b') bursts of 500 requests at once, fake at 100 ms  [target p99 < 150 ms]",
            latency=0.1,
            size=500,
            rounds=3 if args.quick else 10,
        )
        lines.append(f"(b') bursts of 500 at 100 ms: p99 {median(c, 'p99_ms'):.0f} ms")
    print(f"\nsummary (medians of {args.runs} run(s)):")
    for line in lines:
        print("  " + line)


if __name__ == "__main__":
    main()
