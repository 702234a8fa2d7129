"""``dspex.serve.app(runtime)`` in process, through httpx's ASGI transport (no socket).

Status codes, error bodies, schemas and metrics; the real ``dspex serve``
process is covered by tests/test_serve.py.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, Literal

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

import dspex
from dspex.errors import CircuitOpenError, UsageError
from dspex.serve import app, endpoint_for, load_programs
from dspex.serve._errors import scrub
from dspex.testing import DummyLM

WAIT = 30.0


class QA(dspex.Signature):
    """Answer the question."""

    question: str = dspex.InputField(desc="a question")
    answer: str = dspex.OutputField()


class Rate(dspex.Signature):
    """Rate the review."""

    review: str = dspex.InputField()
    stars: int = dspex.InputField()
    verdict: Literal["good", "bad"] = dspex.OutputField()


class Raises(dspex.Module):
    """A program that fails with whatever ``error`` holds."""

    def __init__(self, error: BaseException) -> None:
        super().__init__()
        self.error = error

    def forward(self, question: str) -> Any:
        raise self.error


class Gate(dspex.Module):
    """A program that blocks until ``release`` is set; ``entered`` is set when it starts."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = threading.Event()
        self.release = threading.Event()

    def forward(self, question: str, **extra: Any) -> Any:
        self.entered.set()
        assert self.release.wait(WAIT), "the test never released the gate"
        return dspex.Prediction(answer=f"done: {question}")


@pytest.fixture
def rt() -> Iterator[Any]:
    lm = DummyLM([{"answer": "Paris"}] * 20)
    with dspex.start(lm=lm) as runtime:
        yield runtime


def run(rt: Any, body: Callable[[httpx.AsyncClient], Awaitable[Any]], **options: Any) -> Any:
    """Run ``body(client)`` against ``app(rt)`` on a fresh event loop."""
    application = app(rt, **options)

    async def main() -> Any:
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url="http://dspex") as client:
            return await body(client)

    return asyncio.run(main())


def test_a_program_call_returns_the_prediction_fields(rt: Any) -> None:
    rt.serve("qa", dspex.Predict(QA))
    reply = run(rt, lambda c: c.post("/v1/programs/qa", json={"question": "Capital?"}))
    assert reply.status_code == 200
    assert reply.headers["content-type"] == "application/json"
    assert reply.json() == {"answer": "Paris"}


def test_programs_are_listed_with_their_fields(rt: Any) -> None:
    rt.serve("qa", dspex.Predict(QA))
    rt.serve("cot", dspex.ChainOfThought("question -> answer"))
    listing = run(rt, lambda c: c.get("/v1/programs")).json()["programs"]
    by_name = {p["name"]: p for p in listing}
    assert [f["name"] for f in by_name["qa"]["inputs"]] == ["question"]
    assert by_name["qa"]["inputs"][0]["description"] == "a question"
    assert [f["name"] for f in by_name["cot"]["outputs"]] == ["reasoning", "answer"]


@pytest.mark.parametrize(
    ("body", "field", "kind"),
    [
        ({}, "question", "missing"),
        ({"question": "q", "colour": "red"}, "colour", "extra_forbidden"),
        ({"question": 42}, "question", "string_type"),
    ],
)
def test_bad_input_is_422_naming_the_field(
    rt: Any, body: dict[str, Any], field: str, kind: str
) -> None:
    rt.serve("qa", dspex.Predict(QA))
    reply = run(rt, lambda c: c.post("/v1/programs/qa", json=body))
    assert reply.status_code == 422
    error = reply.json()["error"]
    assert error["type"] == "InputError"
    assert repr(field) in error["message"]
    assert error["errors"][0]["field"] == field
    assert error["errors"][0]["type"] == kind
    assert rt.servers.stats("qa").completed == 0  # refused before the program ran


def test_a_body_that_is_not_a_json_object_is_422(rt: Any) -> None:
    rt.serve("qa", dspex.Predict(QA))

    async def body(c: httpx.AsyncClient) -> tuple[httpx.Response, httpx.Response]:
        return (
            await c.post("/v1/programs/qa", content=b"{not json"),
            await c.post("/v1/programs/qa", json=["question"]),
        )

    broken, listed = run(rt, body)
    assert broken.status_code == listed.status_code == 422
    assert broken.json()["error"]["errors"][0]["type"] == "json_invalid"


