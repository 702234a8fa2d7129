"""``Predict``: one LM call shaped by a signature, with demos and per-call config.

The call path is kept lean because it runs on every LM call: no copies of
demos, no validation models, and the facts Predict needs about a signature
(input names, defaults) are computed once per signature object and cached.
"""

from __future__ import annotations

import contextlib
import logging
import random
from collections.abc import Mapping
from typing import Any

from dspex._record import Record
from dspex.actors._program_run import current_run
from dspex.errors import UsageError
from dspex.programs._module import Module, Predictor
from dspex.programs._prediction import Prediction
from dspex.programs._settings import current_settings
from dspex.programs._signature import Signature, ensure_signature
from dspex.programs._state import lm_to_state, prepare_predict_state, serialize_demo
from dspex.programs._stream_session import STREAM_SESSION

__all__ = ["Predict"]

logger = logging.getLogger("dspex.programs")

# Call keywords that are LM parameters rather than inputs (unless the
# signature has an input of that name).
_CONFIG_KEYWORDS = ("n", "temperature", "max_tokens")
_MISSING: Any = object()

_default_adapter: Any = None


_json_adapter: Any = None


def _adapter_for_lm(lm: Any) -> Any:
    """The adapter an LM asks for when none is configured (local models: JSON)."""
    global _json_adapter
    if getattr(lm, "default_adapter", None) != "json":
        return None
    if _json_adapter is None:
        from dspex.programs._adapters import JSONAdapter

        _json_adapter = JSONAdapter()
    return _json_adapter


def _adapter_default() -> Any:
    """The ChatAdapter used when settings name none (created once, stateless)."""
    global _default_adapter
    if _default_adapter is None:
        from dspex.programs._adapters import ChatAdapter

        _default_adapter = ChatAdapter()
    return _default_adapter


class _Call(Record):
    """One Predict call, prepared: what the adapter is called with."""

    adapter: Any
    lm: Any
    config: dict[str, Any]
    signature: type[Signature]
    demos: Any
    inputs: dict[str, Any]
    record_trace: bool


class _SignatureFacts:
    """What a call needs to know about a signature, computed once per signature."""

    __slots__ = ("config_keywords", "defaults", "input_names", "input_set", "signature", "typed")

    def __init__(self, signature: type[Signature]) -> None:
        self.signature = signature
        inputs = signature.input_fields
        self.input_names = tuple(inputs)
        self.input_set = frozenset(inputs)
        self.config_keywords = tuple(k for k in _CONFIG_KEYWORDS if k not in self.input_set)
        defaults: dict[str, Any] = {}
        for name, field in inputs.items():
            value = getattr(field, "default", _MISSING)
            if value is _MISSING:
                value = (
                    field.extra.get("default", _MISSING) if hasattr(field, "extra") else _MISSING
                )
            if value is not _MISSING:
                defaults[name] = value
        self.defaults = defaults
        # Inputs declared with a type (not DSPy's untyped-string marker) and not Any:
        # their values are checked against it when warn_on_type_mismatch is on.
        self.typed = tuple(
            (name, field.annotation)
            for name, field in inputs.items()
            if field.annotation is not Any
            and not getattr(field, "json_schema_extra", {}).get("IS_TYPE_UNDEFINED", False)
        )


def _allows_none(annotation: Any) -> bool:
    import types
    import typing

    if annotation is None or annotation is type(None):
        return True
    origin = typing.get_origin(annotation)
    if origin is typing.Union or origin is types.UnionType:
        return any(_allows_none(a) for a in typing.get_args(annotation))
    return False


