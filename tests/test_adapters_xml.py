"""XMLAdapter: ``<field>`` tags in prompts and replies, typed parsing, JSON fallback."""

from __future__ import annotations

import pytest
from adapter_helpers import ScriptedLM

from dspex.errors import AdapterParseError
from dspex.programs import InputField, OutputField, Signature, XMLAdapter


class Sum(Signature):
    """Add the numbers."""

    numbers: list[int] = InputField(desc="Numbers to add")
    total: int = OutputField()
    note: str = OutputField()


def test_format_wraps_fields_in_tags() -> None:
    system, user = XMLAdapter().format(Sum, [], {"numbers": [1, 2]})
    assert system["content"] == (
        "Your input fields are:\n"
        "1. `numbers` (list[int]): Numbers to add\n"
        "Your output fields are:\n"
        "1. `total` (int): \n"
        "2. `note` (str):\n"
        "All interactions will be structured in the following way, with the appropriate "
        "values filled in.\n\n"
        "<numbers>\n{numbers}\n</numbers>\n\n"
        "<total>\n{total}        # note: the value you produce must be a single int value\n</total>"
        "\n\n<note>\n{note}\n</note>\n"
        "In adhering to this structure, your objective is: \n        Add the numbers."
    )
    assert user["content"] == (
        "<numbers>\n[1, 2]\n</numbers>\n\n"
        "Respond with the corresponding output fields wrapped in XML tags `<total>`, then `<note>`."
    )


def test_demo_reply_is_tagged() -> None:
    messages = XMLAdapter().format(
        Sum, [{"numbers": [1], "total": 1, "note": "one"}], {"numbers": [2]}
    )
    assert messages[2] == {
        "role": "assistant",
        "content": "<total>\n1\n</total>\n\n<note>\none\n</note>",
    }


def test_parse_reads_first_tag_of_each_output() -> None:
    reply = "Thinking...\n<total> 12 </total>\n<note>\nmulti\nline\n</note><total>99</total>"
    assert XMLAdapter().parse(Sum, reply) == {"total": 12, "note": "multi\nline"}


def test_missing_tag_and_bad_value_are_parse_errors() -> None:
    with pytest.raises(AdapterParseError, match="`note` \\(str\\)") as info:
        XMLAdapter().parse(Sum, "<total>3</total>")
    assert info.value.raw == "<total>3</total>"
    with pytest.raises(AdapterParseError, match="`total` as int"):
        XMLAdapter().parse(Sum, "<total>three</total><note>n</note>")


def test_falls_back_to_json_once() -> None:
    lm = ScriptedLM("total: 3", '{"total": 3, "note": "ok"}')
    assert XMLAdapter()(lm, {}, Sum, [], {"numbers": [1, 2]}) == [{"total": 3, "note": "ok"}]
    assert len(lm.calls) == 2
    assert "response_format" in lm.calls[1][1]
