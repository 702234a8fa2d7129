"""Signatures: string, dict and class forms, types, operations, state and errors."""

from __future__ import annotations

import datetime
import enum
import typing
from typing import Any, ClassVar, Literal, Optional, Union

import pydantic
import pytest

from dspex.errors import SignatureError, UsageError
from dspex.programs import (
    FieldInfo,
    InputField,
    OutputField,
    Signature,
    SignatureMeta,
    infer_prefix,
    make_signature,
)


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


class Address(pydantic.BaseModel):
    street: str
    city: str


class Person(pydantic.BaseModel):
    name: str
    addresses: list[Address]

    class Badge(pydantic.BaseModel):
        level: int


def ann(sig: type[Signature], name: str) -> Any:
    return sig.fields[name].annotation


# ---------------------------------------------------------------- string form


def test_string_form_fields_kinds_and_order() -> None:
    sig = Signature("question, context: list[str] -> answer: int")
    assert list(sig.fields) == ["question", "context", "answer"]
    assert list(sig.input_fields) == ["question", "context"]
    assert list(sig.output_fields) == ["answer"]
    assert sig.signature == "question, context -> answer"
    assert sig.__name__ == "StringSignature"
    assert ann(sig, "question") is str
    assert ann(sig, "context") == list[str]
    assert ann(sig, "answer") is int
    assert sig.fields["question"].kind == "input"
    assert sig.fields["answer"].kind == "output"
    assert issubclass(sig, Signature)


def test_string_form_default_instructions_use_dspy_wording() -> None:
    sig = Signature("question, context -> answer, score: float")
    assert sig.instructions == (
        "Given the fields `question`, `context`, produce the fields `answer`, `score`."
    )
    assert sig.__doc__ == sig.instructions


def test_string_form_with_instructions_argument() -> None:
    sig = Signature("question -> answer", "Answer briefly.")
    assert sig.instructions == "Answer briefly."
    assert Signature("q -> a", "").instructions == ""


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("str", str),
        ("int", int),
        ("float", float),
        ("bool", bool),
        ("list[str]", list[str]),
        ("list[list[int]]", list[list[int]]),
        ("dict[str, int]", dict[str, int]),
        ("dict[str, list[float]]", dict[str, list[float]]),
        ("tuple[int, str]", tuple[int, str]),
        ("tuple[int, ...]", tuple[int, ...]),
        ("tuple", tuple),
        ("list", list),
        ("Literal['yes', 'no']", Literal["yes", "no"]),
        ("Literal[1, 2, -3, True, None]", Literal[1, 2, -3, True, None]),
        ("Optional[int]", Optional[int]),  # noqa: UP045 - the typing spelling is under test
        ("int | None", int | None),
        ("Union[int, str]", Union[int, str]),  # noqa: UP007
        ("str | int | None", str | int | None),
        ("List[str]", typing.List[str]),  # noqa: UP006
        ("Dict[str, int]", typing.Dict[str, int]),  # noqa: UP006
        ("Tuple[int, str]", typing.Tuple[int, str]),  # noqa: UP006
        ("Any", Any),
        ("date", datetime.date),
        ("datetime", datetime.datetime),
        ("Optional[list[dict[str, Any]]]", Optional[list[dict[str, Any]]]),  # noqa: UP045
    ],
)
def test_string_form_types(text: str, expected: Any) -> None:
    sig = Signature(f"x: {text} -> y: {text}")
    assert ann(sig, "x") == expected
    assert ann(sig, "y") == expected


def test_string_form_custom_types_argument() -> None:
    sig = Signature(
        "person: Person, color: Color -> badge: Person.Badge, where: list[Address]",
        custom_types={"Person": Person, "Color": Color, "Address": Address},
    )
    assert ann(sig, "person") is Person
    assert ann(sig, "color") is Color
    assert ann(sig, "badge") is Person.Badge
    assert ann(sig, "where") == list[Address]


def test_string_form_resolves_names_from_the_callers_frame() -> None:
    class Local(pydantic.BaseModel):  # only visible in this function
        value: int

    sig = Signature("item: Local, color: Color -> people: list[Person], tag: Literal[Color.RED]")
    assert ann(sig, "item") is Local
    assert ann(sig, "color") is Color  # module global
    assert ann(sig, "people") == list[Person]
    assert ann(sig, "tag") == Literal[Color.RED]


