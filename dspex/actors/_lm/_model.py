"""``dspex.LM``: the user-facing language model object, DSPy-compatible.

An ``LM`` is a light description (model id, endpoint, defaults). It does no
I/O itself: each call finds the current Runtime and that runtime's
supervised client for this model, so the same ``LM`` works under
``dspex.start()``, the lazily started default runtime, or inside a run.
"""

from __future__ import annotations

import dataclasses
import threading
import weakref
from collections.abc import Callable, Mapping, Sequence
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, TextIO

from dspex.actors._callbacks import active_callbacks, ainvoke, check_callbacks, invoke
from dspex.actors._lm._capabilities import capabilities, is_openai_reasoning_model
from dspex.actors._lm._fallback import check_fallbacks, falls_back
from dspex.actors._lm._providers._registry import check_model_id
from dspex.actors._lm._resilience._config import LMClientConfig, setting_fix
from dspex.actors._lm._types import LMResponse, Message
from dspex.errors import LMError, UsageError

if TYPE_CHECKING:
    from dspex.actors._lm._handle import LMHandle
    from dspex.actors._runtime import Runtime

__all__ = ["LM", "set_scoped_params"]

# Keyword arguments that configure the client, not the request: every field of
# LMClientConfig (they are "neither" parameters in _cache_key.PARAMS: never sent
# nor keyed, so one given per call is ignored rather than sent).
_CLIENT_KWARGS = tuple(f.name for f in dataclasses.fields(LMClientConfig))
_STATE_SKIP = {"api_key"}
_ENDPOINT_KEYS = ("api_base", "base_url")  # in kwargs (as DSPy keeps them), never request params
_MODEL_TYPES = ("chat", "responses")

LM_CLASS_STATE_KEY = "_dspy_lm_class"
"""Key of a saved LM state naming its class (DSPy's, so state files interchange)."""

BUILTIN_LM_CLASS_PATH = "dspy.clients.lm.LM"
"""The class marker of the built-in LM: DSPy's path, which loads as ``dspex.LM``."""

# DSPy's LM saves these fine-tuning fields (dspex does not fine-tune); they are
# written as DSPy writes them. Loaded back they are keyed but never sent
# (see _cache_key.PARAMS).
_DSPY_FINETUNE_DEFAULTS: dict[str, Any] = {
    "finetuning_model": None,
    "launch_kwargs": dict,
    "train_kwargs": dict,
}

# The LM subclass whose overridden __call__/forward is running in this context.
_in_override: ContextVar[Any] = ContextVar("dspex_lm_override", default=None)

ScopedParams = Callable[[], Mapping[str, Any] | None]
_scoped_params: ScopedParams | None = None


def set_scoped_params(source: ScopedParams | None) -> None:
    """Install the source of request parameters scoped to the caller's context.

    The programs layer installs one that reads ``dspex.context(temperature=...)``
    overrides; it runs in the calling thread (a run actor's, inside a run) on
    every call, so it must be quick.
    """
    global _scoped_params
    _scoped_params = source


