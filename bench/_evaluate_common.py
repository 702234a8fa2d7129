"""What the two evaluate benchmarks share: the scenarios, the child-process fake, the report.

Standard library only, so ``bench/evaluate.py`` (dspex's venv) and
``bench/evaluate_dspy.py`` (a separate venv with DSPy) run the very same
scenarios against the very same server script and print comparable lines.
"""

from __future__ import annotations

import http.client
import json
import statistics
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _fake_server import expected_answer

__all__ = [
    "NUM_RETRIES",
    "PROJECT_PYTHON",
    "SCENARIOS",
    "FakeServer",
    "Run",
    "Scenario",
    "expected_answer",
    "print_header",
    "print_row",
    "question",
    "raw_floor",
    "scenarios_named",
]

BENCH_DIR = Path(__file__).resolve().parent
SERVER_SCRIPT = BENCH_DIR / "_fake_server.py"
PROJECT_PYTHON = BENCH_DIR.parent / ".venv" / "bin" / "python"

# Every scenario gives the client this many retries, so a run of bad luck
# (three 429s in a row happen about once in 125 examples at a 20% rate)
# does not lose an example; both benchmarks use the same number.
NUM_RETRIES = 5


@dataclass(frozen=True)
class Scenario:
    """One timed evaluation: ``n`` examples, ``workers`` threads, the fake's behaviour."""

    key: str
    title: str
    n: int
    latency: float
    workers: int
    fail_rate: float = 0.0
    fault: str = "500"
    target: float | None = None  # seconds of wall time (dspex's goal, issue 5)
    target_cpu_ms: float | None = None  # client CPU ms per example
    dspy_issue: float | None = None  # DSPy 3.4.1's wall time quoted in issue 5

    @property
    def ideal(self) -> float:
        """Wall time with zero overhead and no faults: the work spread over the workers."""
        return self.n * self.latency / self.workers

    def server_args(self, seed: int) -> list[str]:
        return [
            "--seed",
            str(seed),
            "--latency",
            str(self.latency),
            "--fail-rate",
            str(self.fail_rate),
            "--fault",
            self.fault,
            "--retry-after",
            "1",
        ]


SCENARIOS: tuple[Scenario, ...] = (
    Scenario("w128", "1,000 ex, 100 ms, 128 workers", 1000, 0.1, 128, target=1.0,
             target_cpu_ms=0.8, dspy_issue=5.52),
    Scenario("w16", "1,000 ex, 100 ms, 16 workers", 1000, 0.1, 16, target=6.6, dspy_issue=7.77),
    Scenario("scale", "5,000 ex, 500 ms, 500 workers", 5000, 0.5, 500, target=7.5),
    Scenario("err500", "500 ex, 50 ms, 32 w, 10% HTTP 500", 500, 0.05, 32, fail_rate=0.1,
             fault="500", target=2.5, dspy_issue=8.4),
    Scenario("rl429", "500 ex, 50 ms, 32 w, 20% 429 RA=1", 500, 0.05, 32, fail_rate=0.2,
             fault="429", target=3.0, dspy_issue=6.8),
)  # fmt: skip


def scenarios_named(keys: list[str] | None) -> list[Scenario]:
    """The scenarios to run, in the table's order; ``None``: all."""
    if not keys:
        return list(SCENARIOS)
    known = {s.key: s for s in SCENARIOS}
    unknown = [k for k in keys if k not in known]
    if unknown:
        raise SystemExit(f"unknown scenario(s) {unknown}; choose from {sorted(known)}")
    return [known[k] for k in keys]


def question(i: int, run: int) -> str:
    """A distinct question per example and per run (so single-flight never merges two)."""
    return f"rollout {i}: what is {i} times seven? (run {run})"


