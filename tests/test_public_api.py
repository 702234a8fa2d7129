"""The public face: ``__all__`` sorted and complete, lazy names resolve, import stays cheap."""

from __future__ import annotations

import subprocess
import sys

import dspex
from dspex import errors


def _isort_key(name: str) -> tuple[int, str]:
    # ruff's RUF022 order: CONSTANTS, then Classes, then functions
    return (0 if name.isupper() else 1 if name[0].isupper() else 2, name)


def test_all_is_sorted_and_unique() -> None:
    assert list(dspex.__all__) == sorted(set(dspex.__all__), key=_isort_key)


def test_all_matches_the_lazy_table_and_eager_names() -> None:
    eager = {n for n in dspex.__all__ if n not in dspex._LAZY}
    assert set(dspex._LAZY) <= set(dspex.__all__)
    # every eager name is an error class defined in dspex.errors
    assert eager <= set(errors.__all__)


def test_every_public_name_resolves() -> None:
    for name in dspex.__all__:
        assert getattr(dspex, name) is not None, name


def test_unknown_name_is_an_attribute_error() -> None:
    try:
        dspex.NoSuchThing  # noqa: B018
    except AttributeError as exc:
        assert "NoSuchThing" in str(exc)
    else:
        raise AssertionError("expected AttributeError")


def test_import_dspex_does_not_load_heavy_modules() -> None:
    code = (
        "import sys, dspex; heavy = [m for m in ('pydantic', 'httpx', 'pykka', 'structlog') "
        "if m in sys.modules]; print(','.join(heavy))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.strip() == ""


def test_dspy_style_program_runs_with_import_as_dspy() -> None:
    import dspex as dspy
    from dspex.testing import DummyLM

    lm = DummyLM([{"answer": "Paris"}])
    qa = dspy.Predict("question -> answer")
    with dspy.context(lm=lm):
        assert qa(question="Capital of France?").answer == "Paris"


def test_dspy_submodule_paths_work() -> None:
    import dspex as dspy
    from dspex.adapters import ChatAdapter
    from dspex.evaluate import Evaluate, answer_exact_match

    assert dspy.evaluate.Evaluate is Evaluate is dspy.Evaluate
    assert dspy.evaluate.answer_exact_match is answer_exact_match
    assert dspy.adapters.ChatAdapter is ChatAdapter is dspy.ChatAdapter
