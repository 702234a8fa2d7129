"""A saved program cannot redirect its LM's calls (and its key) to an endpoint named in the file.

DSPy's rule: ``api_base``, ``base_url`` and ``model_list`` in a file's ``lm``
entry are dropped on ``load``/``load_state``, with a warning naming them, unless
the caller trusts the file (``allow_unsafe_lm_state=True``). As in DSPy, the
endpoint of an ``LM`` lives in ``lm.kwargs`` under the name it was given.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from runtime_helpers import SECRET, StartRuntime, chat_answer

import dspex
from dspex.errors import UsageError
from dspex.programs import Predict
from dspex.testing import FakeOpenAI

MODEL = "openai/test-model"


@pytest.fixture
def servers() -> Iterator[tuple[FakeOpenAI, FakeOpenAI]]:
    """The endpoint the settings trust, and one a tampered file points at."""
    with (
        FakeOpenAI(reply=chat_answer("trusted")) as trusted,
        FakeOpenAI(reply=chat_answer("redirected")) as attacker,
    ):
        yield trusted, attacker


def _tampered_file(tmp_path: Path, key: str, url: str) -> Path:
    """A program saved with ``LM(MODEL)``, then edited to add an endpoint."""
    qa = Predict("question -> answer")
    qa.lm = dspex.LM(MODEL, api_key=SECRET)
    path = tmp_path / "qa.json"
    qa.save(path)
    saved = json.loads(path.read_text())
    assert SECRET not in path.read_text() and "api_key" not in saved["lm"]
    if key == "model_list":
        saved["lm"][key] = [{"model_name": MODEL, "litellm_params": {"api_base": url}}]
    else:
        saved["lm"][key] = url
    path.write_text(json.dumps(saved))
    return path


@pytest.mark.parametrize("key", ["api_base", "base_url", "model_list"])
def test_a_loaded_file_cannot_redirect_the_lm(
    start_runtime: StartRuntime,
    servers: tuple[FakeOpenAI, FakeOpenAI],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    key: str,
) -> None:
    trusted, attacker = servers
    start_runtime(models={MODEL: {"api_base": trusted.url, "api_key": SECRET}})
    path = _tampered_file(tmp_path, key, attacker.url)

    qa = Predict("question -> answer")
    with caplog.at_level(logging.WARNING, logger="dspex.programs"):
        qa.load(path)
    assert qa.lm is not None and key not in qa.lm.kwargs
    [record] = [r for r in caplog.records if "allow_unsafe_lm_state" in r.getMessage()]
    assert record.args == ([key],)  # the warning names what it dropped
    assert qa(question="q").answer == "trusted"
    assert attacker.request_count == 0
    assert trusted.request_count == 1 and trusted.requests[0].api_key_present


@pytest.mark.parametrize("key", ["api_base", "base_url"])
def test_a_trusted_file_keeps_its_endpoint_in_lm_kwargs(
    start_runtime: StartRuntime,
    servers: tuple[FakeOpenAI, FakeOpenAI],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    key: str,
) -> None:
    trusted, attacker = servers
    start_runtime(models={MODEL: {"api_base": trusted.url, "api_key": SECRET}})
    state = json.loads(_tampered_file(tmp_path, key, attacker.url).read_text())

    qa = Predict("question -> answer")
    with caplog.at_level(logging.WARNING, logger="dspex.programs"):
        qa.load_state(state, allow_unsafe_lm_state=True)
    assert "allow_unsafe_lm_state" not in caplog.text
    assert qa.lm is not None and qa.lm.kwargs[key] == attacker.url  # DSPy's place for it
    assert qa.lm.api_base == attacker.url
    assert qa(question="q").answer == "redirected"
    [request] = attacker.requests
    assert key not in request.json  # the endpoint, never a request parameter
    assert trusted.request_count == 0


def test_lm_keeps_its_endpoint_in_kwargs_under_the_name_given() -> None:
    by_api_base = dspex.LM(MODEL, api_base="http://127.0.0.1:9/v1", temperature=0.5)
    assert by_api_base.kwargs == {"temperature": 0.5, "api_base": "http://127.0.0.1:9/v1"}
    by_base_url = dspex.LM(MODEL, base_url="http://127.0.0.1:9/v1")
    assert by_base_url.kwargs == {"base_url": "http://127.0.0.1:9/v1"}
    assert by_base_url.api_base == "http://127.0.0.1:9/v1"
    for lm in (by_api_base, by_base_url, by_base_url.copy()):
        state = lm.dump_state()
        assert state.get("api_base", state.get("base_url")) == "http://127.0.0.1:9/v1"
    assert "api_base" not in dspex.LM(MODEL).kwargs


def test_two_different_endpoints_are_refused() -> None:
    with pytest.raises(UsageError, match="pass one of them") as info:
        dspex.LM(MODEL, api_base="http://a/v1", base_url="http://b/v1")
    assert "'http://a/v1'" in str(info.value) and "'http://b/v1'" in str(info.value)
    same: Any = dspex.LM(MODEL, api_base="http://a/v1", base_url="http://a/v1")
    assert same.kwargs == {"api_base": "http://a/v1"}
