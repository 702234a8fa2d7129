"""The runtime a program call runs on, reached with the program layer's hooks installed.

Every place in this layer that needs a runtime asks here rather than
``dspex.actors.current_runtime`` directly, so the caller hooks
(:func:`~dspex.programs._settings.install_caller_hooks`) are in place before
the first call runs, even on a default runtime the actors layer starts lazily.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Literal, overload

from dspex.programs._settings import install_caller_hooks

if TYPE_CHECKING:
    from dspex.actors import Runtime

__all__ = ["current_runtime"]


@overload
def current_runtime(start: Literal[True] = ...) -> Runtime: ...
@overload
def current_runtime(start: bool) -> Runtime | None: ...
def current_runtime(start: bool = True) -> Runtime | None:
    """The runtime for a call made here: the run's, the newest started, or the default one.

    ``start=False``: None when none runs, instead of starting the default one.
    """
    lookup = _lookup
    if lookup is None:
        lookup = _first_lookup()
    return lookup(start)


def _first_lookup() -> Callable[[bool], Runtime | None]:
    # The actors layer's lookup, imported on first use (the Runtime and all it
    # starts load then, which keeps `import dspex` cheap), with the caller hooks
    # installed before; later calls skip both (an import statement costs a
    # microsecond even when the module is loaded).
    global _lookup
    install_caller_hooks()
    from dspex.actors._current import current_runtime as runtime_for_call

    _lookup = runtime_for_call
    return runtime_for_call


_lookup: Callable[[bool], Runtime | None] | None = None