class Predict(Module, Predictor):
    """Calls an LM for ``signature``: ``Predict("question -> answer")(question=...)``.

    ``demos`` are few-shot examples (Examples or dicts). ``config`` holds LM
    parameters applied to every call (``n``, ``temperature``, ``max_tokens``...).
    A call may pass ``config={...}``, ``lm=``, ``demos=``, ``signature=`` and,
    when the signature has no input of that name, ``n=``/``temperature=``/
    ``max_tokens=``. With ``n > 1`` the returned Prediction's ``completions``
    hold every alternative.
    """

    signature: type[Signature]
    config: dict[str, Any]
    lm: Any
    demos: list[Any]
    traces: list[Any]
    train: list[Any]

    def __init__(
        self,
        signature: str | type[Signature],
        callbacks: list[Any] | None = None,
        **config: Any,
    ) -> None:
        super().__init__(callbacks=callbacks)
        self.stage = random.randbytes(8).hex()
        self.signature = ensure_signature(signature)
        self.config = config
        self._facts: _SignatureFacts | None = None
        self.reset()

    def reset(self) -> None:
        """Forget the LM, demos and traces (what an optimizer sets)."""
        self.lm = None
        self.traces = []
        self.train = []
        self.demos = []

    # -- config ------------------------------------------------------------------------

    def update_config(self, **kwargs: Any) -> None:
        self.config = {**self.config, **kwargs}

    def get_config(self) -> dict[str, Any]:
        return self.config

    # -- calling -----------------------------------------------------------------------

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if args:
            # DSPy's wording, word for word: programs and tests match on it.
            names = list(self.signature.input_fields)
            example = f"predict({names[0]}=input_value, ...)" if names else "predict(...)"
            raise UsageError(
                "Positional arguments are not allowed when calling `dspy.Predict`, "
                "must use keyword "
                f"arguments that match your signature input fields: '{', '.join(names)}'. "
                f"For example: `{example}`."
            )
        return self._dspex_call(**kwargs)

    def _facts_for(self, signature: type[Signature]) -> _SignatureFacts:
        facts = self.__dict__.get("_facts")
        if facts is None or facts.signature is not signature:
            facts = _SignatureFacts(signature)
            if signature is self.signature:
                self._facts = facts
        return facts

    def forward(self, **kwargs: Any) -> Prediction:
        call = self._prepare(kwargs)
        adapter, lm, config, signature, demos, inputs, _ = call
        with _streaming(self, adapter, lm):  # a no-op unless inside dspex.streamify
            completions = adapter(
                lm, lm_kwargs=config, signature=signature, demos=demos, inputs=inputs
            )
        return self._finish(call, completions)

    async def aforward(self, **kwargs: Any) -> Prediction:
        """``forward`` awaited: with a ``dspex.LM`` the LM call is awaited on this loop
        (no thread); other LMs and custom adapters run in dspex's async pool."""
        call = self._prepare(kwargs)
        adapter, lm, config, signature, demos, inputs, _ = call
        acall = getattr(adapter, "acall", None)
        with _streaming(self, adapter, lm):  # a no-op unless inside dspex.streamify
            if acall is None:  # a DSPy-style adapter object without acall
                from dspex.programs._async_pool import in_thread

                completions = await in_thread(adapter, lm, config, signature, demos, inputs)
            else:
                completions = await acall(lm, config, signature, demos, inputs)
        return self._finish(call, completions)

    def _prepare(self, kwargs: dict[str, Any]) -> _Call:
        """Everything before the adapter call (runs in the calling thread)."""
        settings = current_settings()
        signature = kwargs.pop("signature", None)
        signature = self.signature if signature is None else ensure_signature(signature)
        demos = kwargs.pop("demos", None)
        if demos is None:
            demos = self.demos
        extra_config = kwargs.pop("config", None)
        config = {**self.config, **extra_config} if extra_config else dict(self.config)
        lm: Any = kwargs.pop("lm", None) or self.lm or settings.get("lm")
        record_trace = kwargs.pop("_trace", True)
        facts = self._facts_for(signature)
        for key in facts.config_keywords:
            if key in kwargs:
                config[key] = kwargs.pop(key)
        if "prediction" in kwargs and "prediction" not in facts.input_set:
            config["prediction"] = kwargs.pop("prediction")

        _check_lm(lm)
        run = current_run()
        if run is not None:
            run.check_deadline()  # cooperative cancellation point, before each LM call
        n = config.get("n") or lm.kwargs.get("n") or lm.kwargs.get("num_generations") or 1
        if n > 1:
            temperature = config.get("temperature")
            if temperature is None:
                temperature = lm.kwargs.get("temperature")
            if temperature is None or temperature <= 0.15:
                config["temperature"] = 0.7  # n identical greedy samples would be useless

        if facts.defaults:
            for key, value in facts.defaults.items():
                kwargs.setdefault(key, value)
        if len(kwargs) != len(facts.input_names) or any(k not in facts.input_set for k in kwargs):
            _warn_inputs(signature, facts, kwargs)
        if facts.typed and settings.get("warn_on_type_mismatch", True):
            _warn_type_mismatches(facts, kwargs)

        adapter = (
            self.__dict__.get("adapter")
            or settings.get("adapter")
            or _adapter_for_lm(lm)
            or _adapter_default()
        )
        return _Call(adapter, lm, config, signature, demos, kwargs, record_trace)

    def _finish(self, call: _Call, completions: Any) -> Prediction:
        """The Prediction of ``completions``, recorded in the trace."""
        pred = Prediction.from_completions(completions, signature=call.signature)
        record_trace, kwargs = call.record_trace, call.inputs
        settings = current_settings()
        trace = settings.get("trace")
        if record_trace and trace is not None:
            limit = settings.get("max_trace_size", 10_000)
            if limit > 0:
                if len(trace) >= limit:
                    del trace[0]
                trace.append((self, dict(kwargs), pred))
        return pred

    # -- state -------------------------------------------------------------------------

    def dump_state(self, json_mode: bool = True) -> dict[str, Any]:
        """DSPy's per-predictor state: traces, train, demos, signature, lm."""
        return {
            "traces": list(self.traces),
            "train": list(self.train),
            "demos": [serialize_demo(d, json_mode=json_mode) for d in self.demos],
            "signature": self.signature.dump_state(),
            "lm": lm_to_state(self.lm),
        }

    def load_state(
        self, state: Mapping[str, Any], *, allow_unsafe_lm_state: bool = False
    ) -> Predict:
        """Apply a state from :meth:`dump_state` or a DSPy save file (checked first)."""
        self._apply_state(self._prepare_state(state, allow_unsafe_lm_state=allow_unsafe_lm_state))
        return self

    def _prepare_state(
        self, state: Mapping[str, Any], *, allow_unsafe_lm_state: bool = False
    ) -> dict[str, Any]:
        return prepare_predict_state(
            self.signature, state, allow_unsafe_lm_state=allow_unsafe_lm_state
        )

    def _apply_state(self, values: Mapping[str, Any]) -> None:
        for name, value in values.items():
            setattr(self, name, value)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.signature!r})"


