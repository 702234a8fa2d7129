"""DSPy's warning when a module's ``forward`` is called directly instead of the module.

``module.forward(...)`` skips what calling the module gives: the program run
(supervision, deadline, cancellation), callbacks, per-module history and usage
tracking. DSPy warns when ``forward`` is read for such a call; so does dspex,
without DSPy's cost (a stack walk on every read of ``forward``).
"""

from __future__ import annotations

import functools
import logging
import sys
import types
from collections.abc import Callable
from typing import Any, cast

from dspex.programs._module_history import innermost_calling

__all__ = ["ForwardGuard"]

logger = logging.getLogger("dspex.programs")


class ForwardGuard:
    """Stands for a Module class's ``forward``: read from an instance, it is the bound
    method, after a warning when that module is not the one running it.

    Runs in the thread that reads ``forward``. Reading it from the class gives the
    plain function; a ``forward`` set on an instance (syncify, KNNFewShot) wins,
    as this is a non-data descriptor.
    """

    def __init__(self, func: Callable[..., Any]) -> None:
        self.func = func
        functools.update_wrapper(cast(Any, self), func)  # name, doc, __wrapped__ for inspect

    def __get__(self, module: Any, owner: type | None = None) -> Any:
        if module is None:
            return self.func
        if innermost_calling() is not module and _direct(module, sys._getframe(1)):
            logger.warning(
                "Calling module.forward(...) on %s directly is discouraged. Please use "
                "module(...) instead.",
                type(module).__name__,
            )
        return types.MethodType(self.func, module)


def _direct(module: Any, reader: types.FrameType) -> bool:
    """Whether ``reader`` (the frame reading ``module.forward``, which is not running
    under a call of ``module``) calls it directly.

    A ``__call__`` that calls ``forward`` is exempt, as in DSPy (dspex's Parallel
    and Retrieve do so), and so is the module's own ``forward`` reaching
    ``super().forward``: the direct call was already reported.
    """
    name = reader.f_code.co_name
    if name == "__call__":
        return False
    return not (name == "forward" and reader.f_locals.get("self") is module)
