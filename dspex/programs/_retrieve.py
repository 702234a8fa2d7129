"""``dspex.Retrieve``: DSPy's retrieval module over the configured retriever (``rm``).

``dspex.configure(rm=ColBERTv2(...))`` (or any callable ``rm(query, k=...)``
returning passages) and ``Retrieve(k=3)(query)`` returns a Prediction with
``passages``, the passages' texts. ``k`` is its only state, saved and loaded
with the program.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping
from typing import Any

from dspex.errors import UsageError
from dspex.programs._callbacks import with_callbacks
from dspex.programs._module import Parameter
from dspex.programs._prediction import Prediction

__all__ = ["Retrieve"]


class Retrieve(Parameter):
    """Retrieves the top ``k`` passages for a query from ``settings.rm``."""

    name = "Search"
    input_variable = "query"
    desc = (
        "takes a search query and returns one or more potentially relevant passages from a corpus"
    )

    def __init__(self, k: int = 3, callbacks: list[Any] | None = None) -> None:
        _check_k(k)
        self.stage = random.randbytes(8).hex()
        self.k = k
        self.callbacks = list(callbacks or [])

    def reset(self) -> None:
        """Nothing is learned: ``k`` is configuration."""

    def dump_state(self, json_mode: bool = True) -> dict[str, Any]:
        return {"k": self.k}

    def load_state(self, state: Mapping[str, Any]) -> Retrieve:
        unknown = sorted(set(state) - {"k"})
        if unknown:
            raise UsageError(f"Retrieve state has unknown keys {unknown}; it holds only 'k'")
        if "k" in state:
            _check_k(state["k"])
            self.k = state["k"]
        return self

    @with_callbacks
    def __call__(self, *args: Any, **kwargs: Any) -> Prediction:
        return self.forward(*args, **kwargs)

    def forward(self, query: str, k: int | None = None, **kwargs: Any) -> Prediction:
        """Ask ``settings.rm`` for ``k`` (default ``self.k``) passages about ``query``."""
        from dspex.programs._settings import settings

        k = self.k if k is None else k
        _check_k(k)
        rm = settings.rm
        if not rm:
            raise UsageError(
                "Retrieve: no retriever is configured; use dspex.configure(rm=...) with e.g. "
                "dspex.ColBERTv2(url=...) or any callable rm(query, k=...)"
            )
        found = rm(query, k=k, **kwargs)
        if isinstance(found, str) or not isinstance(found, Iterable):
            found = [found]
        return Prediction(passages=[_text_of(p) for p in found])

    def __repr__(self) -> str:
        return f"Retrieve(k={self.k})"


def _text_of(passage: Any) -> str:
    """A passage's text: DSPy's ``long_text``, or ``text``, or the string itself."""
    if isinstance(passage, str):
        return passage
    if isinstance(passage, Mapping):
        for key in ("long_text", "text"):
            if key in passage:
                return str(passage[key])
    text = getattr(passage, "long_text", None)
    if text is not None:
        return str(text)
    raise UsageError(
        f"the retriever returned {passage!r}; Retrieve needs strings or passages with "
        "'long_text' (or 'text')"
    )


def _check_k(k: Any) -> None:
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise UsageError(f"Retrieve(k={k!r}) is invalid; use an int >= 1")
