"""Runtime services: LM clients, cache, config, telemetry, program runs, the app tree.

Kept light on import (programs import the LM protocol types from here): every
name loads its module on first attribute access, via the ``_LAZY`` table.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dspex._lazy import lazy_face
from dspex.actors._lm._types import (
    Completion,
    LMProtocol,
    LMRequest,
    LMResponse,
    Message,
    Usage,
)

if TYPE_CHECKING:
    from dspex.actors._cache import Cache, CacheClient
    from dspex.actors._cache_store import CacheStats, CacheStore
    from dspex.actors._config_server import ConfigServer, SettingsBox
    from dspex.actors._current import current_runtime, default_runtime, stop_default_runtime
    from dspex.actors._daemon import run_forever
    from dspex.actors._lm._client import ClientSlot, LMClient
    from dspex.actors._lm._embedder import Embedder
    from dspex.actors._lm._handle import LMHandle, request_key
    from dspex.actors._lm._loop import IOLoop, host_engines
    from dspex.actors._lm._model import LM
    from dspex.actors._lm._resilience import (
        CircuitBreaker,
        LMClientConfig,
        LMClientStats,
        RateLimiter,
        RetryPolicy,
        VirtualSleeper,
    )
    from dspex.actors._otel import instrument_otel
    from dspex.actors._program_run import ProgramRun, RunContext, current_run
    from dspex.actors._program_server import (
        DrainReport,
        ProgramServer,
        ServerDirectory,
        ServerHandle,
    )
    from dspex.actors._runtime import Runtime
    from dspex.actors._runtime_registry import active_runtimes
    from dspex.actors._server_requests import ServerFuture, ServerStats
    from dspex.actors._telemetry import Telemetry
    from dspex.actors._telemetry_emitter import TelemetryEmitter

_LAZY: dict[str, str] = {
    "Cache": "_cache",
    "CacheClient": "_cache",
    "CacheStats": "_cache_store",
    "CacheStore": "_cache_store",
    "CircuitBreaker": "_lm",
    "ClientSlot": "_lm",
    "ConfigServer": "_config_server",
    "DrainReport": "_program_server",
    "Embedder": "_lm",
    "IOLoop": "_lm",
    "LM": "_lm",
    "LMClient": "_lm",
    "LMClientConfig": "_lm",
    "LMClientStats": "_lm",
    "LMHandle": "_lm",
    "ProgramRun": "_program_run",
    "ProgramServer": "_program_server",
    "RateLimiter": "_lm",
    "RetryPolicy": "_lm",
    "RunContext": "_program_run",
    "Runtime": "_runtime",
    "ServerDirectory": "_program_server",
    "ServerFuture": "_server_requests",
    "ServerHandle": "_program_server",
    "ServerStats": "_server_requests",
    "SettingsBox": "_config_server",
    "Telemetry": "_telemetry",
    "TelemetryEmitter": "_telemetry_emitter",
    "VirtualSleeper": "_lm",
    "active_runtimes": "_runtime_registry",
    "current_run": "_program_run",
    "current_runtime": "_current",
    "instrument_otel": "_otel",
    "default_runtime": "_current",
    "host_engines": "_lm",
    "request_key": "_lm",
    "run_forever": "_daemon",
    "stop_default_runtime": "_current",
}

__all__ = [
    "LM",
    "Cache",
    "CacheClient",
    "CacheStats",
    "CacheStore",
    "CircuitBreaker",
    "ClientSlot",
    "Completion",
    "ConfigServer",
    "DrainReport",
    "Embedder",
    "IOLoop",
    "LMClient",
    "LMClientConfig",
    "LMClientStats",
    "LMHandle",
    "LMProtocol",
    "LMRequest",
    "LMResponse",
    "Message",
    "ProgramRun",
    "ProgramServer",
    "RateLimiter",
    "RetryPolicy",
    "RunContext",
    "Runtime",
    "ServerDirectory",
    "ServerFuture",
    "ServerHandle",
    "ServerStats",
    "SettingsBox",
    "Telemetry",
    "TelemetryEmitter",
    "Usage",
    "VirtualSleeper",
    "active_runtimes",
    "current_run",
    "current_runtime",
    "default_runtime",
    "host_engines",
    "instrument_otel",
    "request_key",
    "run_forever",
    "stop_default_runtime",
]


__getattr__, __dir__ = lazy_face(__name__, globals(), _LAZY)
