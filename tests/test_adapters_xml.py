"""XMLAdapter: ``<field>`` tags in prompts and replies, typed parsing, JSON fallback."""

from __future__ import annotations

import pytest
from adapter_helpers import ScriptedLM
from pydantic import BaseModel

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


def test_parse_reads_top_level_tags_and_ignores_other_text() -> None:
    reply = "Thinking...\n<total> 12 </total>\n<note>\nmulti\nline\n</note> done"
    assert XMLAdapter().parse(Sum, reply) == {"total": 12, "note": "multi\nline"}


def test_a_repeated_tag_is_read_as_a_list_like_dspy() -> None:
    # DSPy 3.4.1 reads both <total> tags (a list), which is not an int: a parse error.
    reply = "<total>12</total><note>n</note><total>99</total>"
    with pytest.raises(AdapterParseError, match=r"`total` as int: \['12', '99'\]"):
        XMLAdapter().parse(Sum, reply)


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


# -- nested XML for structured outputs (DSPy 3.4.1's format) --------------------------------


class Tagging(Signature):
    """Tag the text."""

    text: str = InputField()
    tags: list[str] = OutputField()
    count: int = OutputField()


class Item(BaseModel):
    name: str
    qty: int = 1


class Order(BaseModel):
    items: list[Item]
    note: str | None = None


class Ordering(Signature):
    """Take the order."""

    request: str = InputField()
    order: Order = OutputField()
    scores: dict[str, int] = OutputField()


def test_list_output_is_asked_for_as_items() -> None:
    system, user = XMLAdapter().format(Tagging, [], {"text": "hi"})
    assert (
        "<text>\n{text}\n</text>\n\n<tags><item>...</item></tags>\n\n<count>\n{count}"
        in (system["content"])
    )
    assert user["content"] == (
        "<text>\nhi\n</text>\n\nRespond with the corresponding output fields wrapped in XML "
        "tags `<tags>`, then `<count>`. Use this nested XML structure: "
        "<tags><item>...</item></tags>"
    )


def test_list_demo_is_written_as_items_and_text_is_escaped() -> None:
    demo = {"text": "a & b", "tags": ["x", "y & <z>"], "count": 2}
    messages = XMLAdapter().format(Tagging, [demo], {"text": "hi"})
    assert messages[1]["content"] == "<text>\na & b\n</text>"  # inputs are not escaped
    assert messages[2]["content"] == (
        "<tags><item>x</item><item>y &amp; &lt;z></item></tags>\n\n<count>\n2\n</count>"
    )
    plain = XMLAdapter().format(Sum, [{"numbers": [1], "total": 1, "note": "a<b"}], {})
    assert plain[2]["content"] == "<total>\n1\n</total>\n\n<note>\na&lt;b\n</note>"


@pytest.mark.parametrize(
    ("reply", "tags"),
    [
        ("<tags><item>a</item><item>b</item></tags><count>2</count>", ["a", "b"]),
        ("<tags>\n  <item>a</item>\n</tags>\n<count>2</count>", ["a"]),
        ('<tags>["a", "b"]</tags><count>2</count>', ["a", "b"]),
        ("<tags></tags><count>2</count>", []),
        ("<tags>a</tags><count>2</count>", ["a"]),
    ],
)
def test_list_output_is_read_from_items_or_json(reply: str, tags: list[str]) -> None:
    assert XMLAdapter().parse(Tagging, reply) == {"tags": tags, "count": 2}


def test_model_and_dict_outputs_round_trip_through_nested_xml() -> None:
    system, user = XMLAdapter().format(Ordering, [], {"request": "r"})
    skeleton = (
        "<order><items><item><name>...</name><qty>...</qty></item></items><note>...</note></order>"
    )
    assert skeleton in system["content"] and user["content"].endswith(
        f"Use this nested XML structure: {skeleton} <scores>...</scores>"
    )
    order = Order(items=[Item(name="tea", qty=2)])
    demo = {"request": "r", "order": order, "scores": {"a": 1, "my key": 2}}
    written = XMLAdapter().format(Ordering, [demo], {"request": "r"})[2]["content"]
    assert written == (
        "<order><items><item><name>tea</name><qty>2</qty></item></items><note /></order>\n\n"
        '<scores><a>1</a><entry key="my key">2</entry></scores>'
    )
    assert XMLAdapter().parse(Ordering, written) == {
        "order": order,
        "scores": {"a": 1, "my key": 2},
    }


def test_markup_inside_a_text_field_is_kept() -> None:
    parsed = XMLAdapter().parse(Sum, "<total>1</total><note>use <b>bold</b> here</note>")
    assert parsed["note"] == "use <b>bold</b> here"


def test_bare_ampersands_and_angles_are_read_as_text() -> None:
    # DSPy fails such a reply; dspex escapes the bare '&'/'<' and reads it.
    reply = "<tags><item>salt</item><item>pepper</item></tags> & <count>2</count>"
    assert XMLAdapter().parse(Tagging, reply) == {"tags": ["salt", "pepper"], "count": 2}
    assert XMLAdapter().parse(Sum, "<total>3</total><note>R&D < 5</note>") == {
        "total": 3,
        "note": "R&D < 5",
    }


def test_malformed_xml_is_a_parse_error_like_dspy() -> None:
    class Code(Signature):
        """Write code."""

        code: str = OutputField()

    value = "print('</code> & done')"
    written = XMLAdapter().format_assistant_message_content(Code, {"code": value})
    assert "&lt;/code> &amp; done" in written
    assert XMLAdapter().parse(Code, written) == {"code": value}
    with pytest.raises(AdapterParseError, match="Failed to parse XML") as info:
        XMLAdapter().parse(Code, "<code>print('</code>')</code>")
    assert info.value.raw == "<code>print('</code>')</code>"


def test_model_fields_with_aliases_are_read_by_name() -> None:
    from pydantic import Field

    class Address(BaseModel):
        postal_code: str = Field(alias="postal code")
        country_code: str = Field(alias="country-code")

    class Locate(Signature):
        """Find the address."""

        place: str = InputField()
        address: Address = OutputField()

    system = XMLAdapter().format(Locate, [], {"place": "Stanford"})[0]["content"]
    assert "<address><postal_code>...</postal_code><country_code>...</country_code></address>" in (
        system
    )
    reply = "<address><postal_code>94305</postal_code><country_code>US</country_code></address>"
    parsed = XMLAdapter().parse(Locate, reply)["address"]
    assert (parsed.postal_code, parsed.country_code) == ("94305", "US")