def test_custom_types_win_over_frame_names_and_key_the_cache() -> None:
    class Thing(pydantic.BaseModel):
        a: int

    class Other(pydantic.BaseModel):
        b: int

    framed = Signature("x: Thing -> y")
    custom = Signature("x: Thing -> y", custom_types={"Thing": Other})
    assert ann(framed, "x") is Thing
    assert ann(custom, "x") is Other
    assert framed != custom


def test_quoted_literals_may_hold_arrows_commas_colons_and_brackets() -> None:
    sig = Signature("""x: Literal['a->b', "c, d", 'e: f', '[g]'] -> y""")
    assert ann(sig, "x") == Literal["a->b", "c, d", "e: f", "[g]"]
    assert list(sig.fields) == ["x", "y"]


def test_whitespace_newlines_and_trailing_comma_are_accepted() -> None:
    sig = Signature("  question ,\n  context:list[ str ],\n -> \n answer : int ")
    assert sig.signature == "question, context -> answer"
    assert ann(sig, "context") == list[str]
    assert ann(sig, "answer") is int


def test_same_string_returns_the_cached_equal_class() -> None:
    a = Signature("q, c: list[int] -> a: bool")
    b = Signature("q, c: list[int] -> a: bool")
    assert a is b
    assert Signature("q -> a", "One.") is not Signature("q -> a", "Two.")


def test_type_text_is_never_evaluated_as_code() -> None:
    probe: list[str] = []

    class Trap:
        def __class_getitem__(cls, item: Any) -> Any:  # would run on Trap[...] only
            probe.append("ran")
            return cls

    for text in (
        "x: __import__('os').system('true') -> y",
        "x: (lambda: int)() -> y",
        "x: int.__class__ -> y",
        "x: [int] -> y",
    ):
        with pytest.raises(SignatureError):
            Signature(text)
    assert probe == []


# ------------------------------------------------------------------ dict form


def test_dict_form_with_fields_and_type_pairs() -> None:
    sig = Signature(
        {
            "answer": (int, OutputField(desc="the number")),
            "question": InputField(),
            "context": (list[str], InputField()),
        },
        "Count things.",
    )
    assert list(sig.fields) == ["question", "context", "answer"]  # inputs first
    assert ann(sig, "answer") is int
    assert ann(sig, "context") == list[str]
    assert sig.fields["answer"].desc == "the number"
    assert sig.instructions == "Count things."
    assert make_signature({"q": InputField(), "a": OutputField()}) == Signature("q -> a")


def test_dict_form_errors_name_the_field_and_the_fix() -> None:
    with pytest.raises(SignatureError, match=r"field `a`: expected InputField\(\)/OutputField\(\)"):
        Signature({"a": "str"})
    with pytest.raises(SignatureError, match=r"`fields` is a reserved name"):
        Signature({"fields": InputField(), "b": OutputField()})
    with pytest.raises(SignatureError, match=r"field `a`: 5 is not a type"):
        Signature({"a": (5, InputField())})
    with pytest.raises(SignatureError, match="cannot build a signature from int"):
        Signature(42)  # type: ignore[arg-type]


# ----------------------------------------------------------------- class form


class QA(Signature):
    """Answer the question
    using the context."""

    question: str = InputField(desc="a trivia question")
    context: list[str] = InputField(prefix="Passages:")
    answer = OutputField()
    confidence: float = OutputField(desc="0 to 1")


def test_class_form_docstring_desc_prefix_and_default_type() -> None:
    assert QA.instructions == "Answer the question\nusing the context."
    assert QA.signature == "question, context -> answer, confidence"
    assert QA.__name__ == "QA"
    q, c, a, conf = QA.fields.values()
    assert (q.desc, q.prefix, q.annotation) == ("a trivia question", "Question:", str)
    assert (c.desc, c.prefix, c.annotation) == (None, "Passages:", list[str])
    assert (a.kind, a.annotation, a.prefix) == ("output", str, "Answer:")
    assert (conf.desc, conf.annotation) == ("0 to 1", float)
    assert q.json_schema_extra == {
        "__dspy_field_type": "input",
        "desc": "a trivia question",
        "prefix": "Question:",
    }
    assert c.json_schema_extra["desc"] == "${context}"


def test_class_form_without_docstring_gets_default_instructions() -> None:
    class Summarize(Signature):
        document: str = InputField()
        summary: str = OutputField()

    assert Summarize.instructions == "Given the fields `document`, produce the fields `summary`."