def test_an_int_field_takes_a_number_and_refuses_words(rt: Any) -> None:
    lm = DummyLM([{"verdict": "good"}])
    program = dspex.Predict(Rate)
    program.set_lm(lm)
    rt.serve("rate", program)

    async def body(c: httpx.AsyncClient) -> tuple[httpx.Response, httpx.Response]:
        return (
            await c.post("/v1/programs/rate", json={"review": "ok", "stars": "many"}),
            await c.post("/v1/programs/rate", json={"review": "ok", "stars": 4}),
        )

    words, number = run(rt, body)
    assert words.status_code == 422
    assert words.json()["error"]["errors"][0]["field"] == "stars"
    assert number.status_code == 200
    assert number.json() == {"verdict": "good"}


def test_unknown_program_is_404(rt: Any) -> None:
    rt.serve("qa", dspex.Predict(QA))
    reply = run(rt, lambda c: c.post("/v1/programs/nope", json={"question": "q"}))
    assert reply.status_code == 404
    assert "nope" in reply.json()["error"]["message"]


def test_a_program_error_is_500_with_type_and_message_but_no_traceback(
    rt: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MY_SERVICE_API_KEY", "hunter2-very-secret")
    error = ValueError(
        "the database said no (key hunter2-very-secret, Authorization: Bearer abcdef123456789)"
    )
    rt.serve("bad", Raises(error))
    reply = run(rt, lambda c: c.post("/v1/programs/bad", json={"question": "q"}))
    assert reply.status_code == 500
    err = reply.json()["error"]
    assert err["type"] == "ValueError"
    assert "the database said no" in err["message"]
    assert "hunter2-very-secret" not in reply.text
    assert "abcdef123456789" not in reply.text
    assert "Traceback" not in reply.text and "File " not in reply.text


def test_circuit_open_is_503_with_retry_after(rt: Any) -> None:
    rt.serve("lm_down", Raises(CircuitOpenError("circuit open for openai/x", retry_at=None)))
    reply = run(rt, lambda c: c.post("/v1/programs/lm_down", json={"question": "q"}))
    assert reply.status_code == 503
    assert reply.json()["error"]["type"] == "CircuitOpenError"
    assert int(reply.headers["retry-after"]) >= 1


def test_a_full_queue_is_429_with_retry_after(rt: Any) -> None:
    gate = Gate()
    rt.serve("slow", gate, max_concurrency=1, queue_limit=0)

    async def body(c: httpx.AsyncClient) -> tuple[httpx.Response, httpx.Response]:
        first = asyncio.create_task(c.post("/v1/programs/slow", json={"question": "one"}))
        entered = await asyncio.to_thread(gate.entered.wait, WAIT)  # the first one executes
        assert entered
        try:
            second = await c.post("/v1/programs/slow", json={"question": "two"})
        finally:
            gate.release.set()
        return await first, second

    first, second = run(rt, body)
    assert second.status_code == 429
    assert second.json()["error"]["type"] == "OverloadedError"
    assert int(second.headers["retry-after"]) >= 1
    assert first.status_code == 200
    assert first.json() == {"answer": "done: one"}


def test_draining_refuses_calls_with_503_and_is_not_ready(rt: Any) -> None:
    rt.serve("qa", dspex.Predict(QA))
    application = app(rt)

    async def main() -> tuple[httpx.Response, ...]:
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url="http://dspex") as c:
            ready = await c.get("/readyz")
            application.state.dspex.start_draining()
            return ready, await c.get("/readyz"), await c.post("/v1/programs/qa", json={})

    ready, not_ready, refused = asyncio.run(main())
    assert ready.status_code == 200
    assert not_ready.status_code == 503
    assert "draining" in not_ready.json()["reasons"][0]
    assert refused.status_code == 503
    assert run(rt, lambda c: c.get("/healthz")).status_code == 200


def test_a_drained_program_server_is_503(rt: Any) -> None:
    rt.serve("qa", dspex.Predict(QA))
    rt.serve("other", dspex.Predict(QA))
    rt.servers.stop_accepting("qa")

    async def body(c: httpx.AsyncClient) -> tuple[httpx.Response, httpx.Response]:
        return await c.post("/v1/programs/qa", json={"question": "q"}), await c.get("/readyz")

    refused, ready = run(rt, body)
    assert refused.status_code == 503
    assert refused.json()["error"]["type"] == "ActorStoppedError"
    assert ready.status_code == 503
    assert any("'qa'" in reason for reason in ready.json()["reasons"])


def sse(text: str) -> list[tuple[str, Any]]:
    """``(event, data)`` pairs of a server-sent-event body."""
    events = []
    for block in text.split("\n\n"):
        if not block.strip():
            continue
        lines = dict(line.split(": ", 1) for line in block.splitlines())
        events.append((lines["event"], json.loads(lines["data"])))
    return events


