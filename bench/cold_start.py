"""Issue 11's cold-start benchmark: the first call of a fresh process, dspex beside DSPy.

    python bench/cold_start.py [--runs 5] [--no-dspy]

Each run is a fresh interpreter that imports the library, configures an LM on
the fake OpenAI server (``bench/_fake_server.py``, its own process) and makes
one ``Predict("question -> answer")`` call with a new question (a cache miss,
so a real HTTP request). The child times itself from before the import to the
answer, so the interpreter's own start and exit do not count, and prints the
import's share and its CPU time (all threads) too. Bytecode is cached in a
scratch directory warmed by one run, as an installed package has it (the
shared venv sets ``PYTHONDONTWRITEBYTECODE``). Caches (dspex's and DSPy's)
live in the scratch directory. DSPy runs from ``/tmp/dspy-venv`` if it
exists. Prints the best and the median of ``--runs`` processes, interleaved
so load from other processes on this shared machine falls on both alike.
Asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from runtime import Server

HERE = Path(__file__).resolve().parent
DSPY_PYTHON = Path("/tmp/dspy-venv/bin/python")

CHILD = """
import sys, time, uuid
start, cpu = time.perf_counter(), time.process_time()
import {module} as dspy
imported = time.perf_counter()
dspy.configure(lm=dspy.LM("openai/bench", api_base=sys.argv[1], api_key="sk-bench-key"))
answer = dspy.Predict("question -> answer")(question=f"cold {{uuid.uuid4()}}?").answer
end = time.perf_counter()
print(end - start, imported - start, time.process_time() - cpu)
"""


def run_child(python: str, module: str, url: str, env: dict[str, str]) -> tuple[float, ...]:
    out = subprocess.run(
        [python, "-c", CHILD.format(module=module), url],
        check=True,
        capture_output=True,
        text=True,
        env=env,
        cwd=tempfile.gettempdir(),  # keep bench/ (and the repository) off DSPy's path
    )
    total, imported, cpu = (float(x) for x in out.stdout.strip().splitlines()[-1].split())
    return total, imported, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="fresh processes per library")
    parser.add_argument("--no-dspy", action="store_true", help="measure dspex only")
    args = parser.parse_args()

    variants: dict[str, tuple[str, str]] = {"dspex": (sys.executable, "dspex")}
    if not args.no_dspy and DSPY_PYTHON.exists():
        variants["DSPy"] = (str(DSPY_PYTHON), "dspy")
    server = Server()
    samples: dict[str, list[tuple[float, ...]]] = {name: [] for name in variants}
    try:
        with tempfile.TemporaryDirectory() as scratch:
            env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
            env["PYTHONPYCACHEPREFIX"] = str(Path(scratch) / "pycache")
            env["DSPEX_CACHE__DIR"] = str(Path(scratch) / "dspex-cache")
            env["DSPY_CACHEDIR"] = str(Path(scratch) / "dspy-cache")
            env["PYTHONPATH"] = str(HERE.parent)
            for python, module in variants.values():  # warm the bytecode
                run_child(python, module, server.url, env)
            for _ in range(args.runs):
                for name, (python, module) in variants.items():
                    samples[name].append(run_child(python, module, server.url, env))
    finally:
        server.stop()

    print(f"first call of a fresh process ({args.runs} processes each; ms)")
    print(f"  {'':8s}{'best':>8s}{'median':>8s}   {'import':>8s}{'after':>8s}{'CPU':>8s}")
    for name, rows in samples.items():
        totals = [r[0] * 1000 for r in rows]
        imports = statistics.median(r[1] * 1000 for r in rows)
        after = statistics.median((r[0] - r[1]) * 1000 for r in rows)
        cpu = statistics.median(r[2] * 1000 for r in rows)
        print(
            f"  {name:8s}{min(totals):8.1f}{statistics.median(totals):8.1f}   "
            f"{imports:8.1f}{after:8.1f}{cpu:8.1f}"
        )
    print("  (import, after: medians of the import and of the rest; CPU: all threads)")
    if "DSPy" not in samples:
        print(f"  DSPy: skipped ({DSPY_PYTHON} not found or --no-dspy)")


if __name__ == "__main__":
    main()
