"""The DSPy programming model: signatures, examples, modules, adapters, evaluation.

``History`` and the custom field types (``Image``, ``Audio``, ``File``,
``Code``, ``Reasoning``, ``ToolCalls``, ``Type``) load on first use (they are
pydantic models; pydantic stays unimported until a program needs it), and so
do the retrieval names (numpy, httpx).
"""

from dspex._lazy import lazy_face

from ._adapters import Adapter, ChatAdapter, JSONAdapter, TwoStepAdapter, XMLAdapter
from ._asyncify import asyncify
from ._best_of_n import BestOfN
from ._chain_of_thought import ChainOfThought
from ._evaluate import Evaluate, EvaluationResult
from ._example import Example
from ._fields import FieldInfo, InputField, OutputField, infer_prefix
from ._judged_metrics import CompleteAndGrounded, SemanticF1
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
from ._syncify import syncify
from ._tool import Tool
from ._usage import track_usage

# pydantic models (and numpy users): loaded on first use
_LAZY: dict[str, str] = {
    "Embedder": "_embedder",
    "History": "_history",
    "KNN": "_knn",  # numpy: loaded on first use
    "Audio": "_types._media",
    "File": "_types._media",
    "Image": "_types._media",
    "Code": "_types._text",
    "Reasoning": "_types._text",
    "ToolCalls": "_types._tool_calls",
    "ToolCallResults": "_types._tool_calls",
    "Type": "_types._base",
    # retrieval: numpy and httpx, loaded on first use
    "ColBERTv2": "_colbertv2",
    "Embeddings": "_retrievers",
    "EmbeddingsWithScores": "_retrievers",
    "Retrieve": "_retrieve",
    "dotdict": "_colbertv2",
}

__all__ = [
    "KNN",
    "Adapter",
    "Audio",
    "BaseModule",
    "BestOfN",
    "ChainOfThought",
    "ChatAdapter",
    "Code",
    "ColBERTv2",
    "CompleteAndGrounded",
    "Completions",
    "Embedder",
    "Embeddings",
    "EmbeddingsWithScores",
    "Evaluate",
    "EvaluationResult",
    "Example",
    "FieldInfo",
    "File",
    "History",
    "Image",
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
    "Reasoning",
    "Refine",
    "Retrieve",
    "SemanticF1",
    "Signature",
    "SignatureMeta",
    "Tool",
    "ToolCallResults",
    "ToolCalls",
    "TwoStepAdapter",
    "Type",
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
    "syncify",
    "track_usage",
]

__getattr__, __dir__ = lazy_face(__name__, globals(), _LAZY)
