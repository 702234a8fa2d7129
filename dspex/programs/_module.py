"""``Module``: the base of every program, and ``Parameter``, the optimizable marker.

A Module's ``forward`` holds user code; calling the module runs it. Modules
are discovered by walking attributes (and lists, tuples and dicts of them),
the way DSPy does, so ``named_predictors()`` of a program holding
``self.qa = ChainOfThought(...)`` yields ``("qa.predict", <Predict>)``.
"""

from __future__ import annotations

import copy
import logging
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from types import FunctionType
from typing import TYPE_CHECKING, Any, cast

from dspex.actors import _otel
from dspex.actors._callbacks import active_callbacks, ainvoke, check_callbacks, invoke
from dspex.actors._program_run import current_run
from dspex.errors import UsageError
from dspex.programs._forward_guard import ForwardGuard
from dspex.programs._module_history import calling, enter_calling, leave_calling
from dspex.programs._runtime_access import current_runtime
from dspex.programs._settings import settings
from dspex.programs._signature import Signature
from dspex.programs._state import apply_module_state
from dspex.programs._usage import call_tracked, current_usage_tracker

if TYPE_CHECKING:
    from pathlib import Path

__all__ = [
    "BaseModule",
    "Module",
    "Parameter",
    "Predictor",
    "ProgramMeta",
    "set_attribute_by_name",
]

logger = logging.getLogger("dspex.programs")


class Parameter:
    """Marker base for objects an optimizer may change (``Predict`` is one)."""

    def reset(self) -> None:
        """Forget learned state (demos, traces)."""

    def dump_state(self, json_mode: bool = True) -> dict[str, Any]:
        raise NotImplementedError

    def load_state(self, state: Mapping[str, Any]) -> Any:
        raise NotImplementedError


class Predictor(Parameter):
    """A Parameter that calls an LM for a signature, with demos: what ``named_predictors()``
    yields. ``Predict`` is the one dspex defines; Module finds predictors by this base,
    so it need not import ``Predict`` (which is a Module)."""

    signature: type[Signature]
    config: dict[str, Any]
    lm: Any
    demos: list[Any]
    traces: list[Any]
    train: list[Any]


class ProgramMeta(type):
    """Metaclass that initialises Module bookkeeping even when a subclass's
    ``__init__`` forgets ``super().__init__()`` (common in user programs), and
    guards each class's own ``forward`` (a direct call warns, as in DSPy)."""

    def __init__(cls, name: str, bases: tuple[type, ...], namespace: dict[str, Any]) -> None:
        super().__init__(name, bases, namespace)
        forward = namespace.get("forward")
        if isinstance(forward, FunctionType):
            cls.forward = ForwardGuard(forward)

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        obj: Any = cast(Any, cls).__new__(cls)
        if isinstance(obj, cls):
            Module._base_init(obj)
            obj.__init__(*args, **kwargs)
        return obj