class LM:
    """A language model: ``LM("openai/gpt-4o-mini")``, ``LM("anthropic/...")``,
    ``LM("gemini/...")`` or ``LM("local/smollm2")`` (needs ``dspex[local]``).

    ``model_type="responses"`` speaks OpenAI's Responses API (``/v1/responses``)
    instead of chat completions, for ``openai/`` models.

    ``api_base`` points an ``openai/`` model at any OpenAI-compatible server
    (vLLM, Ollama, llama.cpp, OpenRouter, Together). ``api_key`` defaults to
    the provider's usual environment variable and never appears in a repr,
    log, cache key or saved program. Call it directly like DSPy's LM:
    ``lm("prompt")`` or ``lm(messages=[...])`` returns a list of strings.
    ``callbacks`` observe this LM's calls (``on_lm_start``/``on_lm_end``),
    after the globally registered ones. ``fallbacks`` (model ids or LMs) take
    a call the primary cannot answer (breaker open, 429 or 5xx after its
    retries, a timeout with ``fallback_on_timeout``); see docs/fallback.md.
    """

    def __init__(
        self,
        model: str,
        api_base: str | None = None,
        api_key: str | None = None,
        *,
        model_type: str = "chat",
        temperature: float | None = None,
        max_tokens: int | None = None,
        num_retries: int | None = None,
        timeout: float | None = None,
        cache: bool = True,
        rpm: int | None = None,
        tpm: int | None = None,
        callbacks: Sequence[Any] | None = None,
        fallbacks: Sequence[str | LM] | None = None,
        fallback_on_timeout: bool | None = None,
        **kwargs: Any,
    ) -> None:
        cls = type(self)
        if not isinstance(model, str) or (
            cls.__call__ is LM.__call__ and cls.forward is LM.forward
        ):
            check_model_id(model, where="LM")
        # else: a subclass answering requests itself (DSPy's SpyLM("dummy_model"),
        # overriding __call__ or forward) may use any id, as in DSPy.
        self.fallbacks: list[Any] = [
            LM(item) if isinstance(item, str) else item for item in check_fallbacks(fallbacks, "LM")
        ]
        if fallback_on_timeout is not None and not isinstance(fallback_on_timeout, bool):
            raise UsageError(f"LM(fallback_on_timeout={fallback_on_timeout!r}): use True or False")
        self.fallback_on_timeout = fallback_on_timeout
        # Fallbacks named in the settings (models."<id>".fallbacks), built once per list.
        self._settings_chain: tuple[tuple[str, ...], list[LM]] = ((), [])
        if model_type not in _MODEL_TYPES:
            raise UsageError(
                f"LM(model_type={model_type!r}) is not supported; use 'chat' or 'responses' "
                "(OpenAI's Responses API, for 'openai/' models)"
            )
        if model_type == "responses" and not str(model).startswith("openai/"):
            raise UsageError(
                f"LM({model!r}, model_type='responses'): the Responses API is OpenAI's; use "
                "an 'openai/<model>' id (with api_base=... for a compatible server)"
            )
        kwargs.pop(LM_CLASS_STATE_KEY, None)  # a saved state's class marker
        self.model = model
        self.model_type = model_type
        _check_endpoint(model, api_base, kwargs)
        if api_base:
            kwargs["api_base"] = api_base  # kept among kwargs, as DSPy keeps it (see api_base)
        self._api_key = api_key
        self.cache = cache
        check_callbacks(callbacks, "LM")
        self.callbacks: list[Any] = list(callbacks or [])
        client: dict[str, Any] = {}
        for name, value in (
            ("num_retries", num_retries),
            ("timeout", timeout),
            ("rpm", rpm),
            ("tpm", tpm),
        ):
            if value is not None:
                client[name] = value
        for name in _CLIENT_KWARGS:
            if name in kwargs:
                client[name] = kwargs.pop(name)
        for name, value in client.items():
            # Refused here, not at the first call: the same wording as the settings'.
            fix = setting_fix(name, value)
            if fix is not None:
                raise UsageError(f"LM({name}={value!r}) is invalid; use {fix}")
        self.client_settings = client
        defaults: dict[str, Any] = {}
        if temperature is not None:
            if not _is_number(temperature) or not 0 <= temperature <= 2:
                raise UsageError(
                    f"LM(temperature={temperature!r}) is invalid; use a number from 0 to 2"
                )
            defaults["temperature"] = temperature
        if max_tokens is not None:
            if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
                raise UsageError(f"LM(max_tokens={max_tokens!r}) is invalid; use an int >= 1")
            defaults["max_tokens"] = max_tokens
        if is_openai_reasoning_model(model):
            _check_reasoning_defaults(model, temperature, max_tokens)
            # As DSPy: the LM's own limit is kept (and sent) as max_completion_tokens.
            if "max_tokens" in defaults:
                defaults["max_completion_tokens"] = defaults.pop("max_tokens")
        defaults.update(kwargs)
        self.kwargs: dict[str, Any] = defaults
        self._handles: weakref.WeakKeyDictionary[Runtime, LMHandle] = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()

    @property
    def api_base(self) -> str | None:
        """The endpoint: ``kwargs["api_base"]`` (or DSPy's other name, ``base_url``).

        DSPy keeps it among the LM's kwargs, so code reading ``lm.kwargs`` finds it
        there; the handle takes it as the client's endpoint, never as a parameter.
        """
        found = self.kwargs.get("api_base") or self.kwargs.get("base_url")
        return str(found) if found else None

    @property
    def provider(self) -> str:
        return self.model.split("/", 1)[0]

    @property
    def supports_response_schema(self) -> bool:
        """Whether the model takes a strict JSON-schema ``response_format`` (DSPy's rule)."""
        return capabilities(self.model).response_schema

    @property
    def supported_params(self) -> set[str]:
        """The OpenAI-style request parameters the model takes, as DSPy lists them."""
        return set(capabilities(self.model).params)

    @property
    def default_adapter(self) -> str | None:
        """Local models answer reliably only under JSON-schema decoding."""
        return "json" if self.provider == "local" else None

    # -- DSPy's other BaseLM capability properties ----------------------------------

    @property
    def supports_function_calling(self) -> bool:
        """Native tool calls are sent and read back on the OpenAI-compatible wire format;
        the Anthropic and Gemini providers do not translate ``tools`` yet."""
        return self.provider == "openai"

    @property
    def supports_reasoning(self) -> bool:
        return False

    # -- the LM protocol -----------------------------------------------------------

    def handle(self, runtime: Runtime | None = None) -> LMHandle:
        """This model's handle in ``runtime`` (default: the current runtime)."""
        if runtime is None:
            from dspex.actors._current import current_runtime

            runtime = current_runtime()
        handle = self._handles.get(runtime)
        # A closed slot: its client could not be restored; a new handle starts it afresh.
        if handle is None or handle.slot.closed:
            with self._lock:
                handle = self._handles.get(runtime)
                if handle is None or handle.slot.closed:
                    client = self.client_settings
                    defaults = {k: v for k, v in self.kwargs.items() if k not in _ENDPOINT_KEYS}
                    if self.model_type != "chat":
                        # Its own client (another wire format) and its own cache keys.
                        client = {**client, "provider_options": (("api", self.model_type),)}
                        defaults = {**defaults, "model_type": self.model_type}
                    handle = runtime.lm_handle(
                        self.model,
                        api_base=self.api_base,
                        api_key=self._api_key,
                        client=client,
                        defaults=defaults,
                        cache=self.cache,
                    )
                    self._handles[runtime] = handle
        return handle

    def generate(self, messages: Sequence[Message], params: Mapping[str, Any]) -> LMResponse:
        """Call the model (through the cache and its supervised client).

        Parameters, lowest precedence first: the runtime's settings
        (``temperature``, ``max_tokens``, ``models[model].params``), this LM's
        own keyword arguments, ``dspex.context(temperature=..., max_tokens=...)``
        overrides in effect here, then ``params``.
        """
        cls = type(self)
        if (
            cls.__call__ is not LM.__call__ or cls.forward is not LM.forward
        ) and _in_override.get() is not self:
            return _subclass_generate(self, messages, params)
        from dspex.actors._current import current_runtime

        runtime = current_runtime()
        chain, on_timeout = self._chain(runtime)
        if not chain:
            handle, params = self._route_in(runtime, params)
            return handle.generate(messages, params)
        current: Any = self
        for index, following in enumerate([*chain, None]):
            try:
                if isinstance(current, LM):  # its own call only: fallbacks do not chain
                    handle, routed = current._route_in(runtime, params)
                    return handle.generate(messages, routed)
                response: LMResponse = current.generate(messages, params)
                return response
            except LMError as exc:
                if following is None or not falls_back(exc, on_timeout=on_timeout):
                    raise
                _note_fallback(runtime, current, following, exc, index)
                current = following
        raise AssertionError("unreachable: the last model's error is raised")

    @property
    def awaits_natively(self) -> bool:
        """Whether :meth:`agenerate` answers on the caller's event loop (not a subclass
        that answers requests itself)."""
        cls = type(self)
        return cls.__call__ is LM.__call__ and cls.forward is LM.forward

    async def agenerate(self, messages: Sequence[Message], params: Mapping[str, Any]) -> LMResponse:
        """:meth:`generate` awaited on the running event loop, with no thread per call
        (only when :attr:`awaits_natively`; the programs layer runs others in its pool)."""
        from dspex.actors._current import current_runtime
        from dspex.actors._lm._async_call import agenerate

        runtime = current_runtime()
        chain, on_timeout = self._chain(runtime)
        current: Any = self
        for index, following in enumerate([*chain, None]):
            try:
                if isinstance(current, LM) and current.awaits_natively:
                    handle, routed = current._route_in(runtime, params)
                    return await agenerate(handle, messages, routed)
                response: LMResponse = current.generate(messages, params)
                return response
            except LMError as exc:
                if following is None or not falls_back(exc, on_timeout=on_timeout):
                    raise
                _note_fallback(runtime, current, following, exc, index)
                current = following
        raise AssertionError("unreachable: the last model's error is raised")

    def _chain(self, runtime: Runtime) -> tuple[list[Any], bool]:
        """The fallbacks of a call (its own, else the settings'), and whether timeouts count."""
        entry = runtime.settings.models.get(self.model) if not self.fallbacks else None
        chain = self.fallbacks or (self._from_settings(entry.fallbacks) if entry else [])
        on_timeout = self.fallback_on_timeout
        if on_timeout is None:
            on_timeout = bool(entry is not None and entry.fallback_on_timeout)
        return chain, on_timeout

    def _from_settings(self, models: Sequence[str]) -> list[LM]:
        wanted = tuple(models)
        if not wanted:
            return []
        with self._lock:
            if self._settings_chain[0] != wanted:
                self._settings_chain = (wanted, [LM(model) for model in wanted])
            return self._settings_chain[1]

    def _route_in(
        self, runtime: Runtime, params: Mapping[str, Any]
    ) -> tuple[LMHandle, Mapping[str, Any]]:
        """This runtime's handle and the call's parameters merged over the scoped ones."""
        handle = self._handles.get(runtime)
        if handle is None or handle.slot.closed:
            handle = self.handle(runtime)
        base = runtime.request_defaults(self.model)
        scoped = _scoped_params() if _scoped_params is not None else None
        if base or scoped:
            own = self.kwargs
            merged = {k: v for k, v in base.items() if k not in own}
            if "max_completion_tokens" in own:  # the LM's own limit outranks the settings'
                merged.pop("max_tokens", None)
            if scoped:
                merged.update(scoped)
            merged.update(params)
            params = merged
        return handle, params

    def __call__(
        self, prompt: str | None = None, messages: Sequence[Message] | None = None, **kwargs: Any
    ) -> list[str]:
        callbacks = active_callbacks(self)
        if not callbacks:
            return self.forward(prompt, messages, **kwargs).texts
        inputs = {"prompt": prompt, "messages": messages, "kwargs": kwargs}
        texts: list[str] = invoke(
            callbacks, "lm", self, inputs, self._texts, prompt, messages, kwargs
        )
        return texts

    def _texts(
        self, prompt: str | None, messages: Sequence[Message] | None, kwargs: dict[str, Any]
    ) -> list[str]:
        return self.forward(prompt, messages, **kwargs).texts

    def forward(
        self, prompt: str | None = None, messages: Sequence[Message] | None = None, **kwargs: Any
    ) -> LMResponse:
        """The full response (texts, usage, cache flag) rather than just the texts."""
        return self.generate(_messages_of(prompt, messages), kwargs)

    async def acall(
        self, prompt: str | None = None, messages: Sequence[Message] | None = None, **kwargs: Any
    ) -> list[str]:
        """``await lm.acall("prompt")``: the completion texts, awaited (as ``__call__``)."""
        callbacks = active_callbacks(self)
        if not callbacks:
            return (await self.aforward(prompt, messages, **kwargs)).texts
        inputs = {"prompt": prompt, "messages": messages, "kwargs": kwargs}

        async def texts() -> list[str]:
            return (await self.aforward(prompt, messages, **kwargs)).texts

        result: list[str] = await ainvoke(callbacks, "lm", self, inputs, texts)
        return result

    async def aforward(
        self, prompt: str | None = None, messages: Sequence[Message] | None = None, **kwargs: Any
    ) -> LMResponse:
        """:meth:`forward` awaited on the running loop (no thread per call). A subclass
        that answers requests itself runs its ``forward`` in a worker thread."""
        if not self.awaits_natively:
            from dspex.actors._async_pool import in_thread

            return await in_thread(self.forward, prompt, messages, **kwargs)
        return await self.agenerate(_messages_of(prompt, messages), kwargs)

    # -- DSPy compatibility ----------------------------------------------------------

    def copy(self, **kwargs: Any) -> LM:
        """A new LM with some settings changed (shares nothing mutable)."""
        state = {**self.dump_state(), **kwargs}
        for name in _DSPY_FINETUNE_DEFAULTS:  # written for DSPy's readers, not settings here
            if name not in self.kwargs and name not in kwargs:
                state.pop(name, None)
        state.setdefault("callbacks", self.callbacks)
        if "fallbacks" not in kwargs:
            state["fallbacks"] = self.fallbacks  # the LM objects, not just their ids
        if self.fallback_on_timeout is not None:
            state.setdefault("fallback_on_timeout", self.fallback_on_timeout)
        return LM(
            state.pop("model"),
            state.pop("api_base", None),
            state.pop("api_key", self._api_key),
            **state,
        )

    def dump_state(self) -> dict[str, Any]:
        """DSPy's saved-LM fields; never the API key."""
        marker = (
            BUILTIN_LM_CLASS_PATH
            if type(self) is LM
            else f"{type(self).__module__}.{type(self).__qualname__}"
        )
        state: dict[str, Any] = {
            LM_CLASS_STATE_KEY: marker,
            "model": self.model,
            "model_type": self.model_type,
            "cache": self.cache,
            **self.client_settings,
            **self.kwargs,
        }
        if self.fallbacks:
            state["fallbacks"] = [getattr(lm, "model", str(lm)) for lm in self.fallbacks]
        if is_openai_reasoning_model(self.model) and "max_completion_tokens" in state:
            state["max_tokens"] = state.pop("max_completion_tokens")  # DSPy saves it so
        for name, empty in _DSPY_FINETUNE_DEFAULTS.items():  # as DSPy writes them
            state.setdefault(name, empty() if callable(empty) else empty)
        return {k: v for k, v in state.items() if k not in _STATE_SKIP}

    @property
    def history(self) -> list[dict[str, Any]]:
        """DSPy's ``lm.history``: this model's recent calls, oldest first.

        Each entry has DSPy's keys (``prompt``, ``messages``, ``kwargs``,
        ``response``, ``outputs``, ``usage``, ``cost``, ``timestamp``, ``uuid``,
        ``model``, ``response_model``, ``model_type``) plus dspex's ``cache_hit``
        and ``duration_ms``. A view of the runtime's bounded history ring
        (``telemetry.history_size`` calls across all models), not an
        ever-growing list. ``prompt`` is None (a prompt is sent as a user
        message). ``cost`` is the call's price in USD (0 for a cache hit, None
        when the price is unknown; see docs/cost.md). Calls a fallback
        answered are in the fallback's history, not this LM's.
        """
        from dspex.actors._current import current_runtime

        runtime = current_runtime()
        entries = runtime.history(runtime.settings.telemetry.history_size)
        return [
            {
                "prompt": None,
                "messages": list(entry.messages),
                "kwargs": dict(entry.kwargs),
                "response": entry.response,
                "outputs": list(entry.outputs),
                "usage": dict(entry.usage),
                "cost": entry.cost,
                "timestamp": entry.timestamp,
                "uuid": entry.uuid,
                "model": entry.model,
                "response_model": entry.response_model,
                "model_type": self.model_type,
                "cache_hit": entry.cache_hit,
                "duration_ms": entry.duration_ms,
            }
            for entry in entries
            if entry.model == self.model
        ]

    def inspect_history(self, n: int = 1, file: TextIO | None = None) -> str:
        from dspex.actors._current import current_runtime

        return current_runtime().inspect_history(n, file)

    def __repr__(self) -> str:
        extra = f", api_base={self.api_base!r}" if self.api_base else ""
        return f"LM({self.model!r}{extra})"

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.pop("_handles", None)
        state.pop("_lock", None)
        state.pop("_settings_chain", None)
        state["_api_key"] = None  # a pickled program never carries the key
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.__dict__.setdefault("callbacks", [])
        self.__dict__.setdefault("fallbacks", [])
        self.__dict__.setdefault("fallback_on_timeout", None)
        legacy = self.__dict__.pop("api_base", None)  # pickled before it moved into kwargs
        if legacy and not self.api_base:
            self.kwargs["api_base"] = legacy
        self._settings_chain = ((), [])
        self._handles = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()

    def __deepcopy__(self, memo: dict[int, Any]) -> LM:
        return self  # an LM is shared, like DSPy's: copies of a program use the same client


