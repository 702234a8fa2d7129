"""DSPy's ``dspy.utils`` path: ``from dspex.utils import BaseCallback``.

Holds only the DSPy-facing names programs import from ``dspy.utils``
(callbacks, and ``DummyLM`` for tests); they load on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dspex._lazy import lazy_face

if TYPE_CHECKING:
    from dspex.testing import DummyLM
    from dspex.utils import callback, callback_context, dummies, exceptions
    from dspex.utils.callback import ACTIVE_CALL_ID, BaseCallback, with_callbacks

_LAZY: dict[str, str] = {
    "ACTIVE_CALL_ID": "dspex.utils.callback",
    "BaseCallback": "dspex.utils.callback",
    "DummyLM": "dspex.testing",
    "callback": "dspex.utils.callback",
    "callback_context": "dspex.utils.callback_context",
    "exceptions": "dspex.utils.exceptions",
    "dummies": "dspex.utils.dummies",
    "with_callbacks": "dspex.utils.callback",
}

__all__ = [
    "ACTIVE_CALL_ID",
    "BaseCallback",
    "DummyLM",
    "callback",
    "callback_context",
    "dummies",
    "exceptions",
    "with_callbacks",
]

__getattr__, __dir__ = lazy_face(__name__, globals(), _LAZY)
