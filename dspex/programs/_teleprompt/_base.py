"""``Teleprompter``: the base of optimizers (DSPy's name for them)."""

from __future__ import annotations

import functools
import inspect
import logging
import weakref
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

from dspex.actors._lm._budget import Budget, active_budgets, budget_error, budget_scope
from dspex.errors import UsageError
from dspex.programs._backend import backend_scope, check_backend
from dspex.programs._callbacks import hooked

logger = logging.getLogger("dspex.programs")

__all__ = ["Teleprompter", "check_count", "check_trainset"]


class Teleprompter:
    """An optimizer: ``compile(student, trainset=...)`` returns an improved copy of ``student``.

    Subclass it and define ``compile``: each call then fires the callbacks'
    ``on_compile_start`` / ``on_compile_end`` (in the calling thread), once
    per call even when an override calls ``super().compile``. Every
    ``compile`` also takes ``max_cost_usd=`` and ``max_tokens=``: a budget
    for the LM calls it makes (see docs/cost.md); what the last compile spent
    is in ``optimizer.compile_cost``; and ``backend="ray"``: its units (and
    the evaluations it runs) go to Ray actors (see docs/distributed.md).
    """

    @property
    def compile_cost(self) -> dict[str, Any] | None:
        """What the last ``compile`` spent (see :class:`Budget`), None before one.

        Kept outside the instance's attributes, which describe its settings
        (``get_params``, checkpoint fingerprints).
        """
        return _compile_costs.get(id(self))

    _dspex_callback_kind: ClassVar[str] = "compile"  # see _callbacks.CALLBACK_KIND

    def __init__(self) -> None:
        pass

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # Only a compile defined in this class body: an inherited one is already observed.
        method = cls.__dict__.get("compile")
        if inspect.isfunction(method):
            observed = hooked("compile", once_per_instance=True)(_budgeted(method))
            cls.compile = observed  # type: ignore[method-assign]

    def compile(
        self,
        student: Any,
        *,
        trainset: Sequence[Any],
        teacher: Any = None,
        valset: Sequence[Any] | None = None,
        **kwargs: Any,
    ) -> Any:
        raise NotImplementedError(f"{type(self).__name__} must implement compile(...)")

    def get_params(self) -> dict[str, Any]:
        """The optimizer's settings and state (its attributes), as DSPy reports them."""
        return self.__dict__


def _budgeted(compile: Callable[..., Any]) -> Callable[..., Any]:
    """``compile`` taking ``max_cost_usd=`` / ``max_tokens=``: its LM calls run under a Budget.

    An override calling ``super().compile`` runs inside the outer budget (the
    keywords are taken off before the call, so the inner call has none).
    """

    @functools.wraps(compile)
    def run(self: Any, *args: Any, **kwargs: Any) -> Any:
        max_cost_usd = kwargs.pop("max_cost_usd", None)
        max_tokens = kwargs.pop("max_tokens", None)
        backend = check_backend(kwargs.pop("backend", None), f"{type(self).__name__}.compile")
        with backend_scope(backend):
            return _run_budgeted(
                self, compile, args, kwargs, max_cost_usd=max_cost_usd, max_tokens=max_tokens
            )

    return run


def _run_budgeted(
    self: Any,
    compile: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    *,
    max_cost_usd: float | None,
    max_tokens: int | None,
) -> Any:
    """``compile`` under a Budget (unless a ``super().compile`` inside the outer one)."""
    if max_cost_usd is None and max_tokens is None and _in_compile(self):
        return compile(self, *args, **kwargs)
    budget = Budget(
        max_cost_usd=max_cost_usd,
        max_tokens=max_tokens,
        scope=f"{type(self).__name__}.compile",
    )
    stopped: str | None = None
    with budget_scope(budget):
        try:
            return compile(self, *args, **kwargs)
        except Exception as error:
            spent = budget_error(error)
            if spent is None:
                raise
            # A call the optimizer makes on its own (a proposal, a reflection)
            # hit a budget: stop cleanly with what there is, as Evaluate does.
            student: Any = args[0] if args else kwargs.get("student")
            if not callable(getattr(student, "deepcopy", None)):
                raise
            own = spent.scope == budget.scope
            stopped = spent.budget if own else f"{spent.scope}.{spent.budget}"
            logger.warning(
                "%s.compile: stopped by the %s budget before it found a better program; "
                "returning a copy of the student",
                type(self).__name__,
                stopped,
            )
            return student.deepcopy()
        finally:
            spend = budget.snapshot()
            if stopped is not None:  # said above
                spend["stopped_by"] = spend["stopped_by"] or stopped
            elif spend["stopped_by"] is not None:
                logger.warning(
                    "%s.compile: the %s budget ran out; no LM call was started after it",
                    type(self).__name__,
                    spend["stopped_by"],
                )
            _remember_cost(self, spend)


# id(optimizer) -> its last compile's spend; an entry goes when the optimizer does.
_compile_costs: dict[int, dict[str, Any]] = {}


def _remember_cost(optimizer: Any, spend: dict[str, Any]) -> None:
    key = id(optimizer)
    if key not in _compile_costs:
        try:
            weakref.finalize(optimizer, _compile_costs.pop, key, None)
        except TypeError:  # not weak-referenceable (__slots__): nothing to remember it by
            return
    _compile_costs[key] = spend


def _in_compile(optimizer: Any) -> bool:
    """Whether a compile of ``optimizer`` is already running here (a ``super()`` call)."""
    name = f"{type(optimizer).__name__}.compile"
    return any(b.scope == name for b in active_budgets())


def check_trainset(trainset: Any, where: str, *, need_inputs: bool) -> list[Any]:
    """``trainset`` as a list of Examples (with inputs marked when ``need_inputs``)."""
    if trainset is None or isinstance(trainset, str | bytes | dict):
        raise UsageError(
            f"{where}(trainset={trainset!r}): pass a list of dspex.Example, e.g. "
            "[Example(question=..., answer=...).with_inputs('question')]"
        )
    try:
        examples = list(trainset)
    except TypeError:
        raise UsageError(f"{where}(trainset={trainset!r}): not a list of examples") from None
    for index, example in enumerate(examples):
        if not callable(getattr(example, "inputs", None)):
            raise UsageError(
                f"{where}: trainset[{index}]={example!r} is not an Example; wrap it, e.g. "
                "dspex.Example(**row).with_inputs('question')"
            )
        if need_inputs and getattr(example, "_input_keys", None) is None:
            raise UsageError(
                f"{where}: trainset[{index}] has no input fields marked; call "
                ".with_inputs(...) on it, e.g. example.with_inputs('question')"
            )
    return examples


def check_count(where: str, field: str, value: Any, minimum: int) -> int:
    """``value`` if it is an int >= ``minimum``, else a UsageError naming the field."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise UsageError(f"{where}({field}={value!r}): must be an int >= {minimum}")
    return value
