"""Signature operations (each returns a new signature), equality, state and ensure_signature."""

from __future__ import annotations

from typing import Any

import pytest

from dspex.errors import SignatureError
from dspex.programs import (
    InputField,
    OutputField,
    Signature,
    ensure_signature,
    make_signature,
)
from dspex.programs._signature_parse import RESERVED_NAMES


class QA(Signature):
    """Answer the question
    using the context."""

    question: str = InputField(desc="a trivia question")
    context: list[str] = InputField(prefix="Passages:")
    answer = OutputField()
    confidence: float = OutputField(desc="0 to 1")


def ann(sig: type[Signature], name: str) -> Any:
    return sig.fields[name].annotation


# ---------------------------------------------------------------- operations


def test_with_instructions_returns_a_new_signature() -> None:
    new = QA.with_instructions("Be terse.")
    assert new.instructions == "Be terse."
    assert new.fields == QA.fields
    assert QA.instructions == "Answer the question\nusing the context."
    assert new != QA and new.__name__ == "QA"
    with pytest.raises(SignatureError, match="needs a str"):
        QA.with_instructions(None)  # type: ignore[arg-type]


def test_append_prepend_insert() -> None:
    base = Signature("question -> answer")
    appended = base.append("reasoning", OutputField(desc="why"), str)
    prepended = base.prepend("reasoning", OutputField(prefix="Reasoning: Let's think"))
    inserted = base.insert(0, "context", InputField(), list[str])
    neg = base.insert(-2, "hint", InputField())  # -2 = before the last input
    assert appended.signature == "question -> answer, reasoning"
    assert prepended.signature == "question -> reasoning, answer"
    assert prepended.fields["reasoning"].prefix == "Reasoning: Let's think"
    assert inserted.signature == "context, question -> answer"
    assert ann(inserted, "context") == list[str]
    assert neg.signature == "hint, question -> answer"
    assert appended.fields["reasoning"].desc == "why"
    # The original is unchanged, and its instructions carry over verbatim (as in DSPy).
    assert base.signature == "question -> answer"
    assert prepended.instructions == base.instructions
    assert base.append("x", InputField()).signature == "question, x -> answer"


def test_insert_errors() -> None:
    base = Signature("question -> answer")
    with pytest.raises(SignatureError, match=r"insert index 5 is out of range for the 1 input"):
        base.insert(5, "x", InputField())
    with pytest.raises(SignatureError, match="already has it"):
        base.append("answer", OutputField())
    with pytest.raises(SignatureError, match="`_x` is a reserved name"):
        base.append("_x", OutputField())
    with pytest.raises(SignatureError, match="must be InputField"):
        base.append("x", str)  # type: ignore[arg-type]
    with pytest.raises(SignatureError, match="is not a type"):
        base.append("x", InputField(), type_="int")


def test_delete() -> None:
    base = Signature("question, context -> answer")
    smaller = base.delete("context")
    assert smaller.signature == "question -> answer"
    assert base.signature == "question, context -> answer"
    same = base.delete("missing")  # DSPy 3 returns an unchanged copy
    assert same == base


def test_with_updated_fields() -> None:
    new = QA.with_updated_fields("answer", type_=int, desc="a number", prefix="N:", unit="cm")
    field = new.fields["answer"]
    assert (field.annotation, field.desc, field.prefix) == (int, "a number", "N:")
    assert field.json_schema_extra["unit"] == "cm"
    assert QA.fields["answer"].annotation is str and QA.fields["answer"].desc is None
    assert new.instructions == QA.instructions
    with pytest.raises(SignatureError, match=r"QA has no field `nope`"):
        QA.with_updated_fields("nope", desc="x")


