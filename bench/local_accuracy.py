"""Sentiment accuracy of the embedded SmolLM2 model on the bundled demo reviews.

Not a speed target: it measures which signature wording ``dspex demo``
should use. Each variant is a plain ``Predict`` of a sentiment signature
with a ``Literal["positive", "negative"]`` output, run at temperature 0 on
the 48 reviews of ``dspex/data/reviews.jsonl`` through ``Evaluate``, with
the response cache off so every call reaches the model. Repeats check that
temperature 0 gives the same labels each time. Prints figures, asserts
nothing. Needs the ``[local]`` extra.

What it showed (2 cores, shared): under JSONAdapter's prompt the model
gives every review the first ``Literal`` value unless the instruction
spells out when each label applies, with the negative case first; that
wording ("criteria") reaches 94-96%. A bare two-message prompt without
the adapter's field-structure system message scored 16/16 on a subset,
so the long system message is what confuses a 135M model.

The variant "dspex demo (_demo.Sentiment)" is the classifier ``dspex demo``
evaluates zero-shot: its accuracy is the figure tests/test_demo.py used to
assert (>= 90%; measured 95.8%, 46/48).

Run: ``python bench/local_accuracy.py [--repeats N] [--threads N] [--variant NAME ...]``.
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import time
from collections.abc import Sequence
from importlib import resources
from typing import Any, Literal

import dspex
from dspex import _demo
from dspex.programs import InputField, OutputField, Signature

Label = Literal["positive", "negative"]


class Demo(Signature):
    """Classify the sentiment of a short product review as positive or negative."""

    review: str = InputField(desc="a short customer review")
    sentiment: Label = OutputField()


class Plain(Signature):
    """Classify the sentiment of a product review as positive or negative."""

    review: str = InputField()
    sentiment: Label = OutputField()


class Described(Signature):
    """Classify the sentiment of a product review as positive or negative."""

    review: str = InputField(desc="a short review of a product, place or film")
    sentiment: Label = OutputField(
        desc="positive for praise (liked it), negative for complaints (disliked it)"
    )


class Criteria(Signature):
    """If the review complains, criticizes or is unhappy, the sentiment is negative. If it praises or is happy, the sentiment is positive."""  # noqa: E501

    review: str = InputField()
    sentiment: Label = OutputField()


class CriteriaDesc(Signature):
    """If the review complains, criticizes or is unhappy, the sentiment is negative. If it praises or is happy, the sentiment is positive."""  # noqa: E501

    review: str = InputField(desc="a short customer review")
    sentiment: Label = OutputField()


class CriteriaSwapped(Signature):
    """If the review praises or is happy, the sentiment is positive. If it complains, criticizes or is unhappy, the sentiment is negative."""  # noqa: E501

    review: str = InputField(desc="a short customer review")
    sentiment: Label = OutputField()


VARIANTS: dict[str, Any] = {
    "string, no instruction": "review -> sentiment: Literal['positive', 'negative']",
    "dspex demo (_demo.Sentiment)": _demo.Sentiment,
    "short docstring + input desc": Demo,
    "plain docstring": Plain,
    "plain docstring + field descs": Described,
    "criteria docstring": Criteria,
    "criteria docstring + input desc": CriteriaDesc,
    "criteria, clauses swapped": CriteriaSwapped,
}


def load_reviews() -> list[dspex.Example]:
    text = resources.files("dspex").joinpath("data/reviews.jsonl").read_text(encoding="utf-8")
    rows = [json.loads(line) for line in text.splitlines() if line.strip()]
    return [dspex.Example(**row).with_inputs("review") for row in rows]


def sentiment_match(example: Any, prediction: Any, trace: Any = None) -> bool:
    return bool(example.sentiment == prediction.sentiment)


def _labels(result: Any) -> list[str | None]:
    return [getattr(pred, "sentiment", None) for _, pred, _ in result.results]


def run_variant(
    name: str, signature: Any, devset: Sequence[Any], repeats: int, threads: int
) -> dict[str, Any]:
    """Accuracy, time and determinism of one signature over ``repeats`` runs."""
    program = dspex.Predict(signature)
    evaluate = dspex.Evaluate(
        devset=devset, metric=sentiment_match, num_threads=threads, display_progress=False
    )
    scores: list[float] = []
    walls: list[float] = []
    runs: list[list[str | None]] = []
    errors = 0
    for _ in range(repeats):
        started = time.perf_counter()
        result = evaluate(program)
        walls.append(time.perf_counter() - started)
        scores.append(result.score)
        runs.append(_labels(result))
        errors += len(result.errors)
    predicted = collections.Counter(runs[0])
    wrong = [ex.review for ex, label in zip(devset, runs[0], strict=True) if label != ex.sentiment]
    return {
        "variant": name,
        "accuracy": scores[0],
        "scores": scores,
        "wall_s": min(walls),
        "ms_per_example": 1000.0 * min(walls) / len(devset),
        "deterministic": all(r == runs[0] for r in runs),
        "errors": errors,
        "predicted": dict(predicted),
        "wrong": wrong,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2, help="runs per variant (default 2)")
    parser.add_argument("--threads", type=int, default=4, help="Evaluate num_threads (default 4)")
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--variant", action="append", choices=sorted(VARIANTS), default=None)
    parser.add_argument("--show-wrong", action="store_true", help="list misclassified reviews")
    args = parser.parse_args(argv)

    devset = load_reviews()
    lm = dspex.LM("local/smollm2", temperature=0.0, max_tokens=args.max_tokens, cache=False)
    names = args.variant or list(VARIANTS)
    rows = []
    started = time.perf_counter()
    with dspex.start(lm=lm) as rt:
        lm("warm-up", max_tokens=1)  # server start (~1 s) kept out of the first variant
        for name in names:
            row = run_variant(name, VARIANTS[name], devset, args.repeats, args.threads)
            rows.append(row)
            print(
                f"  {name:<32} {row['accuracy']:5.1f}%  {row['wall_s']:5.1f} s",
                file=sys.stderr,
                flush=True,
            )
        calls = rt.metrics()["models"]
    total = time.perf_counter() - started

    print(
        f"\nSmolLM2-135M-Instruct Q4_1, temperature 0, max_tokens {args.max_tokens}, "
        f"{len(devset)} reviews, Evaluate num_threads={args.threads}, "
        f"{args.repeats} run(s) per variant, cache off\n"
    )
    print(
        f"| {'variant':<32} | accuracy | runs identical | wall s | ms/example | errors "
        "| predicted |"
    )
    print(f"|{'-' * 34}|----------|----------------|--------|------------|--------|-----------|")
    for row in rows:
        predicted = ", ".join(f"{k}={v}" for k, v in sorted(row["predicted"].items(), key=str))
        print(
            f"| {row['variant']:<32} | {row['accuracy']:7.1f}% | {row['deterministic']!s:<14} "
            f"| {row['wall_s']:6.1f} | {row['ms_per_example']:10.0f} | {row['errors']:6d} "
            f"| {predicted} |"
        )
    best = max(rows, key=lambda r: (r["accuracy"], -r["wall_s"]))
    print(f"\nbest: {best['variant']} ({best['accuracy']:.1f}%)")
    if args.show_wrong:
        for row in rows:
            print(f"\n{row['variant']}: wrong on {len(row['wrong'])}")
            if len(row["predicted"]) == 1:
                print(f"  (every review labelled {next(iter(row['predicted']))!r})")
                continue
            for review in row["wrong"]:
                print(f"  - {review}")
    for model, m in calls.items():
        print(f"{model}: {m['requests']} requests, p50 {m['p50_ms']} ms, p95 {m['p95_ms']} ms")
    print(f"total {total:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
