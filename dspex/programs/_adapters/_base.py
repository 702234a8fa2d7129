"""The adapter base: signature + demos + inputs -> chat messages -> typed outputs.

An adapter turns one Predict call into LM messages and the LM's completions
back into one dict of typed output values per completion. The message layout
follows DSPy 3.x: a system message (field list, structure, objective), each
demo as a user/assistant pair (incomplete demos first), then the inputs.

Everything that depends only on the signature (the system message, the
output requirements line, the field parsers, extra LM parameters) is built
once per adapter class and signature and cached, so a call only formats the
values and parses the reply. Overridden ``format_*`` methods are honoured;
they must depend on the signature alone, since their result is cached.

Callbacks: ``format`` and ``parse`` (the base's and any subclass's own) fire
``on_adapter_format_*`` / ``on_adapter_parse_*``, and the LM is called through
``call_lm`` so ``on_lm_*`` fire, as in DSPy.
"""

from __future__ import annotations

import enum
import inspect
import json
import textwrap
import types
import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import Annotated, Any, ClassVar, Literal, Union, get_args, get_origin

from dspex._record import Record
from dspex.actors._callbacks import check_callbacks
from dspex.errors import AdapterParseError
from dspex.programs._adapters._demos import DEMO_SETS_KEPT, demos_key, note_pure_formatters
from dspex.programs._adapters._native import (
    as_completion,
    complete_native,
    parse_native,
    plan_native_tools,
    recovered_plan,
    tool_calls_output,
)
from dspex.programs._adapters._parse import Parser, parser_for
from dspex.programs._adapters._values import annotation_name
from dspex.programs._callbacks import call_lm, hooked
from dspex.programs._history_format import format_with_history, history_turns
from dspex.programs._types._markers import custom_types_in, expand_content_parts

__all__ = [
    "Adapter",
    "FieldPlan",
    "SignaturePlan",
    "field_placeholder",
    "field_placeholders",
    "type_info",
]

STRUCTURE_INTRO = (
    "All interactions will be structured in the following way, "
    "with the appropriate values filled in."
)
INCOMPLETE_DEMO_PREFIX = (
    "This is an example of the task, though some input or output fields are not supplied."
)
MISSING_IN_INCOMPLETE_DEMO = "Not supplied for this particular example. "
MISSING_IN_COMPLETE_DEMO = "Not supplied for this conversation history message. "


# A NamedTuple and a slotted class, not frozen dataclasses: a dataclass costs ~0.5 ms
# to define, and adapters load on a fresh process's first call.
class FieldPlan(Record):
    """One field, pre-digested: its name, type, type name and reply parser.

    ``fallback`` gives the value of an output the reply may leave out (DSPy's
    rule: the field's ``default`` or ``default_factory``, else None when its
    type admits None); None when the field is required.
    """

    name: str
    annotation: Any
    type_name: str
    parse: Parser
    fallback: Callable[[], Any] | None = None


class SignaturePlan:
    """Everything an adapter derives from a signature alone, built once."""

    __slots__ = (
        "demo_messages",
        "field_names",
        "inputs",
        "lm_params",
        "output_names",
        "outputs",
        "requirements",
        "system",
    )

    def __init__(
        self,
        *,
        inputs: tuple[FieldPlan, ...],
        outputs: tuple[FieldPlan, ...],
        field_names: tuple[str, ...],
        output_names: frozenset[str],
        system: str,
        requirements: str | None,
        lm_params: Mapping[str, Any],
    ) -> None:
        self.inputs = inputs
        self.outputs = outputs
        self.field_names = field_names
        self.output_names = output_names
        self.system = system
        self.requirements = requirements
        self.lm_params = lm_params
        # Formatted demo messages, by what they were formatted from (see _demos.demos_key).
        self.demo_messages: dict[tuple[Any, ...], tuple[tuple[str, str], ...]] = {}