class BaseModule:
    """Attribute-walking introspection shared by all modules."""

    _compiled: bool

    def named_parameters(self) -> list[tuple[str, Parameter]]:
        """``(path, parameter)`` for every Parameter reachable from this module.

        Walks attributes, and one level of lists/tuples/dicts, recursing into
        sub-modules that are not compiled (a compiled sub-module is frozen).
        Each parameter appears once, under the first path found.
        """
        seen: set[int] = set()
        found: list[tuple[str, Parameter]] = []

        def add(name: str, value: Any) -> None:
            if isinstance(value, Parameter):
                if id(value) not in seen:
                    seen.add(id(value))
                    found.append((name, value))
            elif isinstance(value, BaseModule) and not getattr(value, "_compiled", False):
                for sub_name, param in value.named_parameters():
                    add(f"{name}.{sub_name}", param)

        if isinstance(self, Parameter):
            add("self", self)
        for name, value in self.__dict__.items():
            if isinstance(value, Parameter | BaseModule):
                add(name, value)
            elif isinstance(value, list | tuple):
                for i, item in enumerate(value):
                    add(f"{name}[{i}]", item)
            elif isinstance(value, dict):
                for key, item in value.items():
                    add(f"{name}['{key}']", item)
        return found

    def parameters(self) -> list[Parameter]:
        return [param for _, param in self.named_parameters()]

    def named_sub_modules(
        self, type_: type | None = None, skip_compiled: bool = False
    ) -> Iterator[tuple[str, Any]]:
        """Breadth-first ``(path, module)`` pairs, ``self`` first; each object once."""
        wanted = BaseModule if type_ is None else type_
        queue: deque[tuple[str, Any]] = deque([("self", self)])
        seen = {id(self)}

        def push(name: str, item: Any) -> None:
            if id(item) not in seen:
                seen.add(id(item))
                queue.append((name, item))

        while queue:
            name, item = queue.popleft()
            if isinstance(item, wanted):
                yield name, item
            if isinstance(item, BaseModule):
                if skip_compiled and getattr(item, "_compiled", False):
                    continue
                for sub_name, sub in item.__dict__.items():
                    push(f"{name}.{sub_name}", sub)
            elif isinstance(item, list | tuple):
                for i, sub in enumerate(item):
                    push(f"{name}[{i}]", sub)
            elif isinstance(item, dict):
                for key, sub in item.items():
                    push(f"{name}[{key}]", sub)

    # -- copies ---------------------------------------------------------------------

    def deepcopy(self) -> Any:
        """An independent copy of the program: demos, signatures and config are
        copied; attached LMs are shared (an LM is a service handle, not state)."""
        memo: dict[int, Any] = {}
        for _, param in self.named_parameters():
            lm = getattr(param, "lm", None)
            if lm is not None:
                memo[id(lm)] = lm
        try:
            return copy.deepcopy(self, memo)
        except Exception:  # an attribute refuses deepcopy: copy attribute by attribute
            pass
        new = self.__class__.__new__(self.__class__)
        for attr, value in self.__dict__.items():
            if isinstance(value, BaseModule):
                object.__setattr__(new, attr, value.deepcopy())
                continue
            try:
                object.__setattr__(new, attr, copy.deepcopy(value, memo))
            except Exception:
                logger.warning(
                    "could not deep-copy attribute %r of %s; sharing it with the copy",
                    attr,
                    type(self).__name__,
                )
                object.__setattr__(new, attr, value)
        return new

    def reset_copy(self) -> Any:
        """A deep copy with every parameter reset (no demos, no traces)."""
        new = self.deepcopy()
        for param in new.parameters():
            param.reset()
        return new

    # -- state ------------------------------------------------------------------------

    def dump_state(self, json_mode: bool = True) -> dict[str, Any]:
        """The program's learnable state, keyed by parameter path (DSPy's layout)."""
        return {
            name: param.dump_state(json_mode=json_mode) for name, param in self.named_parameters()
        }

    def load_state(self, state: Mapping[str, Any], *, allow_unsafe_lm_state: bool = False) -> Any:
        """Apply a state from :meth:`dump_state` (or a DSPy save file's contents).

        Every entry is checked before any is applied, so a bad state leaves
        the program untouched.
        """
        apply_module_state(self, state, allow_unsafe_lm_state=allow_unsafe_lm_state)
        return self

    def save(
        self,
        path: str | Path,
        save_program: bool = False,
        modules_to_serialize: list[Any] | None = None,
    ) -> None:
        """Save the state in DSPy's format: ``.json`` (the safe default) or ``.pkl``.

        ``save_program=True`` pickles the whole program into the directory
        ``path`` instead; only load a pickle from a trusted source.
        """
        from dspex.programs._state_files import save_module  # files load when used

        save_module(
            self, path, save_program=save_program, modules_to_serialize=modules_to_serialize
        )

    def load(
        self,
        path: str | Path,
        allow_pickle: bool = False,
        allow_unsafe_lm_state: bool = False,
    ) -> Any:
        """Load a state file written by :meth:`save` or by DSPy.

        A ``.pkl`` state is unpickled (which runs code from the file) only with
        ``allow_pickle=True``, as in DSPy.
        """
        from dspex.programs._state_files import load_module_state

        load_module_state(
            self, path, allow_pickle=allow_pickle, allow_unsafe_lm_state=allow_unsafe_lm_state
        )
        return self