def _check_lm(lm: Any) -> None:
    if lm is not None and getattr(lm, "generate", None) is not None:
        return
    if lm is None:
        raise UsageError(
            "No LM is configured. Set one with `dspex.configure(lm=dspex.LM('openai/gpt-4o-mini'))`"
            ", or pass `lm=` to the call or set `predictor.lm`."
        )
    if isinstance(lm, str):
        raise UsageError(
            f"lm={lm!r} is a string; pass an LM object instead, e.g. "
            f"`dspex.configure(lm=dspex.LM({lm!r}))`."
        )
    raise UsageError(
        f"lm={lm!r} ({type(lm).__name__}) is not an LM: it needs a "
        "`generate(messages, params)` method (see dspex.actors.LMProtocol)."
    )


def _warn_inputs(
    signature: type[Signature], facts: _SignatureFacts, kwargs: Mapping[str, Any]
) -> None:
    extra = [k for k in kwargs if k not in facts.input_set]
    if extra:
        logger.warning(
            "Input contains fields not in signature. These fields will be ignored: %s. "
            "Expected fields: %s.",
            extra,
            list(facts.input_names),
        )
    fields = signature.input_fields
    missing = [
        k for k in facts.input_names if k not in kwargs and not _allows_none(fields[k].annotation)
    ]
    if missing:
        present = [k for k in facts.input_names if k in kwargs]
        logger.warning(
            "Not all input fields were provided to module. Present: %s. Missing: %s.",
            present,
            missing,
        )


def _warn_type_mismatches(facts: _SignatureFacts, kwargs: Mapping[str, Any]) -> None:
    """Log a warning for each input value that does not fit its field's declared type."""
    for name, annotation in facts.typed:
        value = kwargs.get(name)
        if value is None or value_fits_type(value, annotation):
            continue
        logger.warning(
            "Type mismatch for field '%s': expected %s based on given Signature, "
            "but the provided value is incompatible: %s.",
            name,
            type_name(annotation),
            value,
        )


def value_fits_type(value: Any, expected: Any) -> bool:
    """Whether ``value`` fits the type hint ``expected`` (containers checked item by item).

    A list of strings fits ``str`` (DSPy formats it into the prompt). Types the
    check cannot judge (type variables, callables, forward references) fit.
    """
    import types
    import typing

    if expected is Any or expected is None:
        return expected is Any or value is None
    if expected is str and isinstance(value, list) and all(isinstance(v, str) for v in value):
        return True
    origin = typing.get_origin(expected)
    args = typing.get_args(expected)
    if origin is typing.Union or origin is types.UnionType:
        return any(value_fits_type(value, arg) for arg in args)
    if origin is typing.Literal:
        return value in args
    if origin in (list, set, frozenset):
        if not isinstance(value, origin):
            return False
        return not args or all(value_fits_type(item, args[0]) for item in value)
    if origin is dict:
        if not isinstance(value, dict):
            return False
        if not args:
            return True
        key_type, value_type = args
        return all(
            value_fits_type(k, key_type) and value_fits_type(v, value_type)
            for k, v in value.items()
        )
    if origin is tuple:
        if not isinstance(value, tuple):
            return False
        if len(args) == 2 and args[1] is Ellipsis:
            return all(value_fits_type(item, args[0]) for item in value)
        return not args or (
            len(value) == len(args)
            and all(value_fits_type(v, a) for v, a in zip(value, args, strict=True))
        )
    if isinstance(expected, type):
        return isinstance(value, expected)
    if origin is not None and isinstance(origin, type):
        return isinstance(value, origin)  # another generic: check the container only
    return True


def type_name(annotation: Any) -> str:
    """A type hint written as in source: ``list[int]``, ``Literal['a', 'b']``, ``Query``."""
    import typing

    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is None:
        return str(getattr(annotation, "__name__", annotation))
    if origin is typing.Literal:
        return f"Literal[{', '.join(repr(a) for a in args)}]"
    name = str(getattr(origin, "__name__", origin))
    if args:
        return f"{name}[{', '.join('...' if a is Ellipsis else type_name(a) for a in args)}]"
    return name


_NOT_STREAMING = contextlib.nullcontext()


def _streaming(predict: Any, adapter: Any, lm: Any) -> contextlib.AbstractContextManager[Any]:
    """``_stream_route.streaming_call``; outside ``streamify`` the streaming modules stay
    unloaded (one context-variable read)."""
    if STREAM_SESSION.get() is None:
        return _NOT_STREAMING
    from dspex.programs._stream_route import streaming_call

    return streaming_call(predict, adapter, lm)
