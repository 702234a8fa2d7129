"""Test doubles that users need too: DummyLM and fake provider HTTP servers.

The fakes are real HTTP/1.1 servers on 127.0.0.1 speaking the OpenAI (chat,
embeddings, Responses API), Anthropic and Gemini wire formats, with scripted
replies, latency and fault injection, and a ColBERTv2 search server; see
docs/testing.md.
"""

from dspex.testing._dummy_lm import DummyLM, DummyVectorizer
from dspex.testing._fake_colbert import FakeColBERTv2
from dspex.testing._fake_providers import FakeAnthropic, FakeGemini, FakeOpenAI
from dspex.testing._fake_servers import FakeProvider, Fault, FaultKind, RecordedRequest, Reply

__all__ = [
    "DummyLM",
    "DummyVectorizer",
    "FakeAnthropic",
    "FakeColBERTv2",
    "FakeGemini",
    "FakeOpenAI",
    "FakeProvider",
    "Fault",
    "FaultKind",
    "RecordedRequest",
    "Reply",
]
