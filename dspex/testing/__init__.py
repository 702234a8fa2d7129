"""Test doubles that users need too: DummyLM and fake provider HTTP servers."""
