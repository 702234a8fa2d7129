"""The pydantic settings schema: every knob's type, bounds, description and coercion.

The settings values users hold are the plain classes of ``_values`` (same
names, same fields), checked there when plainly valid. Everything else comes
here: these models coerce it or fail, and :meth:`_Section.__init__` turns
pydantic's ``ValidationError`` into the one :class:`~dspex.errors.ConfigError`.
Their ``model_fields`` also serve docs and error hints (``Settings.model_fields``
on a plain class reads them). tests/test_config.py checks both sides agree.
"""

from __future__ import annotations

from contextvars import ContextVar
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic_core import PydanticCustomError

from dspex.config._explain import config_error, dotted, kwarg_form
from dspex.config._model_id import PROVIDERS, model_id_problem
from dspex.config._secrets import is_secret_key, redact_value
from dspex.errors import ConfigError

__all__ = [
    "PROVIDERS",
    "CacheSettings",
    "LMClientSettings",
    "ModelSettings",
    "RaySettings",
    "RuntimeSettings",
    "Settings",
    "TelemetrySettings",
    "model_id_problem",
    "split_model_id",
]


def _bad(message: str, requirement: str) -> PydanticCustomError:
    # Braces in user text must not be taken for template placeholders.
    safe = message.replace("{", "(").replace("}", ")")
    return PydanticCustomError("dspex_value", safe, {"requirement": requirement})


def split_model_id(model: str) -> tuple[str, str]:
    """Split ``"provider/name"`` into its provider and model name, checking both.

    Raises ``ValueError`` (a ``PydanticCustomError``) saying what a model id
    must look like; inside a settings model that becomes a ``ConfigError``.
    """
    problem = model_id_problem(model)
    if problem is not None:
        raise _bad(problem, "a model id like 'openai/gpt-4o-mini'")
    provider, _, name = model.partition("/")
    return provider, name


def _check_model_id(model: str) -> str:
    split_model_id(model)
    return model


def _check_url(url: str) -> str:
    if not url.startswith(("http://", "https://")):
        raise _bad("must be an http:// or https:// URL", "a URL like 'http://127.0.0.1:8000/v1'")
    return url.rstrip("/")


def _lower(value: Any) -> Any:
    return value.lower() if isinstance(value, str) else value


def _check_params(params: dict[str, Any]) -> dict[str, Any]:
    for key in params:
        if is_secret_key(str(key)):
            raise _bad(
                f"key '{key}' looks like a secret, and params are not redacted",
                "a table without secrets (put the key in the model's api_key setting)",
            )
    return params


ModelId = Annotated[str, AfterValidator(_check_model_id)]
Url = Annotated[str, AfterValidator(_check_url)]
PositiveInt = Annotated[int, Field(ge=1)]
PositiveFloat = Annotated[float, Field(gt=0)]
NonNegativeInt = Annotated[int, Field(ge=0)]


_VALIDATING: ContextVar[bool] = ContextVar("dspex_config_validating", default=False)


class _Section(BaseModel):
    """Base of every settings model: frozen, strict about keys, errors as ConfigError."""

    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        # Build each validator on first use, not at import: the whole schema costs
        # tens of ms, and a process's first runtime usually validates one section.
        defer_build=True,
        hide_input_in_errors=True,  # the chained ValidationError must not echo secrets
    )

    # Where this model sits in Settings, so errors name the full dotted key.
    _path: ClassVar[tuple[str, ...]] = ()

    def __init__(self, /, **data: Any) -> None:
        # pydantic calls this __init__ for nested sections too; only the outermost
        # call translates, so nested errors reach it with their full location.
        if _VALIDATING.get():
            super().__init__(**data)
            return
        token = _VALIDATING.set(True)
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise config_error(exc, type(self)._path, Settings) from exc
        finally:
            _VALIDATING.reset(token)

    def __setattr__(self, name: str, value: Any) -> None:
        path = (*type(self)._path, name)
        raise ConfigError(
            f"{type(self).__name__} is frozen, so {dotted(path)} cannot be assigned. "
            f"Derive new settings instead: settings.merged({kwarg_form(path)}).",
            key=dotted(path),
            value=redact_value(path, value),
        )


