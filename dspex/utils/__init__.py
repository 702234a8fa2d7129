"""DSPy's ``dspy.utils`` path: ``from dspex.utils import BaseCallback``.

Holds only the DSPy-facing names programs import from ``dspy.utils``
(callbacks, ``syncify``, ``logging_utils``, and ``DummyLM`` for tests); they load on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dspex._lazy import lazy_face

if TYPE_CHECKING:
    from dspex.programs._syncify import syncify
    from dspex.testing import DummyLM
    from dspex.utils import callback, callback_context, dummies, exceptions, logging_utils
    from dspex.utils.callback import ACTIVE_CALL_ID, BaseCallback, with_callbacks

_LAZY: dict[str, str] = {
    "ACTIVE_CALL_ID": "dspex.utils.callback",
    "BaseCallback": "dspex.utils.callback",
    "DummyLM": "dspex.testing",
    "callback": "dspex.utils.callback",
    "callback_context": "dspex.utils.callback_context",
    "exceptions": "dspex.utils.exceptions",
    "dummies": "dspex.utils.dummies",
    "logging_utils": "dspex.utils.logging_utils",
    "syncify": "dspex.programs._syncify",
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
    "logging_utils",
    "syncify",
    "with_callbacks",
]

__getattr__, __dir__ = lazy_face(__name__, globals(), _LAZY)
