"""``dspex.Evaluate`` at scale against a fake OpenAI server in a child process (issue 5).

    python bench/evaluate.py                  # every scenario, 3 runs each (about 2 min)
    python bench/evaluate.py --runs 1 w128    # one scenario, one run
    python bench/evaluate.py --profile w16    # one run under cProfile, every client thread

Each run evaluates ``Predict("question -> answer")`` on a devset of distinct
synthetic questions with an exact-match metric; the cache is off, so every
example is one HTTP request (more with retries). The fake server
(``bench/_fake_server.py``) is a separate process, so the client CPU figure
(``time.process_time`` of this process over the evaluation, per example) is
the client's alone. Prints figures and asserts nothing; ``bench/evaluate_dspy.py``
runs the same scenarios with DSPy for comparison.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import pstats
import sys
import threading
import time
from typing import Any

from _evaluate_common import (
    NUM_RETRIES,
    FakeServer,
    Run,
    Scenario,
    expected_answer,
    print_header,
    print_row,
    question,
    raw_floor,
    scenarios_named,
)

import dspex


def exact(example: Any, prediction: Any, trace: Any = None) -> bool:
    """The answer, stripped, equals the expected one."""
    return bool(str(getattr(prediction, "answer", "")).strip() == example.answer)


def run_once(scenario: Scenario, run: int) -> Run:
    """Start a fresh fake and runtime, warm the connection up, time one evaluation."""
    with FakeServer(scenario, seed=run, python=sys.executable) as server:
        lm = dspex.LM(
            "openai/bench",
            api_base=server.url,
            api_key="sk-bench",
            cache=False,
            num_retries=NUM_RETRIES,
            # the HTTP pool's connection cap; the default (512) already covers 500 workers
            max_in_flight=max(512, scenario.workers),
        )
        with dspex.start(lm=lm, cache={"enabled": False}):
            program = dspex.Predict("question -> answer")
            program(question="rollout 0: warm up")
            devset = [
                dspex.Example(question=question(i, run), answer=expected_answer(i)).with_inputs(
                    "question"
                )
                for i in range(scenario.n)
            ]
            evaluate = dspex.Evaluate(
                devset=devset,
                metric=exact,
                num_threads=scenario.workers,
                display_progress=False,
                max_errors=scenario.n + 1,  # count failures, never stop early
            )
            gc.collect()
            cpu0, t0 = time.process_time(), time.perf_counter()
            result = evaluate(program)
            wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
        stats = server.stop()
    correct = sum(1 for _, _, score in result.results if score)
    stats["requests"] = stats.get("requests", 0) - 1  # the warm-up call
    return Run(wall, cpu, scenario.n, len(result.results), correct, len(result.errors), stats)


def profile_once(scenario: Scenario, top: int) -> None:
    """One run with cProfile in every thread of this process; print the merged hot spots.

    Python 3.11 has no way to profile threads already running, so the hook is
    installed before the runtime starts its actor and I/O threads and the
    pool its workers: each new thread enables its own profiler on its first
    event. Figures are inflated by the profiler; read them as shares.
    """
    profiles: list[cProfile.Profile] = []
    lock = threading.Lock()

    def hook(*_: Any) -> None:
        profile = cProfile.Profile()
        with lock:
            profiles.append(profile)
        profile.enable()  # replaces this hook for the rest of the thread

    main_profile = cProfile.Profile()
    profiles.append(main_profile)
    threading.setprofile(hook)
    main_profile.enable()
    try:
        run = run_once(scenario, 0)
    finally:
        main_profile.disable()
        threading.setprofile(None)
    print(f"{scenario.title}: {run.wall:.2f} s wall under the profiler, {len(profiles)} threads")
    stats = pstats.Stats(main_profile)
    for profile in profiles[1:]:
        stats.add(profile)
    stats.sort_stats("tottime").print_stats(top)
    stats.sort_stats("cumtime").print_stats("dspex", top)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scenarios", nargs="*", help="w128 w16 scale err500 rl429 (default: all)")
    parser.add_argument("--runs", type=int, default=3, help="runs per scenario (median shown)")
    parser.add_argument("--no-floor", action="store_true", help="skip the bare http.client runs")
    parser.add_argument("--profile", metavar="SCENARIO", help="profile one run of SCENARIO")
    parser.add_argument("--top", type=int, default=40, help="rows of the profile to print")
    args = parser.parse_args()
    if args.profile:
        profile_once(scenarios_named([args.profile])[0], args.top)
        return
    print_header(
        f"dspex {dspex.__version__}, Python {sys.version.split()[0]}", floor=not args.no_floor
    )
    for scenario in scenarios_named(args.scenarios):
        runs = []
        for r in range(args.runs):
            floor = None
            if not (args.no_floor or scenario.fail_rate):
                floor = raw_floor(scenario, seed=r, python=sys.executable)
            runs.append(run_once(scenario, r))
            runs[-1].floor = floor
        print_row(scenario, runs)


if __name__ == "__main__":
    main()
