"""``dspex serve``: a runtime, its program servers and uvicorn, shut down in order.

The main thread owns the signals (``rt.run_forever``); uvicorn runs on one
event loop thread (``dspex-serve-http``), which the LM clients' engines share
(``host_engines``: a request crosses no thread between the sockets), and
installs no signal handlers there. On SIGTERM or
SIGINT: the app starts refusing program calls (503) and ``/readyz`` goes
not-ready, uvicorn closes its listening socket and waits for the requests it
holds, the program servers drain what they admitted (up to the deadline),
the runtime stops, and once uvicorn has written the last answer the process
exits 0.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import gc
import logging
import os
import signal
import socket
import sys
import threading
from dataclasses import dataclass
from typing import Any

from dspex.actors import IOLoop, Runtime, host_engines
from dspex.errors import UsageError

__all__ = ["ServeOptions", "serve_command"]

_STARTUP_WAIT = 30.0  # seconds for uvicorn to start listening

log = logging.getLogger("dspex.serve")


@dataclass(frozen=True)
class ServeOptions:
    """The options of ``dspex serve`` (see ``dspex serve --help``)."""

    target: str
    name: str | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    config: str | None = None
    lm: str | None = None
    state: str | None = None
    max_concurrency: int = 8
    queue_limit: int = 128
    allow_reload: bool = False
    allow_pickle: bool = False
    drain_timeout: float = 30.0
    log_level: str = "warning"
    workers: int = 1
    gc_threshold: int = 50_000
    keep_history: bool = False
    reuse_port: bool = False  # set by a multi-worker parent on its workers


def _listen(
    host: str, port: int, *, reuse_port: bool = False, backlog: int = 2048
) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:  # every worker listens on the port; the kernel spreads connections
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise UsageError(
            f"dspex serve: cannot listen on {host}:{port} ({exc.strerror}); pick another "
            "--port (0 picks a free one)"
        ) from exc
    if backlog:
        sock.listen(backlog)
    sock.set_inheritable(True)
    return sock


def _http_server(application: Any, options: ServeOptions) -> Any:
    import uvicorn

    class Server(uvicorn.Server):
        """uvicorn's server, telling the main thread when it listens."""

        listening = threading.Event()

        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets)
            type(self).listening.set()

    config = uvicorn.Config(
        application,
        lifespan="off",
        log_level=options.log_level,
        access_log=False,
        server_header=False,  # says nothing a client needs, costs a header per reply
        # No X-Forwarded-* rewriting of the client address: nothing here reads it,
        # and the middleware is one more ASGI layer on every request.
        proxy_headers=False,
        # Answers still in flight at the drain deadline get a few more seconds to be written.
        timeout_graceful_shutdown=int(options.drain_timeout) + 5,
    )
    return Server(config)


