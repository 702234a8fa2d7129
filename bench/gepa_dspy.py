"""DSPy 3.4.1's GEPA on bench/gepa_compile.py's task (run by it, in DSPy's own venv).

    /tmp/dspy-venv/bin/python bench/gepa_dspy.py --url http://127.0.0.1:PORT/v1

Prints one JSON line: the compile's wall seconds and the valset score (0-1). DSPy's cache lives
in a fresh temporary directory, so every request of the run reaches the fake.
"""

from __future__ import annotations

import os
import sys
import tempfile

# bench/ comes first on sys.path: put it last, so no script here can ever
# shadow a package DSPy or gepa imports (only _gepa_task is needed from it).
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE] + [_HERE]

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("LITELLM_TELEMETRY", "False")
os.environ["DSPY_CACHEDIR"] = tempfile.mkdtemp(prefix="dspy-gepa-bench-")

import argparse  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import time  # noqa: E402
from typing import Any  # noqa: E402

import dspy  # type: ignore[import-not-found]  # noqa: E402
from _gepa_task import SEED, THREADS, TRAIN, VAL, judge, rows  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True, help="the fake the compile talks to")
    parser.add_argument("--eval-url", required=True, help="a second fake for the final score")
    args = parser.parse_args()
    logging.disable(logging.WARNING)
    lm = dspy.LM("openai/task", api_base=args.url, api_key="sk-bench", num_retries=0)
    reflection = dspy.LM("openai/reflect", api_base=args.url, api_key="sk-bench", num_retries=0)
    dspy.configure(lm=lm)

    def examples(pairs: list[tuple[str, str]]) -> list[Any]:
        return [dspy.Example(question=q, answer=a).with_inputs("question") for q, a in pairs]

    def metric(gold: Any, pred: Any, trace: Any = None, name: Any = None, sub: Any = None) -> Any:
        score, feedback = judge(gold.answer, getattr(pred, "answer", ""))
        return dspy.Prediction(score=score, feedback=feedback)

    trainset, valset = examples(rows(TRAIN)), examples(rows(VAL, start=TRAIN))
    started = time.perf_counter()
    compiled = dspy.GEPA(
        metric=metric, auto="light", reflection_lm=reflection, num_threads=THREADS, seed=SEED
    ).compile(dspy.Predict("question -> answer"), trainset=trainset, valset=valset)
    wall = time.perf_counter() - started
    # The final score on another fake, so the compile's request count stays its own.
    compiled.set_lm(dspy.LM("openai/task", api_base=args.eval_url, api_key="sk-bench"))
    result = dspy.Evaluate(
        devset=valset,
        metric=lambda g, p, t=None: judge(g.answer, p.answer)[0],
        num_threads=THREADS,
        display_progress=False,
    )(compiled)
    print(json.dumps({"wall": wall, "score": float(result.score) / 100}))


if __name__ == "__main__":
    main()