def _messages_of(prompt: str | None, messages: Sequence[Message] | None) -> list[Message]:
    """The chat messages of ``lm(prompt)`` / ``lm(messages=[...])``; exactly one is given."""
    if (prompt is None) == (messages is None):
        raise UsageError(
            f"pass exactly one of prompt= or messages= (got prompt={prompt!r}, "
            f"messages={'None' if messages is None else '[...]'})"
        )
    if prompt is not None and not isinstance(prompt, str):
        raise UsageError(f"prompt={prompt!r} must be a string; use messages=[...] for chat")
    return [{"role": "user", "content": prompt}] if prompt is not None else list(messages or [])


def _check_endpoint(model: str, api_base: Any, kwargs: dict[str, Any]) -> None:
    """Refuse two different endpoints (``api_base`` and ``base_url``); drop an empty one."""
    if kwargs.get("base_url") is None:
        kwargs.pop("base_url", None)
    base_url = kwargs.get("base_url")
    if api_base and base_url and base_url != api_base:
        raise UsageError(
            f"LM({model!r}, api_base={api_base!r}, base_url={base_url!r}): these name the same "
            "endpoint; pass one of them"
        )
    if api_base and base_url:
        del kwargs["base_url"]


def _check_reasoning_defaults(model: str, temperature: Any, max_tokens: Any) -> None:
    """DSPy's rule for OpenAI reasoning models: temperature 1.0 (or unset), max_tokens >= 16000."""
    # Written as DSPy tests it: a falsy value (0, None) passes.
    if (temperature and temperature != 1.0) or (max_tokens and max_tokens < 16000):
        raise UsageError(
            f"LM({model!r}, temperature={temperature!r}, max_tokens={max_tokens!r}): OpenAI's "
            "reasoning models need temperature=1.0 or None and max_tokens >= 16000 or None, "
            f"e.g. dspex.LM({model!r}, temperature=1.0, max_tokens=16000)"
        )