def test_class_form_orders_inputs_first_and_keeps_other_attributes() -> None:
    class Mixed(Signature):
        """Mixed."""

        out_a: int = OutputField()
        in_a = InputField()
        limit: ClassVar[int] = 3
        out_b: bool = OutputField()
        in_b: Person = InputField()

        @classmethod
        def helper(cls) -> int:
            return cls.limit

    assert list(Mixed.fields) == ["in_a", "in_b", "out_a", "out_b"]
    assert Mixed.helper() == 3
    assert ann(Mixed, "in_b") is Person


def test_class_form_string_annotations_resolve_safely() -> None:
    class Local(pydantic.BaseModel):
        v: int

    class Postponed(Signature):
        """As with `from __future__ import annotations`."""

        a: "list[Address]" = InputField()  # noqa: UP037 - a postponed annotation
        b: "Local" = InputField()  # noqa: UP037
        c: "Literal['x', 'y'] | None" = OutputField()  # noqa: UP037

    assert ann(Postponed, "a") == list[Address]
    assert ann(Postponed, "b") is Local
    assert ann(Postponed, "c") == Optional[Literal["x", "y"]]  # noqa: UP045


def test_class_form_with_real_annotation_objects() -> None:
    # This module uses postponed annotations, so build a class body with real objects.
    namespace = {
        "__module__": __name__,
        "__doc__": "Real.",
        "__annotations__": {"a": list[Address], "b": int | None, "c": Literal["x"]},
        "a": InputField(),
        "b": InputField(desc="maybe"),
        "c": OutputField(),
    }
    real: Any = SignatureMeta("Real", (Signature,), namespace)
    # `int | None` and `Optional[int]` are equal and interchangeable in typing's caches:
    # they render alike, so a signature's text does not depend on which one was built first.
    assert real.to_string() == "a: list[Address], b: Optional[int] -> c: Literal['x']"
    assert real.fields["b"].desc == "maybe"
    with pytest.raises(SignatureError, match=r"Broken\.a: the annotation 3 is not a type"):
        SignatureMeta("Broken", (Signature,), {"__annotations__": {"a": 3}, "a": InputField()})


def test_class_form_quoted_forward_references() -> None:
    class Quoted(Signature):
        items: list["Address"] = InputField()  # noqa: UP037
        best: Optional["Person"] = OutputField()  # noqa: UP037, UP045

    assert ann(Quoted, "items") == list[Address]
    assert ann(Quoted, "best") == Optional[Person]  # noqa: UP045


def test_frame_names_key_the_cache() -> None:
    def build_a() -> type[Signature]:
        class Item(pydantic.BaseModel):
            a: int

        return Signature("x: Item -> y")

    def build_b() -> type[Signature]:
        class Item(pydantic.BaseModel):
            b: int

        return Signature("x: Item -> y")

    first, second = build_a(), build_b()
    assert ann(first, "x") is not ann(second, "x")
    assert "a" in ann(first, "x").model_fields and "b" in ann(second, "x").model_fields


def test_class_form_inheritance_extends_fields_and_instructions() -> None:
    class WithReason(QA):
        reason: str = OutputField()

    assert list(WithReason.fields) == ["question", "context", "answer", "confidence", "reason"]
    assert WithReason.instructions == QA.instructions
    assert list(QA.fields) == ["question", "context", "answer", "confidence"]


def test_class_form_errors() -> None:
    with pytest.raises(SignatureError, match=r"Bad\.count: the annotated attribute `count`"):

        class Bad(Signature):
            q: str = InputField()
            count: int

    with pytest.raises(SignatureError, match=r"Bad2\.signature: `signature` is a reserved name"):

        class Bad2(Signature):
            signature: str = InputField()

    with pytest.raises(SignatureError, match=r"Bad3\.x: unknown type name `Nope`"):

        class Bad3(Signature):
            x: "Nope" = InputField()  # type: ignore[name-defined] # noqa: F821, UP037


def test_signature_subclass_instances_hold_field_values() -> None:
    qa: Any = QA  # mypy types Signature(...) as the string-form factory
    inst = qa(question="q?", answer="a")
    assert inst.question == "q?"
    with pytest.raises(SignatureError, match=r"QA has no field\(s\) \['nope'\]"):
        qa(nope=1)


# ---------------------------------------------------------------- fields