class Module(BaseModule, metaclass=ProgramMeta):
    """Base class of programs: write ``forward``; call the module to run it.

    ``__call__`` goes through :meth:`_dspex_call`, the single hook where a
    call is routed (a transient run actor at top level, inline inside a run).
    ``callbacks`` observe this module's calls (``on_module_start``/``_end``,
    fired in the thread running ``forward``), after the global ones.
    """

    callbacks: list[Any]
    history: list[Any]

    def _base_init(self) -> None:
        self._compiled = False
        self.callbacks = []
        self.history = []

    def __init__(self, callbacks: list[Any] | None = None) -> None:
        check_callbacks(callbacks, type(self).__name__)
        self.callbacks = list(callbacks) if callbacks else []
        self._compiled = False
        self.history = []

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError(
            f"{type(self).__name__} must define forward(...) with the program's logic"
        )

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._dspex_call(*args, **kwargs)

    def _dspex_call(self, *args: Any, **kwargs: Any) -> Any:
        """Run ``forward``: inline inside a run, else as a transient ProgramRun actor.

        With the ``track_usage`` setting on, the outermost call records the
        LM usage of everything under it on the returned Prediction.
        """
        if settings.get("track_usage") and current_usage_tracker() is None:
            return call_tracked(lambda: self._routed_call(args, kwargs))
        return self._routed_call(args, kwargs)

    def _routed_call(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if current_run() is not None:
            return self._observed_forward(args, kwargs)
        return current_runtime().run(
            lambda: self._observed_forward(args, kwargs), label=type(self).__name__
        )

    def _observed_forward(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """``forward``, observed by the active callbacks as a module call.

        Runs in the thread executing the program (the run actor's at top
        level), so hooks see the run's context and nest under its calls.
        """
        otel = _otel._tracing
        if otel is not None:
            # The outermost module call is the program run's span; the rest nest in it.
            name = type(self).__name__
            role = "predict" if isinstance(self, Predictor) else "module"
            if not otel.in_span():
                role = "run"
            attributes = {"dspex.module": name, "dspex.module.role": role}
            with otel.span(f"{role} {name}", attributes):
                return self._forward_observed(args, kwargs)
        # Inline, not a call of _forward_observed: a traceback keeps the frames it had.
        # LM calls made under this module go to its history (calling(), without
        # the generator a context manager costs on every call).
        token = enter_calling(self)
        try:
            callbacks = active_callbacks(self)
            if not callbacks:
                return self.forward(*args, **kwargs)
            inputs = {"args": args, "kwargs": kwargs}
            return invoke(callbacks, "module", self, inputs, self.forward, *args, **kwargs)
        finally:
            leave_calling(token)

    def _forward_observed(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        with calling(self):  # LM calls made under this module go to its history
            callbacks = active_callbacks(self)
            if not callbacks:
                return self.forward(*args, **kwargs)
            inputs = {"args": args, "kwargs": kwargs}
            return invoke(callbacks, "module", self, inputs, self.forward, *args, **kwargs)

    async def acall(self, *args: Any, **kwargs: Any) -> Any:
        """Async call: ``aforward`` if the module defines one, else ``forward`` in one
        of dspex's ``async_max_workers`` threads (settings overrides carry over).

        At top level the call is a program run awaited on the caller's loop
        (a light process under ``programs``, see ``Runtime.arun``)."""
        if current_run() is None:
            return await current_runtime().arun(
                lambda: self._acall(args, kwargs), label=type(self).__name__
            )
        return await self._acall(args, kwargs)

    async def _acall(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        aforward = getattr(self, "aforward", None)
        if aforward is not None:
            # LM calls awaited under this module go to its history, as in __call__
            # (the context variable is the awaiting task's own).
            token = enter_calling(self)
            try:
                callbacks = active_callbacks(self)
                if callbacks:
                    inputs = {"args": args, "kwargs": kwargs}
                    return await ainvoke(
                        callbacks, "module", self, inputs, aforward, *args, **kwargs
                    )
                return await aforward(*args, **kwargs)
            finally:
                leave_calling(token)
        from dspex.programs._async_pool import in_thread

        return await in_thread(self.__call__, *args, **kwargs)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.pop("history", None)
        state.pop("callbacks", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.__dict__.setdefault("history", [])
        self.__dict__.setdefault("callbacks", [])

    # -- predictors -------------------------------------------------------------------

    def named_predictors(self) -> list[tuple[str, Predictor]]:
        """``(path, Predict)`` for every predictor in the program, e.g. ``"qa.predict"``."""
        return [(name, p) for name, p in self.named_parameters() if isinstance(p, Predictor)]

    def predictors(self) -> list[Predictor]:
        return [p for _, p in self.named_predictors()]

    def set_lm(self, lm: Any) -> None:
        """Attach ``lm`` to every predictor."""
        for _, predictor in self.named_predictors():
            predictor.lm = lm

    def get_lm(self) -> Any:
        """The one LM all predictors use; an error if they use different ones."""
        lms = {id(p.lm): p.lm for _, p in self.named_predictors()}
        if len(lms) == 1:
            return next(iter(lms.values()))
        raise UsageError(
            f"the predictors of {type(self).__name__} use {len(lms)} different LMs; "
            "there is no single LM to return (inspect predictor.lm on each instead)"
        )

    def map_named_predictors(self, func: Callable[[Predictor], Any]) -> Module:
        """Replace each predictor by ``func(predictor)``; returns self."""
        for name, predictor in self.named_predictors():
            _set_by_path(self, name, func(predictor))
        return self

    def batch(  # noqa: PLR0917  (DSPy's positional signature)
        self,
        examples: list[Any],
        num_threads: int | None = None,
        max_errors: int | None = None,
        return_failed_examples: bool = False,
        provide_traceback: bool | None = None,
        disable_progress_bar: bool = False,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> Any:
        """Run ``self(**example.inputs())`` for each example in parallel (DSPy's ``batch``).

        Predictions come back in input order, None for failures; with
        ``return_failed_examples=True``: ``(results, failed_examples, exceptions)``.
        """
        from dspex.programs._evaluate import run_batch

        return run_batch(
            self,
            examples,
            num_threads=num_threads,
            max_errors=max_errors,
            return_failed_examples=return_failed_examples,
            provide_traceback=provide_traceback,
            disable_progress_bar=disable_progress_bar,
            timeout=timeout,
            **kwargs,
        )

    def __repr__(self) -> str:
        lines = [f"{name} = {p!r}" for name, p in self.named_predictors()]
        return "\n".join(lines) if lines else f"{type(self).__name__}()"


def _set_by_path(root: Any, path: str, value: Any) -> None:
    """Assign ``value`` at a ``named_parameters`` path like ``a.b[0]['k']``."""
    import re

    parts = path.split(".")
    target = root
    step = re.compile(r"^(\w+)(?:\[(\d+|'[^']*')\])?$")

    def resolve(obj: Any, part: str, assign: Any = None, last: bool = False) -> Any:
        m = step.match(part)
        if m is None:
            raise UsageError(f"cannot resolve predictor path {path!r} at {part!r}")
        attr, index = m.group(1), m.group(2)
        if index is None:
            if last:
                setattr(obj, attr, assign)
                return None
            return getattr(obj, attr)
        container = getattr(obj, attr)
        key: Any = index.strip("'") if index.startswith("'") else int(index)
        if last:
            container[key] = assign
            return None
        return container[key]

    if parts == ["self"]:
        raise UsageError("cannot replace the module itself through map_named_predictors")
    for part in parts[:-1]:
        target = resolve(target, part)
    resolve(target, parts[-1], value, last=True)


_PATH_STEP = r"\.?([A-Za-z_]\w*)|\[\s*(-?\d+|'[^']*'|\"[^\"]*\")\s*\]"


def set_attribute_by_name(obj: Any, name: str, value: Any) -> None:
    """Assign ``value`` at a dotted path with indexing, e.g. ``"a.b[0]['k'].c"``.

    The paths are those ``named_parameters`` returns (DSPy's
    ``set_attribute_by_name``); the last step is set as an attribute or item.
    """
    import re

    steps: list[tuple[str, Any]] = []
    pos = 0
    for match in re.finditer(_PATH_STEP, name):
        if match.start() != pos:
            break
        pos = match.end()
        attr, index = match.group(1), match.group(2)
        if attr is not None:
            steps.append(("attr", attr))
        else:
            key: Any = index[1:-1] if index[0] in "'\"" else int(index)
            steps.append(("item", key))
    if pos != len(name) or not steps or (steps[0][0] != "attr"):
        raise UsageError(
            f"set_attribute_by_name: cannot parse the path {name!r}; use dotted attributes "
            "with [index] or ['key'] steps, e.g. 'sub.items[0].predict'"
        )
    target = obj
    for kind, key in steps[:-1]:
        target = getattr(target, key) if kind == "attr" else target[key]
    kind, key = steps[-1]
    if kind == "attr":
        setattr(target, key, value)
    else:
        target[key] = value
