"""dspex.streamify and dspex.streaming: listeners per adapter, status, sync, cancel, cache.

End-to-end tests run real programs against a fake provider streaming SSE;
the listener tests feed recorded token sequences (DSPy's own test streams)
straight to a listener.
"""

from __future__ import annotations

import asyncio
import json
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

import dspex
from dspex.errors import DSPexError
from dspex.streaming import (
    LMChunk,
    StatusMessage,
    StatusMessageProvider,
    StreamListener,
    StreamResponse,
    streaming_response,
)
from dspex.testing import FakeAnthropic, FakeGemini, FakeOpenAI

KEY = "sk-test-SECRET-0123456789abcdef"
pytestmark = pytest.mark.usefixtures("clean_settings")


def chat_reply(**fields: str) -> str:
    body = "".join(f"[[ ## {k} ## ]]\n{v}\n\n" for k, v in fields.items())
    return body + "[[ ## completed ## ]]"


@pytest.fixture
def fake(start_runtime: Any) -> Iterator[FakeOpenAI]:
    """The fake provider, and a runtime of the test's own (its LM clients stop with it)."""
    start_runtime()
    with FakeOpenAI(reply=chat_reply(answer="Paris is the capital of France"), api_key=KEY) as f:
        yield f


def lm_for(fake: FakeOpenAI, **kwargs: Any) -> Any:
    kwargs.setdefault("cache", False)
    return dspex.LM("openai/test-model", api_base=fake.url, api_key=KEY, **kwargs)


def collect(stream: Any) -> list[Any]:
    async def run() -> list[Any]:
        return [value async for value in stream]

    return asyncio.run(run())


def fields(values: list[Any], name: str) -> list[StreamResponse]:
    return [v for v in values if isinstance(v, StreamResponse) and v.signature_field_name == name]


# -- end to end, per adapter ---------------------------------------------------------


def test_chat_adapter_field_streams_in_pieces_then_the_prediction(fake: FakeOpenAI) -> None:
    program = dspex.streamify(
        dspex.Predict("question -> answer"), stream_listeners=[StreamListener("answer")]
    )
    with dspex.context(lm=lm_for(fake)):
        values = collect(program(question="capital?"))
    pieces = fields(values, "answer")
    assert len(pieces) > 3  # word by word, as the fake streams
    assert "".join(p.chunk for p in pieces).strip() == "Paris is the capital of France"
    assert pieces[-1].is_last_chunk and not any(p.is_last_chunk for p in pieces[:-1])
    assert all(p.predict_name == "self" for p in pieces)
    assert "[[" not in "".join(p.chunk for p in pieces)
    assert isinstance(values[-1], dspex.Prediction)
    assert values[-1].answer == "Paris is the capital of France"
    assert fake.requests[0].json["stream"] is True


def test_json_adapter_field_streams_as_json_text(fake: FakeOpenAI) -> None:
    fake.configure(reply=json.dumps({"answer": "Paris is the capital", "year": 508}))
    program = dspex.streamify(
        dspex.Predict("question -> answer, year: int"),
        stream_listeners=[StreamListener("answer"), StreamListener("year")],
    )
    with dspex.context(lm=lm_for(fake), adapter=dspex.JSONAdapter()):
        values = collect(program(question="capital?"))
    answer = fields(values, "answer")
    assert "".join(p.chunk for p in answer) == '"Paris is the capital"'
    assert len(answer) > 1 and answer[-1].is_last_chunk
    year = fields(values, "year")
    assert "".join(p.chunk for p in year) == "508" and year[-1].is_last_chunk
    assert values[-1].year == 508


def test_xml_adapter_field_streams_without_its_tags(fake: FakeOpenAI) -> None:
    fake.configure(reply="<answer>Paris is the capital</answer>")
    program = dspex.streamify(
        dspex.Predict("question -> answer"), stream_listeners=[StreamListener("answer")]
    )
    with dspex.context(lm=lm_for(fake), adapter=dspex.XMLAdapter()):
        values = collect(program(question="capital?"))
    answer = fields(values, "answer")
    assert "".join(p.chunk for p in answer) == "Paris is the capital"
    assert answer[-1].is_last_chunk
    assert values[-1].answer == "Paris is the capital"


