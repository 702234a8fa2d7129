"""DSPy's ``dspy.utils.callback`` path: ``from dspex.utils.callback import BaseCallback``.

Subclass :class:`BaseCallback` and register instances with
``dspex.configure(callbacks=[...])``, ``dspex.context(callbacks=[...])`` or a
component's ``callbacks=`` argument (see docs/callbacks.md).
"""

from dspex.actors._callbacks import ACTIVE_CALL_ID, BaseCallback
from dspex.programs._callbacks import with_callbacks

__all__ = ["ACTIVE_CALL_ID", "BaseCallback", "with_callbacks"]
