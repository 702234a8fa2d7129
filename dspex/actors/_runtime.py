"""The Runtime: the application supervision tree of DESIGN.md section 2.

``dspex.start()`` builds it::

    root (Supervisor, one_for_one)
      config        ConfigServer      validated settings
      telemetry     Telemetry         events, metrics, LM history ring
      cache         Cache             disk tier of the response cache
      lms           Supervisor        one LMClient (and local model server) per model
      programs      DynamicSupervisor transient ProgramRun actors
      servers       DynamicSupervisor named ProgramServer actors
      coordinators  DynamicSupervisor optimizer coordinators

Components outside the tree hold names in the runtime's own Registry, never
raw refs, so they follow restarts. State that must survive a restart (the
cache store, each model's ClientSlot) belongs to the Runtime, not the actor.
Program runs (``Runtime.run``) live in :mod:`dspex.actors._runtime_runs`.
What is served is such state too: the ServerDirectory remembers every named
program, and each new ``servers`` incarnation serves them again; likewise the
client table (LMClients) remembers every LM client, and each new ``lms``
incarnation starts them again (``_restoring``).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import sys
import threading
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol, TextIO

import pykka

from dspex.actors._cache import Cache, CacheClient
from dspex.actors._cache_store import CacheStore
from dspex.actors._config_server import ConfigServer, SettingsBox
from dspex.actors._lm._budget import Budget
from dspex.actors._lm._clients import LMClients
from dspex.actors._lm._prices import Price, PriceTable, settings_prices
from dspex.actors._remote import RemoteServers, remote_branches, serve_backend
from dspex.actors._runtime_registry import register, unregister
from dspex.actors._runtime_runs import ProgramRuns
from dspex.actors._server_stream import open_stream
from dspex.actors._telemetry import Telemetry, render_history
from dspex.actors._telemetry_emitter import TelemetryEmitter
from dspex.errors import ActorStoppedError, RegistryError, UsageError
from dspex.supervision import (
    ChildSpec,
    Clock,
    DynamicSupervisor,
    EventBus,
    Registry,
    Strategy,
    Supervisor,
    await_started,
    call,
    shutdown,
)

if TYPE_CHECKING:
    from dspex.actors._lm._handle import LMHandle
    from dspex.actors._program_server import ServerDirectory, ServerHandle
    from dspex.actors._server_requests import ServerFuture
    from dspex.config import Settings
    from dspex.supervision import TreeNode

__all__ = ["Runtime"]

log = logging.getLogger("dspex.runtime")

CALL_TIMEOUT = 10.0  # bound for internal asks to runtime services
LMS_MAX_RESTARTS = 10  # client restarts the LMSupervisor allows within max_seconds


class Runtime(ProgramRuns):
    """A running dspex application: its supervision tree and the services in it.

    Create with :func:`dspex.start` (or ``Runtime(settings).start()``). Every
    public method may be called from any thread.
    """

    def __init__(self, settings: Settings, *, clock: Clock | None = None) -> None:
        self.box = SettingsBox(settings)
        self.clock = clock
        self.registry = Registry()
        self.events = EventBus()
        self.telemetry = TelemetryEmitter(lambda: self.registry.whereis("telemetry"))
        self.events.subscribe(self.telemetry.sink)
        self.cache_store = _make_store(settings)
        self.cache = CacheClient(self.cache_store, lambda: self.registry.whereis("cache"))
        self._root: pykka.ActorRef[Any] | None = None
        self._lock = threading.Lock()
        # The client table outlives the ``lms`` supervisor: it remembers every
        # client it started, and every new incarnation starts them again.
        self.clients = LMClients(
            lambda: self.box.settings,
            self._lms,
            telemetry=self.telemetry,
            clock=clock,
        )
        self._prices_memo: tuple[Any, dict[str, Price]] = (None, {})
        self.prices = PriceTable(self._own_prices)
        # The runtime-wide budget, from the settings at start (see docs/cost.md).
        self.budget = Budget(
            max_cost_usd=settings.budget.max_cost_usd,
            max_tokens=settings.budget.max_tokens,
            scope="runtime",
        )
        self._init_runs(settings)
        self._stopping = threading.Event()
        self.started_at: float | None = None
        # Servers on other backends (serve(..., backend="ray")), made on first use.
        self.remote_servers: dict[str, RemoteServers] = {}

    @functools.cached_property
    def servers(self) -> ServerDirectory:
        """The named program servers; made on first use (a process that serves nothing
        never loads them). It outlives the ``servers`` supervisor: it remembers what is
        served, and every new incarnation of the supervisor serves it again."""
        from dspex.actors._program_server import ServerDirectory

        return ServerDirectory(
            lambda: self.whereis("servers"),
            self.registry,
            telemetry=self.telemetry,
            runtime=self,
            restores=lambda: self.running,
        )

    def _restore_servers(self, supervisor: pykka.ActorRef[Any]) -> tuple[str, ...]:
        """Serve again what was served; nothing if no server was ever asked for."""
        if "servers" not in self.__dict__:
            return ()
        return self.servers.restore(supervisor)

    # -- lifecycle ----------------------------------------------------------------

    @property
    def settings(self) -> Settings:
        """The current validated settings (a frozen snapshot)."""
        return self.box.settings

    @property
    def running(self) -> bool:
        root = self._root
        return root is not None and root.is_alive() and not self._stopping.is_set()

    def start(self) -> Runtime:
        """Start the supervision tree; returns self once every service has started."""
        with self._lock:
            if self._root is not None:
                raise UsageError("this Runtime was already started; create a new one")
            s = self.settings
            rt, tel = s.runtime, s.telemetry
            if tel.otel:
                from dspex.actors._otel import instrument, tracing

                if tracing() is None:  # an explicit instrument_otel(...) keeps its providers
                    instrument()
            reg, events, clock = self.registry, self.events, self.clock
            # A group stops its children one by one, so give it several children's time.
            group_shutdown = max(30.0, rt.shutdown_timeout * 4)

            def dynamic(child_id: str, **options: Any) -> ChildSpec:
                """A dynamic supervisor child, registered under its id."""
                options.setdefault("events", events)
                return DynamicSupervisor.spec(
                    child_id,
                    max_restarts=rt.max_restarts,
                    max_seconds=rt.max_seconds,
                    registry=reg,
                    clock=clock,
                    register_as=child_id,
                    shutdown=group_shutdown,
                    **options,
                )

            children = [
                ChildSpec("config", lambda: ConfigServer.start(self.box), name="config"),
                ChildSpec(
                    "telemetry",
                    lambda: Telemetry.start(
                        format=tel.format,
                        level=tel.level,
                        history_size=tel.history_size,
                        latency_window=tel.latency_window,
                    ),
                    name="telemetry",
                ),
                ChildSpec(
                    "cache", lambda: Cache.start(self.cache_store, self.telemetry), name="cache"
                ),
                _restoring(
                    Supervisor.spec(
                        "lms",
                        children=[],
                        strategy=Strategy.ONE_FOR_ONE,
                        max_restarts=LMS_MAX_RESTARTS,
                        max_seconds=rt.max_seconds,
                        registry=reg,
                        events=events,
                        clock=clock,
                        register_as="lms",
                        shutdown=group_shutdown,
                    ),
                    self.clients,
                ),
                dynamic(
                    "programs",
                    max_children=rt.max_runs + rt.warm_runs,
                    # Runs are temporary (never restarted) and report themselves as
                    # program.run.*; two supervisor events per run would only add cost.
                    events=None,
                ),
                _restoring(dynamic("servers"), _Lazy(self._restore_servers)),
                dynamic("coordinators"),
            ]
            self._root = Supervisor.start_link(
                children=children,
                strategy=Strategy.ONE_FOR_ONE,
                max_restarts=rt.max_restarts,
                max_seconds=rt.max_seconds,
                name="dspex",
                registry=reg,
                events=events,
                clock=clock,
            )
            self.started_at = time.time()
        register(self, self.stop)
        if self.settings.runtime.warm_runs:
            self._refill_spares(self.whereis("programs"))
        return self

    def stop(self, timeout: float | None = None) -> bool:
        """Stop the tree in reverse start order; True if everything stopped in time.

        Idempotent. Pending cache writes are flushed by the Cache actor's stop.
        """
        with self._lock:
            root, self._root = self._root, None
            if root is None:
                return True
            self._stopping.set()
        unregister(self)
        for remote in list(self.remote_servers.values()):
            try:
                remote.close_all()
            except Exception:  # stopping the local tree must not depend on a cluster
                log.exception("dspex runtime: stopping remote program servers failed")
        self.telemetry.flush()  # events queued without a nudge still reach the logs
        budget = (
            timeout
            if timeout is not None
            else max(60.0, self.settings.runtime.shutdown_timeout * 8)
        )
        ok = shutdown(root, budget)
        self.clients.close()
        self.cache_store.close()
        if not ok:
            log.warning("dspex runtime: some actors did not stop within %.1fs", budget)
        return ok

    def __enter__(self) -> Runtime:
        if self._root is None:
            self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<dspex.Runtime {state} lm={self.settings.lm!r}>"

    # -- services -------------------------------------------------------------------

    def whereis(self, name: str) -> pykka.ActorRef[Any]:
        """The current incarnation of a named service.

        A service being restarted is waited for (up to ``CALL_TIMEOUT``); a
        name that no service of this runtime ever had raises ``RegistryError``
        at once, and a stopped runtime ``ActorStoppedError``.
        """
        ref = self.registry.whereis(name)
        if ref is None:
            if not self.running:
                raise ActorStoppedError(
                    "the dspex runtime is not running; start one with dspex.start() "
                    "or dspex.configure(...)"
                )
            if not self.registry.known(name):
                raise RegistryError(
                    f"rt.whereis({name!r}): this runtime has no service named {name!r}; "
                    f"its services are {self.registry.names()}"
                )
            ref = self.registry.await_name(name, timeout=CALL_TIMEOUT)
            if ref is None:
                raise ActorStoppedError(
                    f"runtime service {name!r} did not come back within {CALL_TIMEOUT}s"
                )
        return ref

    def _lms(self, not_ref: pykka.ActorRef[Any] | None = None) -> pykka.ActorRef[Any]:
        """The LMSupervisor; with ``not_ref``, its successor (waits for the root's restart)."""
        if not_ref is None:
            return self.whereis("lms")
        ref = self.registry.await_name("lms", CALL_TIMEOUT, not_ref=not_ref)
        if ref is None:
            raise ActorStoppedError(
                f"the LM supervisor did not come back within {CALL_TIMEOUT}s"
                if self.running
                else "the dspex runtime is not running; start one with dspex.start()"
            )
        return ref

    def configure(self, **overrides: Any) -> Settings:
        """Validate and apply settings changes (raises ConfigError); returns the new settings.

        Changed ``cache`` settings rebuild the cache store; changed
        ``lm_client``/``models`` settings reconfigure the running LM clients.
        """
        result: Settings = call(
            self.whereis("config"), "configure", timeout=CALL_TIMEOUT, **overrides
        )
        if "cache" in overrides:
            self.reconfigure_cache()
        if "lm_client" in overrides or "models" in overrides:
            self.clients.reconfigure()
        return result

    def tree(self, timeout: float = CALL_TIMEOUT) -> TreeNode:
        """The live supervision tree (``str()`` renders it as text)."""
        root = self._root
        if root is None:
            raise ActorStoppedError("the dspex runtime is not running")
        from dspex.supervision import tree  # only a tree query loads the walker

        local = tree(root, timeout=timeout)
        remote = [
            branch
            for directory in list(self.remote_servers.values())
            if (branch := directory.tree(timeout)) is not None
        ]
        remote.extend(remote_branches(timeout))
        if not remote:
            return local
        return dataclasses.replace(local, children=local.children + tuple(remote))

    def metrics(self, timeout: float = CALL_TIMEOUT) -> dict[str, Any]:
        """A snapshot: per-model requests/errors/latency/tokens, runs, restarts, cache."""
        self.telemetry.flush()
        snapshot: dict[str, Any] = call(self.whereis("telemetry"), "metrics", timeout=timeout)
        stats = self.cache_store.stats()
        snapshot["cache"] = {**stats._asdict(), "hit_rate": round(stats.hit_rate, 4)}
        snapshot["lm_clients"] = self.clients.snapshot()
        snapshot["budget"] = self.budget.snapshot()
        snapshot["uptime_s"] = round(time.time() - self.started_at, 3) if self.started_at else 0.0
        return snapshot

    def history(self, n: int = 1) -> list[Any]:
        """The last ``n`` LM calls recorded by telemetry."""
        result: list[Any] = call(self.whereis("telemetry"), "history", n, timeout=CALL_TIMEOUT)
        return result

    def inspect_history(self, n: int = 1, file: TextIO | None = None) -> str:
        """Print the last ``n`` LM calls in DSPy's layout and return them as plain text.

        Printed to ``file``, or to stdout (in colour when it is a terminal, as DSPy
        colours it). The calls come from a bounded ring, not a global list.
        """
        entries = self.history(n)
        text = render_history(entries)
        out = file if file is not None else sys.stdout
        colors = file is None and _is_tty(out)
        out.write(render_history(entries, colors=True) if colors else text)
        return text

    def flush(self, timeout: float = CALL_TIMEOUT) -> None:
        """Write pending cache entries to disk and let telemetry catch up."""
        from dspex.actors._cache import Flush

        self.whereis("cache").ask(Flush(), timeout=timeout)
        self.telemetry.flush()
        call(self.whereis("telemetry"), "drain", timeout=timeout)  # prices nothing

    def reconfigure_cache(self) -> None:
        """Rebuild the cache store from the current settings (``configure_cache``)."""
        new = _make_store(self.settings)
        old = call(self.whereis("cache"), "adopt", new, timeout=CALL_TIMEOUT)
        self.cache_store = new
        self.cache.store = new
        old.close()

    # -- named program servers (DESIGN.md section 4) -------------------------------
    # ``name`` is positional-only so a program input called ``name`` still works.

    def serve(
        self, name: str, program: Any, /, *, backend: str = "local", **options: Any
    ) -> ServerHandle:
        """Start a long-lived named actor serving ``program`` under ProgramServers.

        Options: ``max_concurrency`` (requests executing at once),
        ``queue_limit`` (waiting beyond those; past it callers get
        ``OverloadedError`` at once), ``restart`` (TRANSIENT or TEMPORARY).
        ``backend="ray"`` serves ``replicas=N`` copies as Ray actors instead
        (see docs/distributed.md).
        """
        if backend == "local":
            return self.servers.serve(name, program, **options)
        if "servers" in self.__dict__ and name in self.servers.names():
            raise UsageError(
                f"serve({name!r}, backend={backend!r}): a local program server named {name!r} "
                "already runs; stop it first or pick another name"
            )
        return self._remote(backend).serve(name, program, **options)  # type: ignore[no-any-return]

    def _remote(self, backend: str) -> RemoteServers:
        with self._lock:
            directory = self.remote_servers.get(backend)
            if directory is None:
                directory = self.remote_servers[backend] = serve_backend(backend)(self)
            return directory

    def _remote_for(self, name: str) -> RemoteServers | None:
        for directory in list(self.remote_servers.values()):
            if name in directory.names():
                return directory
        return None

    def ask(self, name: str, /, **inputs: Any) -> ServerFuture:
        """Send a request to a served program; a future of its Prediction."""
        remote = self._remote_for(name) if self.remote_servers else None
        if remote is not None:
            return remote.ask(name, **inputs)  # type: ignore[no-any-return]
        return self.servers.ask(name, **inputs)

    def stream(self, name: str, /, **inputs: Any) -> Any:
        """Send a request to a served program and iterate its output as it is generated.

        Call it from async code: the request is admitted at once (raising
        ``OverloadedError`` as ``ask`` would), and the async iterator yields
        ``StreamResponse`` pieces of every output field of the program's
        predictors, then the ``Prediction`` (or raises the program's error).
        See docs/streaming.md.
        """
        return open_stream(self, name, inputs)

    def tell(self, name: str, /, **inputs: Any) -> Any:
        """Fire and forget; the result or error goes to telemetry. Returns the request id."""
        remote = self._remote_for(name) if self.remote_servers else None
        if remote is not None:
            return remote.tell(name, **inputs)
        return self.servers.tell(name, **inputs)

    def reload(self, name: str, program_or_path: Any, /) -> Any:
        """Swap the served program (a Module or a saved JSON path); in-flight requests finish
        on the old version."""
        return self.servers.reload(name, program_or_path)

    def drain_servers(self, timeout: float = 30.0) -> Any:
        """Stop accepting work on every server and wait for in-flight requests."""
        return self.servers.drain_all(timeout)

    def run_forever(self, **options: Any) -> int:
        """Daemon mode: block until SIGTERM/SIGINT, drain, flush, stop in order; exit code."""
        from dspex.actors._daemon import run_forever

        return run_forever(self, **options)

    # -- LM clients ---------------------------------------------------------------

    def lm_handle(
        self,
        model: str,
        *,
        api_base: str | None = None,
        api_key: str | None = None,
        client: Mapping[str, Any] | None = None,
        defaults: Mapping[str, Any] | None = None,
        cache: bool = True,
    ) -> LMHandle:
        """A handle on ``model``'s supervised client, starting the client on first use.

        ``client`` overrides client settings (num_retries, timeout, rpm, tpm...);
        ``defaults`` are request parameters (temperature, max_tokens...).
        """
        from dspex.actors._lm._handle import LMHandle
        from dspex.actors._lm._slot import Memo

        slot = self.clients.slot(model, api_base, api_key, dict(client or {}))
        use_cache = cache and self.settings.cache.enabled
        return LMHandle(
            slot,
            kwargs=dict(defaults or {}),
            telemetry=self.telemetry,
            cache_get=self.cache.get if use_cache else None,
            cache_put=self.cache.put if use_cache else None,
            memo=Memo(self.cache.peek_memory, self.cache.put_memory) if use_cache else None,
            label=model,
            cache_scope=self.clients.cache_scope(model),
            prices=self.prices,
            budget=self.budget,
        )

    def _own_prices(self) -> Mapping[str, Price]:
        """The settings' per-model prices, re-read only when the settings change."""
        settings = self.box.settings
        memo = self._prices_memo
        if memo[0] is not settings:
            memo = self._prices_memo = (settings, settings_prices(settings))
        return memo[1]

    def request_defaults(self, model: str) -> Mapping[str, Any]:
        """Request parameters the settings give every call to ``model`` (see LMClients)."""
        return self.clients.request_defaults(model)


class _Restorer(Protocol):
    def restore(self, supervisor: pykka.ActorRef[Any]) -> tuple[str, ...]: ...


class _Lazy:
    """A :class:`_Restorer` that calls ``restore`` (e.g. a directory made on first use)."""

    def __init__(self, restore: Callable[[pykka.ActorRef[Any]], tuple[str, ...]]) -> None:
        self.restore = restore


def _restoring(spec: ChildSpec, directory: _Restorer) -> ChildSpec:
    """``spec`` of a supervisor whose wanted children ``directory`` starts on each start.

    For ``servers`` the ServerDirectory re-serves every named program; for
    ``lms`` the client table starts every LM client (and local model server)
    again. The start function runs in the root supervisor's thread: the new
    incarnation is started, then (before the root registers it under its
    name) the directory restores its children under it.
    """
    start = spec.start

    def start_and_restore() -> pykka.ActorRef[Any]:
        ref = start()
        try:
            await_started(ref, spec.start_timeout)
        except BaseException:
            shutdown(ref, spec.shutdown)
            raise
        directory.restore(ref)
        return ref

    return dataclasses.replace(spec, start=start_and_restore)


def _make_store(settings: Settings) -> CacheStore:
    cache = settings.cache
    return CacheStore(
        memory_max_entries=cache.memory_max_entries,
        memory_enabled=cache.enabled and cache.memory_enabled,
        disk_dir=cache.dir if cache.enabled and cache.disk_enabled else None,
        disk_max_bytes=cache.disk_max_bytes,
    )


def _is_tty(stream: Any) -> bool:
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty()) if callable(isatty) else False
    except ValueError:  # a closed stream
        return False
