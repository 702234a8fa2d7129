"""The adapters' demo-message cache: an unchanged demo set is formatted once per
signature, and anything that would change the text misses the cache."""

from __future__ import annotations

from typing import Any

import pytest

from dspex.programs import ChatAdapter, Example, JSONAdapter, Signature, XMLAdapter
from dspex.programs._adapters._demos import demos_key as _demos_key
from dspex.programs._signature import ensure_signature

SIG = ensure_signature("question -> answer, score: float")


def _demo(**fields: Any) -> Example:
    return Example(question="Q1?", answer="A1", score=0.5).copy(**fields)


def _texts(adapter: Any, demos: list[Any], sig: Any = SIG) -> list[str]:
    return [m["content"] for m in adapter.format_demos(sig, demos)]


@pytest.mark.parametrize("adapter", [ChatAdapter(), JSONAdapter(), XMLAdapter()])
def test_cached_messages_match_a_fresh_format(adapter: Any) -> None:
    demos = [_demo(), {"question": "Q2?", "answer": "A2"}, _demo(score=None)]
    first = adapter.format_demos(SIG, demos)
    again = adapter.format_demos(SIG, demos)
    fresh = adapter._format_demos(SIG, adapter.plan(SIG), demos)
    assert first == again == fresh
    assert again[0] is not first[0]  # fresh dicts: a caller may change its messages


def test_a_changed_demo_is_formatted_again() -> None:
    adapter = ChatAdapter()
    demo = _demo()
    before = _texts(adapter, [demo])
    demo.answer = "A different answer"
    after = _texts(adapter, [demo])
    assert "A different answer" in after[1] and "A1" in before[1]
    del demo.score  # now incomplete: laid out as such
    user, reply = _texts(adapter, [demo])
    assert user.startswith("This is an example of the task") and "Not supplied" in reply


@pytest.mark.parametrize(("one", "other"), [(True, 1), (0.0, -0.0), (1, 1.0)])
def test_equal_values_that_print_apart_are_keyed_apart(one: Any, other: Any) -> None:
    adapter = ChatAdapter()
    a = _texts(adapter, [_demo(score=one)])
    b = _texts(adapter, [_demo(score=other)])
    assert a != b
    assert a == _texts(adapter, [_demo(score=one)])


def test_a_changed_signature_or_demo_order_misses() -> None:
    adapter = ChatAdapter()
    demos = [_demo(), _demo(question="Q2?")]
    plain = _texts(adapter, demos)
    assert _texts(adapter, demos[::-1]) == plain[2:] + plain[:2]
    renamed = ensure_signature("question -> reply, score: float")
    assert "[[ ## reply ## ]]" in _texts(adapter, [_demo(reply="A1")], renamed)[1]


def test_a_subclass_formatter_is_never_cached() -> None:
    class Shouting(ChatAdapter):
        def __init__(self) -> None:
            super().__init__()
            self.loud = False

        def format_field_block(self, field: Any, value: Any) -> str:
            text = super().format_field_block(field, value)
            return text.upper() if self.loud else text

    adapter = Shouting()
    demos = [_demo()]
    assert _demos_key(Shouting, adapter.plan(SIG).field_names, demos) is None
    assert "Q1?" in _texts(adapter, demos)[0]
    adapter.loud = True
    assert "[[ ## QUESTION ## ]]" in _texts(adapter, demos)[0]


def test_values_other_than_plain_ones_are_not_cached() -> None:
    plan = ChatAdapter().plan(SIG)
    assert _demos_key(ChatAdapter, plan.field_names, [_demo()]) is not None
    assert _demos_key(ChatAdapter, plan.field_names, [_demo(answer=["a", "b"])]) is None

    class Row(dict[str, Any]):
        pass

    assert _demos_key(ChatAdapter, plan.field_names, [Row(question="q", answer="a")]) is None
    items = ["a"]
    adapter = ChatAdapter()
    demo = Example(question=items, answer="A", score=1.0)
    list_sig = ensure_signature("question: list[str] -> answer, score: float")
    first = _texts(adapter, [demo], list_sig)
    items.append("b")  # a list changed in place: formatted again, since never cached
    assert _texts(adapter, [demo], list_sig) != first


def test_instructions_change_gives_a_new_plan() -> None:
    adapter = ChatAdapter()
    other: type[Signature] = SIG.with_instructions("Answer in French.")
    assert adapter.plan(other) is not adapter.plan(SIG)
    assert _texts(adapter, [_demo()], other) == _texts(adapter, [_demo()])
