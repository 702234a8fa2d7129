"""The DSPy programming model: signatures, examples, modules, adapters, evaluation."""
