"""``MIPROv2``: instructions and demos optimized together (DSPy's ``dspy.MIPROv2``).

Three steps, as in DSPy:

1. **Demo sets.** ``num_fewshot_candidates`` demo sets per predictor, built
   the way BootstrapFewShotWithRandomSearch builds its candidates: zero-shot,
   labeled only, BootstrapFewShot on the trainset as given, then bootstraps
   on shuffles of it, all drawn from the compile's one seeded generator.
2. **Instructions.** ``num_instruct_candidates`` instructions per predictor:
   the current one plus proposals from a grounded proposer (``_mipro_propose``).
3. **Search.** ``num_trials`` trials over the (instruction, demo set) choice
   of every predictor, scored on minibatches of the valset with periodic full
   evaluations (``_mipro_search``). The best fully evaluated program is returned.

The compile runs under one coordinator in the runtime's tree: bootstrapping
and the proposals run on its pool, and every evaluation's pool is its child.
"""

from __future__ import annotations

import logging
import os
import random
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from dspex.errors import UsageError
from dspex.programs._evaluate import Evaluate
from dspex.programs._evaluate_engine import resolve_num_threads
from dspex.programs._settings import context, current_settings
from dspex.programs._teleprompt._base import Teleprompter, check_count
from dspex.programs._teleprompt._bootstrap import check_options
from dspex.programs._teleprompt._checkpoint import (
    Journal,
    digest,
    fingerprint_examples,
    fingerprint_program,
    open_journal,
)
from dspex.programs._teleprompt._coordinator import coordinate
from dspex.programs._teleprompt._mipro_plan import (
    AUTO_RUN_SETTINGS,
    BOOTSTRAPPED_FEWSHOT_EXAMPLES_IN_CONTEXT,
    LABELED_FEWSHOT_EXAMPLES_IN_CONTEXT,
    Plan,
    check_budget,
    check_permission,
    count_predictors,
    plan_budget,
    split_datasets,
)
from dspex.programs._teleprompt._mipro_propose import GroundedProposer
from dspex.programs._teleprompt._mipro_search import PromptSearch
from dspex.programs._teleprompt._random_search import BootstrapFewShotWithRandomSearch

__all__ = ["MIPROv2"]

logger = logging.getLogger("dspex.programs")

_NOT_SETTINGS = frozenset(
    {"self", "student", "trainset", "teacher", "valset", "checkpoint", "provide_traceback",
     "requires_permission_to_run"}
)  # fmt: skip


