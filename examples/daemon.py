"""A dspex program served by a long-running daemon: JSON lines in, JSON lines out.

Run it and type one request per line::

    $ python examples/daemon.py
    {"event": "ready", "pid": 4242, "server": "qa"}
    {"id": 1, "question": "What is the capital of France?"}
    {"id": 1, "status": "accepted"}
    {"id": 1, "status": "ok", "answer": "...", "elapsed_s": 0.51}

Every request is either accepted at once (and later answered with ``ok`` or
``error``) or ``rejected`` at once: when the server's queue is full
(backpressure) or the daemon is shutting down. On SIGTERM or Ctrl-C the daemon
stops accepting, answers everything it accepted (up to the drain deadline),
flushes the cache and telemetry, stops the supervision tree and exits 0.

By default the model is a fake OpenAI-compatible server started in this
process on 127.0.0.1, so no network or API key is needed. Environment:

- ``QA_DAEMON_MODEL``: a real model id instead, e.g. ``openai/gpt-4o-mini``
  (its usual API key variable must be set);
- ``QA_DAEMON_LATENCY``: seconds the fake model takes per call (0.5);
- ``QA_DAEMON_CONCURRENCY``: requests executing at once (4);
- ``QA_DAEMON_QUEUE``: requests waiting beyond those (32);
- ``QA_DAEMON_DRAIN``: seconds to finish accepted work on shutdown (30).
"""

from __future__ import annotations

import json
import os
import re
import sys
import threading
import time
from concurrent.futures import Future
from typing import Any, TextIO

import dspex
from dspex.testing import FakeOpenAI

SERVER = "qa"


class Output:
    """Writes one JSON object per line; called from the reader and the worker threads."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._lock = threading.Lock()

    def write(self, **record: Any) -> None:
        line = json.dumps(record, ensure_ascii=False, default=str)
        with self._lock:
            self._stream.write(line + "\n")
            self._stream.flush()


class Intake:
    """Turns stdin lines into requests to the program server.

    ``close()`` (called when a shutdown signal arrives) waits for the line
    being handled: after it, every accepted request already has its reply
    callback attached, so the drain that follows answers all of them.
    """

    def __init__(self, runtime: Any, out: Output) -> None:
        self.runtime = runtime
        self.out = out
        self._lock = threading.Lock()
        self._open = True

    def close(self) -> None:
        with self._lock:
            self._open = False

    def run(self, stream: TextIO) -> None:
        for line in stream:
            if line.strip():
                self.handle(line)

    def handle(self, line: str) -> None:
        try:
            request = json.loads(line)
            rid, question = request.get("id"), request["question"]
        except (ValueError, KeyError, AttributeError):
            self.out.write(
                status="invalid",
                error='send one JSON object per line: {"id": 1, "question": "..."}',
            )
            return
        with self._lock:
            if not self._open:
                self.out.write(id=rid, status="rejected", error="the daemon is shutting down")
                return
            try:
                future = self.runtime.ask(SERVER, question=question)
            except (dspex.OverloadedError, dspex.ActorStoppedError) as exc:
                self.out.write(id=rid, status="rejected", error=str(exc))
                return
            self.out.write(id=rid, status="accepted")
            started = time.monotonic()
            future.add_done_callback(lambda f: self.reply(rid, f, started))

    def reply(self, rid: Any, future: Future[Any], started: float) -> None:
        elapsed = round(time.monotonic() - started, 3)
        error = future.exception()
        if error is None:
            answer = future.result().answer
            self.out.write(id=rid, status="ok", answer=answer, elapsed_s=elapsed)
        else:
            self.out.write(id=rid, status="error", error=str(error), elapsed_s=elapsed)


def fake_answer(body: dict[str, Any]) -> str:
    """The fake model's reply, in ChatAdapter's format: it echoes the question."""
    prompt = str(body["messages"][-1]["content"])
    found = re.search(r"\[\[ ## question ## \]\]\n(.*?)(?:\n\n|$)", prompt, re.S)
    question = found.group(1).strip() if found else "?"
    return f"[[ ## answer ## ]]\nYou asked: {question}\n\n[[ ## completed ## ]]"


def main() -> int:
    env = os.environ
    model = env.get("QA_DAEMON_MODEL")
    fake = None
    if model:
        lm = dspex.LM(model)
    else:
        fake = FakeOpenAI(reply=fake_answer, latency=float(env.get("QA_DAEMON_LATENCY", 0.5)))
        fake.start()
        # No cache: repeated questions still take the model's time, as in the real thing.
        lm = dspex.LM("openai/fake-model", api_base=fake.url, api_key="not-a-key", cache=False)
    out = Output(sys.stdout)
    try:
        rt = dspex.start(lm=lm)
        rt.serve(
            SERVER,
            dspex.Predict("question -> answer"),
            max_concurrency=int(env.get("QA_DAEMON_CONCURRENCY", 4)),
            queue_limit=int(env.get("QA_DAEMON_QUEUE", 32)),
        )
        intake = Intake(rt, out)
        # A daemon thread: a read blocked on stdin must not keep the process alive.
        threading.Thread(target=intake.run, args=(sys.stdin,), name="stdin", daemon=True).start()

        def stopping(signum: int) -> None:
            intake.close()
            out.write(event="stopping", signal=signum)

        code: int = rt.run_forever(
            drain_timeout=float(env.get("QA_DAEMON_DRAIN", 30)),
            on_ready=lambda: out.write(event="ready", pid=os.getpid(), server=SERVER),
            on_signal=stopping,
        )
    finally:
        if fake is not None:
            fake.stop()  # after the runtime: in-flight calls still needed it
    out.write(event="stopped", exit_code=code)
    return code


if __name__ == "__main__":
    sys.exit(main())
