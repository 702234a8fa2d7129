"""Custom field types: Image, Audio, File, Code, Reasoning, ToolCalls.

The prompt tests compare with ``tests/golden/types_dspy341.json``: what DSPy
3.4.1's ChatAdapter and JSONAdapter produced for the same signature, demo
and inputs (messages, parsed outputs and reprs).
"""

import base64
import http.server
import json
import threading
from pathlib import Path
from typing import Any

import pytest
from runtime_helpers import SECRET

import dspex
from dspex.actors._lm._providers import AnthropicProvider, GeminiProvider
from dspex.actors._lm._types import LMRequest
from dspex.adapters.types import Audio, Code, File, Image, Reasoning, ToolCallResults, ToolCalls
from dspex.errors import UsageError
from dspex.experimental import Citations, Document
from dspex.testing import DummyLM, FakeAnthropic, FakeGemini, FakeOpenAI

GOLDEN = json.loads(
    (Path(__file__).resolve().parent / "golden" / "types_dspy341.json").read_text("utf-8")
)
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
)
PNG_URI = "data:image/png;base64," + base64.b64encode(PNG).decode()


class Describe(dspex.Signature):
    """Describe the pictures."""

    image: dspex.Image = dspex.InputField(desc="the main picture")
    more: list[dspex.Image] = dspex.InputField()
    clip: dspex.Audio = dspex.InputField()
    doc: dspex.File = dspex.InputField()
    snippet: dspex.Code["python"] = dspex.InputField()  # noqa: F821  (a language, not a name)
    answer: str = dspex.OutputField()
    code: dspex.Code["java"] = dspex.OutputField()  # noqa: F821
    calls: dspex.ToolCalls = dspex.OutputField()
    thinking: dspex.Reasoning = dspex.OutputField()


def _inputs() -> dict[str, Any]:
    return {
        "image": Image("https://example.com/cat.png"),
        "more": [Image(PNG_URI), Image("https://example.com/dog.jpg")],
        "clip": Audio(data="UklGRg==", audio_format="wav"),
        "doc": File.from_bytes(b"%PDF-1.4 hello", filename="a.pdf", mime_type="application/pdf"),
        "snippet": "```python\nprint(1)\n```",
    }


def _demo() -> dspex.Example:
    return dspex.Example(
        image=Image("https://example.com/d.png"),
        more=[],
        clip=Audio(data="AAAA", audio_format="mp3"),
        doc=File(file_id="file-1"),
        snippet="x = 1",
        answer="a",
        code="int x;",
        calls=ToolCalls.from_dict_list([{"name": "search", "args": {"q": "cats"}}]),
        thinking="hmm",
    )


@pytest.mark.parametrize(
    ("name", "adapter"), [("chat", dspex.ChatAdapter()), ("json", dspex.JSONAdapter())]
)
def test_prompts_with_every_type_are_dspys(name: str, adapter: Any) -> None:
    assert adapter.format(Describe, [_demo()], _inputs()) == GOLDEN[name]


CHAT_REPLY = (
    "[[ ## answer ## ]]\nA cat\n\n[[ ## code ## ]]\n```java\nint x = 1;\n```\n\n"
    '[[ ## calls ## ]]\n{"tool_calls": [{"name": "search", "args": {"q": "cats"}}]}\n\n'
    "[[ ## thinking ## ]]\nbecause\n\n[[ ## completed ## ]]"
)
JSON_REPLY = json.dumps(
    {
        "answer": "A cat",
        "code": "```java\nint x = 1;\n```",
        "calls": {"tool_calls": [{"name": "search", "args": {"q": "cats"}}]},
        "thinking": "because",
    }
)