def post_stream(c: httpx.AsyncClient, **inputs: Any) -> Awaitable[httpx.Response]:
    return c.post("/v1/programs/qa", json=inputs, headers={"accept": "text/event-stream"})


def test_sse_streams_field_chunks_then_the_prediction(rt: Any) -> None:
    rt.serve("qa", dspex.Predict(QA))
    reply = run(rt, lambda c: post_stream(c, question="q"))
    assert reply.status_code == 200
    assert reply.headers["content-type"].startswith("text/event-stream")
    events = sse(reply.text)
    chunks = [data for kind, data in events if kind == "chunk"]
    assert chunks and {c["field"] for c in chunks} == {"answer"}
    assert "".join(c["text"] for c in chunks).strip() == "Paris"
    assert chunks[-1]["last"] is True
    assert events[-1] == ("prediction", {"answer": "Paris"})


def test_sse_ends_with_an_error_event_when_the_program_fails(rt: Any) -> None:
    rt.serve("qa", Raises(ValueError("no such city")))
    reply = run(rt, lambda c: post_stream(c, question="q"))
    assert reply.status_code == 200  # the stream had begun; the error is its last event
    kind, data = sse(reply.text)[-1]
    assert kind == "error"
    assert data["error"]["type"] == "ValueError"
    assert "no such city" in data["error"]["message"]
    assert "Traceback" not in reply.text


def test_sse_bad_input_is_refused_before_the_stream(rt: Any) -> None:
    rt.serve("qa", dspex.Predict(QA))
    reply = run(rt, lambda c: post_stream(c, nope="q"))
    assert reply.status_code == 422
    assert reply.json()["error"]["type"] == "InputError"


def test_openapi_schemas_come_from_the_signatures(rt: Any) -> None:
    rate = dspex.Predict(Rate)
    rt.serve("rate", rate)
    doc = run(rt, lambda c: c.get("/openapi.json")).json()
    assert doc["openapi"].startswith("3.")
    op = doc["paths"]["/v1/programs/rate"]["post"]
    request_ref = op["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    response_ref = op["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
    schemas = doc["components"]["schemas"]
    request = schemas[request_ref.rsplit("/", 1)[-1]]
    assert request["properties"]["review"]["type"] == "string"
    assert request["properties"]["stars"]["type"] == "integer"
    assert sorted(request["required"]) == ["review", "stars"]
    assert request["additionalProperties"] is False
    response = schemas[response_ref.rsplit("/", 1)[-1]]
    assert response["properties"]["verdict"]["enum"] == ["good", "bad"]
    assert {"422", "429", "500", "503"} <= set(op["responses"])


def test_metrics_are_prometheus_text(rt: Any) -> None:
    rt.serve("qa", dspex.Predict(QA), max_concurrency=3, queue_limit=7)

    async def body(c: httpx.AsyncClient) -> httpx.Response:
        assert (await c.post("/v1/programs/qa", json={"question": "q"})).status_code == 200
        return await c.get("/metrics")

    reply = run(rt, body)
    assert reply.headers["content-type"].startswith("text/plain")
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(reply.text)
        for s in family.samples
    }
    server = (("server", "qa"),)
    assert samples[("dspex_server_completed_total", server)] == 1.0
    assert samples[("dspex_server_max_concurrency", server)] == 3.0
    assert samples[("dspex_server_queue_limit", server)] == 7.0
    assert samples[("dspex_program_runs_total", (("outcome", "succeeded"),))] >= 1.0
    assert samples[("dspex_lm_requests_total", (("model", "dummy"),))] >= 1.0


def test_reload_is_off_by_default_and_loads_a_state_when_allowed(rt: Any, tmp_path: Path) -> None:
    rt.serve("qa", dspex.Predict(QA))
    tuned = dspex.Predict(QA)
    tuned.demos = [dspex.Example(question="2+2?", answer="4")]
    state = tmp_path / "qa.json"
    tuned.save(str(state))
    payload = {"path": str(state)}
    refused = run(rt, lambda c: c.post("/v1/programs/qa/reload", json=payload))
    assert refused.status_code == 403
    assert "--allow-reload" in refused.json()["error"]["message"]
    assert rt.servers.stats("qa").version == 1

    async def body(c: httpx.AsyncClient) -> tuple[httpx.Response, httpx.Response]:
        return (
            await c.post("/v1/programs/qa/reload", json=payload),
            await c.post("/v1/programs/qa/reload", json={"path": str(tmp_path / "none.json")}),
        )

    done, missing = run(rt, body, allow_reload=True)
    assert done.status_code == 200
    assert done.json() == {"name": "qa", "version": 2}
    assert len(rt.servers.program("qa").demos) == 1
    assert missing.status_code == 422
    assert rt.servers.stats("qa").version == 2  # the failed reload changed nothing


