"""Served programs over HTTP: ``dspex serve`` and the ASGI app behind it.

``app(runtime)`` is a Starlette app for the programs a runtime serves; mount
it in your own Starlette or FastAPI service, or run ``dspex serve
module_or_file:attr``. Needs the ``serve`` extra (``pip install
'dspex[serve]'``: starlette, uvicorn, prometheus-client). See docs/serve.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dspex._lazy import lazy_face

if TYPE_CHECKING:
    from dspex.serve._app import ServeState, app
    from dspex.serve._command import ServeOptions, serve_command
    from dspex.serve._endpoints import endpoint_for
    from dspex.serve._target import load_programs

_LAZY: dict[str, str] = {
    "ServeOptions": "dspex.serve._command",
    "ServeState": "dspex.serve._app",
    "app": "dspex.serve._app",
    "endpoint_for": "dspex.serve._endpoints",
    "load_programs": "dspex.serve._target",
    "serve_command": "dspex.serve._command",
}

__all__ = [
    "ServeOptions",
    "ServeState",
    "app",
    "endpoint_for",
    "load_programs",
    "serve_command",
]

__getattr__, __dir__ = lazy_face(__name__, globals(), _LAZY)
