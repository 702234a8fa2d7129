"""The DSPy programming model: signatures, examples, modules, adapters, evaluation."""

from ._adapters import Adapter, ChatAdapter, JSONAdapter, XMLAdapter
from ._chain_of_thought import ChainOfThought
from ._evaluate import Evaluate, EvaluationResult
from ._example import Example
from ._fields import FieldInfo, InputField, OutputField, infer_prefix
from ._metrics import (
    answer_exact_match,
    answer_passage_match,
    exact_match,
    f1_score,
    normalize_text,
)
from ._module import Module, Parameter
from ._predict import Predict
from ._prediction import Completions, Prediction
from ._react import ReAct
from ._runtime_glue import configure, configure_cache, inspect_history, start
from ._settings import context, current_settings, settings
from ._signature import Signature, SignatureMeta
from ._signature_build import ensure_signature, make_signature
from ._state import load
from ._tool import Tool

__all__ = [
    "Adapter",
    "ChainOfThought",
    "ChatAdapter",
    "Completions",
    "Evaluate",
    "EvaluationResult",
    "Example",
    "FieldInfo",
    "InputField",
    "JSONAdapter",
    "Module",
    "OutputField",
    "Parameter",
    "Predict",
    "Prediction",
    "ReAct",
    "Signature",
    "SignatureMeta",
    "Tool",
    "XMLAdapter",
    "answer_exact_match",
    "answer_passage_match",
    "configure",
    "configure_cache",
    "context",
    "current_settings",
    "ensure_signature",
    "exact_match",
    "f1_score",
    "infer_prefix",
    "inspect_history",
    "load",
    "make_signature",
    "normalize_text",
    "settings",
    "start",
]