class LMClientSettings(_Section):
    """Defaults for every LM client actor: retries, timeouts, breaker, rate limits, HTTP."""

    _path = ("lm_client",)

    num_retries: NonNegativeInt = Field(default=3, description="retries after a retryable failure")
    timeout: PositiveFloat = Field(default=60.0, description="seconds for one HTTP request")
    backoff_base: PositiveFloat = Field(
        default=0.25, description="upper bound of the first (full-jitter) retry delay, seconds"
    )
    backoff_max: PositiveFloat = Field(default=30.0, description="longest retry delay, seconds")
    rpm: PositiveInt | None = Field(
        default=None, description="requests per minute; None = unlimited"
    )
    tpm: PositiveInt | None = Field(default=None, description="tokens per minute; None = unlimited")
    breaker_failure_threshold: PositiveInt = Field(
        default=5, description="consecutive failures that open the circuit breaker"
    )
    breaker_reset_timeout: PositiveFloat = Field(
        default=30.0, description="seconds the breaker stays open before a half-open probe"
    )
    max_in_flight: PositiveInt = Field(
        default=512, description="concurrent HTTP requests per client"
    )
    api_base: Url | None = Field(
        default=None, description="base URL for every model; None = provider's"
    )
    transport: Annotated[Literal["auto", "httptools", "h11", "httpx"], BeforeValidator(_lower)] = (
        Field(
            default="auto",
            description="HTTP client: auto = httptools, httpx for URLs the environment proxies",
        )
    )
    max_response_bytes: PositiveInt = Field(
        default=32 * 1024 * 1024,
        description="largest response body once decoded; more fails the call, not retried",
    )

    @field_validator("backoff_max")
    @classmethod
    def _max_not_below_base(cls, value: float, info: ValidationInfo) -> float:
        base = info.data.get("backoff_base")
        if base is not None and value < base:
            raise _bad(
                f"must be >= backoff_base ({base})", f"a number of seconds >= backoff_base ({base})"
            )
        return value


class ModelPrice(_Section):
    """A model's price in USD per million tokens (overrides the genai-prices table)."""

    _path = ("models", "<model>", "price")

    input: Annotated[float, Field(ge=0)] = Field(description="USD per million prompt tokens")
    output: Annotated[float, Field(ge=0)] = Field(description="USD per million completion tokens")


class ModelSettings(_Section):
    """Per-model overrides of ``lm_client`` plus the model's key and extra request params."""

    _path = ("models", "<model>")

    api_base: Url | None = Field(default=None, description="base URL, e.g. a vLLM or Ollama server")
    api_key: SecretStr | None = Field(
        default=None, description="API key; None = provider's env var"
    )
    rpm: PositiveInt | None = Field(default=None, description="requests per minute for this model")
    tpm: PositiveInt | None = Field(default=None, description="tokens per minute for this model")
    num_retries: NonNegativeInt | None = Field(default=None, description="overrides lm_client")
    timeout: PositiveFloat | None = Field(default=None, description="overrides lm_client, seconds")
    params: Annotated[dict[str, Any], AfterValidator(_check_params)] = Field(
        default_factory=dict, description="extra request parameters sent with every call"
    )
    fallbacks: list[ModelId] = Field(
        default_factory=list,
        description="models an LM of this id falls back to, in order (see docs/fallback.md)",
    )
    fallback_on_timeout: bool = Field(
        default=False, description="also fall back when a call times out"
    )
    price: ModelPrice | None = Field(
        default=None, description="USD per million tokens; None = genai-prices' table"
    )


class CacheSettings(_Section):
    """The LM response cache: a memory LRU in front of an on-disk SQLite tier."""

    _path = ("cache",)

    enabled: bool = Field(default=True, description="cache LM responses at all")
    memory_enabled: bool = Field(default=True, description="use the in-memory LRU tier")
    disk_enabled: bool = Field(default=True, description="use the on-disk tier")
    dir: Path = Field(
        default=Path("~/.dspex_cache"), validate_default=True, description="on-disk cache directory"
    )
    memory_max_entries: PositiveInt = Field(default=100_000, description="entries kept in memory")
    disk_max_bytes: PositiveInt = Field(default=1 << 30, description="size bound of the disk tier")

    @field_validator("dir")
    @classmethod
    def _expand_user(cls, value: Path) -> Path:
        return value.expanduser()


