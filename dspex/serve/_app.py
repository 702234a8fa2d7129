"""The ASGI app: served programs over HTTP, on a running dspex runtime.

``app(runtime)`` returns a Starlette app; mount it in your own service or run
it with uvicorn (``dspex serve`` does). Program calls never block the event
loop: ``rt.ask`` only admits the request (a lock and a message), and its
``ServerFuture`` is awaited directly (it wraps itself in :func:`asyncio.wrap_future`),
which resolves it on the loop when a worker thread of the program server
sets it. No thread per request. If the handler is cancelled (its server shuts
down, or the app is mounted under a framework that cancels on disconnect),
a request still queued is cancelled too and never runs.
"""

from __future__ import annotations

import json
import logging
import threading
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from dspex.errors import ActorStoppedError, RegistryError
from dspex.serve._call import call_program, program_name
from dspex.serve._endpoints import Endpoint, endpoint_for, to_json_bytes
from dspex.serve._errors import ErrorReply, error_reply
from dspex.serve._openapi import openapi_document

__all__ = ["ServeState", "app"]

log = logging.getLogger("dspex.serve")


class ServeState:
    """What the routes share: the runtime, the draining flag and the endpoint cache.

    ``draining`` is set from any thread (``dspex serve`` sets it on SIGTERM);
    once set, program calls get 503 and ``/readyz`` says not ready.
    """

    def __init__(self, runtime: Any, *, allow_reload: bool = False) -> None:
        self.runtime = runtime
        self.allow_reload = allow_reload
        self._draining = threading.Event()
        self._lock = threading.Lock()
        # name -> (program it describes, endpoint); rebuilt when the program changes
        self._endpoints: dict[str, tuple[Any, Endpoint]] = {}

    @property
    def draining(self) -> bool:
        return self._draining.is_set()

    def start_draining(self) -> None:
        """Refuse new program calls from now on (503), and report not ready."""
        self._draining.set()

    def endpoint(self, name: str) -> Endpoint:
        """The endpoint of the program ``name`` serves now; raises RegistryError if none."""
        return self.endpoint_of(name, self.runtime.servers.program(name))

    def endpoint_of(self, name: str, program: Any) -> Endpoint:
        """The endpoint describing ``program`` served as ``name`` (cached per program)."""
        cached = self._endpoints.get(name)
        if cached is not None and cached[0] is program:
            return cached[1]
        endpoint = endpoint_for(name, program)  # a reload changed the program: describe it anew
        with self._lock:
            self._endpoints[name] = (program, endpoint)
        return endpoint

    def endpoints(self) -> list[Endpoint]:
        found = []
        for name in self.runtime.servers.names():
            try:
                found.append(self.endpoint(name))
            except RegistryError:  # stopped meanwhile
                continue
        return found


def _error_response(reply: ErrorReply) -> Response:
    return Response(
        to_json_bytes(reply.body),
        status_code=reply.status,
        headers=reply.headers,
        media_type="application/json",
    )


async def _reload(request: Request) -> Response:
    state: ServeState = request.app.state.dspex
    name = request.path_params["name"]
    if not state.allow_reload:
        return _error_response(
            ErrorReply(
                403,
                "ReloadDisabled",
                "hot reload over HTTP is off; start the server with --allow-reload "
                "(or app(runtime, allow_reload=True)) to enable it",
            )
        )
    try:
        payload = json.loads(await request.body() or b"null")
    except ValueError as exc:
        return _error_response(ErrorReply(422, "InputError", f"body is not JSON: {exc}"))
    path = payload.get("path") if isinstance(payload, dict) else None
    if not isinstance(path, str) or not path:
        return _error_response(
            ErrorReply(
                422,
                "InputError",
                'send {"path": "state.json"}: the path of a saved program state on the server',
                errors=[{"field": "path", "type": "missing", "message": "a file path is required"}],
            )
        )
    try:
        version = await run_in_threadpool(state.runtime.reload, name, path)  # reads a file
    except RegistryError as exc:
        return _error_response(error_reply(exc))
    except Exception as exc:  # a missing file or a state that does not fit: old one serves on
        return _error_response(ErrorReply(422, type(exc).__name__, str(exc)))
    return JSONResponse({"name": name, "version": version})