def test_equality_and_hash_compare_content() -> None:
    assert Signature("a -> b") == Signature("a -> b")
    assert Signature("a -> b") == make_signature("a -> b", custom_types={})
    assert hash(Signature("a: int -> b")) == hash(
        make_signature({"a": (int, InputField()), "b": OutputField()})
    )
    assert Signature("a: Optional[int] -> b") == Signature("a: int | None -> b")
    assert Signature("a -> b") != Signature("a: int -> b")
    assert Signature("a -> b") != Signature("a -> b", "Other.")
    assert Signature("a, c -> b") != Signature("c, a -> b")
    assert Signature("a -> b") != Signature("a -> b").with_updated_fields("a", desc="x")
    assert Signature("a -> b").equals(Signature("a -> b"))
    assert not Signature("a -> b").equals("a -> b")
    assert Signature("a -> b") != "a -> b"
    assert (
        len(
            {
                Signature("a -> b"),
                Signature("a -> b").with_instructions(Signature("a -> b").instructions),
            }
        )
        == 1
    )


def test_signatures_are_immutable() -> None:
    sig = Signature("a -> b")
    with pytest.raises(SignatureError, match=r"cannot be assigned.*with_instructions"):
        sig.instructions = "new"
    with pytest.raises(SignatureError, match="immutable"):
        sig.fields = {}
    assert sig.instructions == "Given the fields `a`, produce the fields `b`."


def test_to_string_renders_the_typed_form() -> None:
    sig = Signature("a: int, b -> c: list[str], d: Optional[Literal['x', 1]]")
    assert sig.to_string() == "a: int, b -> c: list[str], d: Optional[Literal['x', 1]]"
    assert Signature(sig.to_string()) == sig


def test_repr_shows_signature_instructions_and_fields() -> None:
    text = repr(QA)
    assert text.startswith("QA(question, context -> answer, confidence\n")
    assert "instructions='Answer the question\\nusing the context.'" in text
    assert "context = InputField(annotation=list[str], prefix='Passages:')" in text


def test_reserved_names_cover_every_public_signature_attribute() -> None:
    public = {name for name in dir(Signature) if not name.startswith("_")}
    assert public <= RESERVED_NAMES


# ---------------------------------------------------------------- state


def test_dump_state_uses_dspy_format() -> None:
    assert QA.dump_state() == {
        "instructions": "Answer the question\nusing the context.",
        "fields": [
            {"prefix": "Question:", "description": "a trivia question"},
            {"prefix": "Passages:", "description": "${context}"},
            {"prefix": "Answer:", "description": "${answer}"},
            {"prefix": "Confidence:", "description": "0 to 1"},
        ],
    }


def test_load_state_round_trip_and_dspy_state() -> None:
    changed = QA.with_instructions("New.").with_updated_fields("answer", desc="short")
    restored = QA.load_state(changed.dump_state())
    assert restored == changed
    assert QA.load_state(QA.dump_state()) == QA
    dspy_state = {  # as written by DSPy 3.x for "question -> answer"
        "instructions": "Given the fields `question`, produce the fields `answer`.",
        "fields": [
            {"prefix": "Question:", "description": "${question}"},
            {"prefix": "Answer:", "description": "often between 1 and 5 words"},
        ],
    }
    loaded = Signature("question -> answer").load_state(dspy_state)
    assert loaded.fields["question"].desc is None
    assert loaded.fields["answer"].desc == "often between 1 and 5 words"
    assert loaded.dump_state() == dspy_state


def test_load_state_errors() -> None:
    sig = Signature("question -> answer")
    with pytest.raises(SignatureError, match="has 1 field\\(s\\) but StringSignature"):
        sig.load_state({"instructions": "x", "fields": [{"prefix": "Q:", "description": "d"}]})
    with pytest.raises(SignatureError, match="'instructions' string"):
        sig.load_state({"fields": []})
    with pytest.raises(SignatureError, match="state of field `question` must be a dict"):
        sig.load_state({"instructions": "x", "fields": ["a", "b"]})


# ---------------------------------------------------------------- ensure_signature


def test_ensure_signature() -> None:
    assert ensure_signature(None) is None
    assert ensure_signature("q -> a") == Signature("q -> a")
    assert ensure_signature("q -> a", "Do it.").instructions == "Do it."
    assert ensure_signature(QA) is QA
    with pytest.raises(SignatureError, match=r"use QA\.with_instructions"):
        ensure_signature(QA, "instructions")
