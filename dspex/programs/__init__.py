"""The DSPy programming model: signatures, examples, modules, adapters, evaluation.

``History`` loads on first use (it is a pydantic model; pydantic stays
unimported until a program needs it), and so do the retrieval names (numpy,
httpx).
"""

from dspex._lazy import lazy_face

from ._adapters import Adapter, ChatAdapter, JSONAdapter, XMLAdapter
from ._asyncify import asyncify
from ._best_of_n import BestOfN
from ._chain_of_thought import ChainOfThought
from ._evaluate import Evaluate, EvaluationResult
from ._example import Example
from ._fields import FieldInfo, InputField, OutputField, infer_prefix
from ._majority import majority
from ._metrics import (
    answer_exact_match,
    answer_passage_match,
    exact_match,
    f1_score,
    normalize_text,
)
from ._module import BaseModule, Module, Parameter
from ._multi_chain_comparison import MultiChainComparison
from ._parallel import Parallel
from ._predict import Predict
from ._prediction import Completions, Prediction
from ._react import ReAct
from ._refine import Refine
from ._runtime_glue import configure, configure_cache, inspect_history, start
from ._settings import context, current_settings, settings
from ._signature import Signature, SignatureMeta, ensure_signature, make_signature
from ._state_files import load
from ._tool import Tool
from ._usage import track_usage

_LAZY: dict[str, str] = {
    "ColBERTv2": "_colbertv2",
    "Embeddings": "_retrievers",
    "EmbeddingsWithScores": "_retrievers",
    "History": "_history",
    "Retrieve": "_retrieve",
    "dotdict": "_colbertv2",
}

__all__ = [
    "Adapter",
    "BaseModule",
    "BestOfN",
    "ChainOfThought",
    "ChatAdapter",
    "ColBERTv2",
    "Completions",
    "Embeddings",
    "EmbeddingsWithScores",
    "Evaluate",
    "EvaluationResult",
    "Example",
    "FieldInfo",
    "History",
    "InputField",
    "JSONAdapter",
    "Module",
    "MultiChainComparison",
    "OutputField",
    "Parallel",
    "Parameter",
    "Predict",
    "Prediction",
    "ReAct",
    "Refine",
    "Retrieve",
    "Signature",
    "SignatureMeta",
    "Tool",
    "XMLAdapter",
    "answer_exact_match",
    "answer_passage_match",
    "asyncify",
    "configure",
    "configure_cache",
    "context",
    "current_settings",
    "dotdict",
    "ensure_signature",
    "exact_match",
    "f1_score",
    "infer_prefix",
    "inspect_history",
    "load",
    "majority",
    "make_signature",
    "normalize_text",
    "settings",
    "start",
    "track_usage",
]

__getattr__, __dir__ = lazy_face(__name__, globals(), _LAZY)
