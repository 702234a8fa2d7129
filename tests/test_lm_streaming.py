"""Provider streaming: SSE in each dialect, over both transports, through the LM client.

Each test starts a real fake provider server and an LMClient on it, and
streams through an ``LMHandle`` with a chunk sink (``_streaming.stream_to``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pykka
import pytest
from transport_helpers import TRANSPORTS

from dspex.actors._lm._client import ClientSlot, LMClient
from dspex.actors._lm._handle import LMHandle
from dspex.actors._lm._providers._stream import SSEDecoder
from dspex.actors._lm._resilience import LMClientConfig
from dspex.actors._lm._streaming import stream_to
from dspex.actors._lm._types import LMResponse
from dspex.errors import LMError, LMTimeoutError
from dspex.supervision import Supervisor, which_children
from dspex.testing import FakeAnthropic, FakeGemini, FakeOpenAI, Fault
from dspex.testing._fake_servers import FakeProvider

KEY = "sk-test-SECRET-0123456789abcdef"
REPLY = "The quick brown fox jumps over the lazy dog"
PROVIDERS: dict[str, tuple[type[FakeProvider], str]] = {
    "openai": (FakeOpenAI, "openai/test-model"),
    "anthropic": (FakeAnthropic, "anthropic/claude-test"),
    "gemini": (FakeGemini, "gemini/gemini-test"),
}


class Chunks:
    """A thread-safe chunk sink that remembers what it got."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.items: list[str] = []
        self.first = threading.Event()

    def __call__(self, text: str) -> None:
        with self.lock:
            self.items.append(text)
        self.first.set()

    @property
    def text(self) -> str:
        with self.lock:
            return "".join(self.items)


