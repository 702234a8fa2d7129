"""Benchmarks of dspex.supervision against raw pykka and the standard library.

Run: ``python bench/supervision.py [--quick]``. It prints figures and asserts
nothing. Every comparison is a ratio taken within one run, because absolute
times on a shared machine are noisy; each measurement is repeated and the
median reported.

1. Transient child start + stop through a DynamicSupervisor vs raw pykka
   ``start()``/``stop()``.  Target: <= 2x.
2. Restart latency: crash a supervised child until its new incarnation answers
   an ``ask``.  Target: median < 5 ms.
3. WorkerPool per-task overhead for no-op tasks at max_concurrency 64 vs
   ``concurrent.futures.ThreadPoolExecutor(64)``.  Target: <= 1.5x.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any

import pykka

from dspex.supervision import Actor, ChildSpec, Restart, WorkerPool


class RawEcho(pykka.ThreadingActor):
    """The baseline: a plain pykka actor."""

    def on_receive(self, message: Any) -> Any:
        return message


class Echo(Actor):
    """A dspex actor that crashes on request (tell path)."""

    def on_receive(self, message: Any) -> Any:
        if message == "crash":
            raise RuntimeError("crash requested by the benchmark")
        return message


def interleaved(repeats: int, *runs: Callable[[], float]) -> list[float]:
    """Median of each run, taking turns so a burst of load hits every contender."""
    for run in runs:
        run()  # warm up: thread creation, imports, caches
    samples: list[list[float]] = [[] for _ in runs]
    for _ in range(repeats):
        for run, bucket in zip(runs, samples, strict=True):
            bucket.append(run())
    return [statistics.median(bucket) for bucket in samples]


def line(label: str, value: str) -> None:
    print(f"  {label:<44} {value}")


# -- 1. transient children --------------------------------------------------------


def bench_transient_children(rounds: int, repeats: int) -> None:
    print(f"1. transient child start+stop, {rounds} children, median of {repeats}")
    try:
        from dspex.supervision import DynamicSupervisor, start_child, terminate_child
    except ImportError:
        print("  DynamicSupervisor not available")
        return

    def raw() -> float:
        t0 = time.perf_counter()
        for _ in range(rounds):
            RawEcho.start().stop(timeout=5)
        return (time.perf_counter() - t0) / rounds

    def dspex_actor() -> float:
        t0 = time.perf_counter()
        for _ in range(rounds):
            Echo.start_link().stop(timeout=5)
        return (time.perf_counter() - t0) / rounds

    spec = ChildSpec(id="run", start=Echo.start, restart=Restart.TRANSIENT)
    sup = DynamicSupervisor.start_link(max_restarts=1_000_000)
    try:

        def dynamic() -> float:
            t0 = time.perf_counter()
            for _ in range(rounds):
                ref = start_child(sup, spec)
                terminate_child(sup, ref)
            return (time.perf_counter() - t0) / rounds

        t_raw, t_actor, t_dyn = interleaved(repeats, raw, dspex_actor, dynamic)
    finally:
        sup.stop(timeout=10)
    line("raw pykka start()/stop()", f"{t_raw * 1e6:8.1f} us")
    line("dspex Actor start_link()/stop()", f"{t_actor * 1e6:8.1f} us  ({t_actor / t_raw:.2f}x)")
    line(
        "DynamicSupervisor start_child/terminate_child",
        f"{t_dyn * 1e6:8.1f} us  ({t_dyn / t_raw:.2f}x raw pykka; target <= 2x)",
    )
    line("  of which the supervisor's own share", f"{t_dyn / t_actor:.2f}x dspex Actor")


# -- 2. restart latency -----------------------------------------------------------


def bench_restart_latency(rounds: int) -> None:
    print(f"2. restart latency (crash -> new incarnation answers an ask), {rounds} crashes")
    try:
        from dspex.supervision import Registry, Supervisor
    except ImportError:
        print("  Supervisor not available")
        return
    registry = Registry("bench")
    spec = ChildSpec(id="echo", start=Echo.start, name="echo")
    sup = Supervisor.start_link([spec], max_restarts=1_000_000, max_seconds=1.0, registry=registry)
    samples: list[float] = []
    try:
        ref = registry.whereis("echo")
        for _ in range(rounds):
            assert ref is not None
            t0 = time.perf_counter()
            ref.tell("crash")
            new = registry.await_name("echo", 5.0, not_ref=ref)
            if new is None:
                print("  the child was not restarted within 5 s; stopping this benchmark")
                break
            new.ask("ping", timeout=5)
            samples.append(time.perf_counter() - t0)
            ref = new
    finally:
        sup.stop(timeout=10)
    if samples:
        samples.sort()
        p90 = samples[int(len(samples) * 0.9) - 1]
        line(
            "median / p90 / max",
            f"{statistics.median(samples) * 1e3:.2f} / {p90 * 1e3:.2f} / "
            f"{samples[-1] * 1e3:.2f} ms  (target: median < 5 ms)",
        )


# -- 3. worker pool overhead --------------------------------------------------------


def noop(x: int) -> int:
    return x


def bench_pool(tasks: int, repeats: int, concurrency: int = 64) -> None:
    print(
        f"3. per-task overhead, {tasks} no-op tasks, concurrency {concurrency}, median of {repeats}"
    )

    def tpe_map(ex: ThreadPoolExecutor) -> float:
        t0 = time.perf_counter()
        for _ in ex.map(noop, range(tasks)):
            pass
        return (time.perf_counter() - t0) / tasks

    def tpe_bounded(ex: ThreadPoolExecutor) -> float:
        # async_stream-like use of an executor: at most `concurrency` in flight.
        t0 = time.perf_counter()
        pending: set[Future[int]] = set()
        for x in range(tasks):
            pending.add(ex.submit(noop, x))
            if len(pending) >= concurrency:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for f in done:
                    f.result()
        for f in pending:
            f.result()
        return (time.perf_counter() - t0) / tasks

    def pool_map(pool: WorkerPool, ordered: bool) -> float:
        t0 = time.perf_counter()
        for result in pool.map(noop, range(tasks), max_concurrency=concurrency, ordered=ordered):
            result.unwrap()
        return (time.perf_counter() - t0) / tasks

    with ThreadPoolExecutor(concurrency) as ex, WorkerPool(size=concurrency, name="bench") as pool:
        figures = interleaved(
            repeats,
            lambda: tpe_map(ex),
            lambda: tpe_bounded(ex),
            lambda: pool_map(pool, True),
            lambda: pool_map(pool, False),
        )
    med = dict(zip(("tpe", "tpe_bounded", "ordered", "unordered"), figures, strict=True))
    base = med["tpe"]
    line("ThreadPoolExecutor.map", f"{base * 1e6:6.2f} us/task")
    line(
        "ThreadPoolExecutor, <= 64 in flight",
        f"{med['tpe_bounded'] * 1e6:6.2f} us/task  ({med['tpe_bounded'] / base:.2f}x)",
    )
    for key in ("ordered", "unordered"):
        line(
            f"WorkerPool.map(ordered={key == 'ordered'})",
            f"{med[key] * 1e6:6.2f} us/task  ({med[key] / base:.2f}x TPE.map; target <= 1.5x)",
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="fewer rounds (a smoke run)")
    args = parser.parse_args(argv)
    repeats = 3 if args.quick else 7
    print(f"python {sys.version.split()[0]}, pykka; {'quick' if args.quick else 'full'} run")
    bench_transient_children(rounds=50 if args.quick else 300, repeats=repeats)
    bench_restart_latency(rounds=40 if args.quick else 200)
    bench_pool(tasks=10_000, repeats=repeats)
    return 0


if __name__ == "__main__":
    sys.exit(main())
