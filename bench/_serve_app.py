"""The program ``bench/serve.py`` serves: ``qa``, a Predict on the fake at ``BENCH_FAKE_URL``."""

from __future__ import annotations

import os

import dspex


def qa() -> dspex.Predict:
    program = dspex.Predict("question -> answer")
    program.set_lm(
        dspex.LM(
            "openai/bench",
            api_base=os.environ["BENCH_FAKE_URL"],
            api_key="sk-bench-key",
            cache=False,
            num_retries=0,
        )
    )
    return program


class Echo(dspex.Module):
    """No LM: answers with the question, to time the HTTP and program-server layers alone."""

    def forward(self, question: str) -> dspex.Prediction:
        return dspex.Prediction(answer=question)

    async def aforward(self, question: str) -> dspex.Prediction:
        """Awaited on the HTTP loop, like ``qa`` (a Predict has ``aforward``)."""
        return dspex.Prediction(answer=question)


def echo() -> Echo:
    return Echo()
