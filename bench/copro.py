"""COPRO: candidates scored one after another (DSPy's way) vs at once on the coordinator's pool.

    python bench/copro.py            # breadth 8, depth 2, 6 examples, 50 ms per LM call
    python bench/copro.py --quick    # smaller

A fake OpenAI server answers every call after ``--latency`` seconds (cache
off). The sequential figure sets the ``num_threads`` setting to 1, so one
candidate is scored at a time, each evaluation on one thread, as DSPy's loop
with ``eval_kwargs={"num_threads": 1}``. The parallel one uses
``num_threads=8``. Both give the same program. Prints figures, asserts nothing.
"""

from __future__ import annotations

import argparse
import itertools
import time
from typing import Any

import dspex
from dspex.testing import FakeOpenAI


def reply(body: dict[str, Any]) -> dict[str, Any]:
    system = str(body["messages"][0]["content"])
    n = int(body.get("n") or 1)
    if "proposed_instruction" in system:  # the prompt model: n distinct proposals
        count = next(_proposals)
        texts = tuple(
            f"[[ ## proposed_instruction ## ]]\nInstruction {count}.{i}\n\n"
            f"[[ ## proposed_prefix_for_output_field ## ]]\nAnswer:\n\n[[ ## completed ## ]]"
            for i in range(n)
        )
        return {"texts": texts}
    # the task: right when the instruction's number is even
    right = any(f"Instruction {k}." in system for k in range(0, 100, 2))
    return {"text": f"[[ ## answer ## ]]\n{'yes' if right else 'no'}\n\n[[ ## completed ## ]]"}


_proposals = itertools.count()


def run(fake: FakeOpenAI, threads: int, breadth: int, depth: int, size: int) -> tuple[float, str]:
    global _proposals
    _proposals = itertools.count()
    lm = dspex.LM("openai/bench", api_base=fake.url, api_key="sk-bench", cache=False)
    trainset = [
        dspex.Example(question=f"q{i}", answer="yes").with_inputs("question") for i in range(size)
    ]
    started = time.perf_counter()
    with dspex.context(lm=lm, num_threads=threads):
        best = dspex.COPRO(
            metric=lambda ex, pred, trace=None: ex.answer == pred.answer,
            breadth=breadth,
            depth=depth,
        ).compile(
            dspex.Predict("question -> answer"),
            trainset=trainset,
            eval_kwargs={"num_threads": 1},
        )
    return time.perf_counter() - started, best.signature.instructions


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--latency", type=float, default=0.05)
    args = parser.parse_args()
    breadth, depth, size = (4, 2, 3) if args.quick else (8, 2, 6)
    calls = size * (breadth + breadth * (depth - 1)) + 1 + depth - 1
    print(f"COPRO breadth={breadth} depth={depth} trainset={size}: ~{calls} LM calls")
    with FakeOpenAI(reply=reply, latency=args.latency) as fake:
        sequential, first = run(fake, 1, breadth, depth, size)
        parallel, second = run(fake, 8, breadth, depth, size)
    print(f"  one candidate at a time: {sequential:6.2f} s   best: {first!r}")
    print(f"  num_threads=8:           {parallel:6.2f} s   best: {second!r}")
    print(f"  speed-up: {sequential / parallel:.1f}x; same program: {first == second}")
    dspex.current_runtime().stop()


if __name__ == "__main__":
    main()
