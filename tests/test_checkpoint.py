"""Checkpoints: a compile SIGKILLed half-way resumes to the uninterrupted result."""

from __future__ import annotations

from pathlib import Path

import pytest
from checkpoint_child import whole_then_cut

import dspex
from dspex.programs._teleprompt._checkpoint import Journal

pytest.importorskip("gepa")


@pytest.mark.parametrize("which", ["gepa", "simba"])
def test_a_killed_compile_resumes_to_the_same_program(which: str, tmp_path: Path) -> None:
    run = whole_then_cut(which, tmp_path)
    assert run["units"] >= 4
    # The journal answered the finished units; the rest ran live (their LM calls
    # that had finished before the kill came from the disk cache).
    assert 0 < run["replayed"] < run["units"]
    assert run["replayed"] + run["recorded"] == run["units"]
    assert run["result"] == run["expected"]
    assert run["total"] <= run["whole"] * 1.1, (run["total"], run["whole"])
    assert run["whole"] >= 20  # the task is big enough for "half-way" to mean something


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