class Adapter:
    """Formats Predict calls into LM messages and parses completions into typed values.

    Subclasses define the wire format (``format_field_structure``,
    ``user_message_output_requirements``, ``format_assistant_message_content``,
    ``parse``). Adapters are stateless after construction and may be shared
    between threads. ``callbacks`` observe this adapter's ``format``/``parse``
    calls, after the globally registered ones.
    """

    _plans: ClassVar[dict[int, tuple[weakref.ref[Any], SignaturePlan]]] = {}
    _dspex_callback_kind: ClassVar[str] = "adapter"  # see _callbacks.CALLBACK_KIND

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._plans = {}  # one cache per adapter class: each words prompts its own way
        if cls.__module__.startswith(__package__ + "."):
            note_pure_formatters(cls)
        # A subclass's own format/parse fire the hooks too (DSPy wraps them the same way).
        for name, kind in (("format", "adapter_format"), ("parse", "adapter_parse")):
            method = cls.__dict__.get(name)
            if inspect.isfunction(method):
                setattr(cls, name, hooked(kind, once_per_instance=True)(method))

    def __init__(
        self, callbacks: Sequence[Any] | None = None, use_native_function_calling: bool = False
    ) -> None:
        check_callbacks(callbacks, type(self).__name__)
        self.callbacks = list(callbacks or [])
        self.use_native_function_calling = use_native_function_calling

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"

    # --- the call ---------------------------------------------------------

    def __call__(
        self,
        lm: Any,
        lm_kwargs: Mapping[str, Any],
        signature: Any,
        demos: Sequence[Any],
        inputs: Mapping[str, Any],
    ) -> list[dict[str, Any]]:
        """Format, call ``lm.generate`` once, and parse every completion.

        Raises ``AdapterParseError`` when a completion does not fit the
        signature; LM errors propagate unchanged.
        """
        original = _resolve(signature)
        params = dict(lm_kwargs)
        processed = self._call_preprocess(lm, params, original, inputs)
        messages = self.format(processed, demos, inputs)
        params = self.lm_params(processed, params, lm)
        response = self._generate(lm, messages, params)
        return self._call_postprocess(processed, original, response.completions, lm, params)

    def _call_preprocess(
        self, lm: Any, lm_kwargs: dict[str, Any], signature: Any, inputs: Mapping[str, Any]
    ) -> Any:
        """DSPy's step before the call: the signature the prompt is written for, with the
        fields native LM features carry (tools, reasoning) taken out; ``lm_kwargs`` is
        updated in place (tools added, or tool parameters dropped)."""
        plan = plan_native_tools(self, lm, lm_kwargs, signature, inputs)
        if plan.lm_kwargs != lm_kwargs:
            lm_kwargs.clear()
            lm_kwargs.update(plan.lm_kwargs)
        return plan.signature

    def _call_postprocess(
        self,
        processed_signature: Any,
        original_signature: Any,
        outputs: Sequence[Any],
        lm: Any,
        lm_kwargs: Mapping[str, Any],
    ) -> list[dict[str, Any]]:
        """DSPy's step after the call: one dict of ``original_signature``'s outputs per
        completion. ``outputs`` are completions, or DSPy's shapes of them (a string, or
        a dict with ``text``, ``tool_calls``, ``reasoning_content``, ``logprobs``).

        The text is parsed for ``processed_signature``'s outputs; native tool calls
        and reasoning fill the fields ``_call_preprocess`` took out (native tool calls
        fill the ``ToolCalls`` output even when the prompt asked for it too: the
        provider's calls are authoritative, as in DSPy). A reply with tool calls but
        no parseable text leaves the other outputs unset (None or their default);
        an empty reply without any is an ``AdapterParseError``.
        """
        completions = []
        shapes = calls = False  # DSPy's shapes were given; a completion has native tool calls
        for output in outputs:
            completion = as_completion(output)
            shapes = shapes or completion is not output
            calls = calls or bool(getattr(completion, "tool_calls", None))
            completions.append(completion)
        if processed_signature is original_signature and not (
            calls and tool_calls_output(original_signature)
        ):  # nothing native: parse the text
            values = self._parse_completions(processed_signature, _OneCompletion(completions))
        else:
            plan = recovered_plan(processed_signature, original_signature)
            values = [
                complete_native(
                    self,
                    plan,
                    original_signature,
                    completion,
                    parse_native(self, plan, original_signature, completion)
                    or self._parse_completions(processed_signature, _OneCompletion((completion,)))[
                        0
                    ],
                )
                for completion in completions
            ]
        if shapes:
            for value, output in zip(values, outputs, strict=True):
                if isinstance(output, Mapping) and output.get("logprobs"):
                    value["logprobs"] = output["logprobs"]  # DSPy passes them through
        return values

    async def acall(
        self,
        lm: Any,
        lm_kwargs: Mapping[str, Any],
        signature: Any,
        demos: Sequence[Any],
        inputs: Mapping[str, Any],
    ) -> list[dict[str, Any]]:
        """The same call, awaited. With a ``dspex.LM`` the LM call is awaited on this
        loop (no thread); an adapter that overrides ``__call__`` or an LM without an
        awaitable path runs in dspex's async pool with the caller's context."""
        from dspex.programs._async_lm import awaits_natively
        from dspex.programs._async_pool import in_thread

        if type(self).__call__ is not type(self)._native_call or not awaits_natively(lm):
            return await in_thread(self.__call__, lm, lm_kwargs, signature, demos, inputs)
        return await self._acall(lm, lm_kwargs, signature, demos, inputs)

    async def _acall(
        self,
        lm: Any,
        lm_kwargs: Mapping[str, Any],
        signature: Any,
        demos: Sequence[Any],
        inputs: Mapping[str, Any],
    ) -> list[dict[str, Any]]:
        """``__call__``'s steps with the LM call awaited (format and parse run here)."""
        original = _resolve(signature)
        params = dict(lm_kwargs)
        processed = self._call_preprocess(lm, params, original, inputs)
        messages = self.format(processed, demos, inputs)
        params = self.lm_params(processed, params, lm)
        response = await self._agenerate(lm, messages, params)
        return self._call_postprocess(processed, original, response.completions, lm, params)

    async def _agenerate(
        self, lm: Any, messages: list[dict[str, Any]], params: dict[str, Any]
    ) -> Any:
        if type(self)._generate is not type(self)._native_generate:
            from dspex.programs._async_pool import in_thread

            return await in_thread(self._generate, lm, messages, params)  # a custom _generate
        from dspex.programs._async_lm import acall_lm

        return await acall_lm(lm, messages, params)

    def lm_params(
        self, signature: Any, lm_kwargs: Mapping[str, Any], lm: Any = None
    ) -> dict[str, Any]:
        """The LM parameters for a call: the caller's, plus this adapter's defaults for ``lm``."""
        params = dict(lm_kwargs)
        # A DSPy-style custom adapter may define only format() and parse(): then
        # there are no defaults, and no plan (which needs the format_* methods).
        if type(self)._default_lm_params is not Adapter._default_lm_params:
            for key, value in self._fit_lm_params(self.plan(signature).lm_params, lm).items():
                params.setdefault(key, value)
        return params

    def _fit_lm_params(self, defaults: Mapping[str, Any], lm: Any) -> Mapping[str, Any]:
        """This adapter's default parameters, trimmed to what ``lm`` takes."""
        return defaults

    def _generate(self, lm: Any, messages: list[dict[str, Any]], params: dict[str, Any]) -> Any:
        return call_lm(lm, messages, params)

    # What acall may replace with its awaited steps: a subclass overriding either
    # runs its own code, in the async pool.
    _native_call = __call__
    _native_generate = _generate

    def _parse_completions(self, signature: Any, response: Any) -> list[dict[str, Any]]:
        values = []
        for completion in response.completions:
            text = completion.text
            if not text or not text.strip():
                raise AdapterParseError(
                    f"Adapter {type(self).__name__} failed to parse the LM response: an empty "
                    f"reply (finish_reason={completion.finish_reason!r}); nothing to parse.",
                    raw=text or "",
                    adapter=type(self).__name__,
                )
            values.append(self.parse(signature, text))
        return values

    # --- the per-signature plan ------------------------------------------

    def plan(self, signature: Any) -> SignaturePlan:
        """This adapter's cached plan for ``signature`` (built on first use)."""
        cache = type(self)._plans
        key = id(signature)
        entry = cache.get(key)
        if entry is not None and entry[0]() is signature:
            return entry[1]
        plan = self._build_plan(signature)
        try:
            ref = weakref.ref(signature, _forget(cache, key))
        except TypeError:  # not weak-referenceable: skip the cache
            return plan
        cache[key] = (ref, plan)
        return plan

    def _build_plan(self, signature: Any) -> SignaturePlan:
        inputs = tuple(_field_plan(n, f) for n, f in signature.input_fields.items())
        outputs = tuple(_field_plan(n, f) for n, f in signature.output_fields.items())
        return SignaturePlan(
            inputs=inputs,
            outputs=outputs,
            field_names=tuple(f.name for f in inputs + outputs),
            output_names=frozenset(f.name for f in outputs),
            system=self.format_system_message(signature),
            requirements=self.user_message_output_requirements(signature),
            lm_params=self._default_lm_params(signature),
        )

    def _default_lm_params(self, signature: Any) -> dict[str, Any]:
        return {}

    # --- messages -----------------------------------------------------------

    @hooked("adapter_format", once_per_instance=True)
    def format(
        self, signature: Any, demos: Sequence[Any], inputs: Mapping[str, Any]
    ) -> list[dict[str, Any]]:
        """The chat messages for one call: system, demo pairs, then the inputs."""
        signature = _resolve(signature)
        with_history = format_with_history(self, signature, demos, inputs)
        if with_history is not None:  # a History input becomes earlier turns
            return expand_content_parts(with_history)
        messages: list[dict[str, Any]] = [
            {"role": "system", "content": self.plan(signature).system}
        ]
        if demos:
            messages.extend(self.format_demos(signature, demos))
        messages.append(
            {
                "role": "user",
                "content": self.format_user_message_content(signature, inputs, main_request=True),
            }
        )
        # Images, audio and files in the inputs become content parts of their user message.
        return expand_content_parts(messages)

    def format_conversation_history(
        self, signature: Any, history_field_name: str, inputs: dict[str, Any]
    ) -> list[dict[str, Any]]:
        """The earlier turns of a ``History`` input, as chat messages (DSPy's hook).

        ``signature`` is the call's signature without its history field;
        ``inputs`` is the adapter's own copy of the inputs, from which the
        history entry is removed. Override it to lay history out another way.
        """
        history = inputs.pop(history_field_name, None)
        return history_turns(self, signature, history)

    def format_system_message(self, signature: Any) -> str:
        """Field descriptions, the interaction structure, then the objective."""
        return (
            f"{self.format_field_description(signature)}\n"
            f"{self.format_field_structure(signature)}\n"
            f"{self.format_task_description(signature)}"
        )

    def format_field_description(self, signature: Any) -> str:
        """The numbered input and output field lists with types and descriptions."""
        return (
            f"Your input fields are:\n{_describe_fields(signature.input_fields)}\n"
            f"Your output fields are:\n{_describe_fields(signature.output_fields)}"
        )

    def format_field_structure(self, signature: Any) -> str:
        """How inputs and outputs are laid out in messages (format-specific)."""
        raise NotImplementedError

    def format_task_description(self, signature: Any) -> str:
        """The objective: the signature's instructions, indented under one line."""
        lines = textwrap.dedent(signature.instructions).splitlines()
        objective = ("\n" + " " * 8).join(["", *lines])
        return f"In adhering to this structure, your objective is: {objective}"

    def user_message_output_requirements(self, signature: Any) -> str | None:
        """The reminder closing the last user message (format-specific)."""
        return None

    def format_user_message_content(
        self,
        signature: Any,
        inputs: Mapping[str, Any],
        prefix: str = "",
        suffix: str = "",
        main_request: bool = False,
    ) -> str:
        """The input fields present in ``inputs``, plus the requirements if ``main_request``."""
        plan = self.plan(signature)
        parts = [prefix]
        block = self.format_field_block
        for field in plan.inputs:
            if field.name in inputs:
                parts.append(block(field, inputs[field.name]))
        if main_request and plan.requirements is not None:
            parts.append(plan.requirements)
        parts.append(suffix)
        return "\n\n".join(parts).strip()

    def format_field_block(self, field: FieldPlan, value: Any) -> str:
        """One field with its value, as this format writes it."""
        raise NotImplementedError

    def format_assistant_message_content(
        self, signature: Any, outputs: Mapping[str, Any], missing_field_message: Any = None
    ) -> str:
        """A demo's outputs written as the LM should write them (format-specific)."""
        raise NotImplementedError

    def format_demos(self, signature: Any, demos: Sequence[Any]) -> list[dict[str, Any]]:
        """Demos as user/assistant pairs: incomplete ones (noted as such) first.

        A demo is complete when every field is present and not None. An
        incomplete demo is kept only if it has some input and some output.
        The messages are cached per signature by the demos' values (plain
        values only, and only with dspex's own formatting methods), so an
        unchanged demo set is not formatted again on every call.
        """
        plan = self.plan(signature)
        key = demos_key(type(self), plan.field_names, demos)
        if key is not None:
            cached = plan.demo_messages.get(key)
            if cached is not None:
                return [{"role": role, "content": content} for role, content in cached]
        messages = self._format_demos(signature, plan, demos)
        if key is not None and all(type(m["content"]) is str for m in messages):
            if len(plan.demo_messages) >= DEMO_SETS_KEPT:
                plan.demo_messages.clear()  # an optimizer trying many demo sets
            plan.demo_messages[key] = tuple((m["role"], m["content"]) for m in messages)
        return messages

    def _format_demos(
        self, signature: Any, plan: SignaturePlan, demos: Sequence[Any]
    ) -> list[dict[str, Any]]:
        names = plan.field_names
        complete, incomplete = [], []
        for demo in demos:
            if all(name in demo and demo[name] is not None for name in names):
                complete.append(demo)
            elif any(f.name in demo for f in plan.inputs) and any(
                f.name in demo for f in plan.outputs
            ):
                incomplete.append(demo)
        messages: list[dict[str, Any]] = []
        for demo in incomplete:
            user = self.format_user_message_content(signature, demo, prefix=INCOMPLETE_DEMO_PREFIX)
            reply = self.format_assistant_message_content(
                signature, demo, missing_field_message=MISSING_IN_INCOMPLETE_DEMO
            )
            messages += ({"role": "user", "content": user}, {"role": "assistant", "content": reply})
        for demo in complete:
            user = self.format_user_message_content(signature, demo)
            reply = self.format_assistant_message_content(
                signature, demo, missing_field_message=MISSING_IN_COMPLETE_DEMO
            )
            messages += ({"role": "user", "content": user}, {"role": "assistant", "content": reply})
        return messages

    def format_finetune_data(
        self,
        signature: Any,
        demos: Sequence[Any],
        inputs: Mapping[str, Any],
        outputs: Mapping[str, Any],
    ) -> dict[str, list[dict[str, Any]]]:
        """One training conversation: the call's messages plus the wanted reply."""
        messages = self.format(signature, demos, inputs)
        reply = self.format_assistant_message_content(_resolve(signature), outputs)
        return {"messages": [*messages, {"role": "assistant", "content": reply}]}

    # --- parsing ------------------------------------------------------------

    @hooked("adapter_parse", once_per_instance=True)
    def parse(self, signature: Any, completion: str) -> dict[str, Any]:
        """One completion's text -> ``{output field: typed value}`` (format-specific)."""
        raise NotImplementedError

    def convert_field(self, field: FieldPlan, value: Any, raw: str) -> Any:
        """``value`` as ``field``'s type, or AdapterParseError naming field and type."""
        try:
            return field.parse(value)
        except (ValueError, TypeError) as exc:
            name = type(self).__name__
            raise AdapterParseError(
                f"Adapter {name} failed to parse the LM response: could not parse output "
                f"field `{field.name}` as {field.type_name}: "
                f"{exc}. {_reply_excerpt(raw)}",
                raw=raw,
                adapter=name,
                field=field.name,
            ) from exc

    def complete_outputs(
        self,
        plan: SignaturePlan,
        found: Mapping[str, Any],
        raw: str,
        how: str,
        convert: Callable[[FieldPlan, Any, str], Any] | None = None,
    ) -> dict[str, Any]:
        """The output values, in field order, from what the reply holds (``found``).

        A missing required output raises first (``how`` says the fix); each found
        value is converted (``convert_field`` by default); a missing optional
        output takes its fallback, as DSPy fills it.
        """
        missing = [f for f in plan.outputs if f.name not in found and f.fallback is None]
        if missing:
            raise self.missing_fields_error(plan, list(found), raw, how)
        convert = convert or self.convert_field
        values: dict[str, Any] = {}
        for f in plan.outputs:
            if f.name in found:
                values[f.name] = convert(f, found[f.name], raw)
            elif f.fallback is not None:
                values[f.name] = f.fallback()
        return values

    def missing_fields_error(
        self, plan: SignaturePlan, found: Sequence[str], raw: str, how: str
    ) -> AdapterParseError:
        """The error for a reply lacking some output fields; ``how`` says the fix."""
        missing = [f for f in plan.outputs if f.name not in found and f.fallback is None]
        listed = ", ".join(f"`{f.name}` ({f.type_name})" for f in missing)
        expected = ", ".join(f.name for f in plan.outputs)
        name = type(self).__name__
        return AdapterParseError(
            f"Adapter {name} failed to parse the LM response: it lacks output field(s) "
            f"{listed}; expected [{expected}], "
            f"found [{', '.join(found)}]. {how} {_reply_excerpt(raw)}",
            raw=raw,
            adapter=name,
            field=missing[0].name if missing else None,
        )


