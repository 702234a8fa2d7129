"""``Code`` and ``Reasoning``: text-like field types with DSPy's prompt behaviour."""

from __future__ import annotations

import re
from typing import Any, ClassVar

import pydantic

from dspex.programs._types._base import Type

__all__ = ["Code", "Reasoning"]

_FENCED = re.compile(r"```(?:[^\n]*)\n(.*?)```", re.DOTALL)
_INLINE_FENCED = re.compile(r"```(.*?)```", re.DOTALL)


def _unfence(code: str) -> str:
    """The code inside the first markdown fence (its language tag dropped), else ``code``."""
    match = _FENCED.search(code) or _INLINE_FENCED.search(code)
    return match.group(1).strip() if match else code


class Code(Type):
    """Source code; ``Code["java"]`` names the language.

    As an output, the LM is asked for a fenced block and the fence is
    stripped; as an input, the code is sent as plain text.
    """

    __dspex_plain_text__: ClassVar[bool] = True  # no "# note: ... JSON schema" in the prompt

    code: str
    language: ClassVar[str] = "python"

    def format(self) -> str:
        return self.code

    @pydantic.model_serializer()
    def serialize_model(self) -> Any:
        return self.format()

    @classmethod
    def description(cls) -> str:
        fence = cls.language.lower()
        return (
            "Code represented in a string, specified in the `code` field. If this is an output "
            "field, the code field should follow the markdown code block format, e.g. \n"
            f"```{fence}\n{{code}}\n```\nProgramming language: {cls.language}"
        )

    @pydantic.model_validator(mode="before")
    @classmethod
    def _from_text(cls, data: Any) -> Any:
        if isinstance(data, cls):
            return data
        if isinstance(data, str):
            return {"code": _unfence(data)}
        if isinstance(data, dict):
            if "code" not in data:
                raise ValueError("dspex.Code needs a `code` field, e.g. Code(code='print(1)')")
            if not isinstance(data["code"], str):
                raise ValueError(f"Code.code must be a str, got {type(data['code']).__name__}")
            return {"code": _unfence(data["code"])}
        raise ValueError(f"cannot make dspex.Code from {type(data).__name__}: {data!r}")

    def __class_getitem__(cls, language: Any) -> Any:
        """``Code["java"]``: a subclass whose ``language`` is ``"java"`` (one per language)."""
        if not isinstance(language, str):
            return super().__class_getitem__(language)
        cached = _LANGUAGES.get((cls, language))
        if cached is None:
            cached = pydantic.create_model(f"{cls.__name__}_{language}", __base__=cls)
            cached.language = language
            _LANGUAGES[(cls, language)] = cached
        return cached


_LANGUAGES: dict[tuple[type, str], type] = {}


class Reasoning(Type):
    """An LM's reasoning, used like a ``str`` (shown as ``str`` in prompts)."""

    __dspex_plain_text__: ClassVar[bool] = True
    __dspex_type_name__: ClassVar[str] = "str"

    content: str

    def format(self) -> str:
        return self.content

    @pydantic.model_validator(mode="before")
    @classmethod
    def _from_text(cls, data: Any) -> Any:
        if isinstance(data, cls):
            return data
        if isinstance(data, str):
            return {"content": data}
        if isinstance(data, dict):
            if not isinstance(data.get("content"), str):
                raise ValueError("dspex.Reasoning needs a str `content` field")
            return {"content": data["content"]}
        raise ValueError(f"cannot make dspex.Reasoning from {type(data).__name__}: {data!r}")

    @classmethod
    def adapt_to_native_lm_feature(
        cls, signature: Any, field_name: str, lm: Any, lm_kwargs: dict[str, Any]
    ) -> Any:
        """Use the model's own reasoning for ``field_name`` when it ``supports_reasoning``.

        DSPy's rule: the effort comes from the call's parameters, else the LM's,
        else ``"low"``; an explicit None turns it off. The field then leaves the
        prompt and is filled from the reply's ``reasoning_content``.
        """
        if "reasoning_effort" in lm_kwargs:
            effort = lm_kwargs["reasoning_effort"]
        else:
            effort = (getattr(lm, "kwargs", None) or {}).get("reasoning_effort", "low")
        if effort is None or not getattr(lm, "supports_reasoning", False):
            return signature
        if "gpt-5" in str(getattr(lm, "model", "")) and getattr(lm, "model_type", "chat") == "chat":
            # OpenAI's chat completions API returns no reasoning text for GPT-5 models.
            return signature
        lm_kwargs["reasoning_effort"] = effort
        return signature.delete(field_name)

    @classmethod
    def parse_lm_response(cls, response: Any) -> Reasoning | None:
        """The reasoning a reply carries natively (a completion's ``reasoning_content``)."""
        if isinstance(response, dict):
            content = response.get("reasoning_content")
        else:
            content = getattr(response, "reasoning_content", None)
        return cls(content=content) if isinstance(content, str) else None

    def __str__(self) -> str:
        return self.content

    def __repr__(self) -> str:
        return repr(self.content)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Reasoning):
            return self.content == other.content
        if isinstance(other, str):
            return self.content == other
        return False

    def __hash__(self) -> int:
        return hash(self.content)

    def __len__(self) -> int:
        return len(self.content)

    def __getitem__(self, key: Any) -> str:
        return self.content[key]

    def __contains__(self, item: object) -> bool:
        return isinstance(item, str) and item in self.content

    def __iter__(self) -> Any:  # iterates characters, like str
        return iter(self.content)

    def __add__(self, other: Any) -> Any:
        if isinstance(other, Reasoning):
            return Reasoning(content=self.content + other.content)
        if isinstance(other, str):
            return self.content + other
        return NotImplemented

    def __radd__(self, other: Any) -> Any:
        if isinstance(other, str):
            return other + self.content
        return NotImplemented

    def __getattr__(self, name: str) -> Any:
        # str methods (.strip(), .lower(), ...) act on the content.
        if not name.startswith("_") and hasattr(str, name):
            return getattr(self.content, name)
        try:
            return super().__getattr__(name)  # type: ignore[misc]
        except AttributeError:
            raise AttributeError(
                f"`Reasoning` object has no attribute {name!r}. It acts as a str: use "
                "str(value), or value.content"
            ) from None
