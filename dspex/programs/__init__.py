"""The DSPy programming model: signatures, examples, modules, adapters, evaluation.

``History`` and the custom field types (``Image``, ``Audio``, ``File``,
``Code``, ``Reasoning``, ``ToolCalls``, ``Type``) load on first use (they are
pydantic models; pydantic stays unimported until a program needs it), and so
do the retrieval names (numpy, httpx).
"""

from typing import TYPE_CHECKING

from dspex._lazy import lazy_face

if TYPE_CHECKING:
    from dspex.programs._adapters import (
        Adapter,
        ChatAdapter,
        JSONAdapter,
        TwoStepAdapter,
        XMLAdapter,
    )
    from dspex.programs._asyncify import asyncify
    from dspex.programs._best_of_n import BestOfN
    from dspex.programs._chain_of_thought import ChainOfThought
    from dspex.programs._evaluate import Evaluate, EvaluationResult
    from dspex.programs._example import Example
    from dspex.programs._fields import FieldInfo, InputField, OutputField, infer_prefix
    from dspex.programs._judged_metrics import CompleteAndGrounded, SemanticF1
    from dspex.programs._majority import majority
    from dspex.programs._metrics import (
        answer_exact_match,
        answer_passage_match,
        exact_match,
        f1_score,
        normalize_text,
    )
    from dspex.programs._module import BaseModule, Module, Parameter
    from dspex.programs._multi_chain_comparison import MultiChainComparison
    from dspex.programs._parallel import Parallel
    from dspex.programs._predict import Predict
    from dspex.programs._prediction import Completions, Prediction
    from dspex.programs._react import ReAct
    from dspex.programs._refine import Refine
    from dspex.programs._runtime_glue import configure, configure_cache, inspect_history, start
    from dspex.programs._settings import context, current_settings, settings
    from dspex.programs._signature import Signature, SignatureMeta, ensure_signature, make_signature
    from dspex.programs._state_files import load
    from dspex.programs._syncify import syncify
    from dspex.programs._tool import Tool
    from dspex.programs._usage import track_usage

# pydantic models (and numpy users): loaded on first use
_LAZY: dict[str, str] = {
    "Adapter": "_adapters._base",
    "ChatAdapter": "_adapters._chat",
    "JSONAdapter": "_adapters._chat",
    "TwoStepAdapter": "_adapters._two_step",
    "XMLAdapter": "_adapters._xml",
    "asyncify": "_asyncify",
    "BestOfN": "_best_of_n",
    "ChainOfThought": "_chain_of_thought",
    "Evaluate": "_evaluate",
    "EvaluationResult": "_evaluate",
    "Example": "_example",
    "FieldInfo": "_fields",
    "InputField": "_fields",
    "OutputField": "_fields",
    "infer_prefix": "_fields",
    "CompleteAndGrounded": "_judged_metrics",
    "SemanticF1": "_judged_metrics",
    "majority": "_majority",
    "answer_exact_match": "_metrics",
    "answer_passage_match": "_metrics",
    "exact_match": "_metrics",
    "f1_score": "_metrics",
    "normalize_text": "_metrics",
    "BaseModule": "_module",
    "Module": "_module",
    "Parameter": "_module",
    "MultiChainComparison": "_multi_chain_comparison",
    "Parallel": "_parallel",
    "Predict": "_predict",
    "Completions": "_prediction",
    "Prediction": "_prediction",
    "ReAct": "_react",
    "Refine": "_refine",
    "configure": "_runtime_glue",
    "configure_cache": "_runtime_glue",
    "inspect_history": "_runtime_glue",
    "start": "_runtime_glue",
    "context": "_settings",
    "current_settings": "_settings",
    "settings": "_settings",
    "Signature": "_signature",
    "SignatureMeta": "_signature",
    "ensure_signature": "_signature",
    "make_signature": "_signature",
    "load": "_state_files",
    "syncify": "_syncify",
    "Tool": "_tool",
    "track_usage": "_usage",
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
