"""One GEPA or SIMBA run of a candidate on an example, and its record in plain form.

The run happens in a pool worker thread, or on a Ray worker (``_ray._jobs``);
its plain form (predictions as their fields, trace entries naming their
predictor) is what a checkpoint journal keeps and what a Ray worker sends
back, revived on the driver's own program. Kept apart from the optimizers
so the Ray jobs import it without importing the programs layer's modules.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from dspex._record import Record
from dspex.errors import UsageError
from dspex.programs._prediction import Prediction
from dspex.programs._settings import context
from dspex.programs._teleprompt._checkpoint import from_plain, to_plain

__all__ = [
    "Rollout",
    "plain_record",
    "plain_rollout",
    "revive_record",
    "revive_rollout",
    "run_pair",
    "run_rollout",
]

logger = logging.getLogger("dspex.programs")

# -- GEPA -------------------------------------------------------------------------------


class Rollout(Record):
    """One (candidate, example) run: what the pool returns for it."""

    group: int
    prediction: Any
    raw_score: Any
    trace: list[Any] | None
    failed: bool


def plain_rollout(rollout: Rollout, names: Mapping[int, str]) -> Any:
    """One rollout as plain values (``names``: predictor id -> name in its program).

    What the journal keeps and what a Ray worker sends back: predictions as
    their fields, each trace entry naming its predictor instead of holding it.
    """
    trace = (
        None
        if rollout.trace is None
        else [(names.get(id(p)), dict(i), o) for p, i, o in rollout.trace]
    )
    return to_plain((rollout.group, rollout.prediction, rollout.raw_score, trace, rollout.failed))


def revive_rollout(saved: Any, by_name: Sequence[Mapping[str, Any]]) -> Rollout:
    """The inverse of :func:`plain_rollout`, its trace on the predictors ``by_name[group]``."""
    group, prediction, raw, trace, failed = from_plain(saved)
    entries = (
        None
        if trace is None
        else [(by_name[group].get(name), i, o) for name, i, o in trace if name is not None]
    )
    return Rollout(group, prediction, raw, entries, failed)


def run_rollout(
    program: Any, metric: Callable[..., Any], capture_traces: bool, group: int, example: Any
) -> Rollout:
    """One (candidate, example) run, traced, and its metric (a pool or Ray worker thread)."""
    trace: list[Any] = []
    try:
        with context(trace=trace):
            prediction = program(**example.inputs())
    except UsageError:  # a program that cannot run at all (no LM...): stop the compile
        raise
    except Exception as exc:  # the example fails; the candidate is scored on the rest
        logger.warning("GEPA: the program failed on an example: %s", exc)
        return Rollout(group, None, None, None, True)
    try:
        raw = metric(example, prediction, trace if capture_traces else None, None, None)
    except UsageError:
        raise
    except Exception as exc:
        logger.warning("GEPA: the metric failed on an example: %s", exc)
        return Rollout(group, prediction, None, trace, True)
    return Rollout(group, prediction, raw, trace, False)


# -- SIMBA ------------------------------------------------------------------------------


def run_pair(metric: Callable[..., Any], pair: tuple[Any, Any]) -> dict[str, Any]:
    """One (program, example) run, traced, and its metric: DSPy's wrapped-program record.

    Runs in a pool worker thread, or in a Ray worker's unit thread.
    """
    program, example = pair
    trace: list[Any] = []
    prediction = None
    with context(trace=trace):
        try:
            prediction = program(**example.inputs())
        except UsageError:  # a program that cannot run at all (no LM...)
            raise
        except Exception as exc:
            logger.warning("SIMBA: the program failed on an example: %s", exc)
    score: float = 0.0
    metadata: dict[str, Any] = {}
    try:
        value = metric(example, prediction)
        if isinstance(value, Prediction):
            if "score" not in value:
                raise UsageError(
                    "SIMBA: a metric that returns a Prediction must give it a score field"
                )
            score = float(value.score)
            metadata = {k: v for k, v in value.items() if k != "score"}
        elif isinstance(value, int | float):
            score = float(value)
    except UsageError:
        raise
    except Exception as exc:
        logger.warning("SIMBA: the metric failed on an example: %s", exc)
    return {
        "prediction": prediction,
        "trace": list(trace),
        "score": score,
        "example": example,
        "output_metadata": metadata,
    }


def plain_record(record: dict[str, Any], program: Any) -> Any:
    """A run's record (without its example) as plain values: trace entries by predictor name.

    What the journal keeps and what a Ray worker sends back.
    """
    names = {id(p): n for n, p in program.named_predictors()}
    trace = [(names.get(id(p)), dict(i), o) for p, i, o in record["trace"]]
    return to_plain({**{k: v for k, v in record.items() if k != "example"}, "trace": trace})


def revive_record(saved: dict[str, Any], pair: tuple[Any, Any]) -> dict[str, Any]:
    """A journaled record with its trace on this replay's program and example."""
    by_name = dict(pair[0].named_predictors())
    saved = from_plain(saved)
    trace = [(by_name[n], i, o) for n, i, o in saved["trace"] if n in by_name]
    return {**saved, "trace": trace, "example": pair[1]}