@pytest.mark.parametrize(
    ("name", "adapter", "reply"),
    [
        ("parsed_chat", dspex.ChatAdapter(), CHAT_REPLY),
        ("parsed_json", dspex.JSONAdapter(), JSON_REPLY),
    ],
)
def test_outputs_parse_into_dspys_types(name: str, adapter: Any, reply: str) -> None:
    parsed = adapter.parse(Describe, reply)
    shown = {
        key: [type(v).__name__, v.model_dump() if hasattr(v, "model_dump") else v]
        for key, v in parsed.items()
    }
    assert shown == GOLDEN[name]
    assert isinstance(parsed["calls"], ToolCalls)
    assert parsed["calls"].tool_calls[0].name == "search"


def test_reprs_are_dspys() -> None:
    inputs = _inputs()
    shown = [
        repr(inputs["image"]),
        repr(inputs["more"][0]),
        repr(inputs["clip"]),
        repr(inputs["doc"]),
        str(Code["python"](code="x")),
        repr(Reasoning(content="r")),
    ]
    assert shown == GOLDEN["reprs"]


def test_plain_signatures_send_plain_string_content() -> None:
    messages = dspex.ChatAdapter().format(
        dspex.Signature("question -> answer"), [], {"question": "q"}
    )
    assert all(isinstance(m["content"], str) for m in messages)


# -- constructing the media types -----------------------------------------------------


def test_image_sources_without_pillow(tmp_path: Path) -> None:
    assert Image("https://example.com/a.png").url == "https://example.com/a.png"
    assert Image(url="gs://bucket/a.png").url == "gs://bucket/a.png"
    assert Image(PNG).url == PNG_URI  # bytes: the type is sniffed
    assert Image({"url": PNG_URI}) == Image(PNG_URI)
    path = tmp_path / "pic.png"
    path.write_bytes(PNG)
    assert Image.from_path(str(path)).url == PNG_URI
    with pytest.raises(ValueError, match="from_path"):
        Image(str(path))  # a local path is never read implicitly
    with pytest.raises(ValueError, match="File not found"):
        Image.from_path(str(tmp_path / "missing.png"))
    with pytest.raises(ValueError, match="not an image"):
        Image(b"%PDF-1.4 not a picture")
    with pytest.raises(ValueError, match="cannot tell"):
        Image(b"\x00\x01 mystery")


class _PictureHandler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.send_header("Content-Length", str(len(PNG)))
        self.end_headers()
        self.wfile.write(PNG)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def test_image_from_url_downloads_into_a_data_uri() -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _PictureHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/pic"
        assert Image.from_url(url, timeout=10).url == PNG_URI
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
    with pytest.raises(ValueError, match="http"):
        Image.from_url("ftp://example.com/a.png")


def test_audio_and_file_sources(tmp_path: Path) -> None:
    wav = b"RIFF\x24\x00\x00\x00WAVEfmt " + bytes(24)
    assert Audio(wav).audio_format == "wav"
    assert Audio(wav, audio_format="mp3").audio_format == "mp3"
    assert Audio("data:audio/x-wav;base64,AAAA") == Audio(data="AAAA", audio_format="wav")
    with pytest.raises(ValueError, match="from_path"):
        Audio("clip.wav")
    path = tmp_path / "notes.txt"
    path.write_text("hello")
    loaded = File.from_path(str(path))
    assert loaded.filename == "notes.txt"
    assert loaded.file_data == "data:text/plain;base64," + base64.b64encode(b"hello").decode()
    assert File.from_file_id("file-9").format() == [{"type": "file", "file": {"file_id": "file-9"}}]
    with pytest.raises(ValueError, match="at least one of: file_data, file_id, or filename"):
        File({"name": "x"})


# -- Code, Reasoning, ToolCalls -------------------------------------------------------


