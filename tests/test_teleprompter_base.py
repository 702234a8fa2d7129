"""``Teleprompter``: the base users subclass; compile fires on_compile_* once per call."""

from __future__ import annotations

from typing import Any

import dspex
from dspex.teleprompt import LabeledFewShot, Teleprompter
from dspex.utils.callback import BaseCallback


class CompileRecorder(BaseCallback):
    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []

    def on_compile_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        self.events.append(("start", (instance, sorted(inputs))))

    def on_compile_end(
        self, call_id: str, outputs: Any, exception: BaseException | None = None
    ) -> None:
        self.events.append(("end", (outputs, exception)))


class KeepFirstDemo(Teleprompter):
    """A user optimizer: the student, with the first training example as its only demo."""

    def __init__(self, note: str = "x") -> None:
        super().__init__()
        self.note = note

    def compile(
        self, student: Any, *, trainset: list[Any], teacher: Any = None, **kwargs: Any
    ) -> Any:
        program = student.deepcopy()
        for predictor in program.predictors():
            predictor.demos = trainset[:1]
        return program


class Overriding(KeepFirstDemo):
    def compile(self, student: Any, *, trainset: list[Any], **kwargs: Any) -> Any:
        return super().compile(student, trainset=trainset, **kwargs)


class Broken(Teleprompter):
    def compile(self, student: Any, *, trainset: list[Any], **kwargs: Any) -> Any:
        raise ValueError("no luck")


def _trainset() -> list[dspex.Example]:
    return [dspex.Example(question="q", answer="a").with_inputs("question")]


def test_the_base_compile_is_abstract_and_get_params_reports_attributes() -> None:
    student = dspex.Predict("question -> answer")
    try:
        Teleprompter().compile(student, trainset=_trainset())
    except NotImplementedError:
        pass
    else:
        raise AssertionError("Teleprompter.compile must be abstract")
    assert KeepFirstDemo(note="hi").get_params() == {"note": "hi"}


def test_a_user_subclass_compiles_and_fires_compile_hooks() -> None:
    recorder = CompileRecorder()
    optimizer = KeepFirstDemo()
    student = dspex.Predict("question -> answer")
    with dspex.context(callbacks=[recorder]):
        compiled = optimizer.compile(student, trainset=_trainset())
    assert compiled.demos[0].question == "q"
    assert student.demos == []
    assert recorder.events[0] == (
        "start",
        (optimizer, ["kwargs", "student", "teacher", "trainset"]),
    )
    assert recorder.events[1] == ("end", (compiled, None))
    assert len(recorder.events) == 2


def test_an_override_calling_super_is_one_compile_call() -> None:
    recorder = CompileRecorder()
    with dspex.context(callbacks=[recorder]):
        Overriding().compile(dspex.Predict("question -> answer"), trainset=_trainset())
    assert [kind for kind, _ in recorder.events] == ["start", "end"]


def test_a_failing_compile_reports_the_exception_to_the_end_hook() -> None:
    recorder = CompileRecorder()
    with dspex.context(callbacks=[recorder]):
        try:
            Broken().compile(dspex.Predict("question -> answer"), trainset=_trainset())
        except ValueError:
            pass
        else:
            raise AssertionError("the error must propagate")
    kind, (outputs, exception) = recorder.events[-1]
    assert kind == "end" and outputs is None and isinstance(exception, ValueError)


def test_built_in_optimizers_are_teleprompters_and_fire_the_hooks() -> None:
    recorder = CompileRecorder()
    assert dspex.Teleprompter is Teleprompter
    optimizer = LabeledFewShot(k=1)
    assert isinstance(optimizer, dspex.Teleprompter)
    with dspex.context(callbacks=[recorder]):
        optimizer.compile(dspex.Predict("question -> answer"), trainset=_trainset())
    assert [kind for kind, _ in recorder.events] == ["start", "end"]
