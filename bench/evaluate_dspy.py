"""The ``bench/evaluate.py`` scenarios run with DSPy 3.4.1, for comparison.

DSPy lives in its own venv, never the project's::

    python3 -m venv /tmp/dspy-venv && /tmp/dspy-venv/bin/pip install dspy==3.4.1
    # loopback only: a network namespace where nothing can leave the machine
    unshare -n sh -c 'ip link set lo up && /tmp/dspy-venv/bin/python bench/evaluate_dspy.py'

The fake server is the same script in a child process, started with the
project venv's Python (``--server-python`` to change it), so DSPy's venv
needs nothing of dspex. The same seeds give the same faults by request
index as in dspex's runs. LiteLLM reads its bundled model cost map (no
download) and DSPy's cache is off in memory and on disk.
"""

from __future__ import annotations

import os
import tempfile

# Before DSPy (and LiteLLM) are imported: no cost-map download, no telemetry,
# and no cache directory under $HOME.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("LITELLM_TELEMETRY", "False")
os.environ.setdefault("DSPY_CACHEDIR", os.path.join(tempfile.gettempdir(), "dspy-bench-cache"))

import argparse
import gc
import logging
import sys
import time
from typing import Any

import dspy  # type: ignore[import-not-found]
from _evaluate_common import (
    NUM_RETRIES,
    PROJECT_PYTHON,
    FakeServer,
    Run,
    Scenario,
    expected_answer,
    print_header,
    print_row,
    question,
    scenarios_named,
)


def exact(example: Any, prediction: Any, trace: Any = None) -> bool:
    """The answer, stripped, equals the expected one (as in bench/evaluate.py)."""
    return bool(str(getattr(prediction, "answer", "")).strip() == example.answer)


def run_once(scenario: Scenario, run: int, server_python: str) -> Run:
    """A fresh fake and LM, one warm-up call, one timed ``dspy.Evaluate``."""
    with FakeServer(scenario, seed=run, python=server_python) as server:
        lm = dspy.LM(
            "openai/bench",
            api_base=server.url,
            api_key="sk-bench",
            cache=False,
            num_retries=NUM_RETRIES,
        )
        dspy.configure(lm=lm)
        program = dspy.Predict("question -> answer")
        program(question="rollout 0: warm up")
        devset = [
            dspy.Example(question=question(i, run), answer=expected_answer(i)).with_inputs(
                "question"
            )
            for i in range(scenario.n)
        ]
        evaluate = dspy.Evaluate(
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
    results = result.results
    correct = sum(1 for _, _, score in results if score)
    # DSPy keeps a failed example as an empty Prediction scored failure_score
    failed = sum(1 for _, prediction, _ in results if "answer" not in prediction)
    stats["requests"] = stats.get("requests", 0) - 1  # the warm-up call
    return Run(wall, cpu, scenario.n, len(results), correct, failed, stats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scenarios", nargs="*", help="w128 w16 scale err500 rl429 (default: all)")
    parser.add_argument("--runs", type=int, default=3, help="runs per scenario (median shown)")
    parser.add_argument(
        "--server-python", default=str(PROJECT_PYTHON), help="a Python that can import dspex"
    )
    args = parser.parse_args()
    dspy.configure_cache(enable_disk_cache=False, enable_memory_cache=False)
    logging.getLogger("dspy").setLevel(logging.WARNING)  # one "Average Metric" line per run
    print_header(f"DSPy {dspy.__version__}, Python {sys.version.split()[0]}", floor=False)
    for scenario in scenarios_named(args.scenarios):
        runs = [run_once(scenario, r, args.server_python) for r in range(args.runs)]
        print_row(scenario, runs)


if __name__ == "__main__":
    main()