def test_a_language_in_a_string_or_postponed_annotation() -> None:
    signature = dspex.Signature("question -> code: dspex.Code['java']")
    assert signature.output_fields["code"].annotation is Code["java"]
    namespace: dict[str, Any] = {}
    exec(  # a module with postponed annotations: the type is the string 'dspex.Code["sql"]'
        "from __future__ import annotations\n"
        "import dspex\n"
        "class Q(dspex.Signature):\n"
        "    question: str = dspex.InputField()\n"
        '    query: dspex.Code["sql"] = dspex.OutputField()\n',
        namespace,
    )
    assert namespace["Q"].output_fields["query"].annotation is Code["sql"]


def test_code_strips_the_fence_and_names_its_language() -> None:
    java = Code["java"]
    assert java is Code["java"] and java.language == "java"
    assert java.model_validate("```java\nint x;\n```").code == "int x;"
    assert Code.model_validate("```x = 1```").code == "x = 1"
    assert Code(code="plain").code == "plain"
    assert "Programming language: java" in java.description()


def test_reasoning_acts_as_a_string() -> None:
    thought = Reasoning(content="Step one")
    assert thought == "Step one" and str(thought) == "Step one"
    assert thought.lower() == "step one" and "one" in thought and len(thought) == 8
    assert thought + "!" == "Step one!"
    with pytest.raises(AttributeError, match="`Reasoning` object has no attribute 'nope'"):
        thought.nope  # noqa: B018


def test_tool_calls_accept_provider_shapes_and_execute() -> None:
    calls = ToolCalls.from_dict_list(
        [
            {"id": "c1", "function": {"name": "add", "arguments": '{"a": 1, "b": 2}'}},
            {"name": "shout", "args": {"text": "hi"}},
        ]
    )
    assert [(c.id, c.name, c.args) for c in calls.tool_calls] == [
        ("c1", "add", {"a": 1, "b": 2}),
        (None, "shout", {"text": "hi"}),
    ]
    add_tool = dspex.Tool(lambda a, b: a + b, name="add")
    assert calls.tool_calls[0].execute(functions=[add_tool]) == 3
    assert calls.tool_calls[1].execute(functions={"shout": lambda text: text.upper()}) == "HI"
    with pytest.raises(ValueError, match="not found"):
        calls.tool_calls[1].execute(functions={})
    with pytest.raises(ValueError, match="function value"):
        ToolCalls.from_dict_list([{"function": "bad"}])
    results = ToolCallResults.from_tool_calls_and_values(calls, [3, "HI"])
    assert [r.call_id for r in results.tool_call_results] == ["c1", None]
    with pytest.raises(ValueError, match="one value per call"):
        ToolCallResults.from_tool_calls_and_values(calls, [3])


def test_predict_returns_tool_calls_and_json_asks_for_a_json_object() -> None:
    lm = DummyLM([{"calls": {"tool_calls": [{"name": "search", "args": {"q": "x"}}]}}])
    # DummyLM lists no supported_params (as DSPy's), so JSONAdapter would send it no
    # response_format at all; this one says it takes one, as a real model does.
    lm.supported_params = frozenset({"response_format"})
    lm.supports_response_schema = True  # type: ignore[misc]
    program = dspex.Predict("question -> calls: dspex.ToolCalls")
    with dspex.context(lm=lm, adapter=dspex.JSONAdapter()):
        result = program(question="find x")
    assert result.calls.tool_calls[0].args == {"q": "x"}
    assert lm.history[0]["params"]["response_format"] == {"type": "json_object"}


# -- content parts at the providers ---------------------------------------------------

PARTS = [
    {"type": "text", "text": "see"},
    {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}},
    {
        "type": "file",
        "file": {"file_data": "data:application/pdf;base64,JVBERg==", "filename": "a.pdf"},
    },
    {"type": "file", "file": {"file_data": "data:text/plain;base64,aGVsbG8="}},
    {"type": "file", "file": {"file_id": "file-1"}},
]