class MIPROv2(Teleprompter):
    """Optimizes every predictor's instruction and demos together (``dspy.MIPROv2``).

    ``auto`` ("light", "medium", "heavy") sets the budget; with ``auto=None``
    pass ``num_candidates`` here and ``num_trials`` to :meth:`compile`.
    ``prompt_model`` writes the instruction candidates and ``task_model`` runs
    the program (both default to the configured LM). ``teacher_settings``,
    ``max_errors`` and ``metric_threshold`` apply to bootstrapping as in
    BootstrapFewShot; ``init_temperature`` is the proposals' temperature;
    ``log_dir`` saves every evaluated program; ``track_stats`` attaches the
    trial records to the result.
    """

    def __init__(  # noqa: PLR0917  (DSPy's positional signature)
        self,
        metric: Callable[..., Any],
        prompt_model: Any = None,
        task_model: Any = None,
        teacher_settings: Mapping[str, Any] | None = None,
        max_bootstrapped_demos: int = 4,
        max_labeled_demos: int = 4,
        auto: str | None = "light",
        num_candidates: int | None = None,
        num_threads: int | None = None,
        max_errors: float | None = None,
        seed: int = 9,
        init_temperature: float = 1.0,
        verbose: bool = False,
        track_stats: bool = True,
        log_dir: str | None = None,
        metric_threshold: float | None = None,
    ) -> None:
        where = type(self).__name__
        if metric is None:
            raise UsageError(
                f"{where}(metric=None): a metric is required to score the candidates, e.g. "
                "metric=dspex.answer_exact_match"
            )
        check_options(
            where,
            metric=metric,
            metric_threshold=metric_threshold,
            teacher_settings=teacher_settings,
            max_errors=max_errors,
            timeout=None,
        )
        if auto not in (None, *AUTO_RUN_SETTINGS):
            raise UsageError(
                f"{where}(auto={auto!r}): must be one of 'light', 'medium', 'heavy', or None "
                "(then pass num_candidates=... here and num_trials=... to compile)"
            )
        if num_candidates is not None:
            check_count(where, "num_candidates", num_candidates, 1)
        if num_threads is not None:
            check_count(where, "num_threads", num_threads, 1)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise UsageError(f"{where}(seed={seed!r}): must be an int, e.g. seed=9")
        if (
            isinstance(init_temperature, bool)
            or not isinstance(init_temperature, int | float)
            or init_temperature < 0
        ):
            raise UsageError(
                f"{where}(init_temperature={init_temperature!r}): must be a number >= 0, e.g. 1.0"
            )
        self.metric = metric
        self.auto = auto
        self.num_candidates = num_candidates
        self.num_fewshot_candidates = num_candidates
        self.num_instruct_candidates = num_candidates
        self.init_temperature = float(init_temperature)
        lm = current_settings().get("lm")
        self.task_model = task_model if task_model is not None else lm
        self.prompt_model = prompt_model if prompt_model is not None else lm
        self.max_bootstrapped_demos = check_count(
            where, "max_bootstrapped_demos", max_bootstrapped_demos, 0
        )
        self.max_labeled_demos = check_count(where, "max_labeled_demos", max_labeled_demos, 0)
        self.verbose = verbose
        self.track_stats = track_stats
        self.log_dir = log_dir
        self.teacher_settings: dict[str, Any] = dict(teacher_settings or {})
        self.prompt_model_total_calls = 0
        self.total_calls = 0
        self.num_threads = num_threads
        self.max_errors = max_errors
        self.metric_threshold = metric_threshold
        self.seed = seed
        self.rng: random.Random | None = None
        self.instruction_candidates: dict[int, list[str]] = {}
        """After a compile: each predictor's instruction candidates (0: its own)."""
        self.demo_candidates: dict[int, list[list[Any]]] | None = None
        """After a compile: each predictor's demo sets (None when optimizing zero-shot)."""

    def compile(  # type: ignore[override]  # DSPy's signature
        self,
        student: Any,
        *,
        trainset: Sequence[Any],
        teacher: Any = None,
        valset: Sequence[Any] | None = None,
        num_trials: int | None = None,
        max_bootstrapped_demos: int | None = None,
        max_labeled_demos: int | None = None,
        seed: int | None = None,
        minibatch: bool = True,
        minibatch_size: int = 35,
        minibatch_full_eval_steps: int = 5,
        program_aware_proposer: bool = True,
        data_aware_proposer: bool = True,
        view_data_batch_size: int = 10,
        tip_aware_proposer: bool = True,
        fewshot_aware_proposer: bool = True,
        requires_permission_to_run: bool | None = None,
        provide_traceback: bool | None = None,
        checkpoint: str | os.PathLike[str] | None = None,
    ) -> Any:
        """The best program found: a copy of ``student`` with new instructions and demos.

        With ``checkpoint`` (a directory), the bootstraps' teacher runs, the
        proposals and each trial's score are journaled there; rerunning the
        same compile resumes.
        """
        # compile's arguments that shape the result (the data is fingerprinted apart).
        settings_seen = {k: v for k, v in locals().items() if k not in _NOT_SETTINGS}
        where = f"{type(self).__name__}.compile"
        check_permission(where, requires_permission_to_run)
        bootstrapped = (
            self.max_bootstrapped_demos
            if max_bootstrapped_demos is None
            else check_count(where, "max_bootstrapped_demos", max_bootstrapped_demos, 0)
        )
        labeled = (
            self.max_labeled_demos
            if max_labeled_demos is None
            else check_count(where, "max_labeled_demos", max_labeled_demos, 0)
        )
        zeroshot = bootstrapped == 0 and labeled == 0
        num_predictors = count_predictors(student, where)
        check_budget(
            where,
            auto=self.auto,
            num_candidates=self.num_candidates,
            num_trials=num_trials,
            num_predictors=num_predictors,
            zeroshot=zeroshot,
        )
        for name, value in (
            ("minibatch_size", minibatch_size),
            ("minibatch_full_eval_steps", minibatch_full_eval_steps),
            ("view_data_batch_size", view_data_batch_size),
        ):
            check_count(where, name, value, 1)
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise UsageError(f"{where}(seed={seed!r}): must be an int, or None for MIPROv2's seed")
        seed = self.seed if seed is None else seed
        self.rng = rng = random.Random(seed)
        trainset, full_valset = split_datasets(where, trainset, valset)
        plan = plan_budget(
            auto=self.auto,
            num_candidates=self.num_candidates,
            num_predictors=num_predictors,
            num_trials=num_trials,
            minibatch=minibatch,
            zeroshot=zeroshot,
            valset=full_valset,
            rng=rng,
        )
        if plan.minibatch and minibatch_size > len(plan.valset):
            raise UsageError(
                f"{where}(minibatch_size={minibatch_size}): larger than the valset "
                f"({len(plan.valset)} examples); pass a smaller minibatch_size, a larger "
                "valset, or minibatch=False"
            )
        settings = current_settings()
        task_lm = self.task_model if self.task_model is not None else settings.get("lm")
        prompt_lm = self.prompt_model if self.prompt_model is not None else settings.get("lm")
        if task_lm is None or prompt_lm is None:
            raise UsageError(
                f"{where}: no LM to run the program or propose instructions; pass "
                "prompt_model= and task_model= to MIPROv2, or configure one with "
                "dspex.configure(lm=dspex.LM('openai/gpt-4o-mini'))"
            )
        max_errors = self.max_errors if self.max_errors is not None else settings.get("max_errors")
        threads = resolve_num_threads(self.num_threads, settings)
        self.num_instruct_candidates = plan.num_instruct_candidates
        self.num_fewshot_candidates = plan.num_fewshot_candidates
        program = student.deepcopy()
        evaluate = Evaluate(
            devset=plan.valset,
            metric=self.metric,
            num_threads=self.num_threads,
            max_errors=max_errors,
            display_table=False,
            provide_traceback=provide_traceback,
        )
        work = max(1, len(trainset), num_predictors * plan.num_instruct_candidates)
        journal = open_journal(
            checkpoint,
            optimizer=type(self).__name__,
            fingerprint={
                "program": fingerprint_program(student),
                "teacher": "none" if teacher is None else fingerprint_program(teacher),
                "trainset": fingerprint_examples(trainset),
                "valset": fingerprint_examples(full_valset),
                "settings": digest(
                    {**settings_seen, **self._checkpoint_settings(task_lm, prompt_lm), "seed": seed}
                ),
            },
        )
        try:
            best, outcome = self._run(
                program, trainset, teacher, plan, journal, crew_args=(threads, work),
                task_lm=task_lm, prompt_lm=prompt_lm, evaluate=evaluate, rng=rng, seed=seed,
                bootstrapped=bootstrapped, labeled=labeled, max_errors=max_errors,
                zeroshot=zeroshot, minibatch_size=minibatch_size,
                minibatch_full_eval_steps=minibatch_full_eval_steps,
                proposer_options={
                    "view_data_batch_size": view_data_batch_size,
                    "data_aware": data_aware_proposer,
                    "program_aware": program_aware_proposer,
                    "tip_aware": tip_aware_proposer,
                    "fewshot_aware": fewshot_aware_proposer,
                },
            )  # fmt: skip
        finally:
            if journal is not None:
                journal.close()
                logger.info(
                    "MIPROv2 checkpoint: %d units replayed, %d recorded",
                    journal.replayed,
                    journal.recorded,
                )
        self.total_calls = outcome.total_eval_calls
        if self.track_stats:
            best.trial_logs = outcome.trial_logs
            best.score = outcome.best_score
            best.prompt_model_total_calls = self.prompt_model_total_calls
            best.total_calls = self.total_calls
            ranked = sorted(outcome.score_data, key=lambda entry: entry["score"], reverse=True)
            best.mb_candidate_programs = [entry for entry in ranked if not entry["full_eval"]]
            best.candidate_programs = [entry for entry in ranked if entry["full_eval"]]
        return best

    def _checkpoint_settings(self, task_lm: Any, prompt_lm: Any) -> dict[str, Any]:
        """What a checkpoint must agree on besides compile's arguments (functions and LMs
        by name)."""
        metric = self.metric
        return {
            "metric": getattr(metric, "__qualname__", type(metric).__qualname__),
            "metric_threshold": self.metric_threshold,
            "auto": self.auto,
            "num_candidates": self.num_candidates,
            "init_temperature": self.init_temperature,
            "max_bootstrapped_demos": self.max_bootstrapped_demos,
            "max_labeled_demos": self.max_labeled_demos,
            "task_model": getattr(task_lm, "model", repr(type(task_lm))),
            "prompt_model": getattr(prompt_lm, "model", repr(type(prompt_lm))),
            "teacher_settings": sorted(self.teacher_settings or {}),
        }

    def _run(
        self,
        program: Any,
        trainset: list[Any],
        teacher: Any,
        plan: Plan,
        journal: Journal | None,
        *,
        crew_args: tuple[int, int],
        task_lm: Any,
        prompt_lm: Any,
        evaluate: Any,
        rng: random.Random,
        seed: int,
        bootstrapped: int,
        labeled: int,
        max_errors: Any,
        zeroshot: bool,
        minibatch_size: int,
        minibatch_full_eval_steps: int,
        proposer_options: dict[str, Any],
    ) -> tuple[Any, Any]:
        """Steps 1 to 3 under the compile's coordinator: the best program and the outcome."""
        threads, work = crew_args
        with coordinate(type(self).__name__, num_threads=threads, work=work) as crew:
            # Steps 1 and 2 are one journal unit (their bootstraps' teacher runs are
            # units too): their result and the generator's state after them.
            found = False
            saved: Any = None
            if journal is not None:
                found, saved = journal.replay("proposals", "")
            if found:
                demo_candidates, instructions, calls, state = saved
                rng.setstate(state)
            else:
                demo_candidates, instructions, calls = self._propose_all(
                    program, trainset, teacher=teacher, plan=plan, journal=journal, crew=crew,
                    threads=threads, task_lm=task_lm, prompt_lm=prompt_lm, rng=rng,
                    bootstrapped=bootstrapped, labeled=labeled, max_errors=max_errors,
                    proposer_options=proposer_options,
                )  # fmt: skip
                if journal is not None:
                    journal.record(
                        "proposals", "", (demo_candidates, instructions, calls, rng.getstate())
                    )
            self.prompt_model_total_calls = calls
            for index, candidates in instructions.items():
                for number, instruction in enumerate(candidates):
                    logger.info("Predictor %d, instruction %d: %s", index, number, instruction)
            self.instruction_candidates = instructions
            self.demo_candidates = None if zeroshot else demo_candidates
            logger.info("==> STEP 3: FINDING OPTIMAL PROMPT PARAMETERS <==")
            search = PromptSearch(
                program,
                instructions,
                self.demo_candidates,
                evaluate,
                plan.valset,
                rng=rng,
                seed=seed,
                minibatch=plan.minibatch,
                minibatch_size=minibatch_size,
                full_eval_steps=minibatch_full_eval_steps,
                log_dir=self.log_dir,
                verbose=self.verbose,
                journal=journal,
            )
            with context(lm=task_lm):
                outcome = search.run(plan.num_trials)
        return outcome.best_program, outcome

    def _propose_all(
        self,
        program: Any,
        trainset: list[Any],
        *,
        teacher: Any,
        plan: Plan,
        journal: Journal | None,
        crew: Any,
        threads: int,
        task_lm: Any,
        prompt_lm: Any,
        rng: random.Random,
        bootstrapped: int,
        labeled: int,
        max_errors: Any,
        proposer_options: dict[str, Any],
    ) -> tuple[dict[int, list[list[Any]]], dict[int, list[str]], int]:
        """Steps 1 and 2: the demo sets, the instruction candidates, the proposer's calls."""
        logger.info("==> STEP 1: BOOTSTRAP FEWSHOT EXAMPLES <==")
        with context(lm=task_lm):
            demo_candidates = self._demo_sets(
                program,
                trainset,
                teacher=teacher,
                plan=plan,
                bootstrapped=bootstrapped,
                labeled=labeled,
                max_errors=max_errors,
                rng=rng,
                journal=journal,
            )
        logger.info("==> STEP 2: PROPOSE INSTRUCTION CANDIDATES <==")
        proposer = GroundedProposer(
            program=program,
            trainset=trainset,
            prompt_model=prompt_lm,
            crew=crew,
            num_threads=threads,
            rng=rng,
            init_temperature=self.init_temperature,
            verbose=self.verbose,
            **proposer_options,
        )
        instructions = proposer.propose(demo_candidates, plan.num_instruct_candidates)
        return demo_candidates, instructions, proposer.calls

    # -- step 1 ------------------------------------------------------------------------------

    def _demo_sets(
        self,
        program: Any,
        trainset: list[Any],
        *,
        teacher: Any,
        plan: Plan,
        bootstrapped: int,
        labeled: int,
        max_errors: Any,
        rng: random.Random,
        journal: Journal | None = None,
    ) -> dict[int, list[list[Any]]]:
        """``num_fewshot_candidates`` demo sets per predictor index (seeds -3, -2, -1, 0...)."""
        zeroshot = bootstrapped == 0 and labeled == 0
        if zeroshot:  # bootstrapped anyway: the proposer grounds its instructions in them
            bootstrapped = BOOTSTRAPPED_FEWSHOT_EXAMPLES_IN_CONTEXT
            labeled = LABELED_FEWSHOT_EXAMPLES_IN_CONTEXT
        count = plan.num_fewshot_candidates
        logger.info("Bootstrapping N=%d sets of demonstrations...", count)
        search = BootstrapFewShotWithRandomSearch(
            metric=self.metric,
            teacher_settings=self.teacher_settings,
            max_bootstrapped_demos=bootstrapped,
            max_labeled_demos=labeled,
            num_candidate_programs=max(0, count - 3),
            num_threads=self.num_threads,
            max_errors=max_errors,
            metric_threshold=self.metric_threshold,
        )
        search.trainset = list(trainset)
        search._journal = journal  # each set's teacher runs are journal units
        sets: dict[int, list[list[Any]]] = {i: [] for i in range(len(program.predictors()))}
        for seed in range(-3, count - 3):
            logger.info("Bootstrapping set %d/%d", seed + 4, count)
            candidate = search._candidate(seed, program, teacher, True, max_errors, rng=rng)
            for i, predictor in enumerate(candidate.predictors()):
                sets[i].append(list(predictor.demos))
        return sets
