"""The settings schema: every knob the runtime reads, with its default and its checks.

``Settings`` is frozen and rejects unknown keys. Every way of building one
(``Settings(...)``, :func:`~dspex.config.load_settings`, :meth:`Settings.merged`)
goes through :meth:`_Section.__init__`, which turns pydantic's
``ValidationError`` into a :class:`~dspex.errors.ConfigError`.
"""

from __future__ import annotations

from collections.abc import Mapping
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
from dspex.config._secrets import is_secret_key, redact, redact_value
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
    "deep_merge",
    "model_id_problem",
    "split_model_id",
]

PROVIDERS: tuple[str, ...] = ("anthropic", "gemini", "local", "openai")
"""Providers a model id may name: ``"<provider>/<model name>"``."""

# litellm provider prefixes DSPy users write for servers that speak OpenAI's wire format.
_OPENAI_COMPATIBLE = frozenset(
    {
        "ollama",
        "ollama_chat",
        "vllm",
        "hosted_vllm",
        "openrouter",
        "together_ai",
        "lm_studio",
        "llamacpp",
        "groq",
        "deepseek",
    }
)
_PROVIDER_ALIASES = {"google": "gemini", "vertex_ai": "gemini", "claude": "anthropic"}
_NAME_HINTS: tuple[tuple[str, str], ...] = (
    ("gpt", "openai"),
    ("o1", "openai"),
    ("o3", "openai"),
    ("o4", "openai"),
    ("claude", "anthropic"),
    ("gemini", "gemini"),
)


def _bad(message: str, requirement: str) -> PydanticCustomError:
    # Braces in user text must not be taken for template placeholders.
    safe = message.replace("{", "(").replace("}", ")")
    return PydanticCustomError("dspex_value", safe, {"requirement": requirement})


def _model_id_hint(provider: str, name: str, has_slash: bool) -> str:
    if not has_slash:
        for prefix, likely in _NAME_HINTS:
            if provider.lower().startswith(prefix):
                return f"; did you mean '{likely}/{provider}'?"
        return ""
    if provider in _OPENAI_COMPATIBLE:
        return (
            f"; '{provider}' serves OpenAI's wire format: use 'openai/{name}' "
            "and set api_base to the server's URL"
        )
    import difflib  # only a refused value needs a guess

    close = difflib.get_close_matches(provider.lower(), PROVIDERS, n=1, cutoff=0.6)
    guess = _PROVIDER_ALIASES.get(provider) or (close[0] if close else None)
    return f"; did you mean '{guess}/{name}'?" if guess else ""


def model_id_problem(model: str) -> str | None:
    """What is wrong with ``model`` as a ``"provider/name"`` id (with a guess), or None."""
    provider, slash, name = model.partition("/")
    spaced = any(c.isspace() for c in model)
    if slash and provider in PROVIDERS:
        if name and not spaced:
            return None
        hint = f"; no model name follows '{provider}/'" if not name else "; remove the whitespace"
    else:
        hint = _model_id_hint(provider, name, bool(slash))
    return f"must look like 'provider/name' with provider one of {', '.join(PROVIDERS)}{hint}"


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

    def public_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of these settings for logs: every secret is redacted."""
        result: dict[str, Any] = redact(self.model_dump(mode="json"))
        return result


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

    Build it with :func:`~dspex.config.load_settings` (TOML file, ``DSPEX_*``
    environment, keyword arguments) and derive variants with :meth:`merged`.
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

    def merged(self, **overrides: Any) -> Settings:
        """A new Settings with ``overrides`` deep-merged over these, re-validated.

        Overrides are nested dicts or sub-models (only a sub-model's explicitly
        set fields count). Unchanged groups are reused, not re-validated.
        """
        if not overrides:
            return self
        return Settings(**deep_merge(_fields(self), overrides))

    def lm_client_for(self, model: str) -> LMClientSettings:
        """``lm_client`` with the per-model overrides of ``models[model]`` applied."""
        entry = self.models.get(model)
        if entry is None:
            return self.lm_client
        shared = ("api_base", "num_retries", "timeout", "rpm", "tpm")
        updates = {name: getattr(entry, name) for name in shared}
        updates = {name: value for name, value in updates.items() if value is not None}
        return self.lm_client.model_copy(update=updates) if updates else self.lm_client


def _fields(model: BaseModel) -> dict[str, Any]:
    return {name: getattr(model, name) for name in type(model).model_fields}


def _as_override(value: Any) -> Any:
    """A sub-model given as an override contributes only the fields it set."""
    if isinstance(value, BaseModel):
        return {name: getattr(value, name) for name in value.model_fields_set}
    return value


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """``override`` merged into ``base``, recursing where both sides are tables.

    Values of ``base`` may be settings models (expanded only where an override
    reaches into them); scalars and lists in ``override`` replace.
    """
    out = dict(base)
    for key, raw in override.items():
        new = _as_override(raw)
        if not isinstance(new, Mapping):
            out[key] = new
            continue
        old = out.get(key)
        if isinstance(old, BaseModel):
            out[key] = deep_merge(_fields(old), new)
        elif isinstance(old, Mapping):
            out[key] = deep_merge(old, new)
        else:
            out[key] = deep_merge({}, new)
    return out


def build_settings(data: Mapping[str, Any]) -> Settings:
    """``Settings(**data)``; when ``data`` only sets sections, only those are validated.

    The rest keep their defaults, built as validation builds them (pydantic
    validates a default only when its field says ``validate_default``), so
    pydantic never builds the whole schema for, say, ``DSPEX_CACHE__DIR``
    alone: a first runtime starts tens of ms sooner.
    """
    sections = _sections()
    if not all(key in sections and isinstance(value, Mapping) for key, value in data.items()):
        return Settings(**data)
    values: dict[str, Any] = {key: sections[key](**value) for key, value in data.items()}
    for key, section in sections.items():
        if key not in values:
            # A default marked validate_default (cache.dir: ~ expanded) is validated.
            checked = any(f.validate_default for f in section.model_fields.values())
            values[key] = section() if checked else section.model_construct()
    return Settings.model_construct(_fields_set=set(data), **values)


def _sections() -> dict[str, type[_Section]]:
    """Settings' section fields and their models (``lm_client``, ``cache``, ...)."""
    return {
        "lm_client": LMClientSettings,
        "cache": CacheSettings,
        "telemetry": TelemetrySettings,
        "runtime": RuntimeSettings,
        "budget": BudgetSettings,
    }
