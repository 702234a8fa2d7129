"""The runtime a program call runs on, reached with the program layer's hooks installed.

Every place in this layer that needs a runtime asks here rather than
``dspex.actors.current_runtime`` directly, so the caller hooks
(:func:`~dspex.programs._settings.install_caller_hooks`) are in place before
the first call runs, even on a default runtime the actors layer starts lazily.
"""

from __future__ import annotations

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
    install_caller_hooks()
    # Imported here: the Runtime and all it starts load on first use, which
    # keeps `import dspex` cheap.
    from dspex.actors._current import current_runtime as runtime_for_call

    return runtime_for_call(start)
