"""Test doubles that users need too: DummyLM and fake provider HTTP servers."""

from dspex.testing._dummy_lm import DummyLM

__all__ = ["DummyLM"]
