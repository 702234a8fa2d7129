"""The runtime's table of LM clients: one supervised LMClient per distinct client.

A client is keyed by model, endpoint, a digest of its API key and its client
settings, so two ``LM`` objects describing the same client share one actor
(and one single-flight table). The :class:`ClientSlot` of each client belongs
to this table, not to the actor, so it outlives restarts; its config is what
every incarnation starts with, and what ``configure(lm_client=...)`` updates.

The table also keeps the child spec of everything it started under the
LMSupervisor (local model servers and clients, in start order): the desired
state. When the LMSupervisor itself is restarted (it exceeded its restart
intensity), :meth:`LMClients.restore` starts them all again under the new
incarnation before the root registers it, so callers waiting on a slot are
answered by the restored client instead of waiting out their call timeout.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import logging
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import pykka

from dspex._record import Record
from dspex.errors import ActorStoppedError, UsageError
from dspex.supervision import ChildSpec, Clock, start_child

if TYPE_CHECKING:
    from dspex.actors._lm._client import ClientSlot
    from dspex.actors._lm._resilience import Emit, LMClientConfig
    from dspex.config import Settings

__all__ = ["LMClients", "LMSupervisorRef"]

log = logging.getLogger("dspex.runtime")

CALL_TIMEOUT = 10.0  # bound for asks to the LMSupervisor and the clients


class LMSupervisorRef(Protocol):
    """The current LMSupervisor; with ``not_ref``, waits for one other than it."""

    def __call__(self, not_ref: pykka.ActorRef[Any] | None = None) -> pykka.ActorRef[Any]: ...


# NamedTuples, not frozen dataclasses: a dataclass costs ~0.5 ms to define, on every cold start.
class _ClientKey(Record):
    model: str
    api_base: str | None
    key_digest: str | None
    client: tuple[tuple[str, Any], ...]


class _ClientRecord(Record):
    """How a client was built, to rebuild its config when the settings change."""

    child_id: str
    model: str
    client: Mapping[str, Any]
    local: Mapping[str, Any]


class _Wanted(Record):
    """One child the LMSupervisor should run: its spec and, for a client, its key."""

    spec: ChildSpec
    timeout: float  # to start it
    key: _ClientKey | None = None  # a client's
    local: str | None = None  # a local model server's name


class LMClients:
    """Starts, finds, reconfigures and restores the runtime's LM clients; thread-safe.

    ``settings`` returns the runtime's current settings and ``lms`` its
    LMSupervisor (both read on use, so they follow changes and restarts).
    """

    def __init__(
        self,
        settings: Callable[[], Settings],
        lms: LMSupervisorRef,
        *,
        telemetry: Emit | None = None,
        clock: Clock | None = None,
    ) -> None:
        self._settings = settings
        self._lms = lms
        self._telemetry = telemetry
        self._clock = clock
        # Guards the tables below; held only briefly, never while waiting on an
        # actor (restore runs in the root's thread while a start may wait for
        # the restarted LMSupervisor's name, which the root gives only after).
        self._lock = threading.Lock()
        # Serialises starts, so one client (or local server) is started once.
        self._starting = threading.Lock()
        self._slots: dict[_ClientKey, ClientSlot] = {}
        self._records: dict[_ClientKey, _ClientRecord] = {}
        self._local_servers: dict[str, Any] = {}
        self._wanted: dict[str, _Wanted] = {}  # by child id, in start order
        self._placed: dict[str, str] = {}  # child id -> urn of the LMSupervisor restoring it
        self._ids = 0
        self._defaults: tuple[Settings | None, dict[str, dict[str, Any]]] = (None, {})

    def request_defaults(self, model: str) -> Mapping[str, Any]:
        """Request parameters the settings give every call to ``model``.

        ``temperature`` and ``max_tokens`` from the top level, then
        ``models[model].params``. Read per call (so ``configure`` takes effect
        at once) and memoised per settings snapshot: a call pays a dict lookup.
        """
        settings = self._settings()
        memo = self._defaults
        if memo[0] is not settings:
            memo = self._defaults = (settings, {})
        found = memo[1].get(model)
        if found is None:
            found = {}
            if settings.temperature is not None:
                found["temperature"] = settings.temperature
            if settings.max_tokens is not None:
                found["max_tokens"] = settings.max_tokens
            entry = settings.models.get(model)
            if entry is not None:
                found.update(entry.params)
            memo[1][model] = found
        return found

    def slot(
        self, model: str, api_base: str | None, api_key: str | None, client: dict[str, Any]
    ) -> ClientSlot:
        """The slot of ``model``'s client, starting the client on first use.

        ``client`` holds client settings (num_retries, timeout, rpm...) and
        may carry ``provider_options`` and, for ``local/`` models, ``local``.
        """
        if api_key is None:  # a key from the settings' [models."<id>"] table, if any
            entry = self._settings().models.get(model)
            if entry is not None and entry.api_key is not None:
                api_key = entry.api_key.get_secret_value()
        digest = hashlib.sha256(api_key.encode()).hexdigest()[:16] if api_key else None
        key = _ClientKey(model, api_base, digest, tuple(sorted(client.items())))
        with self._lock:
            slot = self._slots.get(key)
        if slot is not None:
            return slot
        from dspex.actors._lm._client import ClientSlot, LMClient
        from dspex.actors._lm._providers._registry import check_model_id

        provider, name = check_model_id(model, where="Runtime.lm_handle")
        spec_options: dict[str, Any] = {"api_key": api_key}
        provider_options = dict(client.pop("provider_options", {}) or {})
        client_model, base = model, api_base
        local_overrides: dict[str, Any] = {}
        if provider == "local":
            from dspex.actors._lm._local_model import LOCAL_CLIENT_SETTINGS, LOCAL_EMBEDDINGS

            embedding = provider_options.get("api") == "embeddings"
            local = self._local_server(
                name, dict(client.pop("local", {}) or {}), embedding=embedding
            )
            client_model, base = local.client_model, local.api_base
            options = local.client_options()
            provider_options = {**options.pop("provider_options", {}), **provider_options}
            if embedding:
                provider_options.update(LOCAL_EMBEDDINGS)
            spec_options.update(options)
            local_overrides = dict(LOCAL_CLIENT_SETTINGS)
        if provider_options:
            spec_options["provider_options"] = provider_options
        config, settings_base = self._config(model, client, local_overrides)
        base = base or settings_base
        with self._starting:
            with self._lock:
                slot = self._slots.get(key)
                if slot is not None:
                    return slot
                self._ids += 1
                child_id = f"lm:{model}#{self._ids}"
            slot = ClientSlot(client_model, base, config)
            # No config= here: each incarnation starts with the slot's, which
            # reconfigure() updates, so a restart keeps the latest settings.
            spec = LMClient.child_spec(
                client_model,
                slot=slot,
                id=child_id,
                telemetry=self._telemetry,
                clock=self._clock,
                **spec_options,
            )
            record = _ClientRecord(child_id, model, dict(client), local_overrides)
            with self._lock:
                self._slots[key] = slot
                self._records[key] = record
            self._start(_Wanted(spec, CALL_TIMEOUT * 3, key=key))
        return slot

    def restore(self, supervisor: pykka.ActorRef[Any]) -> tuple[str, ...]:
        """Start every wanted child again under ``supervisor``, a new LMSupervisor.

        Runs in the thread that started ``supervisor`` (the root's, before it
        registers the new incarnation as ``lms``): local model servers first,
        then the clients, in their first start order, each serving its old
        slot. A client that fails to start is logged and forgotten, and its
        slot closed, so its callers fail fast; the next call starts it afresh.
        Returns the ids of the children restored.
        """
        with self._lock:
            wanted = list(self._wanted.items())
        restored: list[str] = []
        failed: list[str] = []
        for child_id, child in wanted:
            try:
                start_child(supervisor, child.spec, timeout=child.timeout)
            except Exception as exc:
                log.exception("lms: restoring %r failed; it is forgotten", child_id)
                self._forget(
                    child_id,
                    f"the LM client {child_id!r} could not be restarted after its supervisor "
                    f"restarted ({exc}); call again to start it afresh",
                )
                failed.append(child_id)
            else:
                with self._lock:
                    self._placed[child_id] = supervisor.actor_urn
                restored.append(child_id)
        if (restored or failed) and self._telemetry is not None:
            try:
                self._telemetry(
                    "lm.clients.restored",
                    {
                        "clients": tuple(restored),
                        "failed": tuple(failed),
                        "supervisor": supervisor.actor_urn,
                    },
                )
            except Exception:  # telemetry must never fail a restore
                log.exception("lms: emitting lm.clients.restored failed")
        return tuple(restored)

    def wanted(self) -> list[str]:
        """Ids of the children a new LMSupervisor incarnation starts again, in order."""
        with self._lock:
            return list(self._wanted)

    def reconfigure(self) -> None:
        """Apply changed ``lm_client``/``models`` settings to every running client."""
        from dspex.actors._lm._client import Reconfigure
        from dspex.supervision import which_children

        with self._lock:
            clients = [(self._slots[key], record) for key, record in self._records.items()]
        if not clients:
            return
        refs = {c.id: c.ref for c in which_children(self._lms(), timeout=CALL_TIMEOUT)}
        for slot, record in clients:
            config, _ = self._config(record.model, record.client, record.local)
            slot.config = config  # what a restarting client's next incarnation starts with
            ref = refs.get(record.child_id)
            if isinstance(ref, pykka.ActorRef):
                with contextlib.suppress(pykka.ActorDeadError):
                    ref.ask(Reconfigure(config), timeout=CALL_TIMEOUT)

    def snapshot(self) -> dict[str, Any]:
        """Per-client counters (``model@api_base``), for ``Runtime.metrics``."""
        with self._lock:
            slots = list(self._slots.items())
        return {
            f"{key.model}@{key.api_base or 'default'}": dataclasses.asdict(slot.meter.snapshot())
            for key, slot in slots
        }

    def endpoints(self) -> list[tuple[str, Any]]:
        """``(model, running endpoint)`` of every client that has one (for gauges)."""
        with self._lock:
            slots = list(self._slots.values())
        return [(slot.model, e) for slot in slots if (e := slot.endpoint) is not None]

    def close(self) -> None:
        """Close every slot: callers still waiting fail fast (the runtime stopped)."""
        with self._lock:
            slots = list(self._slots.values())
            self._slots.clear()
            self._records.clear()
            self._wanted.clear()
        for slot in slots:
            slot.close()

    def _start(self, child: _Wanted) -> None:
        """Start ``child`` under the current LMSupervisor and remember it as wanted.

        Caller holds ``_starting``. It is wanted before it starts: if the
        LMSupervisor fails meanwhile, its successor's restore starts it too.
        A start refused because the LMSupervisor was going away is made again
        under its successor, unless that one's restore already did.
        """
        child_id = child.spec.id
        with self._lock:
            self._wanted[child_id] = child
        try:
            supervisor = self._lms()
            for _ in range(3):
                try:
                    start_child(supervisor, child.spec, timeout=child.timeout)
                    return
                except ActorStoppedError:
                    supervisor = self._lms(not_ref=supervisor)  # its successor
                    with self._lock:
                        if self._placed.get(child_id) == supervisor.actor_urn:
                            return  # restored there already
            raise ActorStoppedError(
                f"could not start {child_id!r}: the LM supervisor kept restarting"
            )
        except Exception:
            with self._lock:
                restored = child_id in self._placed
            if restored:
                return  # a restarted LMSupervisor's restore started it meanwhile
            self._forget(child_id)
            raise

    def _forget(self, child_id: str, reason: str | None = None) -> None:
        """Drop a child that could not be (re)started; close its slot so callers fail fast."""
        slot = None
        with self._lock:
            child = self._wanted.pop(child_id, None)
            self._placed.pop(child_id, None)
            if child is None:
                return
            if child.local is not None:
                self._local_servers.pop(child.local, None)
            if child.key is not None:
                slot = self._slots.pop(child.key, None)
                self._records.pop(child.key, None)
        if slot is not None:
            slot.close(reason)

    def _config(
        self, model: str, client: Mapping[str, Any], local_overrides: Mapping[str, Any]
    ) -> tuple[LMClientConfig, str | None]:
        """The client config for ``model`` under the current settings, and its api_base."""
        from dspex.actors._lm._resilience import LMClientConfig

        group = self._settings().lm_client_for(model)
        merged = {**group.model_dump(), **local_overrides, **client}
        api_base = merged.pop("api_base", None)
        fields = {f.name for f in dataclasses.fields(LMClientConfig)}
        unknown = sorted(set(merged) - fields)
        if unknown:
            raise UsageError(
                f"LM({model!r}): unknown client setting(s) {unknown}; "
                f"valid ones are {sorted(fields)}"
            )
        return LMClientConfig(**merged), api_base

    def cache_scope(self, model: str) -> str | None:
        """A stable cache identity for a ``local/`` model: its file, not its ephemeral port."""
        provider, _, name = model.partition("/")
        if provider != "local":
            return None
        with self._lock:
            config = self._local_servers.get(name) or self._local_servers.get(
                _embedding_server(name)
            )
        if config is None:
            return None
        return f"local:{model_fingerprint(config.model_path)}"

    def _local_server(self, name: str, options: dict[str, Any], *, embedding: bool = False) -> Any:
        """Start (once) the supervised llama.cpp server for ``local/<name>``; its config.

        ``embedding``: the server that answers embeddings, a second process
        started with ``--embedding True`` (see ``_local_model.LOCAL_EMBEDDINGS``).
        """
        from dspex.actors._lm._local_model import local_model_config, local_model_spec

        key = _embedding_server(name) if embedding else name
        with self._lock:
            config = self._local_servers.get(key)
        if config is not None:
            return config
        with self._starting:
            with self._lock:
                config = self._local_servers.get(key)
            if config is not None:
                return config
            config = local_model_config(name, **options)
            child_id = None
            if embedding:
                config = config.replace(extra_args=(*config.extra_args, "--embedding", "True"))
                child_id = f"local:{config.alias}:embedding"
            spec = local_model_spec(config, id=child_id)
            with self._lock:
                self._local_servers[key] = config
            # Started before any client of it, under the same LMSupervisor.
            self._start(_Wanted(spec, spec.start_timeout + CALL_TIMEOUT, local=key))
        return config


def _embedding_server(name: str) -> str:
    """The table key of ``local/<name>``'s embeddings server."""
    return f"{name}#embedding"


_FINGERPRINT_SPAN = 1 << 20
"""Bytes hashed from each end of a model file: the GGUF header and metadata, and the tail."""


def model_fingerprint(path: Path) -> str:
    """A content identity for a model file: its name, size and a hash of both ends.

    Not its path: a reinstall (a new venv) puts the same file elsewhere, and
    its cached answers should still count. Hashing only the ends keeps this
    fast for multi-gigabyte files; the size and the GGUF header pin the rest.
    """
    stat = path.stat()
    return _fingerprint(str(path), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=32)
def _fingerprint(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256(str(size).encode())
    with open(path, "rb") as file:
        digest.update(file.read(_FINGERPRINT_SPAN))
        if size > _FINGERPRINT_SPAN:
            file.seek(max(_FINGERPRINT_SPAN, size - _FINGERPRINT_SPAN))
            digest.update(file.read(_FINGERPRINT_SPAN))
    return f"{Path(path).name}:{size}:{digest.hexdigest()[:16]}"