class TwoSteps(dspex.Module):
    def __init__(self) -> None:
        super().__init__()
        self.predict1 = dspex.Predict("question -> answer")
        self.predict2 = dspex.Predict("question, answer -> judgement")

    def forward(self, question: str) -> Any:
        answer = self.predict1(question=question).answer
        return self.predict2(question=question, answer=answer)


def two_step_reply(body: dict[str, Any]) -> str:
    prompt = json.dumps(body["messages"])
    if "judgement" in prompt.split("Your output fields are")[-1][:200]:
        return chat_reply(judgement="Sound and well argued")
    return chat_reply(answer="To get to the other side")


def test_listeners_find_their_predictors_by_field_name(fake: FakeOpenAI) -> None:
    fake.configure(reply=two_step_reply)
    program = dspex.streamify(
        TwoSteps(), stream_listeners=[StreamListener("answer"), StreamListener("judgement")]
    )
    with dspex.context(lm=lm_for(fake)):
        values = collect(program(question="why?"))
    answer, judgement = fields(values, "answer"), fields(values, "judgement")
    assert {p.predict_name for p in answer} == {"predict1"}
    assert {p.predict_name for p in judgement} == {"predict2"}
    assert "".join(p.chunk for p in answer).strip() == "To get to the other side"
    assert "".join(p.chunk for p in judgement).strip() == "Sound and well argued"
    stream_order = [v.signature_field_name for v in values if isinstance(v, StreamResponse)]
    assert stream_order.index("judgement") > max(
        i for i, n in enumerate(stream_order) if n == "answer"
    )


class Twice(dspex.Module):
    def __init__(self) -> None:
        super().__init__()
        self.predict = dspex.Predict("question -> answer")

    def forward(self, question: str) -> Any:
        self.predict(question=question)
        return self.predict(question=question + "!")


@pytest.mark.parametrize("reuse", [False, True])
def test_allow_reuse_streams_each_call_of_the_predictor(fake: FakeOpenAI, reuse: bool) -> None:
    fake.configure(reply=chat_reply(answer="again"))
    program = dspex.streamify(
        Twice(), stream_listeners=[StreamListener("answer", allow_reuse=reuse)]
    )
    with dspex.context(lm=lm_for(fake)):
        values = collect(program(question="q"))
    lasts = [p for p in fields(values, "answer") if p.is_last_chunk]
    assert len(lasts) == (2 if reuse else 1)


def test_without_listeners_raw_lm_chunks_stream(fake: FakeOpenAI) -> None:
    program = dspex.streamify(dspex.Predict("question -> answer"))
    with dspex.context(lm=lm_for(fake)):
        values = collect(program(question="capital?"))
    chunks = [v for v in values if isinstance(v, LMChunk)]
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert text == chat_reply(answer="Paris is the capital of France")
    assert values[-1].answer == "Paris is the capital of France"


def test_final_prediction_can_be_left_out(fake: FakeOpenAI) -> None:
    program = dspex.streamify(
        dspex.Predict("question -> answer"),
        stream_listeners=[StreamListener("answer")],
        include_final_prediction_in_output_stream=False,
    )
    with dspex.context(lm=lm_for(fake)):
        values = collect(program(question="capital?"))
    assert values and all(isinstance(v, StreamResponse) for v in values)


def test_sync_iteration(fake: FakeOpenAI) -> None:
    program = dspex.streamify(
        dspex.Predict("question -> answer"),
        stream_listeners=[StreamListener("answer")],
        async_streaming=False,
    )
    with dspex.context(lm=lm_for(fake)):
        values = list(program(question="capital?"))
    assert "".join(p.chunk for p in fields(values, "answer")).strip().startswith("Paris")
    assert values[-1].answer == "Paris is the capital of France"


