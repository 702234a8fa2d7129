"""DSPy's custom field types: Image, Audio, File (content parts), Code, Reasoning, ToolCalls.

The package imports nothing itself: ``_markers`` (no pydantic) is what the
adapters import on every call; the types, pydantic models, load from their
own modules when a program uses them.
"""