def test_gemini_gets_audio_and_files_inline() -> None:
    request = LMRequest("m", ({"role": "user", "content": PARTS},))
    body = GeminiProvider().build(request, api_base="http://h", api_key=SECRET).json
    assert body["contents"][0]["parts"] == [
        {"text": "see"},
        {"inlineData": {"mimeType": "audio/wav", "data": "UklGRg=="}},
        {"inlineData": {"mimeType": "application/pdf", "data": "JVBERg=="}},
        {"inlineData": {"mimeType": "text/plain", "data": "aGVsbG8="}},
        {"fileData": {"fileUri": "file-1"}},
    ]


def test_anthropic_gets_documents_and_refuses_audio() -> None:
    files = [PARTS[0], *PARTS[2:]]
    request = LMRequest("m", ({"role": "user", "content": files},))
    body = AnthropicProvider().build(request, api_base="http://h", api_key=SECRET).json
    assert body["messages"][0]["content"] == [
        {"type": "text", "text": "see"},
        {
            "type": "document",
            "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERg=="},
        },
        {
            "type": "document",
            "source": {"type": "text", "media_type": "text/plain", "data": "hello"},
        },
        {"type": "document", "source": {"type": "file", "file_id": "file-1"}},
    ]
    with pytest.raises(UsageError, match="audio"):
        AnthropicProvider().build(
            LMRequest("m", ({"role": "user", "content": PARTS[:2]},)),
            api_base="http://h",
            api_key=SECRET,
        )


class Look(dspex.Signature):
    """Say what is in the picture."""

    picture: dspex.Image = dspex.InputField()
    answer: str = dspex.OutputField()


@pytest.mark.parametrize(
    ("fake_class", "model"),
    [
        (FakeOpenAI, "openai/gpt-4o-mini"),
        (FakeAnthropic, "anthropic/claude-3-5-haiku"),
        (FakeGemini, "gemini/gemini-2.0-flash"),
    ],
)
def test_an_image_input_reaches_each_provider_as_a_content_part(
    start_runtime: Any, fake_class: Any, model: str
) -> None:
    start_runtime()
    with fake_class(
        api_key=SECRET, reply=lambda body: {"text": "[[ ## answer ## ]]\na dot"}
    ) as fake:
        lm = dspex.LM(model, api_base=fake.url, api_key=SECRET, cache=False)
        with dspex.context(lm=lm):
            result = dspex.Predict(Look)(picture=Image(PNG))
        [seen] = fake.requests
    assert result.answer == "a dot"
    sent = json.dumps(seen.json)
    assert base64.b64encode(PNG).decode() in sent
    assert "CUSTOM-TYPE" not in sent


# -- Document: a document content part, native for Anthropic, text for the others ---------


class Read(dspex.Signature):
    """Answer from the document."""

    document: Document = dspex.InputField()
    answer: str = dspex.OutputField()


DOC_BLOCK = {
    "type": "document",
    "source": {"type": "text", "media_type": "text/plain", "data": "Alpha beta"},
    "citations": {"enabled": True},
    "title": "Doc",
}
DOC_TEXT = json.dumps({"title": "Doc", "data": "Alpha beta"})


def test_a_document_input_is_a_document_part_of_the_prompt_as_in_dspy() -> None:
    messages = dspex.ChatAdapter().format(
        Read, [], {"document": Document(data="Alpha beta", title="Doc")}
    )
    assert messages[-1]["content"][:2] == [
        {"type": "text", "text": "[[ ## document ## ]]\n"},
        DOC_BLOCK,
    ]


