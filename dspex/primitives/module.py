"""DSPy's ``dspy.primitives.module`` path: ``Module`` and ``set_attribute_by_name``."""

from dspex.programs._module import Module, set_attribute_by_name

__all__ = ["Module", "set_attribute_by_name"]
