"""A compile in its own process, for the checkpoint tests (they SIGKILL it half-way).

    python tests/checkpoint_child.py gepa|simba URL CACHE_DIR CHECKPOINT_DIR OUT_FILE

Writes the compiled program's state as JSON to OUT_FILE. The task and its
fake model's reply live here so the tests and this process share them.
"""

from __future__ import annotations

import json
import re
import sys
from typing import Any

TOPICS = ["apple", "berry", "cedar", "delta", "ember", "fjord"]
_RULE = re.compile(r"rule:[a-z]+")
_QUESTION = re.compile(r"\[\[ ## question ## \]\]\n(.*?)(?:\n\n|$)", re.S)


def rows(n: int, start: int = 0) -> list[tuple[str, str]]:
    questions = [f"{TOPICS[i % len(TOPICS)]}{i}" for i in range(start, start + n)]
    return [(q, q.upper()) for q in questions]


def judge(gold: str, answer: Any) -> tuple[float, str]:
    if str(answer).strip() == gold:
        return 1.0, "Correct."
    return 0.0, f"Expected {gold!r}. Remember rule:{gold.rstrip('0123456789').lower()}."


def reply(body: dict[str, Any]) -> str:
    """Right only under an instruction (or a demo) carrying the question's topic rule."""
    messages = body["messages"]
    system = str(messages[0]["content"])
    prompt = "\n".join(str(m["content"]) for m in messages)
    if "new_instruction" in system:
        rules = sorted(set(_RULE.findall(prompt)))
        return json.dumps({"new_instruction": " ".join(["Answer in capitals.", *rules])})
    if "module_advice" in system:
        rules = sorted(set(_RULE.findall(prompt)))
        advice = json.dumps({"self": " ".join(rules) or "Be brief."})
        return (
            f"[[ ## discussion ## ]]\n-\n\n[[ ## module_advice ## ]]\n{advice}\n\n"
            "[[ ## completed ## ]]"
        )
    found = _QUESTION.findall(str(messages[-1]["content"]))
    question = found[-1].strip() if found else ""
    topic = question.rstrip("0123456789")
    answer = question.upper() if f"rule:{topic}" in prompt else question.lower()
    return f"[[ ## answer ## ]]\n{answer}\n\n[[ ## completed ## ]]"


def main() -> None:
    import logging

    import dspex

    # The compile's checkpoint summary ("... units replayed, ... recorded") goes to stderr.
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("dspex.programs").setLevel(logging.INFO)

    which, url, cache, checkpoint, out = sys.argv[1:6]

    def examples(pairs: list[tuple[str, str]]) -> list[dspex.Example]:
        return [dspex.Example(question=q, answer=a).with_inputs("question") for q, a in pairs]

    rt = dspex.start(cache={"dir": cache})
    try:
        lm = dspex.LM("openai/task", api_base=url, api_key="sk-test")
        with dspex.context(lm=lm):
            if which == "gepa":

                def metric(g: Any, p: Any, t: Any = None, n: Any = None, s: Any = None) -> Any:
                    score, feedback = judge(g.answer, getattr(p, "answer", ""))
                    return dspex.Prediction(score=score, feedback=feedback)

                compiled = dspex.GEPA(
                    metric=metric,
                    max_metric_calls=150,
                    reflection_lm=dspex.LM("openai/reflect", api_base=url, api_key="sk-test"),
                    num_threads=2,
                    seed=5,
                ).compile(
                    dspex.Predict("question -> answer"),
                    trainset=examples(rows(12)),
                    valset=examples(rows(6, start=12)),
                    checkpoint=checkpoint,
                )
            else:
                compiled = dspex.SIMBA(
                    metric=lambda g, p, t=None: judge(g.answer, getattr(p, "answer", ""))[0],
                    bsize=4,
                    num_candidates=3,
                    max_steps=3,
                    max_demos=2,
                    num_threads=2,
                ).compile(
                    dspex.Predict("question -> answer"),
                    trainset=examples(rows(8)),
                    seed=2,
                    checkpoint=checkpoint,
                )
    finally:
        rt.stop()
    with open(out, "w", encoding="utf-8") as handle:
        json.dump(compiled.dump_state(), handle, sort_keys=True, default=repr)


if __name__ == "__main__":
    main()