@pytest.mark.parametrize(
    ("fake_class", "model"),
    [
        (FakeOpenAI, "openai/gpt-4o-mini"),
        (FakeAnthropic, "anthropic/claude-3-5-haiku"),
        (FakeGemini, "gemini/gemini-2.0-flash"),
    ],
)
def test_a_document_reaches_each_provider_in_a_form_it_takes(
    start_runtime: Any, fake_class: Any, model: str
) -> None:
    start_runtime()
    with fake_class(
        api_key=SECRET, reply=lambda body: {"text": "[[ ## answer ## ]]\nbeta"}
    ) as fake:
        lm = dspex.LM(model, api_base=fake.url, api_key=SECRET, cache=False)
        with dspex.context(lm=lm):
            result = dspex.Predict(Read)(document=Document(data="Alpha beta", title="Doc"))
        [seen] = fake.requests
    assert result.answer == "beta"
    if fake_class is FakeAnthropic:  # Anthropic's own block, citations enabled
        assert DOC_BLOCK in seen.json["messages"][-1]["content"]
        return
    sent = json.dumps(seen.json)
    assert '"document"' not in sent.replace('"[[ ## document ## ]]', "")  # no document part
    if fake_class is FakeOpenAI:
        assert {"type": "text", "text": DOC_TEXT} in seen.json["messages"][-1]["content"]
    else:
        assert {"text": DOC_TEXT} in seen.json["contents"][-1]["parts"]


def test_the_responses_api_gets_a_document_as_input_text() -> None:
    from dspex.actors._lm._providers._responses import _input_content

    parts = _input_content("user", [{"type": "text", "text": "see"}, DOC_BLOCK], 0)
    assert parts[1] == {"type": "input_text", "text": DOC_TEXT}
    pdf = {**DOC_BLOCK, "source": {"type": "base64", "data": "JVBERg=="}}
    with pytest.raises(UsageError, match=r"messages\[0\].*needs a text source"):
        _input_content("user", [pdf], 0)


class Cite(dspex.Signature):
    """Answer from the document, citing it."""

    document: Document = dspex.InputField()
    question: str = dspex.InputField()
    answer: str = dspex.OutputField()
    citations: Citations = dspex.OutputField()


SPAN = {
    "type": "char_location",
    "cited_text": "Alpha",
    "document_index": 0,
    "document_title": "Doc",
    "start_char_index": 0,
    "end_char_index": 5,
}


def test_anthropic_cites_natively_and_the_citations_survive_the_cache(
    start_runtime: Any,
) -> None:
    start_runtime()

    def reply(body: dict[str, Any]) -> dict[str, Any]:
        content = [
            {"type": "text", "text": "[[ ## answer ## ]]\n"},
            {"type": "text", "text": "It is Alpha.", "citations": [SPAN]},
            {"type": "text", "text": "\n\n[[ ## completed ## ]]"},
        ]
        return {
            "body": {
                "type": "message",
                "content": content,
                "stop_reason": "end_turn",
                "model": body["model"],
                "usage": {"input_tokens": 1, "output_tokens": 1},
            }
        }

    with FakeAnthropic(api_key=SECRET, reply=reply) as fake:
        lm = dspex.LM("anthropic/claude-3-5-haiku", api_base=fake.url, api_key=SECRET)
        doc = Document(data="Alpha beta", title="Doc")
        with dspex.context(lm=lm):
            first = dspex.Predict(Cite)(document=doc, question="Which?")
            again = dspex.Predict(Cite)(document=doc, question="Which?")  # a cache hit
        [seen] = fake.requests
    system = seen.json["system"]
    assert "`answer`" in system and "[[ ## citations ## ]]" not in system  # left the prompt
    assert DOC_BLOCK in seen.json["messages"][-1]["content"]
    for pred in (first, again):
        assert pred.answer == "It is Alpha."
        [citation] = pred.citations.citations
        assert (citation.cited_text, citation.document_title) == ("Alpha", "Doc")
        assert citation.supported_text == "It is Alpha."


def test_other_providers_write_citations_in_the_reply() -> None:
    lm = DummyLM([{"answer": "Alpha", "citations": json.dumps([SPAN])}])
    with dspex.context(lm=lm):
        pred = dspex.Predict(Cite)(document=Document(data="Alpha beta"), question="Which?")
    assert pred.citations.citations[0].cited_text == "Alpha"
    assert "[[ ## citations ## ]]" in lm.history[-1]["messages"][0]["content"]
