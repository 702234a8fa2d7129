"""MIPROv2's budget: the ``auto`` presets, the argument checks, and the train/val split.

The presets are DSPy's: ``n`` candidates (demo sets; half as many
instructions when demos are optimized too), a valset sampled down to
``val_size``, minibatches only for a valset over 50 examples, and
``max(2 * M * log2(n), 1.5 * n)`` trials for ``M`` searched variables (one
or two per predictor).
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Mapping, Sequence
from typing import Any, Final

from dspex._record import Record
from dspex.errors import UsageError
from dspex.programs._teleprompt._base import check_count, check_trainset

__all__ = [
    "AUTO_RUN_SETTINGS",
    "BOOTSTRAPPED_FEWSHOT_EXAMPLES_IN_CONTEXT",
    "LABELED_FEWSHOT_EXAMPLES_IN_CONTEXT",
    "Plan",
    "check_budget",
    "check_permission",
    "count_predictors",
    "num_trials_for",
    "plan_budget",
    "split_datasets",
]

logger = logging.getLogger("dspex.programs")

AUTO_RUN_SETTINGS: Final[Mapping[str, Mapping[str, int]]] = {
    "light": {"n": 6, "val_size": 100},
    "medium": {"n": 12, "val_size": 300},
    "heavy": {"n": 18, "val_size": 1000},
}
"""Each preset's number of candidates ``n`` and the valset size it samples down to."""

MIN_MINIBATCH_SIZE: Final = 50
"""Presets evaluate on minibatches only when the valset is larger than this."""

# When optimizing zero-shot, demo sets are still bootstrapped (3 each, no labeled
# ones): the proposer grounds its instructions in them.
BOOTSTRAPPED_FEWSHOT_EXAMPLES_IN_CONTEXT: Final = 3
LABELED_FEWSHOT_EXAMPLES_IN_CONTEXT: Final = 0

_MAX_VALSET: Final = 1000


def num_trials_for(num_predictors: int, zeroshot: bool, num_candidates: int) -> int:
    """DSPy's trial budget: ``max(2 * M * log2(N), 1.5 * N)`` for ``M`` searched variables."""
    variables = num_predictors * (1 if zeroshot else 2)
    return int(max(2 * variables * math.log2(num_candidates), 1.5 * num_candidates))


class Plan(Record):
    """The budget of one compile, after the ``auto`` preset (if any) is applied."""

    num_trials: int
    valset: list[Any]
    minibatch: bool
    num_instruct_candidates: int
    num_fewshot_candidates: int


def check_budget(
    where: str,
    *,
    auto: str | None,
    num_candidates: int | None,
    num_trials: int | None,
    num_predictors: int,
    zeroshot: bool,
) -> None:
    """DSPy's rules: a preset sets both numbers; without one, both are required."""
    if num_trials is not None:
        check_count(where, "num_trials", num_trials, 1)
    if auto is None and num_candidates is not None and num_trials is None:
        suggested = num_trials_for(num_predictors, zeroshot, num_candidates)
        raise UsageError(
            f"{where}(num_trials=None): with auto=None, num_trials is required too; for "
            f"num_candidates={num_candidates} we suggest num_trials={suggested}"
        )
    if auto is None and (num_candidates is None or num_trials is None):
        raise UsageError(
            "MIPROv2(auto=None, num_candidates=None): with auto=None, pass "
            "num_candidates=... to MIPROv2 and num_trials=... to compile, or pick a "
            "preset, e.g. auto='light'"
        )
    if auto is not None and (num_candidates is not None or num_trials is not None):
        raise UsageError(
            f"MIPROv2(auto={auto!r}) sets num_candidates and num_trials itself, but "
            f"num_candidates={num_candidates!r} and num_trials={num_trials!r} were "
            "given; drop them, or pass auto=None to set both yourself"
        )


def plan_budget(
    *,
    auto: str | None,
    num_candidates: int | None,
    num_predictors: int,
    num_trials: int | None,
    minibatch: bool,
    zeroshot: bool,
    valset: list[Any],
    rng: random.Random,
) -> Plan:
    """The compile's budget (checked by :func:`check_budget`); presets sample the valset."""
    if auto is None:
        assert num_trials is not None and num_candidates is not None  # check_budget
        return Plan(num_trials, valset, minibatch, num_candidates, num_candidates)
    preset = AUTO_RUN_SETTINGS[auto]
    n = preset["n"]
    size = min(preset["val_size"], len(valset))
    sampled = [valset[i] for i in rng.sample(range(len(valset)), size)]
    # Few-shot runs spend half the instruction budget: demos pay off more (DSPy's finding).
    plan = Plan(
        num_trials_for(num_predictors, zeroshot, n),
        sampled,
        len(sampled) > MIN_MINIBATCH_SIZE,
        n if zeroshot else int(n * 0.5),
        n,
    )
    logger.info(
        "RUNNING WITH THE FOLLOWING %s AUTO RUN SETTINGS: num_trials: %d, minibatch: %s, "
        "num_fewshot_candidates: %d, num_instruct_candidates: %d, valset size: %d",
        auto.upper(),
        plan.num_trials,
        plan.minibatch,
        plan.num_fewshot_candidates,
        plan.num_instruct_candidates,
        len(plan.valset),
    )
    return plan


def check_permission(where: str, requires_permission_to_run: bool | None) -> None:
    """DSPy 3 removed the confirmation prompt: never ask, refuse to be asked."""
    if requires_permission_to_run is None:
        return
    if requires_permission_to_run is False:
        logger.warning(
            "'requires_permission_to_run' is deprecated and will be removed in a future "
            "version; MIPROv2 never asks for confirmation"
        )
        return
    raise UsageError(
        f"{where}(requires_permission_to_run={requires_permission_to_run!r}): the "
        "confirmation prompt was removed from MIPROv2 (as in DSPy 3); remove the argument"
    )


def count_predictors(student: Any, where: str) -> int:
    predictors = getattr(student, "predictors", None)
    if not callable(predictors):
        raise UsageError(
            f"{where}(student={student!r}): not a dspex.Module; pass a program such as "
            "dspex.ChainOfThought('question -> answer')"
        )
    count = len(predictors())
    if count == 0:
        raise UsageError(
            f"{where}: the student {type(student).__name__} has no predictors to optimize; "
            "give it at least one dspex.Predict (or ChainOfThought, ...) attribute"
        )
    return count


def split_datasets(
    where: str, trainset: Sequence[Any], valset: Sequence[Any] | None
) -> tuple[list[Any], list[Any]]:
    """The trainset and valset; without a valset, the last 80% of the trainset (DSPy's split)."""
    train = check_trainset(trainset, where, need_inputs=True)
    if not train:
        raise UsageError(
            f"{where}(trainset=[]): the trainset is empty; pass a list of dspex.Example "
            "with inputs marked, e.g. [Example(question=..., answer=...).with_inputs('question')]"
        )
    if valset is not None:
        val = check_trainset(valset, where, need_inputs=True)
        if not val:
            raise UsageError(
                f"{where}(valset=[]): the valset is empty; pass at least one example, or "
                "valset=None to split it off the trainset"
            )
        return train, val
    if len(train) < 2:
        raise UsageError(
            f"{where}: a trainset of {len(train)} example cannot be split into train and "
            "validation examples; pass at least 2 examples, or a valset=..."
        )
    size = min(_MAX_VALSET, max(1, int(len(train) * 0.80)))
    cutoff = len(train) - size
    return train[:cutoff], train[cutoff:]
