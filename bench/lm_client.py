"""LM client overhead and concurrency against a fake OpenAI server (run on demand).

    python bench/lm_client.py [--calls 2000]

The fake server runs in a child process so it does not compete with the
client for the GIL. Prints, per call: a raw ``httpx.Client`` POST, a raw
``httpx.AsyncClient`` POST on a private loop, the client's three transports
(``HttptoolsTransport``, the default; ``H11Transport``; ``HttpxTransport``)
on a private loop (the floor: same HTTP, no handoff, no pipeline), and
``LMHandle.generate`` through the LMClient actor with each transport; then
the overhead of the handle over each raw call, 256 identical in-flight
calls (upstream requests made), 1000 calls from 128 threads and 2000 from
500 threads at 100 ms server latency (wall time, client CPU per call, peak
requests in flight at the server).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx

from dspex.actors._lm._client import LMClient
from dspex.actors._lm._handle import LMHandle
from dspex.actors._lm._resilience import LMClientConfig
from dspex.actors._lm._transport import Transport
from dspex.actors._lm._transport_h11 import H11Transport
from dspex.actors._lm._transport_httptools import HttptoolsTransport
from dspex.actors._lm._transport_httpx import HttpxTransport


def _serve(conn: Any, latency: float) -> None:
    from dspex.testing._fake_providers import FakeOpenAI

    with FakeOpenAI(reply="ok", latency=latency) as fake:
        conn.send(fake.url)
        conn.recv()  # until the parent says stop
        conn.send((fake.request_count, fake.max_in_flight))


class Server:
    """A FakeOpenAI in a child process."""

    def __init__(self, latency: float = 0.0) -> None:
        self._conn, child = mp.Pipe()
        self._proc = mp.get_context("fork").Process(target=_serve, args=(child, latency))
        self._proc.start()
        self.url: str = self._conn.recv()

    def stop(self) -> tuple[int, int]:
        """(requests received, most in flight at once)."""
        self._conn.send("stop")
        counts: tuple[int, int] = self._conn.recv()
        self._proc.join(10)
        return counts


def _rounds(fns: dict[str, Callable[[int], object]], calls: int, rounds: int = 7) -> dict[str, Any]:
    """Interleave batches of each fn; per fn the best batch's µs/call and mean CPU µs/call.

    Interleaving and taking the best batch keep load from other processes on
    this shared machine from favouring whichever variant ran in a quiet moment.
    """
    for fn in fns.values():  # warm up connections and caches
        for i in range(200):
            fn(-i - 1)
    batch = max(1, calls // rounds)
    best = dict.fromkeys(fns, float("inf"))
    cpu = dict.fromkeys(fns, 0.0)
    for r in range(rounds):
        for name, fn in fns.items():
            c0, t0 = time.process_time(), time.perf_counter()
            for i in range(batch):
                fn(r * batch + i)
            best[name] = min(best[name], (time.perf_counter() - t0) / batch * 1e6)
            cpu[name] += (time.process_time() - c0) / (batch * rounds) * 1e6
    return {name: (best[name], cpu[name]) for name in fns}


def bench_overhead(calls: int) -> None:
    server = Server(0.0)
    url = server.url
    headers = {"authorization": "Bearer sk-bench"}

    def body(i: int) -> dict[str, Any]:
        return {"model": "bench", "messages": [{"role": "user", "content": f"q{i}"}]}

    client = httpx.Client()

    def raw_sync(i: int) -> object:
        r = client.post(f"{url}/chat/completions", json=body(i), headers=headers)
        return r.json()["choices"][0]["message"]["content"]

    loop = asyncio.new_event_loop()
    aclient = httpx.AsyncClient()

    async def one(i: int) -> object:
        r = await aclient.post(f"{url}/chat/completions", json=body(i), headers=headers)
        return r.json()["choices"][0]["message"]["content"]

    async def make() -> tuple[HttptoolsTransport, H11Transport, HttpxTransport]:
        return HttptoolsTransport(), H11Transport(), HttpxTransport()

    httptools_transport, h11_transport, httpx_transport = loop.run_until_complete(make())
    pool_headers = {"content-type": "application/json", **headers}

    def transported(transport: Transport) -> Callable[[int], object]:
        async def send(i: int) -> object:
            reply = await transport.request(
                "POST", f"{url}/chat/completions", pool_headers, json.dumps(body(i)).encode()
            )
            return json.loads(reply.body)["choices"][0]["message"]["content"]

        return lambda i: loop.run_until_complete(send(i))

    refs, handles = [], {}
    for name in ("httptools", "h11", "httpx"):
        config = LMClientConfig(transport=name)
        ref = LMClient.start_link("openai/bench", api_base=url, api_key="sk-bench", config=config)
        refs.append(ref)
        handles[name] = LMHandle.for_client(ref)

    def via_handle(name: str) -> Callable[[int], object]:
        handle = handles[name]
        return lambda i: handle.generate([{"role": "user", "content": f"q{i}"}], {}).texts[0]

    results = _rounds(
        {
            "raw httpx.Client": raw_sync,
            "raw httpx.AsyncClient": lambda i: loop.run_until_complete(one(i)),
            "raw HttptoolsTransport": transported(httptools_transport),
            "raw H11Transport": transported(h11_transport),
            "raw HttpxTransport": transported(httpx_transport),
            "LMHandle.generate (httptools)": via_handle("httptools"),
            "LMHandle.generate (h11)": via_handle("h11"),
            "LMHandle.generate (httpx)": via_handle("httpx"),
        },
        calls,
    )
    for ref in refs:
        ref.stop()
    client.close()
    loop.run_until_complete(aclient.aclose())
    loop.run_until_complete(httptools_transport.aclose())
    loop.run_until_complete(h11_transport.aclose())
    loop.run_until_complete(httpx_transport.aclose())
    loop.close()
    server.stop()
    for name, (us, cpu_us) in results.items():
        print(f"{name:28s}{us:8.1f} µs/call  (client CPU {cpu_us:6.1f} µs/call)")
    pairs = (
        ("httptools", "raw HttptoolsTransport"),
        ("h11", "raw H11Transport"),
        ("httpx", "raw HttpxTransport"),
    )
    for name, raw in pairs:
        handle_us = results[f"LMHandle.generate ({name})"][0]
        print(f"  handle ({name}) overhead vs {raw[4:]:18s}{handle_us - results[raw][0]:8.1f} µs")


def bench_single_flight() -> None:
    server = Server(0.2)
    ref = LMClient.start_link("openai/bench", api_base=server.url, api_key="sk-bench")
    handle = LMHandle.for_client(ref)
    barrier = threading.Barrier(256)

    def call(_: int) -> str:
        barrier.wait(10)
        return handle.complete("same question")[0]

    with ThreadPoolExecutor(256) as pool:
        answers = list(pool.map(call, range(256)))
    ref.stop()
    upstream, _ = server.stop()
    print(f"256 identical in-flight calls: {upstream} upstream request(s), {len(answers)} answers")


def bench_concurrency(n: int = 1000, workers: int = 128, latency: float = 0.1) -> None:
    server = Server(latency)
    config = LMClientConfig(max_in_flight=512)
    ref = LMClient.start_link("openai/bench", api_base=server.url, api_key="sk-b", config=config)
    handle = LMHandle.for_client(ref)
    handle.complete("warm up")
    cpu0, t0 = time.process_time(), time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(lambda i: handle.complete(f"example {i}"), range(n)))
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    ref.stop()
    _, peak = server.stop()
    print(
        f"{n} calls, {workers} threads, {latency * 1000:.0f} ms latency: {wall:.2f} s wall "
        f"(ideal {n / workers * latency:.2f} s), {cpu / n * 1000:.2f} ms client CPU per call, "
        f"{peak} in flight at most"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000)
    args = parser.parse_args()
    bench_overhead(args.calls)
    bench_single_flight()
    bench_concurrency()
    bench_concurrency(2000, 500)


if __name__ == "__main__":
    main()
