"""The GEPA benchmark's task, shared by dspex's run and DSPy's (plain Python, no imports of either).

Each question belongs to a topic (its word), and the fake model answers it
right only when its instruction carries that topic's rule (``rule:<word>``).
The student's instruction has none; the metric's feedback on a wrong answer
names the rule, and the reflection reply writes an instruction with every rule
it saw (in the current instruction and the feedback). So GEPA has to learn
the rules a few at a time, over several iterations, and each new instruction
is a new prompt (new requests) for every evaluation.
"""

from __future__ import annotations

import json
import re
from typing import Any

WORDS = [
    "apple",
    "berry",
    "cedar",
    "delta",
    "ember",
    "fjord",
    "grove",
    "harbor",
    "ivory",
    "juniper",
]
TRAIN, VAL = 20, 10
SEED = 0
LATENCY = 0.05  # seconds per fake answer: a fast hosted model
THREADS = 8

_RULE = re.compile(r"rule:[a-z]+")
_QUESTION = re.compile(r"\[\[ ## question ## \]\]\n(.*?)(?:\n\n|$)", re.S)


def rows(n: int, start: int = 0) -> list[tuple[str, str]]:
    """(question, gold answer) pairs."""
    questions = [f"{WORDS[i % len(WORDS)]}{i}" for i in range(start, start + n)]
    return [(q, q.upper()) for q in questions]


def judge(gold: str, answer: Any) -> tuple[float, str]:
    """(score, feedback) for one answer."""
    if str(answer).strip() == gold:
        return 1.0, "Correct."
    return 0.0, f"Expected {gold!r}. Remember rule:{gold.rstrip('0123456789').lower()}."


def _chat(**fields: str) -> str:
    return "".join(f"[[ ## {k} ## ]]\n{v}\n\n" for k, v in fields.items()) + "[[ ## completed ## ]]"


def reply(body: dict[str, Any]) -> str:
    """The fake model (runs on the fake server's thread)."""
    messages = body["messages"]
    system = str(messages[0]["content"])
    prompt = "\n".join(str(m["content"]) for m in messages)
    if "new_instruction" in system:  # GEPA's proposer, through JSONAdapter on both sides
        rules = sorted(set(_RULE.findall(prompt)))
        text = " ".join(["Answer with the question in capitals.", *rules])
        return json.dumps({"new_instruction": text})
    found = _QUESTION.findall(str(messages[-1]["content"]))
    question = found[-1].strip() if found else ""
    topic = question.rstrip("0123456789")
    return _chat(answer=question.upper() if f"rule:{topic}" in system else question.lower())