async def _list_programs(request: Request) -> Response:
    state: ServeState = request.app.state.dspex
    return Response(
        to_json_bytes(
            {
                "programs": [
                    e.describe(request.scope.get("root_path", "")) for e in state.endpoints()
                ]
            }
        ),
        media_type="application/json",
    )


async def _healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


def _readiness(state: ServeState) -> list[str]:
    """Why the server is not ready (empty: ready); blocks on a tree call, so off the loop."""
    runtime = state.runtime
    if state.draining:
        return ["draining: the server is shutting down"]
    if not runtime.running:
        return ["the dspex runtime is not running"]
    problems = []
    try:
        tree = runtime.tree()
    except Exception as exc:
        return [f"the supervision tree did not answer: {type(exc).__name__}: {exc}"]
    lms = tree.find("lms")
    if lms is None or lms.status != "alive":
        problems.append("the LM client supervisor is not running")
    else:
        problems.extend(
            f"LM client {c.id} is {c.status}" for c in lms.children if c.status != "alive"
        )
    for name in runtime.servers.names():
        try:
            stats = runtime.servers.stats(name)
        except (RegistryError, ActorStoppedError):
            problems.append(f"program server {name!r} is restarting")
            continue
        if not stats.accepting or stats.closed:
            problems.append(f"program server {name!r} does not accept requests")
    return problems


async def _readyz(request: Request) -> Response:
    state: ServeState = request.app.state.dspex
    problems = await run_in_threadpool(_readiness, state)
    if problems:
        return JSONResponse({"status": "not ready", "reasons": problems}, status_code=503)
    return JSONResponse({"status": "ready"})


async def _metrics(request: Request) -> Response:
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    registry = request.app.state.dspex_metrics
    text = await run_in_threadpool(generate_latest, registry)  # rt.metrics() is an actor call
    return Response(text, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def _openapi(request: Request) -> Response:
    state: ServeState = request.app.state.dspex
    from dspex import __version__

    document = openapi_document(state.endpoints(), version=__version__)
    return Response(to_json_bytes(document), media_type="application/json")


class ServeApp(Starlette):
    """The Starlette app, with ``POST /v1/programs/{name}`` answered as plain ASGI.

    That route is every request of a busy server, so it skips the routing,
    Request and Response layers (:mod:`dspex.serve._call`); the rest is Starlette.
    """

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and program_name(scope):
            await call_program(self.state.dspex, scope, receive, send)
            return
        await super().__call__(scope, receive, send)


def app(runtime: Any, *, allow_reload: bool = False) -> Starlette:
    """A Starlette app serving every program ``runtime`` serves (``rt.serve(...)``).

    Routes: ``GET /v1/programs``, ``POST /v1/programs/{name}``,
    ``POST /v1/programs/{name}/reload`` (403 unless ``allow_reload``),
    ``GET /healthz``, ``GET /readyz``, ``GET /metrics``, ``GET /openapi.json``.
    ``app.state.dspex`` is the :class:`ServeState`; call its
    ``start_draining()`` when your service begins to shut down.
    """
    from dspex.serve._metrics import metrics_registry

    routes = [
        Route("/v1/programs", _list_programs, methods=["GET"]),
        # POST /v1/programs/{name} is answered by ServeApp before routing (the hot path).
        Route("/v1/programs/{name}/reload", _reload, methods=["POST"]),
        Route("/healthz", _healthz, methods=["GET"]),
        Route("/readyz", _readyz, methods=["GET"]),
        Route("/metrics", _metrics, methods=["GET"]),
        Route("/openapi.json", _openapi, methods=["GET"]),
    ]
    application = ServeApp(routes=routes)
    application.state.dspex = ServeState(runtime, allow_reload=allow_reload)
    application.state.dspex_metrics = metrics_registry(runtime)
    return application
