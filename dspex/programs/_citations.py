"""``Document`` and ``Citations``: DSPy's experimental source-and-citation types.

Both are custom types a signature may use as any typed field: a ``Document``
input is a ``document`` content part of the prompt (see :class:`Document`), and
a ``Citations`` output is filled from Anthropic's native citations for an
``anthropic/`` model (the field leaves the prompt), else parsed from the JSON
list of citation objects the LM writes (or ``{"citations": [...]}``).
"""

from __future__ import annotations

from typing import Any

import pydantic

from dspex.programs._types._base import Type

__all__ = ["Citation", "Citations", "Document"]


class Document(Type):
    """A source document for the LM to read and cite: its text plus an optional title.

    In a prompt it is a ``document`` content part, as in DSPy: ``anthropic/`` models
    get Anthropic's document block (citations enabled); providers without one
    (OpenAI, Gemini) get the document's title, context and text as JSON text.
    """

    data: str
    title: str | None = None
    media_type: str = "text/plain"
    context: str | None = None

    @classmethod
    def description(cls) -> str:
        """How the type is described in prompts."""
        return (
            "A document containing text content that can be referenced and cited. "
            "Include the full text content and optionally a title for proper referencing."
        )

    def format(self) -> list[dict[str, Any]]:
        """The document as one content part: Anthropic's document block (``type: document``)."""
        block: dict[str, Any] = {
            "type": "document",
            "source": {"type": "text", "media_type": self.media_type, "data": self.data},
            "citations": {"enabled": True},
        }
        if self.title:
            block["title"] = self.title
        if self.context:
            block["context"] = self.context
        return [block]


class Citation(pydantic.BaseModel):
    """One quoted span: the text, which document it came from, and where in it."""

    type: str = "char_location"
    cited_text: str
    document_index: int
    document_title: str | None = None
    start_char_index: int
    end_char_index: int
    supported_text: str | None = None

    def format(self) -> dict[str, Any]:
        """The citation as a dict, optional keys only when set."""
        out = self.model_dump(exclude={"document_title", "supported_text"})
        if self.document_title:
            out["document_title"] = self.document_title
        if self.supported_text:
            out["supported_text"] = self.supported_text
        return out


class Citations(Type):
    """The citations an answer rests on (``result.citations.citations``).

    A custom type, as in DSPy: it serialises as its ``format()`` list between the
    custom-type markers, so a demo's citations read as DSPy writes them.
    """

    citations: list[Citation]

    @classmethod
    def from_dict_list(cls, items: list[dict[str, Any]]) -> Citations:
        """Citations from a list of citation dicts (``cited_text``, ``document_index``...)."""
        return cls(citations=[Citation(**item) for item in items])

    @classmethod
    def description(cls) -> str:
        """How the type is described in prompts."""
        return (
            "Citations with quoted text and source references. "
            "Include the exact text being cited and information about its source."
        )

    def format(self) -> list[dict[str, Any]]:
        return [citation.format() for citation in self.citations]

    @classmethod
    def adapt_to_native_lm_feature(
        cls, signature: Any, field_name: str, lm: Any, lm_kwargs: dict[str, Any]
    ) -> Any:
        """DSPy's rule: an ``anthropic/`` model cites natively (documents sent with
        citations enabled), so the field leaves the prompt."""
        if str(getattr(lm, "model", "")).startswith("anthropic/"):
            return signature.delete(field_name)
        return signature

    @classmethod
    def parse_lm_response(cls, response: Any) -> Citations | None:
        """The native citations a completion carries (``citations``), or None.

        Only character spans of text documents (``char_location``) fit a
        ``Citation``; other kinds (PDF pages) are left out.
        """
        found = (
            response.get("citations")
            if isinstance(response, dict)
            else getattr(response, "citations", None)
        )
        if not isinstance(found, list | tuple) or not found:
            return None
        spans = [dict(c) for c in found if dict(c).get("type", "char_location") == "char_location"]
        return cls.from_dict_list(spans) if spans else None

    @pydantic.model_validator(mode="before")
    @classmethod
    def _accept_a_bare_list(cls, data: Any) -> Any:
        # The LM may answer with the list itself rather than {"citations": [...]}.
        if isinstance(data, list):
            return {"citations": data}
        return data

    def __len__(self) -> int:
        return len(self.citations)

    def __getitem__(self, index: int) -> Citation:
        return self.citations[index]


Citations.Citation = Citation  # type: ignore[attr-defined]  # DSPy's nested name
