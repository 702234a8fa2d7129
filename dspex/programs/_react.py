"""``ReAct``: an agent loop that reasons, calls tools and then extracts the outputs.

Each step asks the ``react`` predictor for ``next_thought``, ``next_tool_name``
(one of the tools, or ``finish``) and ``next_tool_args``, calls that tool and
records the step in the trajectory dict as ``thought_i``, ``tool_name_i``,
``tool_args_i`` and ``observation_i``. After ``finish`` (or ``max_iters``
steps) the ``extract`` ChainOfThought reads the inputs plus the trajectory and
writes the signature's outputs. When the LM answers ``ContextWindowError``, the
oldest step is dropped (:meth:`ReAct.truncate_trajectory`) and the call made
again, three tries per call, as DSPy does; a step that still does not fit ends
the loop (the outputs are extracted from what is left), as does a reply that
names no valid tool.

Inside a program run the loop executes as its own transient actor under the
runtime's ``programs`` DynamicSupervisor (DESIGN.md section 2), carrying the
run's deadline and cancel event: a tool that raises ``SystemExit`` or stops
the thread fails that trajectory only, as a ``ProgramError`` in the run, and a
tool stuck past the deadline no longer holds the caller. Outside a run, or
without a runtime, the loop executes inline.
"""

from __future__ import annotations

import contextvars
import logging
import threading
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from concurrent.futures import wait as futures_wait
from typing import Any, Literal

from dspex.actors._program_run import (
    ProgramRun,
    RunContext,
    RunJob,
    activate_run,
    current_run,
)
from dspex.errors import (
    ActorStoppedError,
    AdapterParseError,
    ContextWindowError,
    MaxChildrenError,
    ProgramError,
    UsageError,
)
from dspex.programs._chain_of_thought import ChainOfThought
from dspex.programs._fields import InputField, OutputField
from dspex.programs._module import Module
from dspex.programs._predict import Predict
from dspex.programs._prediction import Prediction
from dspex.programs._settings import current_settings
from dspex.programs._signature import Signature, ensure_signature, make_signature
from dspex.programs._tool import Tool
from dspex.supervision import (
    NORMAL,
    ChildSpec,
    ExitReason,
    LightProcess,
    Restart,
    adopt_child,
    current_lease,
    start_child,
)

__all__ = ["ReAct"]

logger = logging.getLogger("dspex.programs")

FINISH = "finish"
MAX_TRUNCATIONS = 3
"""How many tries one step (or the extraction) gets, each after dropping a step, as in DSPy."""
_POLL = 1.0  # the wait for a trajectory actor is sliced to notice its death or a cancel


def _finish() -> str:
    """The ``finish`` tool: ends the loop (module-level, so programs stay picklable)."""
    return "Completed."