class Loud(StatusMessageProvider):
    def module_start_status_message(self, instance: Any, inputs: dict[str, Any]) -> str:
        return f"start {type(instance).__name__}"

    def lm_end_status_message(self, outputs: Any) -> str:
        return "lm done"


def test_status_messages_come_from_the_provider(fake: FakeOpenAI) -> None:
    program = dspex.streamify(dspex.Predict("question -> answer"), status_message_provider=Loud())
    with dspex.context(lm=lm_for(fake)):
        values = collect(program(question="capital?"))
    notes = [v.message for v in values if isinstance(v, StatusMessage)]
    assert notes[:1] == ["start Predict"] and "lm done" in notes
    assert values.index(next(v for v in values if isinstance(v, LMChunk))) > 0


# -- failures, cancellation, cache ----------------------------------------------------


def test_a_failure_after_the_first_chunk_ends_the_stream_with_an_error(fake: FakeOpenAI) -> None:
    fake.configure(stream_fail_after=7)  # the header is 5 pieces
    program = dspex.streamify(
        dspex.Predict("question -> answer"), stream_listeners=[StreamListener("answer")]
    )
    got: list[Any] = []

    async def run() -> None:
        async for value in program(question="capital?"):
            got.append(value)

    with dspex.context(lm=lm_for(fake, num_retries=3)), pytest.raises(DSPexError, match="not"):
        asyncio.run(run())
    assert fields(got, "answer")  # part of the field arrived before the break
    assert not any(isinstance(v, dspex.Prediction) for v in got)
    assert fake.request_count == 1  # never replayed


def test_cancelling_the_consumer_cancels_the_upstream_request(fake: FakeOpenAI) -> None:
    fake.configure(stream_delay=0.3)
    program = dspex.streamify(
        dspex.Predict("question -> answer"), stream_listeners=[StreamListener("answer")]
    )

    async def run() -> StreamResponse:
        stream = program(question="capital?")
        try:
            async for value in stream:
                if isinstance(value, StreamResponse):
                    return value
        finally:
            await stream.aclose()
        raise AssertionError("no chunk")

    with dspex.context(lm=lm_for(fake)):
        first = asyncio.run(run())
    assert first.chunk.startswith("Paris")
    assert fake.wait_disconnect(10), "the provider never saw the request end"
    assert fake.stream_disconnects == 1


def test_a_cache_hit_streams_the_whole_field_at_once(fake: FakeOpenAI) -> None:
    question = f"capital {uuid.uuid4()}?"
    program = dspex.streamify(
        dspex.Predict("question -> answer"), stream_listeners=[StreamListener("answer")]
    )
    with dspex.context(lm=lm_for(fake, cache=True)):
        first = fields(collect(program(question=question)), "answer")
        again = collect(program(question=question))
    assert len(first) > 1
    pieces = fields(again, "answer")
    assert [(p.chunk, p.is_last_chunk) for p in pieces] == [
        ("Paris is the capital of France", True)
    ]
    assert again[-1].answer == "Paris is the capital of France"
    assert fake.request_count == 1


def test_streaming_response_writes_sse_events(fake: FakeOpenAI) -> None:
    program = dspex.streamify(
        dspex.Predict("question -> answer"), stream_listeners=[StreamListener("answer")]
    )

    async def run() -> list[str]:
        return [line async for line in streaming_response(program(question="capital?"))]

    with dspex.context(lm=lm_for(fake)):
        lines = asyncio.run(run())
    assert all(line.startswith("data: ") and line.endswith("\n\n") for line in lines)
    assert lines[-1] == "data: [DONE]\n\n"
    final = json.loads(lines[-2][len("data: ") :])
    assert final == {"prediction": {"answer": "Paris is the capital of France"}}
    first = json.loads(lines[0][len("data: ") :])
    assert first["chunk"]["field"] == "answer" and first["chunk"]["predict_name"] == "self"


def test_a_listener_field_no_predictor_has_is_refused() -> None:
    with pytest.raises(dspex.UsageError, match="nope"):
        dspex.streamify(dspex.Predict("q -> a"), stream_listeners=[StreamListener("nope")])


# -- the listener on recorded token streams (DSPy's test sequences) -----------------------


