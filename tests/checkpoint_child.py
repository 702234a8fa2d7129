"""A compile in its own process, for the checkpoint tests (they SIGKILL it half-way).

    python tests/checkpoint_child.py WHICH URL CACHE_DIR CHECKPOINT_DIR OUT_FILE

WHICH is gepa, simba, bootstrap, random_search, copro, mipro or labeled.

Writes the compiled program's state as JSON to OUT_FILE. The task and its
fake model's reply live here so the tests and this process share them.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import zlib
from pathlib import Path
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


def bootstrap_metric(gold: Any, prediction: Any, trace: Any = None) -> bool:
    """Accepts the fake's (lower-case) answer on every seventh question only, so a
    BootstrapFewShot compile runs through most of its trainset."""
    question = gold.question
    number = int(question.lstrip("abcdefghijklmnopqrstuvwxyz"))
    return getattr(prediction, "answer", None) == question.lower() and number % 7 == 6


def reply(body: dict[str, Any]) -> str:
    """Right only under an instruction (or a demo) carrying the question's topic rule."""
    messages = body["messages"]
    system = str(messages[0]["content"])
    prompt = "\n".join(str(m["content"]) for m in messages)
    if "new_instruction" in system:
        rules = sorted(set(_RULE.findall(prompt)))
        return json.dumps({"new_instruction": " ".join(["Answer in capitals.", *rules])})
    if "proposed_instruction" in system:  # COPRO: a rule chosen by the prompt's contents
        topic = TOPICS[zlib.crc32(prompt.encode()) % len(TOPICS)]
        return (
            f"[[ ## proposed_instruction ## ]]\nAnswer in capitals. rule:{topic}\n\n"
            "[[ ## proposed_prefix_for_output_field ## ]]\nAnswer:\n\n[[ ## completed ## ]]"
        )
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


# -- the tests' side: run this file as a child, kill it half-way ----------------------------


def spawn(which: str, url: str, tmp: Path, run: str, checkpoint: str) -> subprocess.Popen[str]:
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": f"{root}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    return subprocess.Popen(
        [sys.executable, __file__, which, url, str(tmp / f"cache-{run}"), checkpoint,
         str(tmp / f"out-{run}.json")],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip


def finish(process: subprocess.Popen[str]) -> tuple[int, int]:
    """Wait for a child; its checkpoint's (units replayed, units recorded)."""
    _, err = process.communicate(timeout=120)
    assert process.returncode == 0, err[-3000:]
    [(replayed, recorded)] = re.findall(r"checkpoint: (\d+) units replayed, (\d+) recorded", err)
    return int(replayed), int(recorded)


def whole_then_cut(which: str, tmp: Path) -> dict[str, Any]:
    """An uninterrupted compile, then the same one SIGKILLed once it has sent half as
    many requests and rerun with its checkpoint and cache: the figures of both."""
    from dspex.testing import FakeOpenAI

    with FakeOpenAI(reply=reply) as fake:
        replayed, units = finish(spawn(which, fake.url, tmp, "whole", str(tmp / "ck-w")))
        whole = fake.request_count
    assert replayed == 0
    halfway = threading.Event()
    seen = [0]

    def counting(body: dict[str, Any]) -> str:
        seen[0] += 1
        if seen[0] >= whole // 2:
            halfway.set()
        return reply(body)

    checkpoint = str(tmp / "ck")
    with FakeOpenAI(reply=counting) as fake:
        process = spawn(which, fake.url, tmp, "cut", checkpoint)
        assert halfway.wait(timeout=120), process.communicate()[1][-3000:]
        process.send_signal(signal.SIGKILL)
        process.communicate(timeout=30)
        assert process.returncode == -signal.SIGKILL
        assert not (tmp / "out-cut.json").exists()
        resumed_replayed, resumed_recorded = finish(spawn(which, fake.url, tmp, "cut", checkpoint))
        total = fake.request_count
    return {
        "units": units,
        "whole": whole,
        "total": total,
        "replayed": resumed_replayed,
        "recorded": resumed_recorded,
        "expected": json.loads((tmp / "out-whole.json").read_text()),
        "result": json.loads((tmp / "out-cut.json").read_text()),
    }


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
            elif which == "bootstrap":
                compiled = dspex.BootstrapFewShot(
                    metric=bootstrap_metric, max_bootstrapped_demos=8, max_labeled_demos=2,
                    num_threads=2,
                ).compile(
                    dspex.Predict("question -> answer"),
                    trainset=examples(rows(60)),
                    checkpoint=checkpoint,
                )  # fmt: skip
            elif which == "random_search":
                compiled = dspex.BootstrapFewShotWithRandomSearch(
                    metric=bootstrap_metric, max_bootstrapped_demos=2, max_labeled_demos=2,
                    num_candidate_programs=2, num_threads=2,
                ).compile(
                    dspex.Predict("question -> answer"),
                    trainset=examples(rows(16)),
                    valset=examples(rows(6, start=16)),
                    checkpoint=checkpoint,
                )  # fmt: skip
            elif which == "copro":
                # One thread: concurrent candidates with the same prompts would make the
                # request count depend on timing (the cache's single-flight).
                with dspex.context(num_threads=1):
                    compiled = dspex.COPRO(
                        metric=lambda g, p, t=None: judge(g.answer, getattr(p, "answer", ""))[0],
                        breadth=4,
                        depth=3,
                    ).compile(
                        dspex.Predict("question -> answer"),
                        trainset=examples(rows(12)),
                        eval_kwargs={"num_threads": 1},
                        checkpoint=checkpoint,
                    )
            elif which == "mipro":
                with dspex.context(num_threads=1):  # see copro
                    compiled = dspex.MIPROv2(
                        metric=lambda g, p, t=None: judge(g.answer, getattr(p, "answer", ""))[0],
                        auto=None, num_candidates=3, max_bootstrapped_demos=1,
                        max_labeled_demos=1, num_threads=1, seed=3,
                    ).compile(
                        dspex.Predict("question -> answer"),
                        trainset=examples(rows(8)),
                        valset=examples(rows(8, start=8)),
                        num_trials=5, minibatch_size=4, minibatch_full_eval_steps=2,
                        program_aware_proposer=False, data_aware_proposer=False,
                        tip_aware_proposer=False, fewshot_aware_proposer=False,
                        requires_permission_to_run=False, checkpoint=checkpoint,
                    )  # fmt: skip
            elif which == "labeled":
                compiled = dspex.LabeledFewShot(k=3).compile(
                    dspex.Predict("question -> answer"),
                    trainset=examples(rows(10)),
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
    state: Any = compiled.dump_state()
    if which == "random_search":  # every candidate, so a replayed one is checked too
        state = {
            "best": state,
            "candidates": [
                [entry["seed"], entry["score"], entry["program"].dump_state()]
                for entry in compiled.candidate_programs
            ],
        }
    with open(out, "w", encoding="utf-8") as handle:
        json.dump(state, handle, sort_keys=True, default=repr)


if __name__ == "__main__":
    main()
