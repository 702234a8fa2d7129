"""Callback wiring of the programs layer: observed methods and observed LM calls.

:func:`hooked` makes a method fire one kind of hooks (adapters' ``format`` and
``parse``, ``Evaluate.__call__``); :func:`with_callbacks` is DSPy's public
decorator, choosing the hooks from the instance it is called on;
:func:`call_lm` is how an adapter calls an LM so that ``on_lm_*`` fire for
any object serving the LM protocol. Module calls are observed in
``Module._dspex_call``. With no callbacks registered each costs one check.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextvars import ContextVar
from typing import Any, TypeVar

from dspex.actors import _otel
from dspex.actors._callbacks import active_callbacks, ainvoke, end_call, invoke, start_call
from dspex.actors._lm._types import LMProtocol
from dspex.programs._lm_report import generate_reported, history_emitter
from dspex.programs._module_history import record_lm_call
from dspex.programs._usage import note_usage

__all__ = ["CALLBACK_KIND", "call_lm", "hooked", "with_callbacks"]

logger = logging.getLogger("dspex.callbacks")

F = TypeVar("F", bound=Callable[..., Any])

CALLBACK_KIND = "_dspex_callback_kind"
"""The class attribute naming which hooks :func:`with_callbacks` fires for a class's
instances: ``"adapter"`` (Adapter) or ``"evaluate"`` (Evaluate). A marker, not
``isinstance``, so this module needs neither class (both import it)."""

# The (instance id, kind) of the innermost call observed with once_per_instance:
# an override calling super().format() is one format call, not two.
_observing: ContextVar[tuple[int, str] | None] = ContextVar("dspex_observing", default=None)
# The same for the OpenTelemetry span of an observed call (kept apart: both may be on).
_spanning: ContextVar[tuple[int, str] | None] = ContextVar("dspex_spanning", default=None)


class _Binder:
    """Names a method call's arguments (``self`` left out), for start hooks' ``inputs``.

    The signature is inspected on first use: only calls with callbacks pay it.
    A call passing exactly every parameter positionally (how adapters call
    ``format`` and ``parse``) is named without ``Signature.bind``.
    """

    __slots__ = ("_fn", "_names", "_signature")

    def __init__(self, fn: Callable[..., Any]) -> None:
        self._fn = fn
        self._signature: inspect.Signature | None = None
        self._names: tuple[str, ...] | None = None

    def __call__(
        self, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> dict[str, Any]:
        signature = self._signature
        if signature is None:
            signature = self._signature = inspect.signature(self._fn)
            params = list(signature.parameters.values())[1:]
            if all(p.kind is p.POSITIONAL_OR_KEYWORD for p in params):
                self._names = tuple(p.name for p in params)
        names = self._names
        if names is not None and not kwargs and len(args) == len(names):
            return dict(zip(names, args, strict=True))
        try:
            bound = signature.bind(instance, *args, **kwargs)
        except TypeError:  # the call itself will fail with Python's own message
            return {"args": args, "kwargs": dict(kwargs)}
        bound.apply_defaults()
        arguments = dict(bound.arguments)
        arguments.pop(next(iter(signature.parameters)), None)  # self
        return arguments


def hooked(kind: str, *, once_per_instance: bool = False) -> Callable[[F], F]:
    """Decorate a method so each call fires the ``on_<kind>_start/end`` hooks.

    ``once_per_instance``: a nested call of the same kind on the same instance
    (an override calling ``super()``) is not observed again.
    """

    def decorate(fn: F) -> F:
        return _observed(fn, lambda instance: kind, once_per_instance)

    return decorate


def with_callbacks(fn: F) -> F:
    """DSPy's decorator: calls of the method fire the hooks matching the instance.

    LMs fire ``on_lm_*``, ``Evaluate`` ``on_evaluate_*``, optimizers
    ``on_compile_*``, adapters
    ``on_adapter_format_*`` / ``on_adapter_parse_*`` (for ``format`` / ``parse``),
    anything else ``on_module_*``.
    """
    name = fn.__name__

    def kind_of(instance: Any) -> str | None:
        if isinstance(instance, LMProtocol):
            return "lm"
        family = getattr(type(instance), CALLBACK_KIND, None)
        if family == "compile":
            return "compile"
        if family == "evaluate":
            return "evaluate"
        if family == "adapter":
            if name in ("format", "parse"):
                return f"adapter_{name}"
            logger.warning(
                "with_callbacks on %s.%s: adapters are observed only in format() and parse(); "
                "this call fires no hooks",
                type(instance).__name__,
                name,
            )
            return None
        return "module"

    return _observed(fn, kind_of, False)


def _observed(fn: F, kind_of: Callable[[Any], str | None], once: bool) -> F:
    if getattr(fn, "_dspex_observed", False):
        return fn
    bind = _Binder(fn)

    if inspect.iscoroutinefunction(fn):

        @functools.wraps(fn)
        async def async_wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
            otel = _otel._tracing
            if otel is not None:
                span = _span_for(otel, kind_of(self), self)
                if span is not None:
                    with span:
                        return await async_wrapper(self, *args, **kwargs)
            callbacks = active_callbacks(self)
            kind = kind_of(self) if callbacks else None
            if kind is None:
                return await fn(self, *args, **kwargs)
            inputs = bind(self, args, kwargs)
            return await ainvoke(callbacks, kind, self, inputs, fn, self, *args, **kwargs)

        async_wrapper._dspex_observed = True  # type: ignore[attr-defined]
        return async_wrapper  # type: ignore[return-value]

    @functools.wraps(fn)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        otel = _otel._tracing
        if otel is not None:
            span = _span_for(otel, kind_of(self), self)
            if span is not None:  # the call again, inside its span (which it does not reopen)
                with span:
                    return wrapper(self, *args, **kwargs)
        callbacks = active_callbacks(self)
        if not callbacks:
            return fn(self, *args, **kwargs)
        kind = kind_of(self)
        if kind is None:
            return fn(self, *args, **kwargs)
        if not once:
            return invoke(
                callbacks, kind, self, bind(self, args, kwargs), fn, self, *args, **kwargs
            )
        return _invoke_once(callbacks, kind, bind, fn, self, args, kwargs)

    wrapper._dspex_observed = True  # type: ignore[attr-defined]
    return wrapper  # type: ignore[return-value]


def _span_for(otel: Any, kind: str | None, instance: Any) -> Any:
    """The OpenTelemetry span of an observed call (a context manager), or None for none.

    None too for an override's ``super()`` call and for the wrapper's own
    re-entry inside the span. Module-level, like :func:`_invoke_once`, so
    wrappers hold no ContextVar.
    """
    name = _span_name(kind, instance)
    marker = (id(instance), str(kind))
    if name is None or _spanning.get() == marker:
        return None
    return _spanning_span(otel, name, _span_attributes(kind, instance), marker)


@contextlib.contextmanager
def _spanning_span(
    otel: Any, name: str, attributes: dict[str, Any], marker: tuple[int, str]
) -> Iterator[None]:
    token = _spanning.set(marker)
    try:
        with otel.span(name, attributes):
            yield
    finally:
        _spanning.reset(token)


def _span_name(kind: str | None, instance: Any) -> str | None:
    """The OpenTelemetry span name of an observed call, or None for calls without one."""
    if kind == "tool":
        return f"execute_tool {getattr(instance, 'name', type(instance).__name__)}"
    if kind == "evaluate":
        return "evaluate"
    if kind == "compile":
        return f"compile {type(instance).__name__}"
    return None


def _span_attributes(kind: str | None, instance: Any) -> dict[str, Any]:
    if kind == "tool":
        return {
            "gen_ai.operation.name": "execute_tool",
            "gen_ai.tool.name": str(getattr(instance, "name", type(instance).__name__)),
        }
    return {"dspex.operation": str(kind), "dspex.class": type(instance).__name__}


def _invoke_once(  # noqa: PLR0917  (the wrapper's call, spelled out)
    callbacks: Sequence[Any],
    kind: str,
    bind: _Binder,
    fn: Callable[..., Any],
    instance: Any,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> Any:
    """``fn`` observed, unless the same instance's call of this kind is already observed.

    A module-level function (not inlined in the wrapper) so wrappers hold no
    ContextVar: cloudpickle can then ship a class with observed methods by value.
    """
    marker = (id(instance), kind)
    if _observing.get() == marker:
        return fn(instance, *args, **kwargs)
    token = _observing.set(marker)
    try:
        return invoke(
            callbacks, kind, instance, bind(instance, args, kwargs), fn, instance, *args, **kwargs
        )
    finally:
        _observing.reset(token)


def call_lm(lm: Any, messages: Sequence[Mapping[str, Any]], params: Mapping[str, Any]) -> Any:
    """``lm.generate(messages, params)``, observed as an LM call.

    The hooks see DSPy's LM-call inputs (``prompt`` None, ``messages``,
    ``kwargs`` the request parameters) and, as outputs, the completion texts.
    Calls of an LM other than ``dspex.LM`` (which reports itself) are reported
    to the running runtime's telemetry, so they show in ``inspect_history``.
    """
    callbacks = active_callbacks(lm)
    emitter = history_emitter(lm)
    if not callbacks:
        if emitter is None:
            response = lm.generate(messages, params)
        else:
            response = generate_reported(emitter, lm, messages, params)
        note_usage(lm, response)
        record_lm_call(lm, messages, params, response)
        return response
    inputs = {"prompt": None, "messages": messages, "kwargs": dict(params)}
    call = start_call(callbacks, "lm", lm, inputs)
    texts: list[str] | None = None
    error: BaseException | None = None
    try:
        if emitter is None:
            response = lm.generate(messages, params)
        else:
            response = generate_reported(emitter, lm, messages, params)
        note_usage(lm, response)
        record_lm_call(lm, messages, params, response)
        texts = [completion.text for completion in response.completions]
        return response
    except BaseException as exc:
        error = exc
        raise
    finally:
        end_call(callbacks, "lm", call, texts, error)
