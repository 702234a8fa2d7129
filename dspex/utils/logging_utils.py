"""DSPy's ``dspy.utils.logging_utils`` path: turn dspex's log output off and on.

See :mod:`dspex.config._logging` for what each switch covers.
"""

from dspex.config._logging import (
    LOGGING_DATETIME_FORMAT,
    LOGGING_LINE_FORMAT,
    LOGGING_STREAM,
    LoggingStream,
    configure_dspy_loggers,
    disable_logging,
    enable_logging,
)

DSPY_LOGGING_STREAM = LOGGING_STREAM
"""DSPy's name for the switchable stderr stream."""

__all__ = [
    "DSPY_LOGGING_STREAM",
    "LOGGING_DATETIME_FORMAT",
    "LOGGING_LINE_FORMAT",
    "LOGGING_STREAM",
    "LoggingStream",
    "configure_dspy_loggers",
    "disable_logging",
    "enable_logging",
]
