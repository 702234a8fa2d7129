"""``dspex.LM`` refuses bad arguments when it is built, and masks its API key as a token.

Bad model ids and client settings used to be accepted and fail at the first
call (a raw pydantic error, or a client that never started); a one-character
API key was masked wherever its character appeared in an error message.
"""

from __future__ import annotations

from typing import Any

import pytest
from runtime_helpers import StartRuntime

import dspex
from dspex.actors._lm._providers._base import _scrub
from dspex.errors import AuthenticationError, ProviderError, UsageError
from dspex.testing import FakeOpenAI, Fault

FORMS = ("'openai/<model>'", "'anthropic/<model>'", "'gemini/<model>'", "'local/<name>'")


@pytest.mark.parametrize(
    ("model", "says"),
    [
        ("foo/bar", "provider one of anthropic, gemini, local, openai"),
        ("opeani/gpt-4o", "did you mean 'openai/gpt-4o'?"),
        ("vllm/llama-3", "use 'openai/llama-3' and set api_base"),
        ("gpt-4o-mini", "did you mean 'openai/gpt-4o-mini'?"),
        ("openai/", "no model name follows 'openai/'"),
        (42, "must be a string"),
    ],
)
def test_an_unknown_provider_is_refused_at_construction(model: Any, says: str) -> None:
    with pytest.raises(UsageError) as info:
        dspex.LM(model)
    message = str(info.value)
    assert f"LM(model={model!r})" in message and says in message
    assert all(form in message for form in FORMS)


def test_runtime_lm_handle_refuses_an_unknown_provider_with_a_dspex_error(
    start_runtime: StartRuntime,
) -> None:
    rt = start_runtime()
    with pytest.raises(UsageError, match=r"Runtime.lm_handle\(model='foo/bar'\)"):
        rt.lm_handle("foo/bar")


@pytest.mark.parametrize(
    ("kwargs", "says"),
    [
        ({"timeout": -1}, "LM(timeout=-1) is invalid; use a number of seconds > 0"),
        ({"timeout": 0}, "LM(timeout=0) is invalid; use a number of seconds > 0"),
        ({"num_retries": -1}, "LM(num_retries=-1) is invalid; use an int >= 0"),
        ({"num_retries": 1.5}, "LM(num_retries=1.5) is invalid; use an int >= 0"),
        ({"rpm": 0}, "LM(rpm=0) is invalid; use an int >= 1, or None for no limit"),
        ({"tpm": -3}, "LM(tpm=-3) is invalid; use an int >= 1, or None for no limit"),
        ({"backoff_base": 0}, "LM(backoff_base=0) is invalid; use a number of seconds > 0"),
        ({"max_in_flight": 0}, "LM(max_in_flight=0) is invalid; use an int >= 1"),
        ({"temperature": -0.5}, "LM(temperature=-0.5) is invalid; use a number from 0 to 2"),
        ({"temperature": "hot"}, "LM(temperature='hot') is invalid; use a number from 0 to 2"),
        ({"max_tokens": 0}, "LM(max_tokens=0) is invalid; use an int >= 1"),
        ({"max_tokens": True}, "LM(max_tokens=True) is invalid; use an int >= 1"),
    ],
)
def test_bad_lm_settings_are_refused_at_construction(kwargs: dict[str, Any], says: str) -> None:
    with pytest.raises(UsageError) as info:
        dspex.LM("openai/gpt-4o-mini", **kwargs)
    assert str(info.value) == says


def test_good_settings_are_kept() -> None:
    lm = dspex.LM(
        "openai/gpt-4o-mini",
        temperature=0,
        max_tokens=100,
        timeout=5,
        num_retries=0,
        rpm=None,
        max_in_flight=8,
    )
    assert lm.client_settings == {"timeout": 5, "num_retries": 0, "max_in_flight": 8}
    assert lm.kwargs == {"temperature": 0, "max_tokens": 100}


# -- the API key in error messages ------------------------------------------------------------


def test_a_one_character_key_is_masked_as_a_token_not_inside_words(
    start_runtime: StartRuntime,
) -> None:
    start_runtime()
    with FakeOpenAI(api_key="the-right-key") as fake:
        lm = dspex.LM("openai/test-model", api_base=fake.url, api_key="e", num_retries=0)
        with pytest.raises(AuthenticationError) as wrong_key:
            lm("hello", cache=False)
    # Not "Incorr<redacted>ct API k<redacted>y provid<redacted>d".
    assert "Incorrect API key provided: ****. Check api_key" in str(wrong_key.value)
    with FakeOpenAI() as fake:  # takes any key, and this time echoes it back
        fake.schedule = [Fault.error(500, "key e refused; see the docs")]
        lm = dspex.LM("openai/test-model", api_base=fake.url, api_key="e", num_retries=0)
        with pytest.raises(ProviderError) as echoed:
            lm("hello again", cache=False)
    assert "key <redacted> refused; see the docs" in str(echoed.value)


@pytest.mark.parametrize(
    ("text", "key", "shown"),
    [
        ("unknown model, key k", "k", "unknown model, key <redacted>"),
        (
            "Bearer test-key is wrong; test-keyring",
            "test-key",
            "Bearer <redacted> is wrong; test-keyring",
        ),
        ("a=b&key=AbC123xyz789Q&c=d", "AbC123xyz789Q", "a=b&key=<redacted>&c=d"),
        # A long key is masked even when glued to other characters (URL-encoded).
        ("%22AbC123xyz789Q%22", "AbC123xyz789Q", "%22<redacted>%22"),
    ],
)
def test_scrub_masks_the_key_as_a_whole_token(text: str, key: str, shown: str) -> None:
    assert _scrub(text, key) == shown


def test_a_saved_program_whose_lm_names_another_provider_still_loads(
    tmp_path: Any, caplog: pytest.LogCaptureFixture
) -> None:
    import json
    import logging
    from pathlib import Path

    state = json.loads((Path(__file__).parent / "data" / "dspy3_predict_with_lm.json").read_text())
    [entry] = [v for k, v in state.items() if k != "metadata"]
    entry["lm"]["model"] = "azure/gpt-4o"  # a litellm provider DSPy knows, dspex does not
    path = tmp_path / "azure.json"
    path.write_text(json.dumps(state))
    qa = dspex.Predict("sentence -> sentiment")
    with caplog.at_level(logging.WARNING, logger="dspex.programs"):
        qa.load(path)
    assert qa.lm is None
    assert "Saved LM 'azure/gpt-4o' not restored" in caplog.text
    assert qa.signature.instructions == "Classify the sentiment of the sentence."
