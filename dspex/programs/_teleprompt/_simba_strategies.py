"""SIMBA's two ways to change a program: append a demo, or append a rule (advice).

Both read one bucket: one training example's runs, best first. Each run is a
``dict`` with ``prediction``, ``trace``, ``score``, ``example`` and
``output_metadata`` (DSPy's shape). They run in the compile's thread.
"""

from __future__ import annotations

import inspect
import json
import logging
import textwrap
from collections.abc import Callable, Mapping
from typing import Any

from dspex.programs._example import Example
from dspex.programs._fields import InputField, OutputField
from dspex.programs._predict import Predict
from dspex.programs._settings import context
from dspex.programs._signature import Signature

__all__ = ["OfferFeedback", "append_a_demo", "append_a_rule", "inspect_modules"]

logger = logging.getLogger("dspex.programs")

Strategy = Callable[..., bool]


def append_a_demo(demo_input_field_maxlen: int) -> Strategy:
    """A strategy that gives each predictor the best run's call as one more demo."""

    def append_a_demo_(bucket: list[dict[str, Any]], system: Any, **kwargs: Any) -> bool:
        predictor2name: Mapping[int, str] = kwargs["predictor2name"]
        name2predictor: Mapping[str, Any] = kwargs["name2predictor"]
        good = bucket[0]
        if good["score"] <= kwargs["batch_10p_score"]:
            logger.info("SIMBA: no demo; the best score is at or below the 10th percentile")
            return False
        name2demo: dict[str, Example] = {}
        for predictor, inputs, outputs in good["trace"] or []:
            shown = {
                str(key): (
                    f"{str(value)[:demo_input_field_maxlen]}\n\t\t... <TRUNCATED FOR BREVITY>"
                    if demo_input_field_maxlen and len(str(value)) > demo_input_field_maxlen
                    else value
                )
                for key, value in inputs.items()
            }
            name = predictor2name.get(id(predictor))
            if name is not None:  # the last call of each predictor wins
                fields = {**shown, **{str(k): v for k, v in dict(outputs).items()}}
                name2demo[name] = Example(augmented=True, **fields)
        for name, demo in name2demo.items():
            name2predictor[name].demos.append(demo)
        logger.info("SIMBA: added %d demos (one per predictor)", len(name2demo))
        return True

    append_a_demo_.__name__ = "append_a_demo"
    return append_a_demo_


class OfferFeedback(Signature):
    """You will be given two trajectories of an LLM-driven program's execution. Your goal is to help the program's modules build up experience on how to maximize the reward value assigned to the program's outputs if it were to receive similar inputs in the future.

    The module won't see its own history. It will rely on your advice balancing being concrete and being generalizable.

    In your advice:
    - Avoid boilerplate. Offer advice that would change the module's behavior for the better in the future.
    - Ensure that advice offered to a module M is specific to that M's specific sub-task, not the overall program.
    - Rely on contrasting the behavior of the worse trajectory against the better trajectory in making recommendations.
    - Ensure each unique module name appears exactly once as a key in the advice dictionary."""  # noqa: E501

    program_code: str = InputField(desc="The code of the program that we are analyzing")
    modules_defn: str = InputField(
        desc="The definition of each module in the program, including its I/O"
    )
    program_inputs: str = InputField(desc="The inputs to the program that we are analyzing")
    oracle_metadata: str = InputField(
        desc="Any (hidden) metadata about the training set instance we're analyzing"
    )
    worse_program_trajectory: str = InputField(
        desc="The trajectory of the program's execution, showing each module's I/O"
    )
    worse_program_outputs: str = InputField(desc="The outputs of the program that we are analyzing")
    worse_reward_value: float = InputField(
        desc="The reward value assigned to the program's outputs"
    )
    worse_reward_info: str = InputField(
        desc="Additional information that might be helpful to understanding the assigned "
        "reward value."
    )
    better_program_trajectory: str = InputField(
        desc="The trajectory of the program's execution, showing each module's I/O"
    )
    better_program_outputs: str = InputField(
        desc="The outputs of the program that we are analyzing"
    )
    better_reward_value: float = InputField(
        desc="The reward value assigned to the program's outputs"
    )
    better_reward_info: str = InputField(
        desc="Additional information that might be helpful to understanding the assigned "
        "reward value."
    )
    module_names: list[str] = InputField(
        desc="The names of the modules in the program, for which we seek advice"
    )
    discussion: str = OutputField(
        desc="Discussing blame of where each module went wrong, if it did"
    )
    module_advice: dict[str, str] = OutputField(
        desc="For each module, describe very concretely: If the module receives ${description of "
        "input or patterns therein}, then it should ${description of content, behavior, or "
        "strategies to adopt and/or others to avoid}. Basically, your advice be such that if the "
        "module has access to your tip, it would be much more likely to act like the successful "
        "trajectory rather than the lower-scoring trajectory."
    )  # fmt: skip


