"""An output the reply leaves out is filled as DSPy 3.4.1 fills it: the field's default,
its default_factory, or None when its type admits None; a required one is still an error."""

from __future__ import annotations

import pytest

from dspex.errors import AdapterParseError
from dspex.programs import ChatAdapter, InputField, JSONAdapter, OutputField, Signature, XMLAdapter


class Noted(Signature):
    """Answer, with optional extras."""

    question: str = InputField()
    answer: str = OutputField()
    note: str | None = OutputField(default="No note")
    maybe: str | None = OutputField()
    tags: list[str] = OutputField(default_factory=list)


ONLY_ANSWER = [
    (ChatAdapter(), "[[ ## answer ## ]]\nParis\n\n[[ ## completed ## ]]"),
    (JSONAdapter(), '{"answer": "Paris"}'),
    (XMLAdapter(), "<answer>Paris</answer>"),
]


@pytest.mark.parametrize(("adapter", "reply"), ONLY_ANSWER, ids=lambda v: type(v).__name__)
def test_missing_optional_outputs_take_their_fallbacks(adapter: object, reply: str) -> None:
    parsed = adapter.parse(Noted, reply)  # type: ignore[attr-defined]
    assert parsed == {"answer": "Paris", "note": "No note", "maybe": None, "tags": []}
    assert list(parsed) == ["answer", "note", "maybe", "tags"]  # field order
    again = adapter.parse(Noted, reply)  # type: ignore[attr-defined]
    again["tags"].append("x")
    assert adapter.parse(Noted, reply)["tags"] == []  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("adapter", "reply"),
    [
        (ChatAdapter(), "[[ ## note ## ]]\nx\n\n[[ ## completed ## ]]"),
        (JSONAdapter(), '{"note": "x"}'),
        (XMLAdapter(), "<note>x</note>"),
    ],
    ids=lambda v: type(v).__name__,
)
def test_a_missing_required_output_is_still_an_error(adapter: object, reply: str) -> None:
    with pytest.raises(
        AdapterParseError, match=r"lacks output field\(s\) `answer` \(str\);"
    ) as info:
        adapter.parse(Noted, reply)  # type: ignore[attr-defined]
    # DSPy's leading words, which programs match on
    name = type(adapter).__name__
    assert str(info.value).startswith(f"Adapter {name} failed to parse the LM response: ")


def test_given_values_win_over_fallbacks() -> None:
    reply = '{"answer": "a", "note": null, "maybe": "m", "tags": ["t"]}'
    assert JSONAdapter().parse(Noted, reply) == {
        "answer": "a",
        "note": None,
        "maybe": "m",
        "tags": ["t"],
    }
