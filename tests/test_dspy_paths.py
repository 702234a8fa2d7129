"""DSPy's module paths and small helpers: ``dspex.utils.exceptions``, ``dspex.predict.predict``,
``dspex.primitives``, ``dspex.clients``, ``callback_context``, ``settings.copy()``,
``set_attribute_by_name``, and JSONAdapter's rule for when to ask for structured output."""

from __future__ import annotations

from collections.abc import Iterator

import pydantic
import pytest
from adapter_helpers import ScriptedLM

import dspex
from dspex.programs import settings
from dspex.testing import DummyLM


@pytest.fixture(autouse=True)
def clean_settings() -> Iterator[None]:
    yield
    settings.reset()


def test_dspy_error_names_are_dspex_errors() -> None:
    from dspex.utils import exceptions

    assert exceptions.ContextWindowExceededError is dspex.ContextWindowError
    assert exceptions.AdapterParseError is dspex.AdapterParseError
    assert exceptions.LMRateLimitError is dspex.RateLimitError
    assert issubclass(exceptions.DSPyError, Exception)
    # DSPy code raises it bare
    err = exceptions.ContextWindowExceededError()
    assert isinstance(err, dspex.LMError) and "context window" in str(err)


def test_adapter_parse_error_in_dspy_form() -> None:
    from dspex.utils.exceptions import AdapterParseError

    sig = dspex.Signature("question -> answer, score: int")
    err = AdapterParseError("MyAdapter", sig, "garbage", "bad reply", {"answer": "x"})
    assert err.adapter_name == "MyAdapter" and err.lm_response == "garbage"
    assert err.raw == "garbage" and err.signature is sig
    assert str(err).startswith("bad reply\n\nAdapter MyAdapter failed to parse the LM response.")
    assert "[answer, score]" in str(err) and "parsed from the LM response: [answer]" in str(err)


def test_settings_copy_round_trips_through_configure() -> None:
    lm = DummyLM([])
    dspex.configure(lm=lm, num_threads=3)
    snapshot = settings.copy()
    assert snapshot["lm"] is lm and snapshot["num_threads"] == 3
    dspex.configure(lm=None, num_threads=8)
    dspex.configure(**snapshot)
    assert settings.lm is lm and settings.num_threads == 3


def test_set_attribute_by_name_walks_attributes_and_indexes() -> None:
    from dspex.primitives.module import set_attribute_by_name

    root = dspex.Module()
    root.sub = dspex.Module()
    shared = dspex.Module()
    root.sub.items = [dspex.Module(), {"key": dspex.Module()}]
    root.sub.pair = (dspex.Module(), [shared, shared])
    set_attribute_by_name(root, "flag", 1)
    set_attribute_by_name(root, "sub.items[1]['key'].flag", 2)
    set_attribute_by_name(root, "sub.pair[1][0].flag", 3)
    set_attribute_by_name(root, "sub.items[0]", "replaced")
    assert root.flag == 1
    assert root.sub.items[1]["key"].flag == 2
    assert shared.flag == 3
    assert root.sub.items[0] == "replaced"
    with pytest.raises(dspex.UsageError, match="cannot parse the path"):
        set_attribute_by_name(root, "sub..x", 1)


def test_serialize_object_dumps_models_in_json_mode() -> None:
    from dspex.predict.predict import serialize_object

    class Link(pydantic.BaseModel):
        url: pydantic.HttpUrl

    value = {"links": [Link(url="https://example.com")], "pair": (Link(url="https://a.b"), 1)}
    assert serialize_object(value) == {
        "links": [{"url": "https://example.com/"}],
        "pair": ({"url": "https://a.b/"}, 1),
    }


def test_bind_active_call_id_carries_the_parent_into_another_thread() -> None:
    from concurrent.futures import ThreadPoolExecutor

    from dspex.utils.callback import ACTIVE_CALL_ID
    from dspex.utils.callback_context import bind_active_call_id

    token = ACTIVE_CALL_ID.set("parent-1")
    try:
        bound = bind_active_call_id(ACTIVE_CALL_ID.get)
    finally:
        ACTIVE_CALL_ID.reset(token)
    with ThreadPoolExecutor(1) as pool:
        assert pool.submit(bound).result(timeout=10) == "parent-1"
        assert pool.submit(ACTIVE_CALL_ID.get).result(timeout=10) is None

    def fail() -> None:
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        bind_active_call_id(fail)()
    assert ACTIVE_CALL_ID.get() is None


def test_dspy_module_paths_resolve_to_dspex_objects() -> None:
    import dspex.clients
    import dspex.predict
    import dspex.primitives.base_module
    import dspex.primitives.example
    import dspex.primitives.prediction
    import dspex.teleprompt.teleprompt

    assert dspex.clients.LM is dspex.LM
    assert dspex.predict.Predict is dspex.Predict
    assert dspex.primitives.example.Example is dspex.Example
    assert dspex.primitives.prediction.Prediction is dspex.Prediction
    assert dspex.teleprompt.teleprompt.Teleprompter is dspex.teleprompt.Teleprompter
    assert dspex.primitives.base_module.logger.name == "dspex.programs"


class _Capable(ScriptedLM):
    def __init__(self, *replies: str, params: set[str], schema: bool) -> None:
        super().__init__(*replies)
        self.supported_params = params
        self.supports_response_schema = schema


QA = dspex.Signature("question -> answer")


@pytest.mark.parametrize(
    ("params", "schema", "expected"),
    [
        (set(), True, None),  # no response_format support: none sent
        ({"response_format"}, False, "json_object"),  # JSON mode only
        ({"response_format"}, True, "json_schema"),  # strict structured output
    ],
)
def test_json_adapter_follows_dspys_structured_output_rule(
    params: set[str], schema: bool, expected: str | None
) -> None:
    lm = _Capable('{"answer": "Paris"}', params=params, schema=schema)
    assert dspex.JSONAdapter()(lm, {}, QA, [], {"question": "q"}) == [{"answer": "Paris"}]
    sent = lm.calls[0][1].get("response_format")
    assert (sent or {}).get("type") == expected


def test_a_dummy_lm_answers_json_when_the_prompt_asks_for_it() -> None:
    lm = DummyLM([{"answer": "Paris"}])
    pred = dspex.Predict("question -> answer")
    with dspex.context(lm=lm, adapter=dspex.JSONAdapter()):
        assert pred(question="q").answer == "Paris"
    assert lm.history[-1]["outputs"][0].lstrip().startswith("{")
