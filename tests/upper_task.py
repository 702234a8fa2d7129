"""A fake-provider task GEPA and SIMBA can improve on: answer in UPPERCASE.

Shared by tests/test_gepa_simba.py and the Ray backend's optimizer tests.
"""

from __future__ import annotations

import json
import re
import threading
from typing import Any

import dspex

_QUESTION = re.compile(r"\[\[ ## question ## \]\]\n(.*?)(?:\n\n|$)", re.S)


def chat(**fields: str) -> str:
    body = "".join(f"[[ ## {k} ## ]]\n{v}\n\n" for k, v in fields.items())
    return body + "[[ ## completed ## ]]"


class Task:
    """A fake model whose answers are right only when the prompt says UPPERCASE.

    The task: answer with the question in capitals. The student's instruction
    does not say so; the metric's feedback does. The reflection call (GEPA's
    proposer) proposes an UPPERCASE instruction only when that feedback reaches
    it. For SIMBA, a demo whose answer is in capitals has the same effect.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.proposals = 0
        self.rules = 0

    def reply(self, body: dict[str, Any]) -> str:
        messages = body["messages"]
        system = str(messages[0]["content"])
        prompt = "\n".join(str(m["content"]) for m in messages)
        if "new_instruction" in system:  # GEPA's proposer (JSONAdapter)
            with self.lock:
                self.proposals += 1
            heard = "UPPERCASE" in prompt
            text = "Answer with the question in UPPERCASE." if heard else "Answer the question."
            return json.dumps({"new_instruction": text})
        if "module_advice" in system:  # SIMBA's rule: advice that does not help here
            with self.lock:
                self.rules += 1
            return chat(discussion="-", module_advice=json.dumps({"self": "Be brief."}))
        match = _QUESTION.findall(str(messages[-1]["content"]))
        question = match[-1].strip() if match else ""
        upper = "UPPERCASE" in system or bool(re.search(r"\n[A-Z0-9]{4,}\n", prompt))
        return chat(answer=question.upper() if upper else question.lower())


def make_set(n: int, start: int = 0) -> list[dspex.Example]:
    words = ["apple", "berry", "cedar", "delta", "ember", "fjord", "grove", "harbor"]
    return [
        dspex.Example(
            question=f"{words[i % 8]}{i}", answer=f"{words[i % 8]}{i}".upper()
        ).with_inputs("question")
        for i in range(start, start + n)
    ]