@pytest.fixture(params=sorted(PROVIDERS))
def provider(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture(params=TRANSPORTS)
def transport(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture
def fake(provider: str) -> Iterator[FakeProvider]:
    kind, _ = PROVIDERS[provider]
    with kind(reply=REPLY, api_key=KEY) as server:
        yield server


Start = Callable[..., LMHandle]


@pytest.fixture
def start(fake: FakeProvider, provider: str, transport: str) -> Iterator[Start]:
    refs: list[pykka.ActorRef[Any]] = []

    def run(handle_options: dict[str, Any] | None = None, **config: Any) -> LMHandle:
        config.setdefault("backoff_base", 0.001)
        cfg = LMClientConfig().replace(transport=transport, **config)
        model = PROVIDERS[provider][1]
        ref = LMClient.start_link(model, api_base=fake.url, api_key=KEY, config=cfg)
        refs.append(ref)
        return LMHandle.for_client(ref, **(handle_options or {}))

    yield run
    for ref in refs:
        if ref.is_alive():
            ref.stop(timeout=10)


def streamed(handle: LMHandle, sink: Chunks, prompt: str = "hi", **params: Any) -> LMResponse:
    with stream_to(sink):
        return handle.generate([{"role": "user", "content": prompt}], params)


def test_chunks_arrive_in_pieces_and_join_to_the_reply(
    start: Start, fake: FakeProvider, provider: str
) -> None:
    sink = Chunks()
    response = streamed(start(), sink)
    assert response.texts == [REPLY]
    assert sink.text == REPLY
    assert len(sink.items) == len(REPLY.split())  # one delta per word, as the fake sends
    assert response.usage.completion_tokens == len(REPLY.split())
    (sent,) = fake.requests
    if provider == "gemini":
        assert sent.path.endswith(":streamGenerateContent") and sent.query["alt"] == "sse"
    else:
        assert sent.json["stream"] is True


def test_without_a_sink_the_call_does_not_stream(start: Start, fake: FakeProvider) -> None:
    handle = start()
    assert handle.generate([{"role": "user", "content": "x"}], {}).texts == [REPLY]
    (sent,) = fake.requests
    assert not sent.json.get("stream") and not sent.path.endswith(":streamGenerateContent")


@pytest.mark.parametrize("fault", [Fault.drop(), Fault.error(503)], ids=["drop", "503"])
def test_a_failure_before_the_first_chunk_is_retried(
    start: Start, fake: FakeProvider, fault: Fault
) -> None:
    fake.configure(schedule=[fault])
    sink = Chunks()
    response = streamed(start(), sink)
    assert response.texts == [REPLY]
    assert sink.text == REPLY  # nothing from the failed attempt, everything once
    assert fake.request_count == 2


def test_a_failure_after_the_first_chunk_ends_the_stream_and_is_not_replayed(
    start: Start, fake: FakeProvider
) -> None:
    fake.configure(stream_fail_after=2)
    sink = Chunks()
    with pytest.raises(LMError, match="not retried") as caught:
        streamed(start(num_retries=3), sink)
    assert caught.value.retryable is False
    assert sink.items == ["The ", "quick "]
    assert fake.request_count == 1


def test_a_cache_hit_streams_the_whole_reply_at_once(start: Start, fake: FakeProvider) -> None:
    store: dict[str, LMResponse] = {}
    handle = start()
    handle.attach_cache(store.get, store.__setitem__)
    first = Chunks()
    streamed(handle, first)
    assert len(store) == 1 and len(first.items) > 1
    again = Chunks()
    response = streamed(handle, again)
    assert again.items == [REPLY]
    assert response.cache_hit
    assert fake.request_count == 1


def test_a_caller_that_gives_up_hangs_up_on_the_provider(start: Start, fake: FakeProvider) -> None:
    fake.configure(stream_delay=0.2)
    sink = Chunks()
    handle = start(handle_options={"call_timeout": 0.5})
    with pytest.raises(LMTimeoutError):
        streamed(handle, sink, num_retries=0)
    assert fake.wait_disconnect(10), "the upstream stream was not closed"
    assert fake.stream_disconnects == 1
    assert len(sink.items) < len(REPLY.split())


def test_the_response_size_limit_holds_while_streaming(start: Start, fake: FakeProvider) -> None:
    fake.configure(reply="word " * 2000)
    sink = Chunks()
    with pytest.raises(LMError, match="max_response_bytes"):
        streamed(start(max_response_bytes=4096, num_retries=0), sink)


def test_concurrent_streams_do_not_share_a_flight(start: Start, fake: FakeProvider) -> None:
    handle = start()
    sinks = [Chunks(), Chunks()]
    threads = [threading.Thread(target=streamed, args=(handle, s)) for s in sinks]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert [s.text for s in sinks] == [REPLY, REPLY]
    assert fake.request_count == 2


# -- the SSE decoder -------------------------------------------------------------------


def test_sse_decoder_joins_split_events_and_skips_comments() -> None:
    decoder = SSEDecoder()
    wire = b': keep-alive\r\nevent: delta\r\ndata: {"a":\r\ndata: 1}\r\n\r\ndata: [DONE]\n\n'
    events: list[tuple[str, str]] = []
    for i in range(len(wire)):  # one byte at a time: every split point
        events += decoder.feed(wire[i : i + 1])
    assert events == [("delta", '{"a":\n1}'), ("message", "[DONE]")]


def test_sse_decoder_completes_an_event_without_its_blank_line_at_close() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: last") == []
    assert decoder.close() == [("message", "last")]


# -- a restart mid-stream ---------------------------------------------------------------


def test_a_client_restart_after_the_first_chunk_is_not_replayed(transport: str) -> None:
    with FakeOpenAI(reply=REPLY, api_key=KEY) as fake:
        fake.configure(stream_delay=0.3)
        model = PROVIDERS["openai"][1]
        slot = ClientSlot(model, fake.url, LMClientConfig(transport=transport))
        sup = Supervisor.start_link(
            [LMClient.child_spec(model, slot=slot, api_key=KEY)], max_restarts=3, max_seconds=60
        )
        try:
            handle = LMHandle(slot, call_timeout=60)
            sink = Chunks()
            with ThreadPoolExecutor(1) as pool:
                call = pool.submit(streamed, handle, sink)
                assert sink.first.wait(30), "no chunk arrived"
                [child] = which_children(sup)
                assert child.ref is not None
                child.ref.stop(timeout=10)  # the supervisor starts the next incarnation
                with pytest.raises(LMError, match="restarted after part of the reply"):
                    call.result(60)
            assert fake.request_count == 1  # not re-sent to the new incarnation
            assert handle.resubmits == 0
        finally:
            sup.stop(timeout=20)


def test_a_server_that_ignores_the_stream_flag_answers_in_one_chunk(transport: str) -> None:
    whole = {
        "choices": [{"index": 0, "message": {"content": REPLY}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 9},
    }
    with FakeOpenAI(reply=lambda body: {"body": whole}, api_key=KEY) as fake:
        model = PROVIDERS["openai"][1]
        cfg = LMClientConfig().replace(transport=transport)
        ref = LMClient.start_link(model, api_base=fake.url, api_key=KEY, config=cfg)
        try:
            sink = Chunks()
            response = streamed(LMHandle.for_client(ref), sink)
        finally:
            ref.stop(timeout=10)
    assert sink.items == [REPLY]
    assert response.texts == [REPLY] and response.usage.completion_tokens == 9
