"""Ordinary DSPy 3.x programs, written the way DSPy's docs and tutorials write them.

Each test is a typical snippet (quick start, classification, a RAG-style
module, evaluation, optimizers, the sampling and refinement modules,
conversation history, async use...) run with ``import dspex as dspy``
against ``DummyLM``, asserting what the program actually produces.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, Literal

import pydantic
import pytest

import dspex as dspy
from dspex.programs import (
    BestOfN,
    History,
    MultiChainComparison,
    Parallel,
    Refine,
    asyncify,
    majority,
)
from dspex.testing import DummyLM

pytestmark = pytest.mark.usefixtures("clean_settings")


def _prompt(lm: DummyLM, index: int = -1) -> str:
    content: str = lm.history[index]["messages"][-1]["content"]
    return content


# -- quick start and signatures ----------------------------------------------------------


def test_quick_start_chain_of_thought() -> None:
    lm = DummyLM([{"reasoning": "France's capital is Paris.", "answer": "Paris"}])
    dspy.configure(lm=lm)
    qa = dspy.ChainOfThought("question -> answer")
    response = qa(question="What is the capital of France?")
    assert response.answer == "Paris"
    assert response.reasoning == "France's capital is Paris."
    assert "[[ ## question ## ]]\nWhat is the capital of France?" in _prompt(lm)


def test_classification_with_a_class_signature_and_literal_labels() -> None:
    class Emotion(dspy.Signature):  # type: ignore[misc]  # lazy name: Any to mypy
        """Classify emotion."""

        sentence: str = dspy.InputField()
        sentiment: Literal["sadness", "joy", "love", "anger", "fear", "surprise"] = (
            dspy.OutputField()
        )
        confidence: float = dspy.OutputField(desc="between 0 and 1")

    lm = DummyLM([{"sentiment": "fear", "confidence": 0.8}])
    dspy.configure(lm=lm)
    classify = dspy.Predict(Emotion)
    result = classify(sentence="i started feeling a little vulnerable when the giant spotlight")
    assert result.sentiment == "fear"
    assert result.confidence == 0.8
    system = lm.history[-1]["messages"][0]["content"]
    assert "Classify emotion." in system
    assert "Literal['sadness', 'joy', 'love', 'anger', 'fear', 'surprise']" in system


def test_inline_typed_signature_parses_outputs() -> None:
    lm = DummyLM([{"sentiment": True, "keywords": ["fun", "charming"]}])
    with dspy.context(lm=lm):
        pred = dspy.Predict("sentence -> sentiment: bool, keywords: list[str]")(
            sentence="it's a charming and often affecting journey."
        )
    assert pred.sentiment is True
    assert pred.keywords == ["fun", "charming"]


def test_pydantic_models_as_output_types() -> None:
    class Entity(pydantic.BaseModel):
        name: str
        kind: Literal["person", "place"]

    class Extract(dspy.Signature):  # type: ignore[misc]  # lazy name: Any to mypy
        """Extract named entities."""

        text: str = dspy.InputField()
        entities: list[Entity] = dspy.OutputField()

    lm = DummyLM(
        [{"entities": [{"name": "Ada", "kind": "person"}, {"name": "Rome", "kind": "place"}]}]
    )
    entities = dspy.Predict(Extract)(text="Ada went to Rome.", lm=lm).entities
    assert entities == [Entity(name="Ada", kind="person"), Entity(name="Rome", kind="place")]


def test_signature_editing() -> None:
    base = dspy.Signature("question -> answer", "Answer in French.")
    extended = base.append("source", dspy.InputField(desc="where it comes from"))
    assert base.instructions == "Answer in French."
    assert list(extended.input_fields) == ["question", "source"]
    assert extended.with_instructions("Be brief.").instructions == "Be brief."


# -- modules -------------------------------------------------------------------------------


def test_a_custom_rag_module() -> None:
    def search(query: str, k: int = 2) -> list[str]:
        return [f"passage {i} about {query}" for i in range(k)]

    class RAG(dspy.Module):  # type: ignore[misc]  # lazy name: Any to mypy
        def __init__(self, num_docs: int = 2) -> None:
            self.num_docs = num_docs
            self.respond = dspy.ChainOfThought("context, question -> response")

        def forward(self, question: str) -> dspy.Prediction:
            context = search(question, k=self.num_docs)
            return self.respond(context=context, question=question)

    lm = DummyLM([{"reasoning": "passage 0 says so", "response": "42"}])
    dspy.configure(lm=lm)
    rag = RAG()
    assert rag(question="meaning of life").response == "42"
    assert [name for name, _ in rag.named_predictors()] == ["respond.predict"]
    assert "[1] «passage 0 about meaning of life»" in _prompt(lm)
    copy = rag.deepcopy()
    assert copy.respond.predict is not rag.respond.predict


def test_a_module_returning_its_own_prediction_and_using_context_lms() -> None:
    class Draft(dspy.Module):  # type: ignore[misc]  # lazy name: Any to mypy
        def __init__(self) -> None:
            self.outline = dspy.Predict("topic -> outline")
            self.write = dspy.Predict("topic, outline -> draft")

        def forward(self, topic: str) -> dspy.Prediction:
            outline = self.outline(topic=topic).outline
            with dspy.context(lm=writer):
                draft = self.write(topic=topic, outline=outline).draft
            return dspy.Prediction(outline=outline, draft=draft)

    planner = DummyLM([{"outline": "1. intro 2. end"}])
    writer = DummyLM([{"draft": "Once upon a time."}])
    dspy.configure(lm=planner)
    result = Draft()(topic="cats")
    assert (result.outline, result.draft) == ("1. intro 2. end", "Once upon a time.")
    assert planner.calls == 1 and writer.calls == 1


def test_examples_and_their_input_label_split() -> None:
    rows = [{"question": "2+2?", "answer": "4"}, {"question": "3+3?", "answer": "6"}]
    trainset = [dspy.Example(**row).with_inputs("question") for row in rows]
    example = trainset[0]
    assert example.question == "2+2?"
    assert dict(example.inputs()) == {"question": "2+2?"}
    assert example.labels().toDict() == {"answer": "4"}
    assert example.copy(answer="four").answer == "four"
    assert "answer" not in example.without("answer")
    assert {**example} == rows[0]


def test_react_with_plain_function_tools() -> None:
    def evaluate_math(expression: str) -> float:
        """Evaluate a math expression."""
        return float(eval(expression, {"__builtins__": {}}))

    lm = DummyLM(
        [
            {"next_thought": "compute", "next_tool_name": "evaluate_math",
             "next_tool_args": {"expression": "9362158 / 2"}},
            {"next_thought": "done", "next_tool_name": "finish", "next_tool_args": {}},
            {"reasoning": "the tool said 4681079", "answer": 4681079.0},
        ]
    )  # fmt: skip
    dspy.configure(lm=lm)
    react = dspy.ReAct("question -> answer: float", tools=[evaluate_math])
    pred = react(question="What is 9362158 divided by 2?")
    assert pred.answer == 4681079.0
    assert pred.trajectory["observation_0"] == 4681079.0


# -- evaluation and optimization ------------------------------------------------------------


def _math_lm() -> DummyLM:
    return DummyLM({"2+2": {"answer": "4"}, "3+3": {"answer": "7"}, "1+1": {"answer": "2"}})


def _devset() -> list[dspy.Example]:
    rows = [("2+2", "4"), ("3+3", "6"), ("1+1", "2")]
    return [dspy.Example(question=q, answer=a).with_inputs("question") for q, a in rows]


def test_evaluate_with_a_metric_function() -> None:
    def exact(example: Any, pred: Any, trace: Any = None) -> bool:
        return bool(example.answer == pred.answer)

    dspy.configure(lm=_math_lm())
    evaluate = dspy.Evaluate(devset=_devset(), metric=exact, num_threads=2, display_progress=False)
    result = evaluate(dspy.Predict("question -> answer"))
    assert result.score == pytest.approx(66.67)
    assert [bool(score) for _, _, score in result.results] == [True, False, True]


def test_batch_runs_examples_in_parallel() -> None:
    dspy.configure(lm=_math_lm())
    preds = dspy.Predict("question -> answer").batch(_devset(), num_threads=3)
    assert [p.answer for p in preds] == ["4", "7", "2"]


def test_optimize_then_save_and_load(tmp_path: Path) -> None:
    dspy.configure(lm=_math_lm())
    optimizer = dspy.BootstrapFewShot(
        metric=dspy.evaluate.answer_exact_match, max_bootstrapped_demos=2, max_labeled_demos=0
    )
    compiled = optimizer.compile(dspy.Predict("question -> answer"), trainset=_devset())
    demos = compiled.predictors()[0].demos
    assert [d.question for d in demos] == ["2+2", "1+1"]  # 3+3 failed the metric
    compiled.save(str(tmp_path / "program.json"))
    loaded = dspy.Predict("question -> answer")
    loaded.load(str(tmp_path / "program.json"))
    assert [d["answer"] for d in loaded.demos] == ["4", "2"]  # plain dicts, as in DSPy
    labeled = dspy.LabeledFewShot(k=1).compile(
        dspy.Predict("question -> answer"), trainset=_devset()
    )
    assert len(labeled.predictors()[0].demos) == 1


# -- parallelism, sampling and refinement ---------------------------------------------------


def test_parallel_over_module_example_pairs() -> None:
    lm = DummyLM(
        {
            "Spain": {"answer": "Madrid"},
            "3 * 4": {"answer": "12"},
            "Hamlet": {"answer": "Shakespeare"},
        }
    )
    dspy.configure(lm=lm)
    examples = [
        {"question": "What is the capital of Spain?"},
        {"question": "What is 3 * 4?"},
        {"question": "Who wrote Hamlet?"},
    ]
    module = dspy.Predict("question->answer")
    results = Parallel(num_threads=3, disable_progress_bar=True)([(module, e) for e in examples])
    assert [r.answer for r in results] == ["Madrid", "12", "Shakespeare"]


def test_self_consistency_with_majority() -> None:
    samples = [{"reasoning": "r", "answer": a} for a in ["12", "12.", "13", "12", "11"]]
    dspy.configure(lm=DummyLM(samples))
    cot = dspy.ChainOfThought("question -> answer", n=5)
    voted = majority(cot(question="What is 3 * 4?"))
    assert voted.answer == "12"
    assert voted.reasoning == "r"


def one_word_answer(args: dict[str, Any], pred: Any) -> float:
    return 1.0 if len(pred.answer.split()) == 1 else 0.0


def test_best_of_n_from_the_refinement_tutorial() -> None:
    lm = DummyLM(
        [
            {"reasoning": "r", "answer": "The capital is Brussels"},
            {"reasoning": "r", "answer": "Brussels"},
        ]
    )
    dspy.configure(lm=lm)
    best_of_3 = BestOfN(
        module=dspy.ChainOfThought("question -> answer"),
        N=3,
        reward_fn=one_word_answer,
        threshold=1.0,
    )
    assert best_of_3(question="What is the capital of Belgium?").answer == "Brussels"
    assert [h["params"]["rollout_id"] for h in lm.history] == [0, 1]


def test_refine_from_the_refinement_tutorial() -> None:
    lm = DummyLM(
        [
            {"reasoning": "r", "answer": "The capital is Brussels"},
            {"discussion": "too wordy", "advice": {"predict": "Reply with the city name only."}},
            {"reasoning": "r", "answer": "Brussels"},
        ]
    )
    dspy.configure(lm=lm)
    refine = Refine(
        module=dspy.ChainOfThought("question -> answer"),
        N=3,
        reward_fn=one_word_answer,
        threshold=1.0,
    )
    assert refine(question="What is the capital of Belgium?").answer == "Brussels"
    assert "[[ ## hint_ ## ]]\nReply with the city name only." in _prompt(lm)


def test_multi_chain_comparison_over_sampled_reasoning() -> None:
    lm = DummyLM(
        [{"reasoning": f"try {i}", "answer": a} for i, a in enumerate(["4", "5", "4"])]
        + [{"rationale": "most attempts agree on 4", "answer": "4"}]
    )
    dspy.configure(lm=lm)
    completions = dspy.ChainOfThought("question -> answer", n=3)(question="2+2?").completions
    final = MultiChainComparison("question -> answer", M=3)(completions, question="2+2?")
    assert final.answer == "4"
    assert "«Reasoning: try 1 Answer: 5»" in _prompt(lm)


# -- conversation, async, settings, callbacks ---------------------------------------------


def test_conversation_history_tutorial_loop() -> None:
    class QA(dspy.Signature):  # type: ignore[misc]  # lazy name: Any to mypy
        question: str = dspy.InputField()
        history: History = dspy.InputField()
        answer: str = dspy.OutputField()

    lm = DummyLM([{"answer": "Paris"}, {"answer": "About 2 million."}])
    dspy.configure(lm=lm)
    predict = dspy.Predict(QA)
    history = History(messages=[])
    for question in ["What is the capital of France?", "How many people live there?"]:
        outputs = predict(question=question, history=history)
        history.messages.append({"question": question, **outputs})
    assert [m["answer"] for m in history.messages] == ["Paris", "About 2 million."]
    conversation = "\n".join(str(m["content"]) for m in lm.history[-1]["messages"])
    assert "What is the capital of France?" in conversation


def test_asyncify_and_acall() -> None:
    lm = DummyLM(
        {
            "France": {"reasoning": "r", "answer": "Paris"},
            "Peru": {"reasoning": "r", "answer": "Lima"},
        }
    )
    dspy.configure(lm=lm)
    program = dspy.ChainOfThought("question -> answer")

    async def main() -> tuple[str, str]:
        async_program = asyncify(program)
        first = await async_program(question="Capital of France?")
        second = await program.acall(question="Capital of Peru?")
        return first.answer, second.answer

    assert asyncio.run(main()) == ("Paris", "Lima")


def test_settings_configure_and_context_adapter() -> None:
    lm = DummyLM([{"answer": "json answer"}], adapter=dspy.JSONAdapter())
    dspy.settings.configure(lm=lm, num_threads=4)
    assert dspy.settings.lm is lm and dspy.settings.num_threads == 4
    with dspy.context(adapter=dspy.JSONAdapter()):
        assert dspy.Predict("question -> answer")(question="?").answer == "json answer"
    assert "response_format" not in lm.history[-1]["params"]  # DummyLM takes none, as in DSPy


def test_a_metric_may_return_a_prediction_with_a_score() -> None:
    def graded(example: Any, pred: Any, trace: Any = None) -> dspy.Prediction:
        ok = example.answer == pred.answer
        return dspy.Prediction(score=1.0 if ok else 0.0, feedback="ok" if ok else "wrong sum")

    dspy.configure(lm=_math_lm())
    result = dspy.Evaluate(devset=_devset(), metric=graded, display_progress=False)(
        dspy.Predict("question -> answer")
    )
    assert result.score == pytest.approx(66.67)


def test_callbacks_observe_module_and_lm_calls() -> None:
    from dspex.utils.callback import BaseCallback

    class Counter(BaseCallback):
        def __init__(self) -> None:
            self.events: list[str] = []

        def on_module_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
            self.events.append(f"module:{type(instance).__name__}")

        def on_lm_end(self, call_id: str, outputs: Any, exception: Any = None) -> None:
            self.events.append("lm")

    counter = Counter()
    dspy.configure(lm=DummyLM([{"reasoning": "r", "answer": "a"}]), callbacks=[counter])
    dspy.ChainOfThought("question -> answer")(question="?")
    assert counter.events == ["module:ChainOfThought", "module:Predict", "lm"]