def serve_command(options: ServeOptions) -> int:
    """Run ``dspex serve`` until SIGTERM/SIGINT; returns the exit code."""
    if (
        isinstance(options.workers, bool)
        or not isinstance(options.workers, int)
        or (options.workers < 1)
    ):
        raise UsageError(
            f"dspex serve --workers {options.workers!r}: must be an int >= 1 (1 = one process; "
            "2 or more = that many processes sharing the port)"
        )
    gen0 = options.gc_threshold
    if isinstance(gen0, bool) or not isinstance(gen0, int) or gen0 < 0:
        raise UsageError(
            f"dspex serve --gc-threshold {gen0!r}: must be an int >= 0 (the collector's "
            "youngest-generation threshold; 0 keeps Python's own settings)"
        )
    if options.workers > 1:
        from dspex.serve._workers import serve_workers

        return serve_workers(options, _listen)
    from dspex.programs import configure, start
    from dspex.serve._app import app
    from dspex.serve._target import load_programs

    sock = _listen(options.host, options.port, reuse_port=options.reuse_port)
    # One event loop thread carries the HTTP server and the LM clients' I/O:
    # a request then crosses no thread between its socket and the provider's.
    io = IOLoop("dspex-serve-http")
    io.start()
    host_engines(io)
    try:
        runtime = start(lm=options.lm, config=options.config)
    except BaseException:
        host_engines(None)
        io.stop()
        sock.close()
        raise
    try:
        if not options.keep_history:
            # Nothing reads a served module's LM history in this process, and it
            # would hold the prompts of the last max_history_size requests: a
            # served program's calls go unrecorded (see --keep-history).
            configure(disable_history=True)
        # Imported after start(), so a module that calls dspex.configure(...)
        # configures this runtime instead of starting a default one.
        programs = load_programs(
            options.target,
            name=options.name,
            state=options.state,
            allow_pickle=options.allow_pickle,
        )
        for name, program in programs.items():
            runtime.serve(
                name,
                program,
                max_concurrency=options.max_concurrency,
                queue_limit=options.queue_limit,
            )
        application = app(runtime, allow_reload=options.allow_reload)
        server = _http_server(application, options)
        _look_up_prices(runtime, programs.values())
        _tune_gc(gen0)
    except BaseException:
        sock.close()
        _stop(runtime, io)
        raise

    http_ended = threading.Event()  # uvicorn returned: after a signal, or on its own

    def ended(_: object) -> None:
        http_ended.set()
        type(server).listening.set()  # wake the main thread if startup failed

    http = asyncio.run_coroutine_threadsafe(server.serve(sockets=[sock]), io.loop)
    http.add_done_callback(ended)
    type(server).listening.wait(_STARTUP_WAIT)
    if not server.started:
        print("dspex serve: the HTTP server did not start", file=sys.stderr, flush=True)
        server.should_exit = True
        with contextlib.suppress(Exception):
            http.result(5.0)
        sock.close()
        _stop(runtime, io)
        return 1
    host, port = sock.getsockname()[:2]
    url = f"http://{host if ':' not in host else f'[{host}]'}:{port}"

    def ready() -> None:
        names = ", ".join(sorted(programs))
        print(f"dspex serve: serving {names} on {url} (pid {os.getpid()})", flush=True)

    crashed: list[bool] = []

    def stop_intake(signum: int) -> None:
        # signum 0: http_ended was set, uvicorn stopped without a signal (it crashed).
        if not signum:
            crashed.append(True)
        cause = signal.Signals(signum).name if signum else "the HTTP server's exit"
        print(
            f"dspex serve: {cause} received; draining for up to {options.drain_timeout:g}s",
            flush=True,
        )
        application.state.dspex.start_draining()
        server.should_exit = True  # close the listener; uvicorn waits for requests in flight

    try:
        code = runtime.run_forever(
            drain_timeout=options.drain_timeout,
            on_ready=ready,
            on_signal=stop_intake,
            stop_event=http_ended,  # no HTTP server, no point serving: shut down (exit 1)
        )
    except BaseException:
        server.should_exit = True
        host_engines(None)
        io.stop(5.0)  # the loop thread is not a daemon: never leave it behind
        raise
    if crashed:  # uvicorn ended by itself, not because we asked
        code = 1
    try:
        http.result(options.drain_timeout + 10.0)
    except concurrent.futures.TimeoutError:
        print("dspex serve: the HTTP server did not finish in time", file=sys.stderr, flush=True)
        code = code or 1
    except BaseException as exc:  # uvicorn failed: its exit was already counted as a crash
        log.debug("the HTTP server ended with %r", exc)
    finally:
        host_engines(None)
        if not io.stop(5.0):
            code = code or 1
    print(f"dspex serve: stopped (exit code {code})", flush=True)
    return int(code)


def _look_up_prices(runtime: Runtime, programs: Any) -> None:
    """Look up the price of every model the programs call, before serving.

    A library process leaves a model's first price until a cost is read (the
    table takes tens of ms to load); a server would then load it mid-traffic
    and, meanwhile, keep its answers alive for pricing. Here it loads once,
    before the heap is frozen, and every answer is priced as it arrives.
    """
    from dspex.programs import settings

    models: set[str] = set()
    for program in programs:
        named = getattr(program, "named_predictors", None)
        for _, predictor in named() if callable(named) else ():
            lm = getattr(predictor, "lm", None) or settings.lm
            for one in (lm, *getattr(lm, "fallbacks", ())):
                model = getattr(one, "model", None)
                if isinstance(model, str):
                    models.add(model)
    for model in sorted(models):
        try:
            runtime.prices.price(model)
        except Exception:  # a broken price table must not stop the server: priced later
            log.warning("could not look up the price of %s", model, exc_info=True)


def _tune_gc(gen0: int) -> None:
    """Freeze the start-up heap and collect the young generation less often.

    A request allocates a few hundred tracked objects and frees nearly all of
    them by reference counting, yet at Python's threshold (700) a busy worker
    ran a collection every few requests, each walking everything in flight:
    about a third of its CPU, for almost no garbage (docs/architecture.md,
    departure 32). Frozen objects (modules, the runtime, the programs) are
    never walked again. ``gen0 == 0`` leaves the collector as it was.
    """
    if gen0 == 0:
        return
    gc.collect()  # what start-up left as garbage goes now, not into the frozen heap
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(gen0, gen1, gen2)


def _stop(runtime: Runtime, io: IOLoop) -> None:
    """Stop the runtime (its LM clients leave the loop), then the loop itself."""
    try:
        runtime.stop()
    finally:
        host_engines(None)
        io.stop(5.0)
