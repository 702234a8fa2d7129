"""``Runtime.stream``: a served program's output as it is generated.

The listeners and the routing of LM text live in the programs layer
(``programs/_streamify``), which installs the opener here when a runtime
starts (``install_caller_hooks``), as it installs its other caller hooks.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

from dspex.errors import UsageError

__all__ = ["StreamOpener", "open_stream", "set_stream_opener"]

StreamOpener = Callable[[Any, str, Mapping[str, Any]], AsyncIterator[Any]]
"""``opener(runtime, name, inputs)``: the async iterator ``Runtime.stream`` returns."""

_opener: StreamOpener | None = None


def set_stream_opener(opener: StreamOpener | None) -> None:
    """Install the programs layer's opener (idempotent; process-wide)."""
    global _opener
    _opener = opener


def open_stream(runtime: Any, name: str, inputs: Mapping[str, Any]) -> AsyncIterator[Any]:
    """Open a stream on served program ``name`` (see ``Runtime.stream``)."""
    if _opener is None:
        raise UsageError(
            "streaming needs the programs layer: start the runtime with dspex.start() "
            "(or import dspex.streaming) before calling rt.stream(...)"
        )
    return _opener(runtime, name, inputs)
