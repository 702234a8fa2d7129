"""The kinds of unit a Ray worker runs, as data the driver ships once per fan-out.

A *job* is a frozen dataclass of shipped parts (programs by factory and
state, functions by import path, settings without secrets) whose
:meth:`make` builds, on the worker, the callable that runs one unit. The
worker builds each job once (keyed by :attr:`digest`) and then runs many
units with it. The driver builds them in ``_bodies``.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from dspex.programs._evaluate_engine import Outcome, evaluate_one
from dspex.programs._ray._shipping import (
    ShippedFunction,
    ShippedProgram,
    ShippedSettings,
)
from dspex.programs._settings import context, current_settings

__all__ = ["EvaluateJob", "GEPAJob", "Job", "SIMBAJob", "TeacherJob", "job_digest"]


@dataclass(frozen=True, slots=True)
class Job:
    """Base of the job kinds: the settings every unit runs under, and a digest."""

    settings: ShippedSettings
    digest: str

    def make(self) -> Callable[[Any], Any]:
        """The unit callable (on the worker); it runs inside :meth:`scope`."""
        raise NotImplementedError

    def scope(self) -> Mapping[str, Any]:
        """``dspex.context`` values every unit of this job runs under (on the worker)."""
        return self.settings.apply()


@dataclass(frozen=True, slots=True)
class EvaluateJob(Job):
    """Evaluate's unit: ``program(**example.inputs())`` scored by ``metric``."""

    program: ShippedProgram
    metric: ShippedFunction

    def make(self) -> Callable[[Any], Outcome]:
        return functools.partial(evaluate_one, self.program.build(), self.metric.resolve())


@dataclass(frozen=True, slots=True)
class TeacherJob(Job):
    """BootstrapFewShot's unit: one training example's teacher runs (``TeacherRuns``)."""

    teacher: ShippedProgram
    metric: ShippedFunction | None
    metric_threshold: float | None
    teacher_settings: ShippedSettings
    max_rounds: int

    def make(self) -> Callable[[Any], Any]:
        from dspex.programs._teleprompt._attempt import TeacherRuns, rollout_lm

        teacher_settings = self.teacher_settings.apply()
        rollouts: dict[int, Any] = {}
        if self.max_rounds > 1:
            # As the driver's BootstrapFewShot._rollout_lms does, from the worker's LM.
            with context(**self.scope()), context(**teacher_settings):
                lm = current_settings().get("lm")
            if lm is not None:
                rollouts = {i: rollout_lm(lm, i) for i in range(1, self.max_rounds)}
        return TeacherRuns(
            self.teacher.build(),
            metric=self.metric.resolve() if self.metric is not None else None,
            metric_threshold=self.metric_threshold,
            teacher_settings=teacher_settings,
            max_rounds=self.max_rounds,
            rollout_lms=rollouts,
        )


@dataclass(frozen=True, slots=True)
class GEPAJob(Job):
    """GEPA's unit: one candidate on one ``(group, example)``, traced; the rollout plain.

    The candidate is the student with new instructions, which its state
    carries. The rollout comes back in the journal's form (predictions as
    fields, trace entries by predictor name); the driver revives it.
    """

    program: ShippedProgram
    metric: ShippedFunction
    capture_traces: bool

    def make(self) -> Callable[[Any], Any]:
        return functools.partial(
            _gepa_unit, self.program.build(), self.metric.resolve(), self.capture_traces
        )


def _gepa_unit(
    program: Any, metric: Callable[..., Any], capture_traces: bool, item: tuple[int, Any]
) -> Any:
    from dspex.programs._teleprompt._rollouts import plain_rollout, run_rollout

    group, example = item
    names = {id(p): n for n, p in program.named_predictors()}
    return plain_rollout(run_rollout(program, metric, capture_traces, group, example), names)


@dataclass(frozen=True, slots=True)
class SIMBAJob(Job):
    """SIMBA's unit: one program (with its rollout LM) on one example; the record plain."""

    program: ShippedProgram
    metric: ShippedFunction

    def make(self) -> Callable[[Any], Any]:
        return functools.partial(_simba_unit, self.program.build(), self.metric.resolve())


def _simba_unit(program: Any, metric: Callable[..., Any], example: Any) -> Any:
    from dspex.programs._teleprompt._rollouts import plain_record, run_pair

    return plain_record(run_pair(metric, (program, example)), program)


def job_digest(*parts: Any) -> str:
    text = json.dumps(parts, sort_keys=True, default=repr)
    return hashlib.sha256(text.encode()).hexdigest()
