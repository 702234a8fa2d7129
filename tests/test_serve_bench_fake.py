"""``bench/_fake_server.py --raw``: the serve bench's cheap fake answers as the full one does."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

import dspex

BENCH = Path(__file__).resolve().parent.parent / "bench"


@contextlib.contextmanager
def raw_fake(stats: dict[str, Any]) -> Iterator[str]:
    """The raw fake in a child process; its base URL. ``stats`` gets its counts at exit."""
    proc = subprocess.Popen(
        [sys.executable, str(BENCH / "_fake_server.py"), "--raw", "--latency", "0"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdin is not None
    try:
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:"), url
        yield url
    finally:
        proc.stdin.close()  # EOF: the fake prints its counts and exits
        line = proc.stdout.readline()
        proc.wait(15)
        proc.stdout.close()
    stats.update(json.loads(line))


def _ask(client: httpx.Client, url: str, question: str) -> str:
    body = {"model": "m", "messages": [{"role": "user", "content": question}]}
    reply = client.post(f"{url}/chat/completions", json=body)
    assert reply.status_code == 200
    content: str = reply.json()["choices"][0]["message"]["content"]
    return content


def test_raw_fake_answers_in_chat_adapter_format_over_keep_alive() -> None:
    stats: dict[str, Any] = {}
    with raw_fake(stats) as url, httpx.Client(timeout=10) as client:
        answers = [_ask(client, url, q) for q in ("rollout 6", "no number", "rollout 6")]
    assert answers == [
        "[[ ## answer ## ]]\n42\n\n[[ ## completed ## ]]",
        "[[ ## answer ## ]]\nunknown\n\n[[ ## completed ## ]]",
        "[[ ## answer ## ]]\n42\n\n[[ ## completed ## ]]",
    ]
    assert stats["requests"] == 3 and stats["connections"] == 1  # one kept-alive connection
    assert stats["max_in_flight"] == 1


def test_a_predict_reads_the_raw_fakes_answer() -> None:
    stats: dict[str, Any] = {}
    with raw_fake(stats) as url:
        lm = dspex.LM("openai/bench", api_base=url, api_key="sk-bench-key", cache=False)
        with dspex.start(), dspex.context(lm=lm):
            answer = dspex.Predict("question -> answer")(question="rollout 3").answer
    assert answer == "21"
    assert stats["requests"] == 1


def test_raw_fake_refuses_fault_injection() -> None:
    done = subprocess.run(
        [sys.executable, str(BENCH / "_fake_server.py"), "--raw", "--fail-rate", "0.1"],
        check=False,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 2 and "--raw serves no faults" in done.stderr