class ReAct(Module):
    """A tool-using agent for any signature: ``ReAct("question -> answer", tools=[search])``.

    ``tools`` are functions, callable objects or :class:`Tool` objects. The
    call returns ``Prediction(trajectory=..., reasoning=..., <outputs>)``;
    ``max_iters=`` may also be passed per call. Predictors: ``react`` (one per
    step) and ``extract.predict`` (the final outputs).
    """

    signature: type[Signature]
    max_iters: int
    tools: dict[str, Tool]
    react: Predict
    extract: ChainOfThought

    def __init__(
        self,
        signature: str | type[Signature],
        tools: Sequence[Callable[..., Any] | Tool],
        max_iters: int = 20,
    ) -> None:
        super().__init__()
        self.signature = signature = ensure_signature(signature)
        self.max_iters = _check_max_iters(max_iters)
        self.tools = _tool_table(tools, signature)
        self.react = Predict(_step_signature(signature, self.tools))
        extract = make_signature(
            {**signature.input_fields, **signature.output_fields}, signature.instructions
        ).append("trajectory", InputField(), type_=str)
        self.extract = ChainOfThought(extract)

    # -- running -------------------------------------------------------------------------

    def forward(self, **input_args: Any) -> Prediction:
        run = current_run()
        runtime = run.runtime if run is not None else None
        if run is None or runtime is None or not getattr(runtime, "running", False):
            return self._trajectory(input_args)
        result: Prediction = _in_trajectory_actor(
            run, runtime, lambda: self._trajectory(input_args)
        )
        return result

    def _trajectory(self, input_args: dict[str, Any]) -> Prediction:
        """The loop itself; runs in the trajectory actor's thread (or inline)."""
        max_iters = _check_max_iters(input_args.pop("max_iters", self.max_iters))
        run = current_run()
        trajectory: dict[str, Any] = {}
        for idx in range(max_iters):
            if run is not None:
                run.check_deadline()
            try:
                pred, trajectory = self._call_fitting(self.react, input_args, trajectory)
            except (ContextWindowError, AdapterParseError, ValueError) as err:
                _log_end(idx, err)
                break
            name, args = _record_step(trajectory, idx, pred)
            trajectory[f"observation_{idx}"] = self._observe(name, args)
            if name == FINISH:
                break
        extract, trajectory = self._call_fitting(self.extract, input_args, trajectory)
        return Prediction(trajectory=trajectory, **extract)

    async def aforward(self, **input_args: Any) -> Prediction:
        """The same loop, awaited: each step and the extraction through ``acall``, and
        the tools through ``Tool.acall`` (async tools are awaited on the caller's loop)."""
        max_iters = _check_max_iters(input_args.pop("max_iters", self.max_iters))
        trajectory: dict[str, Any] = {}
        for idx in range(max_iters):
            try:
                pred, trajectory = await self._acall_fitting(self.react, input_args, trajectory)
            except (ContextWindowError, AdapterParseError, ValueError) as err:
                _log_end(idx, err)
                break
            name, args = _record_step(trajectory, idx, pred)
            trajectory[f"observation_{idx}"] = await self._aobserve(name, args)
            if name == FINISH:
                break
        extract, trajectory = await self._acall_fitting(self.extract, input_args, trajectory)
        return Prediction(trajectory=trajectory, **extract)

    def _call_fitting(
        self, module: Module, input_args: Mapping[str, Any], trajectory: dict[str, Any]
    ) -> tuple[Any, dict[str, Any]]:
        """``module``'s prediction and the trajectory it saw, shortened until the prompt fits.

        DSPy's rule: :data:`MAX_TRUNCATIONS` tries; after each ``ContextWindowError``
        the oldest step is dropped (in place, by the default
        :meth:`truncate_trajectory`). When the tries run out, or nothing is
        left to drop, a ``ContextWindowError`` saying so is raised.
        """
        last: ContextWindowError | None = None
        for _ in range(MAX_TRUNCATIONS):
            try:
                pred = module(**input_args, trajectory=self._format_trajectory(trajectory))
                return pred, trajectory
            except ContextWindowError as err:
                last = err
                trajectory = self._shortened(trajectory, err)
        raise _still_too_long(last)

    async def _acall_fitting(
        self, module: Any, input_args: Mapping[str, Any], trajectory: dict[str, Any]
    ) -> tuple[Any, dict[str, Any]]:
        """:meth:`_call_fitting`, awaiting ``module.acall``."""
        last: ContextWindowError | None = None
        for _ in range(MAX_TRUNCATIONS):
            try:
                formatted = self._format_trajectory(trajectory)
                pred = await module.acall(**input_args, trajectory=formatted)
                return pred, trajectory
            except ContextWindowError as err:
                last = err
                trajectory = self._shortened(trajectory, err)
        raise _still_too_long(last)

    def _shortened(self, trajectory: dict[str, Any], err: ContextWindowError) -> dict[str, Any]:
        """The trajectory after ``err``, its oldest step dropped; raises when none can go."""
        logger.warning(
            "ReAct: the prompt exceeds the LM's context window; dropping the oldest "
            "trajectory step (%s)",
            err,
        )
        try:
            return self.truncate_trajectory(trajectory)
        except ContextWindowError as cannot:
            cannot.model = cannot.model or err.model
            cannot.status = cannot.status or err.status
            raise cannot from err

    async def _aobserve(self, name: Any, args: Any) -> Any:
        """:meth:`_observe`, awaiting the tool's ``acall``."""
        try:
            tool = self._tool_for(name, args)
            return await tool.acall(**args)
        except Exception as err:
            return f"Execution error in {name}: {_error_for_lm(err)}"

    def _observe(self, name: Any, args: Any) -> Any:
        """Call the chosen tool; any Exception becomes the observation the LM reads next."""
        try:
            return self._tool_for(name, args)(**args)
        except Exception as err:  # BaseException (SystemExit...) ends the trajectory instead
            return f"Execution error in {name}: {_error_for_lm(err)}"

    def _tool_for(self, name: Any, args: Any) -> Tool:
        """The tool the LM chose, or a UsageError the LM reads as the observation."""
        tool = self.tools.get(name) if isinstance(name, str) else None
        if tool is None:
            raise UsageError(f"no tool named {name!r}; choose one of {list(self.tools)}")
        if not isinstance(args, Mapping):
            raise UsageError(
                f"next_tool_args must be a JSON object of argument names to values, "
                f"got {type(args).__name__}: {args!r}"
            )
        return tool

    def _format_trajectory(self, trajectory: Mapping[str, Any]) -> str:
        """The trajectory as input-field blocks in the configured adapter's format."""
        if not trajectory:
            return ""
        adapter = current_settings().get("adapter")
        if adapter is None:
            from dspex.programs._adapters import ChatAdapter

            adapter = ChatAdapter()
        steps = make_signature(f"{', '.join(trajectory)} -> x")
        text: str = adapter.format_user_message_content(steps, trajectory)
        return text

    def truncate_trajectory(self, trajectory: dict[str, Any]) -> dict[str, Any]:
        """Drop the oldest step (its four entries, in place) so the prompt may fit.

        Called when the LM answers ``ContextWindowError``; the remaining keys
        keep their numbers, as in DSPy. Override to shorten differently (e.g.
        clip long observations); return the trajectory to use. Raises
        ``ContextWindowError`` when at most one step is left (DSPy keeps the
        last step rather than send an empty trajectory).
        """
        keys = list(trajectory)
        if len(keys) <= 4:
            raise ContextWindowError(
                "the ReAct prompt exceeds the LM's context window and the trajectory has no "
                f"step left to drop ({len(keys) // 4} step(s), the last one is kept); shorten "
                "the inputs or the signature's instructions, or use a model with a larger "
                "context window"
            )
        for key in keys[:4]:
            del trajectory[key]
        return trajectory

    def __repr__(self) -> str:
        return f"ReAct({self.signature!r}, tools={list(self.tools)}, max_iters={self.max_iters})"