class TelemetrySettings(_Section):
    """Structured log output, the LM history ring and latency sampling."""

    _path = ("telemetry",)

    format: Annotated[Literal["json", "console", "off"], BeforeValidator(_lower)] = Field(
        default="console", description="how events are rendered; off = no log output"
    )
    level: Annotated[
        Literal["debug", "info", "warning", "error", "critical"], BeforeValidator(_lower)
    ] = Field(default="warning", description="lowest event level written")
    history_size: PositiveInt = Field(default=200, description="LM calls kept for inspect_history")
    latency_window: PositiveInt = Field(
        default=1024, description="latency samples kept for p50/p95"
    )
    otel: bool = Field(
        default=False, description="export OpenTelemetry spans and metrics (dspex[otel])"
    )


class BudgetSettings(_Section):
    """A runtime-wide spending limit: once spent, no new LM call starts."""

    _path = ("budget",)

    max_cost_usd: PositiveFloat | None = Field(
        default=None, description="USD all LM calls of the runtime may spend; None = no limit"
    )
    max_tokens: PositiveInt | None = Field(
        default=None, description="tokens all LM calls of the runtime may use; None = no limit"
    )


class RaySettings(_Section):
    """Where the Ray backend's work goes (``runtime.backend = "ray"``; needs ``dspex[ray]``)."""

    _path = ("runtime", "ray")

    address: str | None = Field(
        default=None,
        description=(
            "Ray cluster to join: 'auto' (the cluster this machine belongs to), "
            "'ray://host:10001', or None to start a local one"
        ),
    )
    workers: PositiveInt | None = Field(
        default=None, description="Ray worker actors a pool spreads units over; None = cluster CPUs"
    )
    max_restarts: NonNegativeInt = Field(
        default=3, description="times Ray restarts a dead worker actor (its units are re-sent)"
    )


class RuntimeSettings(_Section):
    """The supervision tree: run bounds, timeouts and the root's restart intensity."""

    _path = ("runtime",)

    max_runs: PositiveInt = Field(
        default=1024, description="concurrent program runs (max_children)"
    )
    run_start_timeout: PositiveFloat = Field(
        default=5.0, description="seconds to wait for a run to start"
    )
    shutdown_timeout: PositiveFloat = Field(
        default=5.0, description="seconds per child at shutdown"
    )
    max_restarts: NonNegativeInt = Field(
        default=3, description="restarts allowed within max_seconds"
    )
    max_seconds: PositiveFloat = Field(default=5.0, description="window of the restart intensity")
    warm_runs: NonNegativeInt = Field(
        default=0,
        description=(
            "run actors kept pre-started (each serves one run) to hide thread start-up; "
            "only runs with a deadline and streamed runs use a run actor"
        ),
    )
    spare_threads: NonNegativeInt = Field(
        default=256,
        description="extra threads Evaluate/batch may start for examples parked in a retry wait",
    )
    backend: Annotated[Literal["local", "ray"], BeforeValidator(_lower)] = Field(
        default="local",
        description="where Evaluate and optimizers run units: 'local' threads or 'ray'",
    )
    ray: RaySettings = Field(default_factory=RaySettings)


class Settings(_Section):
    """Everything the runtime needs; frozen, so a snapshot can cross threads.

    The schema of :class:`dspex.config.Settings` (see ``_values``).
    """

    lm: ModelId | None = Field(
        default=None, description="default model id, e.g. 'openai/gpt-4o-mini'"
    )
    adapter: Annotated[Literal["chat", "json", "xml"] | None, BeforeValidator(_lower)] = Field(
        default=None, description="default adapter; None = chat with JSON fallback"
    )
    temperature: Annotated[float, Field(ge=0, le=2)] | None = Field(
        default=None, description="default sampling temperature; None = provider's"
    )
    max_tokens: PositiveInt | None = Field(
        default=None, description="default completion token limit"
    )
    track_usage: bool = Field(default=False, description="attach token usage to predictions")
    lm_client: LMClientSettings = Field(default_factory=LMClientSettings)
    models: dict[ModelId, ModelSettings] = Field(
        default_factory=dict, description="per-model overrides keyed by model id"
    )
    cache: CacheSettings = Field(default_factory=CacheSettings)
    telemetry: TelemetrySettings = Field(default_factory=TelemetrySettings)
    runtime: RuntimeSettings = Field(default_factory=RuntimeSettings)
    budget: BudgetSettings = Field(default_factory=BudgetSettings)