class FakeServer:
    """``bench/_fake_server.py`` in a child process, serving one scenario."""

    def __init__(
        self, scenario: Scenario, *, seed: int = 0, python: Path | str = PROJECT_PYTHON
    ) -> None:
        """``seed`` picks which requests fail; run ``r`` of either benchmark uses seed ``r``."""
        self._proc = subprocess.Popen(
            [str(python), str(SERVER_SCRIPT), *scenario.server_args(seed)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self._proc.stdout is not None
        self.url = self._proc.stdout.readline().strip()
        if not self.url.startswith("http://127.0.0.1:"):
            self._proc.kill()
            raise RuntimeError(f"the fake server did not start (said {self.url!r})")

    def stop(self) -> dict[str, Any]:
        """Close its stdin; return its counts (requests, outcomes, max_in_flight, ...)."""
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self._proc.stdin.close()
        line = self._proc.stdout.readline()
        self._proc.wait(15)
        return json.loads(line) if line else {}

    def __enter__(self) -> FakeServer:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._proc.poll() is None:
            self.stop()


def raw_floor(scenario: Scenario, *, seed: int = 0, python: Path | str = PROJECT_PYTHON) -> float:
    """Wall time of the same requests sent by bare ``http.client``, one connection per thread.

    No framework, no parsing, no retries: the closest a client can get to
    the ideal against this fake on this machine (the fake's own overhead and
    the scheduler's included). Only meaningful for scenarios without faults.
    """
    with FakeServer(scenario, seed=seed, python=python) as server:
        host_port, _, path = server.url.removeprefix("http://").partition("/")
        host, _, port = host_port.partition(":")
        local = threading.local()
        headers = {"authorization": "Bearer sk-bench", "content-type": "application/json"}

        def call(i: int) -> int:
            conn = getattr(local, "conn", None)
            if conn is None:
                conn = local.conn = http.client.HTTPConnection(host, int(port), timeout=60)
            body = {"model": "bench", "messages": [{"role": "user", "content": question(i, 0)}]}
            conn.request("POST", f"/{path}/chat/completions", json.dumps(body), headers)
            response = conn.getresponse()
            response.read()
            return response.status

        t0 = time.perf_counter()
        with ThreadPoolExecutor(scenario.workers) as pool:
            list(pool.map(call, range(scenario.n)))
        return time.perf_counter() - t0


@dataclass
class Run:
    """One measured evaluation."""

    wall: float
    cpu: float  # client process CPU seconds during the evaluation
    n: int
    scored: int  # examples with a result (a failed one scores failure_score)
    correct: int  # examples whose answer matched
    failed: int  # examples that raised
    server: dict[str, Any] = field(default_factory=dict)
    floor: float | None = None  # raw_floor() measured next to this run

    @property
    def cpu_ms(self) -> float:
        return self.cpu / self.n * 1000


def print_header(label: str, *, floor: bool = True) -> None:
    note = "; floor = bare http.client (same requests, same fake)" if floor else ""
    print(f"{label}: median of the runs; ratio = wall / ideal{note}")
    print(
        f"{'scenario':36s}{'wall s':>8s}{'ideal':>7s}{'ratio':>7s}{'floor':>7s}{'target':>8s}"
        f"{'CPU ms/ex':>11s}{'ok':>6s}{'failed':>7s}{'reqs':>7s}{'peak':>6s}  runs (s)"
    )


def print_row(scenario: Scenario, runs: list[Run]) -> None:
    wall = statistics.median(r.wall for r in runs)
    cpu_ms = statistics.median(r.cpu_ms for r in runs)
    mid = sorted(runs, key=lambda r: r.wall)[len(runs) // 2]
    target = f"{scenario.target:.1f}" if scenario.target is not None else "-"
    if scenario.key == "scale":
        target = "1.5x"
    peak = mid.server.get("max_in_flight", "?")
    floors = [r.floor for r in runs if r.floor is not None]
    floor = f"{statistics.median(floors):.2f}" if floors else "-"
    print(
        f"{scenario.title:36s}{wall:8.2f}{scenario.ideal:7.2f}{wall / scenario.ideal:7.2f}"
        f"{floor:>7s}{target:>8s}{cpu_ms:11.2f}{mid.correct:6d}{mid.failed:7d}"
        f"{mid.server.get('requests', 0):7d}{peak:>6}  " + " ".join(f"{r.wall:.2f}" for r in runs),
        flush=True,
    )
    for r in runs:
        if r.scored != r.n or r.correct + r.failed != r.n:
            print(
                f"  !! a run scored {r.scored} of {r.n} examples: {r.correct} right, "
                f"{r.failed} failed, {r.scored - r.correct - r.failed} wrong"
            )
    if scenario.fail_rate:
        print(f"  median run: {mid.server.get('outcomes', {})}, {work_bound_note(scenario, mid)}")
        if all("path_bound" in r.server for r in runs):
            pairs = " ".join(f"{r.wall:.2f}/{r.server['path_bound']:.2f}" for r in runs)
            print(f"  per run, wall / path bound (s): {pairs}")


def work_bound_note(scenario: Scenario, run: Run) -> str:
    """How fast the faults of ``run`` allow at best: the work bound and the path bound.

    Work bound: each request holds a worker for the latency, and each 429
    then holds it for its ``Retry-After`` (1 s) as well; spreading that over
    the workers perfectly gives the bound. Path bound (from the fake): one
    example's attempts are sequential, so the slowest example's attempts x
    latency + waited 429s x ``Retry-After`` bounds the wall time whatever the
    number of workers. Backoff after a 500 is the client's choice, so neither
    counts it.
    """
    outcomes = run.server.get("outcomes", {})
    requests = sum(outcomes.values())
    busy = requests * scenario.latency + outcomes.get("rate_limit", 0) * 1.0
    note = f"work bound {busy / scenario.workers:.2f} s"
    path = run.server.get("path_bound")
    if path is not None:
        met = run.server.get("path_faults", 0)
        partial = " of the requests kept" if run.server.get("path_bound_partial") else ""
        note += (
            f", path bound {path:.2f} s (an example met {met} fault{'s' * (met != 1)}"
            f"{partial}; examples by faults met {run.server.get('examples_by_faults', {})})"
        )
    return note
