"""GEPA ``auto="light"``: dspex against DSPy 3.4.1, same task, seed and fake provider.

    python bench/gepa_compile.py [--dspy-python /tmp/dspy-venv/bin/python] [--latency 0.05]

Each side compiles ``Predict("question -> answer")`` on the task of
``_gepa_task.py`` (20 train, 10 val, seed 0, 8 threads) against its own fresh
FakeOpenAI with a fixed latency per answer, with an empty cache. Printed:
the compile's wall time, the requests it sent upstream, and the compiled
program's valset score (measured on a second fake, outside the counts).
DSPy runs in its own venv (``python3 -m venv /tmp/dspy-venv &&
/tmp/dspy-venv/bin/pip install dspy==3.4.1``) via ``gepa_dspy.py``; without
it, only dspex's figures are printed. Target: dspex's wall time at most half
of DSPy's, at an equal or better score.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

# bench/ comes first on sys.path: put it last, so no script here can ever
# shadow a package DSPy or gepa imports (only _gepa_task is needed from it).
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE] + [_HERE]

from _gepa_task import LATENCY, SEED, THREADS, TRAIN, VAL, judge, reply, rows  # noqa: E402

import dspex  # noqa: E402
from dspex.testing import FakeOpenAI  # noqa: E402

HERE = Path(__file__).resolve().parent


def run_dspex(latency: float, speculate: Any = False) -> dict[str, Any]:
    def examples(pairs: list[tuple[str, str]]) -> list[dspex.Example]:
        return [dspex.Example(question=q, answer=a).with_inputs("question") for q, a in pairs]

    def metric(gold: Any, pred: Any, trace: Any = None, name: Any = None, sub: Any = None) -> Any:
        score, feedback = judge(gold.answer, getattr(pred, "answer", ""))
        return dspex.Prediction(score=score, feedback=feedback)

    trainset, valset = examples(rows(TRAIN)), examples(rows(VAL, start=TRAIN))
    with (
        tempfile.TemporaryDirectory() as cache,
        FakeOpenAI(reply=reply, latency=latency) as fake,
        FakeOpenAI(reply=reply) as judge_fake,
    ):
        rt = dspex.start(cache={"dir": cache})
        try:
            lm = dspex.LM("openai/task", api_base=fake.url, api_key="sk-bench")
            reflection = dspex.LM("openai/reflect", api_base=fake.url, api_key="sk-bench")
            with dspex.context(lm=lm):
                started = time.perf_counter()
                compiled = dspex.GEPA(
                    metric=metric,
                    auto="light",
                    reflection_lm=reflection,
                    num_threads=THREADS,
                    seed=SEED,
                    speculate=speculate,
                ).compile(dspex.Predict("question -> answer"), trainset=trainset, valset=valset)
                wall = time.perf_counter() - started
            requests = fake.request_count
            compiled.set_lm(dspex.LM("openai/task", api_base=judge_fake.url, api_key="sk-bench"))
            result = dspex.Evaluate(
                devset=valset,
                metric=lambda g, p, t=None: judge(g.answer, p.answer)[0],
                num_threads=THREADS,
                display_progress=False,
            )(compiled)
        finally:
            rt.stop()
    instructions = [p.signature.instructions for _, p in compiled.named_predictors()]
    return {
        "wall": wall,
        "requests": requests,
        "score": result.score / 100,
        "program": instructions,
    }


def run_dspy(python: str, latency: float) -> dict[str, Any] | None:
    if not Path(python).exists():
        return None
    with FakeOpenAI(reply=reply, latency=latency) as fake, FakeOpenAI(reply=reply) as judge_fake:
        done = subprocess.run(
            [python, str(HERE / "gepa_dspy.py"), "--url", fake.url, "--eval-url", judge_fake.url],
            capture_output=True,
            text=True,
            cwd=HERE,
            timeout=1800,
            check=False,
        )
        requests = fake.request_count
    if done.returncode != 0:
        print(done.stderr[-3000:], file=sys.stderr)
        return None
    figures: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return {**figures, "requests": requests}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dspy-python", default="/tmp/dspy-venv/bin/python")
    parser.add_argument(
        "--latency",
        type=float,
        action="append",
        help=f"seconds per fake answer (repeatable; default 0, {LATENCY} and 0.5)",
    )
    args = parser.parse_args()
    logging.disable(logging.WARNING)
    print(f"GEPA auto='light', {TRAIN} train / {VAL} val, seed {SEED}, {THREADS} threads")
    print(f"{'latency':>8} {'':7} {'wall s':>8} {'requests':>9} {'score':>6} {'ratio':>6}")
    for latency in args.latency or [0.0, LATENCY, 0.5]:
        rows = {
            "dspex": run_dspex(latency),
            "dspex+s": run_dspex(latency, speculate=True),
            "dspy": run_dspy(args.dspy_python, latency),
        }
        theirs = rows["dspy"]
        for name, row in rows.items():
            if row is None:
                continue
            ratio = f"{row['wall'] / theirs['wall']:6.2f}" if theirs and row is not theirs else ""
            print(
                f"{latency * 1000:6.0f}ms {name:7} {row['wall']:8.2f} {row['requests']:9d} "
                f"{row['score']:6.2f} {ratio}"
            )
        # Speculation must not change the result, only when the calls are made.
        same = rows["dspex"]["program"] == rows["dspex+s"]["program"]
        print(f"{'':8} speculate=True compiles the same program: {same}")
    print("ratio: dspex wall / DSPy wall (target <= 0.50)")
    print("dspex+s: GEPA(speculate=True), which prefetches each new candidate's evaluations")


if __name__ == "__main__":
    main()
