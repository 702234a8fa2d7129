"""Checkpoints: a compile SIGKILLed half-way resumes to the uninterrupted result."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from checkpoint_child import reply

import dspex
from dspex.programs._teleprompt._checkpoint import Journal
from dspex.testing import FakeOpenAI

pytest.importorskip("gepa")

CHILD = Path(__file__).with_name("checkpoint_child.py")
ROOT = Path(__file__).resolve().parents[1]


def child(which: str, url: str, tmp: Path, run: str, checkpoint: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    return subprocess.Popen(
        [sys.executable, str(CHILD), which, url, str(tmp / f"cache-{run}"), checkpoint,
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


@pytest.mark.parametrize("which", ["gepa", "simba"])
def test_a_killed_compile_resumes_to_the_same_program(which: str, tmp_path: Path) -> None:
    # The uninterrupted run: its result and its request count.
    with FakeOpenAI(reply=reply) as fake:
        replayed, units = finish(child(which, fake.url, tmp_path, "whole", str(tmp_path / "ck-w")))
        whole = fake.request_count
    assert replayed == 0 and units >= 4
    expected = json.loads((tmp_path / "out-whole.json").read_text())

    # The same compile, killed with SIGKILL once it has sent about half its requests...
    halfway = threading.Event()
    seen = [0]

    def counting(body: dict[str, Any]) -> str:
        seen[0] += 1
        if seen[0] >= whole // 2:
            halfway.set()
        return reply(body)

    checkpoint = str(tmp_path / "ck")
    with FakeOpenAI(reply=counting) as fake:
        process = child(which, fake.url, tmp_path, "cut", checkpoint)
        assert halfway.wait(timeout=120), process.communicate()[1][-3000:]
        process.send_signal(signal.SIGKILL)
        process.communicate(timeout=30)
        assert process.returncode == -signal.SIGKILL
        assert not (tmp_path / "out-cut.json").exists()
        # ... then rerun with the same checkpoint and cache.
        replayed, recorded = finish(child(which, fake.url, tmp_path, "cut", checkpoint))
        total = fake.request_count
    # The journal answered the finished units; the rest ran live (their LM calls
    # that had finished before the kill came from the disk cache).
    assert 0 < replayed < units and replayed + recorded == units
    assert json.loads((tmp_path / "out-cut.json").read_text()) == expected
    assert total <= whole * 1.1, (total, whole)
    assert whole >= 20  # the task is big enough for "half-way" to mean something


def test_a_mismatched_checkpoint_is_refused_naming_what_differs(tmp_path: Path) -> None:
    fingerprint = {"program": "a", "trainset": "b", "settings": "c"}
    Journal(tmp_path, optimizer="GEPA", fingerprint=fingerprint).close()
    with pytest.raises(dspex.UsageError, match="trainset differs"):
        Journal(tmp_path, optimizer="GEPA", fingerprint={**fingerprint, "trainset": "x"})
    with pytest.raises(dspex.UsageError, match="another optimizer"):
        Journal(tmp_path, optimizer="SIMBA", fingerprint=fingerprint)


def test_a_torn_last_line_is_dropped_and_the_rest_replayed(tmp_path: Path) -> None:
    journal = Journal(tmp_path, optimizer="GEPA", fingerprint={})
    journal.record("eval:1", "ask", {"scores": [1.0]})
    journal.record("eval:2", "ask", {"scores": [0.0]})
    journal.close()
    path = tmp_path / "journal.jsonl"
    path.write_bytes(path.read_bytes()[:-10])  # the crash tore the last record
    again = Journal(tmp_path, optimizer="GEPA", fingerprint={})
    assert again.replay("eval:1", "ask") == (True, {"scores": [1.0]})
    assert again.replay("eval:2", "ask") == (False, None)
    with pytest.raises(dspex.UsageError, match="diverged at eval:1"):
        again.replay("eval:1", "another ask")
    again.close()
