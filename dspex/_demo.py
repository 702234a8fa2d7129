"""``dspex demo``: the README's main job, end to end on a real local model.

It starts the runtime on the embedded SmolLM2 model (no API key, no network),
builds a sentiment classifier with a ``Literal`` output, evaluates it with a
progress bar on a small bundled set of reviews, serves it as a named program
actor and sends it a few messages, then prints the live supervision tree and
the runtime's metrics.
"""

from __future__ import annotations

import json
import sys
import time
from importlib import resources
from typing import Any, Literal

from dspex.actors import LM
from dspex.errors import DSPexError, LocalModelError
from dspex.programs import (
    Evaluate,
    Example,
    InputField,
    OutputField,
    Predict,
    Signature,
    start,
)

SAMPLES = [
    "Absolutely loved it, would buy again!",
    "It broke on the first day. Total waste of money.",
    "The staff were kind and the room was lovely.",
    "Slow, noisy and overpriced. Never again.",
]


class Sentiment(Signature):
    """If the review complains, criticizes or is unhappy, the sentiment is negative. If it praises or is happy, the sentiment is positive."""  # noqa: E501

    # A 135M model needs the criteria spelled out; plainer wordings ("classify
    # the sentiment...") make it answer "positive" for everything (see
    # bench/local_accuracy.py for the comparison).

    review: str = InputField(desc="a short customer review")
    sentiment: Literal["positive", "negative"] = OutputField()


def load_reviews() -> list[Example]:
    """The bundled demo dataset: short reviews labelled positive or negative."""
    text = resources.files("dspex").joinpath("data/reviews.jsonl").read_text(encoding="utf-8")
    rows = [json.loads(line) for line in text.splitlines() if line.strip()]
    return [Example(**row).with_inputs("review") for row in rows]


def sentiment_match(example: Any, prediction: Any, trace: Any = None) -> bool:
    return bool(example.sentiment == prediction.sentiment)


def _section(title: str) -> None:
    print(f"\n== {title} " + "=" * max(0, 60 - len(title)), flush=True)


def _print_metrics(metrics: dict[str, Any]) -> None:
    for model, m in metrics.get("models", {}).items():
        print(
            f"  {model}: {m['requests']} requests, {sum(m['errors'].values())} errors, "
            f"p50 {m['p50_ms']} ms, p95 {m['p95_ms']} ms, {m['total_tokens']} tokens, "
            f"cache hit rate {m['cache_hit_rate']:.0%}"
        )
    runs = metrics.get("runs", {})
    print(
        f"  program runs: {runs.get('started', 0)} started, {runs.get('succeeded', 0)} ok, "
        f"{runs.get('failed', 0)} failed, p50 {runs.get('p50_ms')} ms"
    )
    cache = metrics.get("cache", {})
    print(
        f"  cache: {cache.get('hits', 0)} hits, {cache.get('misses', 0)} misses, "
        f"{cache.get('memory_entries', 0)} in memory, {cache.get('disk_entries', 0)} on disk"
    )
    sup = metrics.get("supervision", {})
    print(f"  supervision: {sup.get('restarts', 0)} restarts")


def run_demo(num_threads: int = 4) -> int:
    """Run the demo; returns the process exit code."""
    started = time.perf_counter()
    try:
        from dspex.actors._local_model import resolve_local_model

        model_path = resolve_local_model("smollm2")
    except LocalModelError as exc:
        print(f"dspex demo needs the local model: {exc}", file=sys.stderr)
        return 1

    _section("dspex demo")
    print(f"model: SmolLM2-135M-Instruct ({model_path.name}), served by llama.cpp on loopback")
    lm = LM("local/smollm2", temperature=0.0, max_tokens=32)
    try:
        with start(lm=lm) as rt:
            classifier = Predict(Sentiment)
            devset = load_reviews()

            _section(f"evaluate on {len(devset)} bundled reviews")
            evaluate = Evaluate(
                devset=devset,
                metric=sentiment_match,
                num_threads=num_threads,
                display_progress=True,
            )
            result = evaluate(classifier)
            print(f"accuracy: {result.score:.1f}% ({len(result.errors)} errors)")

            _section("serve as the named program actor 'sentiment'")
            rt.serve("sentiment", classifier, max_concurrency=num_threads, queue_limit=64)
            futures = [rt.ask("sentiment", review=text) for text in SAMPLES]
            for text, future in zip(SAMPLES, futures, strict=True):
                answer = future.result(timeout=120)
                print(f"  {answer.sentiment:>8}  <-  {text}")

            _section("live supervision tree")
            print(rt.tree())

            _section("metrics")
            metrics = rt.metrics()
            _print_metrics(metrics)
            if metrics.get("cache", {}).get("hits"):
                print(
                    "  (answers came from the on-disk cache of an earlier run; run with "
                    "DSPEX_CACHE__ENABLED=false to call the model again)"
                )
    except DSPexError as exc:
        print(f"dspex demo failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    print(f"\ndone in {time.perf_counter() - started:.1f} s")
    return 0