def _note_fallback(runtime: Any, current: Any, following: Any, exc: LMError, index: int) -> None:
    """Tell telemetry that ``current`` passed a call on to ``following`` (caller's thread)."""
    runtime.telemetry.emit(
        "lm.fallback",
        model=str(getattr(current, "model", "?")),
        to=str(getattr(following, "model", "?")),
        error=type(exc).__name__,
        status=exc.status,
        step=index + 1,
    )


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _subclass_generate(
    lm: LM, messages: Sequence[Message], params: Mapping[str, Any]
) -> LMResponse:
    """A request to an LM subclass written for DSPy, through what it overrides.

    DSPy's adapters call ``lm(messages=..., **params)`` (texts back), and its
    ``__call__`` calls ``forward`` (an OpenAI-shaped response back): an
    overridden ``__call__`` wins, else the overridden ``forward`` is used.
    """
    from dspex.actors._lm._openai_shape import outputs_to_lm_response, response_to_lm_response

    msgs = list(messages)
    # An override calling super() reaches generate() again: that call goes to the provider.
    token = _in_override.set(lm)
    try:
        if type(lm).__call__ is not LM.__call__:
            return outputs_to_lm_response(lm(messages=msgs, **params), lm.model)
        return response_to_lm_response(lm.forward(messages=msgs, **params), lm.model)
    finally:
        _in_override.reset(token)
