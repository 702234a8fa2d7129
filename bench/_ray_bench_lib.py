"""The program and metrics ``bench/ray_pool.py`` ships to Ray workers.

A module of its own, at top level, so the workers import it (the bench puts
``bench/`` on their code search path): what any shippable program needs.
"""

from __future__ import annotations

import functools
import os
from typing import Any

from _fake_server import expected_answer

import dspex


@functools.cache
def burn_count() -> int:
    """Iterations of the CPU metric's loop, read on first use (not at import): the
    bench calibrates it to ~20 ms and sets it before the metric first runs, in the
    driver and (through the environment Ray starts them with) in the workers."""
    return int(os.environ["RAY_POOL_BENCH_BURN"])


class Answer(dspex.Module):
    def __init__(self) -> None:
        super().__init__()
        self.answer = dspex.Predict("question -> answer")

    def forward(self, question: str) -> Any:
        return self.answer(question=question)


def exact(example: Any, prediction: Any, trace: Any = None) -> bool:
    return bool(prediction.answer == example.answer)


def burn(n: int) -> int:
    total = 0
    for i in range(n):
        total += i * i
    return total


def cpu_heavy(example: Any, prediction: Any, trace: Any = None) -> bool:
    """``exact`` after ~20 ms of pure-Python work (code execution, parsing...)."""
    burn(burn_count())
    return exact(example, prediction)


def answer_of(i: int) -> str:
    return expected_answer(i)