class _OneCompletion(Record):
    """Completions to parse, in the shape ``_parse_completions`` reads (a response's)."""

    completions: Sequence[Any]


def _resolve(signature: Any) -> Any:
    if isinstance(signature, str):
        from dspex.programs._signature import ensure_signature

        return ensure_signature(signature)
    return signature


def _forget(cache: dict[int, Any], key: int) -> Any:
    def callback(ref: weakref.ref[Any]) -> None:
        entry = cache.get(key)
        if entry is not None and entry[0] is ref:
            del cache[key]

    return callback


def _field_plan(name: str, info: Any) -> FieldPlan:
    annotation = getattr(info, "annotation", str)
    return FieldPlan(
        name, annotation, annotation_name(annotation), parser_for(annotation), _fallback(info)
    )


def _fallback(info: Any) -> Callable[[], Any] | None:
    """How to fill an output field missing from a reply, if it may be missing (as DSPy)."""
    extra = getattr(info, "extra", None) or {}
    if "default" in extra:
        default = extra["default"]
        return lambda: default
    factory = extra.get("default_factory")
    if callable(factory):
        made: Callable[[], Any] = factory
        return made
    if _allows_none(getattr(info, "annotation", str)):
        return _none
    return None


def _none() -> None:
    return None


def _allows_none(annotation: Any) -> bool:
    if annotation is None or annotation is type(None):
        return True
    origin = get_origin(annotation)
    args = get_args(annotation)
    if origin is Annotated:
        return bool(args) and _allows_none(args[0])
    if origin is Union or origin is types.UnionType:
        return any(_allows_none(arg) for arg in args)
    return False