@pytest.mark.parametrize(
    ("name", "prefix"),
    [
        ("question", "Question"),
        ("some_field", "Some Field"),
        ("camelCase", "Camel Case"),
        ("userID", "User ID"),
        ("step2go", "Step 2 Go"),
        ("HTMLText", "HTML Text"),
    ],
)
def test_infer_prefix(name: str, prefix: str) -> None:
    assert infer_prefix(name) == prefix
    assert Signature(f"{name} -> out").fields[name].prefix == prefix + ":"


def test_field_info_values_replace_and_schema_extra() -> None:
    unbound = InputField(desc="d", prefix="P:", format=str.upper, examples=[1])
    assert isinstance(unbound, FieldInfo)
    assert unbound.kind == "input" and unbound.annotation is str
    assert unbound.json_schema_extra == {
        "__dspy_field_type": "input",
        "desc": "d",
        "prefix": "P:",
        "format": str.upper,
        "examples": [1],
    }
    assert OutputField().json_schema_extra == {"__dspy_field_type": "output"}
    assert InputField(desc="x") == InputField(desc="x")
    assert hash(InputField(desc="x")) == hash(InputField(desc="x"))
    assert InputField(desc="x") != OutputField(desc="x")
    changed = unbound.replace(desc="new")
    assert changed.desc == "new" and unbound.desc == "d"
    with pytest.raises(AttributeError):
        unbound.desc = "mutated"  # type: ignore[misc]
    with pytest.raises(SignatureError, match="unknown attribute"):
        unbound.replace(colour="red")
    with pytest.raises(SignatureError, match="desc=3 must be a string"):
        InputField(desc=3)  # type: ignore[arg-type]


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("text", "position", "phrase"),
    [
        ("question answer", 0, "missing '->' between inputs and outputs"),
        ("-> answer", 0, "no inputs before '->'"),
        ("question ->", 11, "no outputs after '->'"),
        ("question ->   ", 11, "no outputs after '->'"),
        ("a -> b -> c", 7, "more than one '->'"),
        ("a, b, a -> c", 6, "duplicate field name `a`"),
        ("a -> b, b", 8, "duplicate field name `b`"),
        ("question -> question", 12, "field `question` is on both sides of '->'"),
        ("class -> b", 0, "`class` is a reserved name (a Python keyword)"),
        ("a -> _hidden", 5, "`_hidden` is a reserved name"),
        ("instructions -> b", 0, "`instructions` is a reserved name"),
        ("a -> fields", 5, "`fields` is a reserved name"),
        ("a: Foo -> b", 3, "unknown type name `Foo` in field `a`"),
        ("a: list[Bar] -> b", 8, "unknown type name `Bar`"),
        ("a -> b: dict[str, Baz]", 18, "unknown type name `Baz`"),
        ("a b -> c", 0, "`a b` is not a field name"),
        ("1a -> b", 0, "`1a` is not a valid field name"),
        ("a-b -> c", 0, "`a-b` is not a valid field name"),
        ("a, , b -> c", 2, "empty field between commas"),
        ("a: -> b", 1, "missing type after `a:`"),
        (": int -> b", 0, "missing field name before ':'"),
        ("a: list[int -> b", 7, "'[' is never closed"),
        ("a: list[int]] -> b", 12, "unmatched ']'"),
        ("a: Literal['x -> b", 11, "unterminated string"),
        ("a: 3 -> b", 3, "3 is a value, not a type"),
        ("a: int +  -> b", 3, "invalid type `int +` for field `a`"),
        ("a: list[int,,] -> b", 12, "invalid type `list[int,,]` for field `a`"),
        ("a: Literal[int] -> b", 11, "`int` is not allowed in Literal"),
        ("a: os.path -> b", 3, "unknown type name"),
    ],
)
def test_signature_error_messages(text: str, position: int, phrase: str) -> None:
    with pytest.raises(SignatureError) as info:
        Signature(text)
    err = info.value
    assert err.position == position, str(err)
    assert err.signature == text
    message = str(err)
    assert phrase in message
    assert message.startswith(f'"{text}": ')
    assert f"(position {position})" in message
    assert isinstance(err, UsageError) and isinstance(err, ValueError)


def test_error_message_has_a_fix_and_a_caret() -> None:
    with pytest.raises(SignatureError) as info:
        Signature("question answer")
    assert str(info.value) == (
        "\"question answer\": missing '->' between inputs and outputs (position 0). "
        'Write it like "question -> answer".\n'
        "    question answer\n"
        "    ^"
    )
    with pytest.raises(SignatureError) as info:
        Signature("a b -> c")
    assert "Separate fields with commas: a, b." in str(info.value)