def append_a_rule(bucket: list[dict[str, Any]], system: Any, **kwargs: Any) -> bool:
    """Have the prompt model contrast the best and worst run; append its advice."""
    predictor2name: Mapping[int, str] = kwargs["predictor2name"]
    low, high = kwargs["batch_10p_score"], kwargs["batch_90p_score"]
    good, bad = dict(bucket[0]), dict(bucket[-1])
    if good["score"] <= low or bad["score"] >= high:
        logger.info("SIMBA: no rule; the scores are not spread enough")
        return False
    if good["score"] <= bad["score"]:  # nothing to contrast: hide the less useful side
        hidden = bad if good["score"] > high else good
        hidden.update(trace=[], score="N/A", prediction={"N/A": "Prediction not available"})

    def trajectory(run: Mapping[str, Any]) -> list[dict[str, Any]]:
        return [
            {"module_name": predictor2name[id(p)], "inputs": dict(i), "outputs": dict(o)}
            for p, i, o in run["trace"] or []
            if id(p) in predictor2name
        ]

    example = good["example"]
    try:
        code = inspect.getsource(type(system))
    except (OSError, TypeError):
        code = f"<source of {type(system).__name__} unavailable>"
    fields = {
        "program_code": code,
        "modules_defn": inspect_modules(system),
        "program_inputs": dict(example.inputs()),
        "oracle_metadata": dict(example.labels()),
        "better_program_trajectory": trajectory(good),
        "better_program_outputs": dict(good["prediction"] or {}),
        "worse_program_trajectory": trajectory(bad),
        "worse_program_outputs": dict(bad["prediction"] or {}),
        "worse_reward_value": bad["score"],
        "better_reward_value": good["score"],
        "worse_reward_info": bad["output_metadata"],
        "better_reward_info": good["output_metadata"],
        "module_names": [name for name, _ in system.named_predictors()],
    }
    shown = {k: v if isinstance(v, str) else _json(v) for k, v in fields.items()}
    overrides = {"lm": kwargs["prompt_model"]} if kwargs.get("prompt_model") is not None else {}
    with context(trace=[], **overrides):
        advice = Predict(OfferFeedback)(**shown).module_advice
    for name, predictor in system.named_predictors():
        if name in advice:
            logger.info("SIMBA: advice for %s: %s", name, advice[name])
            instructions = f"{predictor.signature.instructions}\n\n{advice[name]}"
            predictor.signature = predictor.signature.with_instructions(instructions)
    return True


def inspect_modules(program: Any) -> str:
    """Each predictor's fields and instructions, as the rule prompt shows them."""
    rule = "-" * 80
    parts = [rule]
    for name, predictor in program.named_predictors():
        signature = predictor.signature
        instructions = "\n\t\t".join(["", *textwrap.dedent(signature.instructions).splitlines()])
        parts.append(f"Module {name}")
        parts.append("\n\tInput Fields:")
        parts.append(_fields(signature.input_fields))
        parts.append("\tOutput Fields:")
        parts.append(_fields(signature.output_fields))
        parts.append(f"\tOriginal Instructions: {instructions}")
        parts.append(rule)
    return "\n".join(part.strip("\n") for part in parts)


def _fields(fields: Mapping[str, Any]) -> str:
    lines = []
    for index, (name, info) in enumerate(fields.items(), 1):
        desc = (getattr(info, "json_schema_extra", None) or {}).get("desc") or getattr(
            info, "desc", ""
        )
        lines.append(f"\t\t{index}. `{name}`" + (f": {desc}" if desc else ""))
    return "\n".join(lines)


def _json(value: Any) -> str:
    return json.dumps(value, indent=2, default=lambda o: f"<non-serializable: {type(o).__name__}>")
