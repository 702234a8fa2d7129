"""dspex: DSPy's programming model on an OTP-style supervised actor runtime.

``import dspex as dspy`` runs ordinary DSPy programs; ``dspex.start()`` adds a
supervision tree, resilient LM clients, named program actors and daemons.

Names load lazily on first use so ``import dspex`` stays cheap: the table
``_LAZY`` maps each public name to the module that defines it.
"""

from __future__ import annotations

import importlib
from typing import Any

from dspex.errors import (
    ActorStoppedError,
    AdapterParseError,
    AuthenticationError,
    CallTimeoutError,
    CircuitOpenError,
    ConfigError,
    DSPexError,
    LMError,
    LMTimeoutError,
    LocalModelError,
    MaxChildrenError,
    OverloadedError,
    ProgramError,
    ProviderError,
    RateLimitError,
    RegistryError,
    SignatureError,
    StartError,
    SupervisionError,
    UsageError,
)

__version__ = "0.1.0"

# public name -> module defining it (imported on first attribute access)
_LAZY: dict[str, str] = {
    "Actor": "dspex.supervision",
    "Adapter": "dspex.programs",
    "ChainOfThought": "dspex.programs",
    "ChatAdapter": "dspex.programs",
    "ChildSpec": "dspex.supervision",
    "Completions": "dspex.programs",
    "DummyLM": "dspex.testing",
    "DynamicSupervisor": "dspex.supervision",
    "Evaluate": "dspex.programs",
    "EvaluationResult": "dspex.programs",
    "Example": "dspex.programs",
    "Failed": "dspex.supervision",
    "InputField": "dspex.programs",
    "JSONAdapter": "dspex.programs",
    "LM": "dspex.actors",
    "Module": "dspex.programs",
    "Ok": "dspex.supervision",
    "OutputField": "dspex.programs",
    "Parameter": "dspex.programs",
    "Predict": "dspex.programs",
    "Prediction": "dspex.programs",
    "Registry": "dspex.supervision",
    "Restart": "dspex.supervision",
    "Runtime": "dspex.actors",
    "Settings": "dspex.config",
    "Signature": "dspex.programs",
    "SignatureMeta": "dspex.programs",
    "Strategy": "dspex.supervision",
    "Supervisor": "dspex.supervision",
    "WorkerPool": "dspex.supervision",
    "XMLAdapter": "dspex.programs",
    "answer_exact_match": "dspex.programs",
    "answer_passage_match": "dspex.programs",
    "configure": "dspex.programs",
    "configure_cache": "dspex.programs",
    "context": "dspex.programs",
    "current_runtime": "dspex.actors",
    "ensure_signature": "dspex.programs",
    "exact_match": "dspex.programs",
    "f1_score": "dspex.programs",
    "infer_prefix": "dspex.programs",
    "inspect_history": "dspex.programs",
    "load": "dspex.programs",
    "load_settings": "dspex.config",
    "make_signature": "dspex.programs",
    "normalize_text": "dspex.programs",
    "settings": "dspex.programs",
    "start": "dspex.programs",
}

__all__ = [
    "LM",
    "Actor",
    "ActorStoppedError",
    "Adapter",
    "AdapterParseError",
    "AuthenticationError",
    "CallTimeoutError",
    "ChainOfThought",
    "ChatAdapter",
    "ChildSpec",
    "CircuitOpenError",
    "Completions",
    "ConfigError",
    "DSPexError",
    "DummyLM",
    "DynamicSupervisor",
    "Evaluate",
    "EvaluationResult",
    "Example",
    "Failed",
    "InputField",
    "JSONAdapter",
    "LMError",
    "LMTimeoutError",
    "LocalModelError",
    "MaxChildrenError",
    "Module",
    "Ok",
    "OutputField",
    "OverloadedError",
    "Parameter",
    "Predict",
    "Prediction",
    "ProgramError",
    "ProviderError",
    "RateLimitError",
    "Registry",
    "RegistryError",
    "Restart",
    "Runtime",
    "Settings",
    "Signature",
    "SignatureError",
    "SignatureMeta",
    "StartError",
    "Strategy",
    "SupervisionError",
    "Supervisor",
    "UsageError",
    "WorkerPool",
    "XMLAdapter",
    "answer_exact_match",
    "answer_passage_match",
    "configure",
    "configure_cache",
    "context",
    "current_runtime",
    "ensure_signature",
    "exact_match",
    "f1_score",
    "infer_prefix",
    "inspect_history",
    "load",
    "load_settings",
    "make_signature",
    "normalize_text",
    "settings",
    "start",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'dspex' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