def _log_end(idx: int, err: BaseException) -> None:
    if isinstance(err, ContextWindowError):
        # As DSPy: a step that cannot be made to fit ends the loop; extraction still
        # runs on the (truncated) trajectory.
        logger.warning("ReAct: ending the trajectory at step %d: %s", idx, err)
    else:  # DSPy's parse error is a ValueError
        logger.warning(
            "ReAct: ending the trajectory at step %d: the LM did not choose a valid tool (%s)",
            idx,
            err,
        )


def _record_step(trajectory: dict[str, Any], idx: int, pred: Any) -> tuple[Any, Any]:
    """Write step ``idx``'s thought and tool choice; the chosen tool's name and args."""
    name, args = pred.next_tool_name, pred.next_tool_args
    trajectory[f"thought_{idx}"] = pred.next_thought
    trajectory[f"tool_name_{idx}"] = name
    trajectory[f"tool_args_{idx}"] = args
    return name, args


def _still_too_long(last: ContextWindowError | None) -> ContextWindowError:
    assert last is not None
    error = ContextWindowError(
        # DSPy's sentence first: code written for DSPy matches on it.
        f"The context window was exceeded even after {MAX_TRUNCATIONS} attempts to truncate "
        "the trajectory (the oldest step dropped after each); shorten the inputs or the "
        f"tool observations, or use a model with a larger context window ({last})",
        model=last.model,
        status=last.status,
        prompt_tokens=last.prompt_tokens,
        context_window=last.context_window,
    )
    error.__cause__ = last  # as `raise ... from last`
    error.__suppress_context__ = True
    return error


def _error_for_lm(error: BaseException) -> str:
    """A tool's error as the LM reads it, as DSPy shows it: a traceback of up to 5 frames."""
    lines = traceback.format_exception(type(error), error, error.__traceback__, limit=5)
    return "\n" + "".join(lines).strip()


# -- construction ---------------------------------------------------------------------------