def test_a_module_without_one_signature_takes_its_inputs_from_forward() -> None:
    class TwoSteps(dspex.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = dspex.Predict("question -> draft")
            self.b = dspex.Predict("draft -> answer")

        def forward(self, question: str, k: int = 3) -> Any:
            return self.b(draft=self.a(question=question).draft)

    endpoint = endpoint_for("two", TwoSteps())
    assert [f.name for f in endpoint.inputs] == ["question", "k"]
    assert endpoint.open_outputs
    assert endpoint.parse(b'{"question": "q", "k": 2}') == {"question": "q", "k": 2}
    with pytest.raises(Exception, match="'k'"):
        endpoint.parse(b'{"question": "q", "k": "two"}')


def test_fields_named_like_pydantic_methods_still_work() -> None:
    endpoint = endpoint_for("odd", dspex.Predict("schema, json -> copy"))
    assert endpoint.parse(b'{"schema": "a", "json": "b"}') == {"schema": "a", "json": "b"}


def test_scrub_masks_credentials() -> None:
    text = scrub("key sk-abcdefghijklmnop and api_key=zzzzzzzz, token: qqqqqqqq")
    assert "abcdefghijklmnop" not in text
    assert "zzzzzzzz" not in text and "qqqqqqqq" not in text


# -- what ``dspex serve`` loads -----------------------------------------------------------

APP_FILE = Path(__file__).resolve().parent / "serve_app.py"


def test_load_programs_from_a_factory_and_a_dict(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SERVE_TEST_FAKE_URL", "http://127.0.0.1:9/v1")
    one = load_programs(f"{APP_FILE}:qa")
    assert list(one) == ["qa"]
    named = load_programs(f"{APP_FILE}:qa", name="ask")
    assert list(named) == ["ask"]
    several = load_programs(f"{APP_FILE}:programs")
    assert sorted(several) == ["qa", "rate"]
    with pytest.raises(UsageError, match="--name applies to a single program"):
        load_programs(f"{APP_FILE}:programs", name="x")
    with pytest.raises(UsageError, match="no attribute"):
        load_programs(f"{APP_FILE}:nothing")


def test_load_programs_with_a_state_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SERVE_TEST_FAKE_URL", "http://127.0.0.1:9/v1")
    tuned = load_programs(f"{APP_FILE}:qa")["qa"]
    tuned.demos = [dspex.Example(question="q", answer="a")]
    tuned.save(str(tmp_path / "qa.json"))
    loaded = load_programs(f"{APP_FILE}:qa", state=str(tmp_path / "qa.json"))["qa"]
    assert len(loaded.demos) == 1


def test_a_saved_program_directory_needs_allow_pickle(tmp_path: Path) -> None:
    saved = tmp_path / "qa_dir"
    dspex.Predict(QA).save(str(saved), save_program=True)
    with pytest.raises(UsageError, match="--allow-pickle"):
        load_programs(str(saved))
    loaded = load_programs(str(saved), allow_pickle=True)
    assert list(loaded) == ["qa_dir"]
    assert list(loaded["qa_dir"].signature.input_fields) == ["question"]


def test_import_dspex_does_not_import_starlette() -> None:
    code = (
        "import sys, dspex, dspex.serve; dspex.serve.__doc__; "
        "print([m for m in ('starlette', 'uvicorn', 'prometheus_client') if m in sys.modules])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert json.loads(out.stdout.strip().replace("'", '"')) == []


def test_the_app_mounts_inside_another_starlette_app(rt: Any) -> None:
    from starlette.applications import Starlette
    from starlette.routing import Mount

    rt.serve("qa", dspex.Predict(QA))
    outer = Starlette(routes=[Mount("/llm", app=app(rt))])

    async def main() -> tuple[httpx.Response, httpx.Response]:
        transport = httpx.ASGITransport(app=outer)
        async with httpx.AsyncClient(transport=transport, base_url="http://svc") as c:
            return (
                await c.post("/llm/v1/programs/qa", json={"question": "q"}),
                await c.get("/llm/v1/programs"),
            )

    answer, listing = asyncio.run(main())
    assert answer.status_code == 200
    assert answer.json() == {"answer": "Paris"}
    assert [p["path"] for p in listing.json()["programs"]] == ["/llm/v1/programs/qa"]