def feed(listener: StreamListener, pieces: list[str], kind: str) -> list[StreamResponse]:
    out = [listener.receive_text(p, kind, call=1) for p in pieces]
    end = listener.finalize()
    return [r for r in [*out, end] if r is not None]


def test_chat_listener_holds_back_the_next_header() -> None:
    pieces = ["[[", " ##", " answer", " ##", " ]]\n\n", "To", " get", " to", " the", " other"]
    pieces += [" side", "!\n\n[[ ##", " completed", " ##", " ]]"]
    got = feed(StreamListener("answer", predict_name="p"), pieces, "chat")
    assert [r.chunk for r in got] == ["To", " get", " to", " the", " other", " side", "!"]
    assert [r.is_last_chunk for r in got] == [False] * 6 + [True]


def test_json_listener_ends_at_the_closing_quote() -> None:
    pieces = ['{"', "answer", '":', '"To', " get", " there", '!"', "}\n"]
    got = feed(StreamListener("answer"), pieces, "json")
    assert [r.chunk for r in got] == ['"To', " get", " there", '!"']
    assert got[-1].is_last_chunk


def test_json_listener_ends_when_the_next_key_starts() -> None:
    pieces = ['{"first": {', '"message": "one"', ', "status": "ok"}', ', "second": {"x": 1}}']
    got = feed(StreamListener("first"), pieces, "json")
    assert "".join(r.chunk for r in got) == '{"message": "one", "status": "ok"}'
    assert got[-1].is_last_chunk


def test_xml_listener_strips_its_tags() -> None:
    pieces = ["<", "answer", ">", "To", " get", "!", "<", "/answer", ">"]
    got = feed(StreamListener("answer"), pieces, "xml")
    assert "".join(r.chunk for r in got) == "To get!"
    assert got[-1].is_last_chunk


def test_chat_listener_flushes_a_value_whose_end_marker_never_came() -> None:
    got = feed(StreamListener("answer"), ["[[ ## answer ## ]]\n", "Half", " done [["], "chat")
    assert "".join(r.chunk for r in got) == "Half done [["
    assert got[-1].is_last_chunk


def test_could_form_end_identifier() -> None:
    listener = StreamListener("answer")
    assert listener._could_form_end_identifier("some text [[ #", "ChatAdapter")
    assert not listener._could_form_end_identifier("hello world", "ChatAdapter")
    assert listener._could_form_end_identifier('hello"', "JSONAdapter")
    assert listener._could_form_end_identifier("hi </ans", "XMLAdapter")
    assert not listener._could_form_end_identifier("hello world", "XMLAdapter")


# -- served programs: rt.stream -------------------------------------------------------


def test_rt_stream_yields_field_pieces_of_a_served_program(
    start_runtime: Any, fake: FakeOpenAI
) -> None:
    fake.configure(reply=chat_reply(reasoning="Think it through", answer="Paris it is"))
    rt = dspex.current_runtime()
    rt.serve("qa", dspex.ChainOfThought("question -> answer"))

    async def run() -> list[Any]:
        return [value async for value in rt.stream("qa", question="capital?")]

    with dspex.context(lm=lm_for(fake)):
        values = asyncio.run(run())
    answer, reasoning = fields(values, "answer"), fields(values, "reasoning")
    assert "".join(p.chunk for p in reasoning).strip() == "Think it through"
    assert "".join(p.chunk for p in answer).strip() == "Paris it is"
    assert len(answer) > 1 and answer[-1].is_last_chunk
    assert values[-1].answer == "Paris it is"
    assert fake.requests[0].json["stream"] is True


_RAN_ON: list[tuple[str, int]] = []  # (forward or aforward, thread): a served copy appends here


class _WhereItRuns(dspex.Module):
    def __init__(self) -> None:
        super().__init__()
        self.predict = dspex.Predict("question -> answer")

    def forward(self, question: str) -> Any:
        _RAN_ON.append(("forward", threading.get_ident()))
        return self.predict(question=question)

    async def aforward(self, question: str) -> Any:
        _RAN_ON.append(("aforward", threading.get_ident()))
        return await self.predict.acall(question=question)