def _reply_excerpt(raw: str, limit: int = 300) -> str:
    shown = raw if len(raw) <= limit else raw[:limit] + "..."
    return f"LM reply (also in .raw): {shown!r}"


def _describe_fields(fields: Mapping[str, Any]) -> str:
    lines = []
    for index, (name, info) in enumerate(fields.items(), 1):
        desc = info.desc if info.desc is not None and info.desc != f"${{{name}}}" else ""
        for custom in custom_types_in(info.annotation):
            explained = custom.description()
            if explained:
                desc += f"\n    Type description of {annotation_name(custom)}: {explained}"
        line = f"{index}. `{name}` ({annotation_name(info.annotation)}): {desc}"
        constraints = (getattr(info, "json_schema_extra", None) or {}).get("constraints")
        if constraints:
            line += f"\nConstraints: {constraints}"
        lines.append(line)
    return "\n".join(lines).strip()


def field_placeholder(name: str, annotation: Any, is_input: bool) -> str:
    """``{name}``, plus for typed outputs DSPy's "# note: the value you produce ..." hint."""
    note = "" if is_input else _type_note(annotation)
    return f"{{{name}}}" + (" " * 8 + f"# note: the value you produce {note}" if note else "")


def _type_note(annotation: Any) -> str:
    if annotation is str or getattr(annotation, "__dspex_plain_text__", False):
        return ""
    if annotation is bool:
        return "must be True or False"
    if annotation is int or annotation is float:
        return f"must be a single {annotation.__name__} value"
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return "must be one of: " + "; ".join(str(m.value) for m in annotation)
    if get_origin(annotation) is Literal:
        return "must exactly match (no extra characters) one of: " + "; ".join(
            str(a) for a in annotation.__args__
        )
    from dspex.programs._adapters._schema import prompt_schema  # pydantic's, for typed fields

    try:
        schema = json.dumps(prompt_schema(annotation), ensure_ascii=False)
    except Exception:  # pydantic cannot describe this class
        return f"must be a valid {annotation_name(annotation)}"
    return f"must adhere to the JSON schema: {schema}"


def type_info(annotation: Any) -> str:
    """The "(must be formatted as ...)" note after a typed output field's name ("" for str)."""
    if annotation is str:
        return ""
    requirement = getattr(annotation, "__dspex_requirement__", None)
    if isinstance(requirement, str):  # ToolCalls describes itself
        return requirement
    return f" (must be formatted as a valid Python {annotation_name(annotation)})"


def field_placeholders(fields: Mapping[str, Any], is_input: bool) -> str:
    """Each field's ``[[ ## name ## ]]`` marker over its placeholder (the chat structure)."""
    return "\n\n".join(
        f"[[ ## {name} ## ]]\n{field_placeholder(name, info.annotation, is_input)}"
        for name, info in fields.items()
    ).strip()


note_pure_formatters(Adapter)