def _check_max_iters(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UsageError(f"max_iters={value!r}: pass a positive int, e.g. max_iters=10.")
    return value


def _tool_table(tools: Any, signature: type[Signature]) -> dict[str, Tool]:
    """``{name: Tool}`` for the user's tools, plus ``finish``; names must be unique."""
    if callable(tools) or isinstance(tools, str | bytes) or not isinstance(tools, Sequence):
        raise UsageError(
            f"ReAct(tools={tools!r}): tools must be a list of functions or Tool objects, "
            "e.g. tools=[search]."
        )
    table: dict[str, Tool] = {}
    for index, item in enumerate(tools):
        if not isinstance(item, Tool) and not callable(item):
            raise UsageError(
                f"ReAct(tools=[...]): tools[{index}]={item!r} is not callable; pass a function, "
                "a callable object or a dspex.Tool."
            )
        tool = item if isinstance(item, Tool) else Tool(item)
        if tool.name == FINISH:
            raise UsageError(
                "ReAct(tools=[...]): a tool is named 'finish', which ReAct reserves for ending "
                "the loop; rename it with Tool(func, name=...)."
            )
        if tool.name in table:
            raise UsageError(
                f"ReAct(tools=[...]): two tools are named {tool.name!r}; give one another "
                "name with Tool(func, name=...)."
            )
        table[tool.name] = tool
    outputs = ", ".join(f"`{k}`" for k in signature.output_fields)
    table[FINISH] = Tool(
        _finish,
        name=FINISH,
        # DSPy's wording, byte for byte: it is part of the prompt.
        desc=(
            "Marks the task as complete. That is, signals that all information for "
            f"producing the outputs, i.e. {outputs}, are now available to be extracted."
        ),
        args={},
    )
    return table


def _step_signature(signature: type[Signature], tools: Mapping[str, Tool]) -> type[Signature]:
    """The per-step signature: inputs + trajectory -> thought, tool name, tool args."""
    inputs = ", ".join(f"`{k}`" for k in signature.input_fields)
    outputs = ", ".join(f"`{k}`" for k in signature.output_fields)
    lines = [f"{signature.instructions}\n"] if signature.instructions else []
    # The instructions are DSPy's text byte for byte, so an agent sends the same prompt.
    lines += [
        f"You are an Agent. In each episode, you will be given the fields {inputs} as input. "
        "And you can see your past trajectory so far.",
        "Your goal is to use one or more of the supplied tools to collect any necessary "
        f"information for producing {outputs}.\n",
        "To do this, you will interleave next_thought, next_tool_name, and next_tool_args in "
        "each turn, and also when finishing the task.",
        "After each tool call, you receive a resulting observation, which gets appended to "
        "your trajectory.\n",
        "When writing next_thought, you may reason about the current situation and plan for "
        "future steps.",
        "When selecting the next_tool_name and its next_tool_args, the tool must be one of:\n",
    ]
    lines += [f"({i}) {tool}" for i, tool in enumerate(tools.values(), 1)]
    lines.append(
        "When providing `next_tool_args`, the value inside the field must be in JSON format"
    )
    names: Any = Literal.__getitem__(tuple(tools))
    return (
        make_signature(dict(signature.input_fields), "\n".join(lines))
        .append("trajectory", InputField(), type_=str)
        .append("next_thought", OutputField(), type_=str)
        .append("next_tool_name", OutputField(), type_=names)
        .append("next_tool_args", OutputField(), type_=dict[str, Any])
    )


# -- the trajectory actor ---------------------------------------------------------------------


def _in_trajectory_actor(parent: RunContext, runtime: Any, loop: Callable[[], Prediction]) -> Any:
    """Run ``loop`` as a transient ProgramRun under ``programs`` and wait for its reply.

    The job carries this thread's contextvars (settings overrides, the trace)
    and a RunContext with the parent's deadline, cancel event and trace. This
    does not go through ``Runtime.run``: its admission gate counts top-level
    runs, and a run waiting there for its own trajectory could wait forever
    once every slot is held by such runs. When the supervisor is full (or
    stopping) the loop runs inline instead.
    """
    run = RunContext(
        deadline=parent.deadline,
        trace=parent.trace,
        cancelled=parent.cancelled,
        label=f"{parent.label}/ReAct" if parent.label else "ReAct",
        runtime=runtime,
        lease=parent.lease or current_lease(),  # the parent waits: its slot may be lent
    )
    if parent.deadline is None:
        # Nothing to return early for: the trajectory borrows this thread.
        return _in_light_trajectory(parent, runtime, run, loop)
    spec = ChildSpec(f"trajectory-{run.run_id}", ProgramRun.start, restart=Restart.TEMPORARY)
    try:
        ref = start_child(runtime.whereis("programs"), spec)
    except (MaxChildrenError, ActorStoppedError) as exc:
        logger.debug("ReAct: trajectory runs inline in run %s: %s", parent.run_id, exc)
        return loop()
    reply: Future[Any] = Future()
    started = time.perf_counter()
    ref.tell(RunJob(loop, contextvars.copy_context(), run, reply))
    error: BaseException | None = None
    try:
        return _await_trajectory(ref, parent, run, reply)
    except BaseException as exc:
        error = exc
        raise
    finally:
        _report(runtime, parent, run, (time.perf_counter() - started) * 1000, error)


def _in_light_trajectory(
    parent: RunContext, runtime: Any, run: RunContext, loop: Callable[[], Prediction]
) -> Any:
    """Run ``loop`` in this thread as a light process under ``programs`` (no deadline).

    The parent only waits for the trajectory, so, as a top-level run does
    (docs/architecture.md, departure 22), it runs here, supervised: listed
    under ``programs`` while it runs, stopped by a cancel, its failures the
    actor's (ordinary errors as raised; ``SystemExit`` & co fail it alone).
    """
    process = LightProcess(ProgramRun, run.cancelled.set)
    spec = ChildSpec(f"trajectory-{run.run_id}", _never_started, restart=Restart.TEMPORARY)
    try:
        adopt_child(runtime.whereis("programs"), process, spec)
    except ActorStoppedError as exc:
        process.exit()
        logger.debug("ReAct: trajectory runs unsupervised in run %s: %s", parent.run_id, exc)
        return loop()
    started = time.perf_counter()
    reason: ExitReason = NORMAL
    error: BaseException | None = None
    try:
        return contextvars.copy_context().run(_execute_as, run, loop)
    except Exception as exc:
        reason = error = exc
        raise
    except BaseException as exc:
        reason = exc
        if isinstance(exc, KeyboardInterrupt) and _in_main_thread():
            error = exc
            raise  # Ctrl-C: the caller's as much as the trajectory's
        error = ProgramError(
            f"the ReAct trajectory of run {parent.run_id} ({parent.label}) failed: a tool or "
            f"the LM call raised {exc!r}; the trajectory was stopped",
            original=exc,
        )
        raise error from exc
    finally:
        process.exit(reason)
        _report(runtime, parent, run, (time.perf_counter() - started) * 1000, error)


def _execute_as(run: RunContext, loop: Callable[[], Prediction]) -> Prediction:
    activate_run(run)  # in a copy of the context: nothing to reset
    return loop()


def _never_started() -> Any:
    raise ProgramError("a ReAct trajectory run in its caller's thread cannot be restarted")


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def _await_trajectory(ref: Any, parent: RunContext, run: RunContext, reply: Future[Any]) -> Any:
    """The trajectory's result; an ordinary error re-raised as it was raised inline."""
    failure: ProgramError | None = None
    while True:
        wait = _POLL
        if parent.deadline is not None:
            wait = min(wait, max(parent.deadline - time.monotonic(), 0.001))
        # Done-or-not first: a trajectory that failed with a TimeoutError must
        # not read as a wait that timed out (it would be waited for forever).
        if not futures_wait((reply,), timeout=wait).done:
            parent.check_deadline()  # deadline passed or cancelled: stop waiting
            if not ref.is_alive() and not reply.done():
                raise ProgramError(
                    f"the ReAct trajectory of run {parent.run_id} ({parent.label}) died "
                    "without replying; see the supervisor events in telemetry"
                ) from None
            continue
        try:
            return reply.result()
        except ProgramError as exc:
            failure = exc
            break
    original = failure.original
    if isinstance(original, Exception):
        raise original  # the wrapper only carried it across threads
    if original is not None:  # SystemExit & co from a tool: this trajectory fails alone
        error = ProgramError(
            f"the ReAct trajectory of run {parent.run_id} ({parent.label}) failed: a tool or "
            f"the LM call raised {original!r}; the trajectory was stopped",
            original=original,
        )
        raise error from original
    raise failure  # the trajectory's own deadline or cancel check


def _report(
    runtime: Any, parent: RunContext, run: RunContext, ms: float, error: BaseException | None
) -> None:
    """A telemetry event per trajectory (a tell: never on the critical path)."""
    fields: dict[str, Any] = {
        "run_id": run.run_id,
        "parent_run_id": parent.run_id,
        "label": run.label,
        "duration_ms": ms,
    }
    if error is None:
        runtime.telemetry.emit("program.trajectory.stop", **fields)
    else:
        original = getattr(error, "original", None) or error
        runtime.telemetry.emit(
            "program.trajectory.exception", error=type(original).__name__, **fields
        )
