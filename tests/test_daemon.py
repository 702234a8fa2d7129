"""Daemon mode: run_forever's shutdown order, and examples/daemon.py under SIGTERM."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from dspex.actors._daemon import STOP_EVENT, DaemonRuntime, run_forever
from dspex.errors import UsageError

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "daemon.py"
WAIT = 5.0


class FakeRuntime:
    """Records the shutdown calls run_forever makes, in order."""

    def __init__(self, *, flush_fails: bool = False, stop_ok: bool = True) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.flush_fails = flush_fails
        self.stop_ok = stop_ok

    def drain_servers(self, timeout: float) -> object:
        self.calls.append(("drain_servers", timeout))
        return "report"

    def flush(self) -> None:
        self.calls.append(("flush", None))
        if self.flush_fails:
            raise RuntimeError("disk full")

    def stop(self, timeout: float | None = None) -> bool:
        self.calls.append(("stop", timeout))
        return self.stop_ok


def test_fake_runtime_satisfies_the_protocol() -> None:
    assert isinstance(FakeRuntime(), DaemonRuntime)


def test_stop_event_drains_flushes_and_stops_in_order() -> None:
    rt = FakeRuntime()
    stop = threading.Event()
    seen: list[int] = []
    ready = threading.Event()
    result: list[int] = []

    def daemon() -> None:
        result.append(
            run_forever(
                rt,
                drain_timeout=7.0,
                install_signals=False,
                stop_event=stop,
                on_ready=ready.set,
                on_signal=seen.append,
            )
        )

    thread = threading.Thread(target=daemon)
    thread.start()
    assert ready.wait(WAIT)
    assert rt.calls == []  # nothing happens before the stop request
    stop.set()
    thread.join(WAIT)
    assert not thread.is_alive()
    assert result == [0]
    assert seen == [STOP_EVENT]
    assert rt.calls == [("drain_servers", 7.0), ("flush", None), ("stop", None)]


def test_sigterm_in_the_main_thread_shuts_down_and_restores_handlers() -> None:
    assert threading.current_thread() is threading.main_thread()
    before = signal.getsignal(signal.SIGTERM)
    rt = FakeRuntime(flush_fails=True)  # a failing flush must not prevent the stop
    seen: list[int] = []

    def send_sigterm() -> None:  # on_ready: handlers are installed by now
        threading.Thread(target=os.kill, args=(os.getpid(), signal.SIGTERM)).start()

    code = run_forever(rt, drain_timeout=1.0, on_ready=send_sigterm, on_signal=seen.append)
    assert code == 0
    assert seen == [signal.SIGTERM]
    assert [name for name, _ in rt.calls] == ["drain_servers", "flush", "stop"]
    assert signal.getsignal(signal.SIGTERM) is before


def test_exit_code_is_1_when_the_tree_does_not_stop_in_time() -> None:
    stop = threading.Event()
    stop.set()
    assert run_forever(FakeRuntime(stop_ok=False), install_signals=False, stop_event=stop) == 1


def test_misuse_is_reported_clearly() -> None:
    with pytest.raises(UsageError, match="needs a stop_event"):
        run_forever(FakeRuntime(), install_signals=False)
    with pytest.raises(UsageError, match="drain_timeout=-1"):
        run_forever(FakeRuntime(), drain_timeout=-1, install_signals=False, stop_event=None)
    errors: list[BaseException] = []

    def off_main() -> None:
        try:
            run_forever(FakeRuntime(), stop_event=threading.Event())
        except UsageError as exc:
            errors.append(exc)

    thread = threading.Thread(target=off_main)
    thread.start()
    thread.join(WAIT)
    assert len(errors) == 1 and "main thread" in str(errors[0])


# -- the example, as a real process ---------------------------------------------------------


class Daemon:
    """examples/daemon.py in a subprocess; its stdout lines arrive parsed on a queue."""

    def __init__(self, tmp: Path, **env: str) -> None:
        self.stderr = (tmp / "daemon.stderr").open("w")
        self.proc = subprocess.Popen(
            [sys.executable, str(EXAMPLE)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.stderr,
            text=True,
            env={**os.environ, "DSPEX_CACHE__DIR": str(tmp / "cache"), **env},
        )
        self.lines: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self.reader = threading.Thread(target=self._read, name="daemon-stdout")
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(json.loads(line))
        self.lines.put(None)

    def next(self, timeout: float) -> dict[str, Any]:
        try:
            record = self.lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(
                f"the daemon printed nothing for {timeout}s; stderr:\n{self.errors()}"
            ) from None
        assert record is not None, f"the daemon's stdout closed early; stderr:\n{self.errors()}"
        return record

    def errors(self) -> str:
        self.stderr.flush()
        return Path(self.stderr.name).read_text()[-3000:]

    def send(self, **request: Any) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(30)
        self.reader.join(30)
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                stream.close()
        self.stderr.close()


def test_daemon_answers_every_accepted_request_after_sigterm(tmp_path: Path) -> None:
    daemon = Daemon(
        tmp_path,
        QA_DAEMON_LATENCY="1.0",  # each call takes 1 s: work is in flight at SIGTERM
        QA_DAEMON_CONCURRENCY="2",
        QA_DAEMON_QUEUE="3",
        QA_DAEMON_DRAIN="60",
    )
    try:
        assert daemon.next(60) == {"event": "ready", "pid": daemon.proc.pid, "server": "qa"}
        for i in range(7):  # 2 run + 3 queue; the last 2 bounce off the full queue
            daemon.send(id=i, question=f"question {i}?")
        acks: dict[int, str] = {}
        replies: dict[int, list[dict[str, Any]]] = {}
        while len(acks) < 7:
            record = daemon.next(30)
            if record["status"] in ("accepted", "rejected"):
                acks[record["id"]] = record["status"]
            else:
                replies.setdefault(record["id"], []).append(record)
        accepted = sorted(i for i, status in acks.items() if status == "accepted")
        assert accepted == [0, 1, 2, 3, 4]
        assert len(replies) < len(accepted), "nothing was in flight when SIGTERM was sent"
        daemon.proc.send_signal(signal.SIGTERM)
        tail: list[dict[str, Any]] = []
        while True:
            record = daemon.next(60)
            tail.append(record)
            if record.get("event") == "stopping":
                daemon.send(id=99, question="too late?")  # the intake is closed by now
            if record.get("event") == "stopped":
                break
        assert daemon.proc.wait(60) == 0
        assert record == {"event": "stopped", "exit_code": 0}
        for record in tail:
            if "id" in record and record["status"] not in ("accepted", "rejected"):
                replies.setdefault(record["id"], []).append(record)
        late = [r for r in tail if r.get("id") == 99]
        assert late == [{"id": 99, "status": "rejected", "error": "the daemon is shutting down"}]
        assert sorted(replies) == accepted, "an accepted request was never answered"
        for i in accepted:
            assert len(replies[i]) == 1, f"request {i} was answered {len(replies[i])} times"
            assert replies[i][0]["status"] == "ok"
            assert replies[i][0]["answer"] == f"You asked: question {i}?"
    finally:
        daemon.close()