def test_rt_stream_runs_an_aforward_program_on_the_consumers_loop(
    start_runtime: Any, fake: FakeOpenAI
) -> None:
    """No run actor and no worker thread per stream: the program is a task on the loop."""
    fake.configure(reply=chat_reply(answer="Paris it is"))
    rt = dspex.current_runtime()
    rt.serve("qa", _WhereItRuns())
    _RAN_ON.clear()

    async def run() -> list[Any]:
        return [value async for value in rt.stream("qa", question="capital?")]

    with dspex.context(lm=lm_for(fake)):
        values = asyncio.run(run())
    assert _RAN_ON == [("aforward", threading.get_ident())]
    pieces = fields(values, "answer")
    assert len(pieces) > 1 and "".join(p.chunk for p in pieces).strip() == "Paris it is"
    assert values[-1].answer == "Paris it is"


def test_streamify_awaits_an_aforward_program_on_the_consumers_loop(
    start_runtime: Any, fake: FakeOpenAI
) -> None:
    """Async iteration: the program is a task on the loop, no run actor thread; sync
    iteration still runs ``forward`` in a run."""
    fake.configure(reply=chat_reply(answer="Paris it is"))
    program = dspex.streamify(_WhereItRuns(), stream_listeners=[StreamListener("answer")])
    _RAN_ON.clear()

    async def run() -> list[Any]:
        return [value async for value in program(question="capital?")]

    with dspex.context(lm=lm_for(fake)):
        values = asyncio.run(run())
        assert _RAN_ON == [("aforward", threading.get_ident())]
        pieces = fields(values, "answer")
        assert len(pieces) > 1 and "".join(p.chunk for p in pieces).strip() == "Paris it is"
        assert values[-1].answer == "Paris it is"
        _RAN_ON.clear()
        sync = dspex.streamify(
            _WhereItRuns(), stream_listeners=[StreamListener("answer")], async_streaming=False
        )
        assert list(sync(question="capital?"))[-1].answer == "Paris it is"
    assert [kind for kind, _ in _RAN_ON] == ["forward"]


def test_leaving_an_rt_stream_cancels_the_served_request_upstream(
    start_runtime: Any, fake: FakeOpenAI
) -> None:
    fake.configure(stream_delay=0.3)
    rt = dspex.current_runtime()
    rt.serve("qa", dspex.Predict("question -> answer"))

    async def run() -> StreamResponse:
        stream = rt.stream("qa", question="capital?")
        try:
            async for value in stream:
                if isinstance(value, StreamResponse):
                    return value
        finally:
            await stream.aclose()
        raise AssertionError("no chunk")

    with dspex.context(lm=lm_for(fake)):
        first = asyncio.run(run())
    assert first.chunk.startswith("Paris")
    assert fake.wait_disconnect(10), "the served request's LM call went on upstream"
    assert fake.stream_disconnects == 1


@pytest.mark.parametrize(
    ("kind", "model"),
    [(FakeAnthropic, "anthropic/claude-test"), (FakeGemini, "gemini/gemini-test")],
    ids=["anthropic", "gemini"],
)
def test_listeners_work_over_each_providers_sse(
    start_runtime: Any, kind: type[FakeAnthropic | FakeGemini], model: str
) -> None:
    start_runtime()
    program = dspex.streamify(
        dspex.Predict("question -> answer"), stream_listeners=[StreamListener("answer")]
    )
    reply = chat_reply(answer="Paris is the capital of France")
    with kind(reply=reply, api_key=KEY) as server:
        lm = dspex.LM(model, api_base=server.url, api_key=KEY, cache=False)
        with dspex.context(lm=lm):
            values = collect(program(question="capital?"))
    pieces = fields(values, "answer")
    assert len(pieces) > 3 and pieces[-1].is_last_chunk
    assert "".join(p.chunk for p in pieces).strip() == "Paris is the capital of France"
    assert values[-1].answer == "Paris is the capital of France"
