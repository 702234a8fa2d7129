"""The switchable stderr stream behind dspex's log output, and DSPy's logging helpers.

``LOGGING_STREAM`` forwards to whatever ``sys.stderr`` is at write time, and
can be turned off. The runtime's telemetry lines (structlog) and the handler
that :func:`configure_dspy_loggers` installs write through it, so
:func:`disable_logging` silences both; it also mutes the stdlib ``dspex``
loggers (by raising the ``dspex`` logger's level) until :func:`enable_logging`.

Unlike DSPy, importing dspex installs no handler: a library leaves logging
configuration to the application. ``configure_dspy_loggers("dspex")`` gives
DSPy's layout.
"""

from __future__ import annotations

import logging
import sys
import threading

__all__ = [
    "LOGGING_DATETIME_FORMAT",
    "LOGGING_LINE_FORMAT",
    "LOGGING_STREAM",
    "LoggingStream",
    "configure_dspy_loggers",
    "disable_logging",
    "enable_logging",
]

LOGGING_LINE_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
LOGGING_DATETIME_FORMAT = "%Y/%m/%d %H:%M:%S"
_HANDLER_NAME = "dspy_handler"  # DSPy's name, so either library replaces the other's
_SILENT = logging.CRITICAL + 1


class LoggingStream:
    """A text stream writing to the current ``sys.stderr`` while ``enabled``."""

    def __init__(self) -> None:
        self.enabled = True

    def write(self, text: str) -> int:
        if self.enabled:
            return sys.stderr.write(text)
        return len(text)

    def flush(self) -> None:
        if self.enabled:
            sys.stderr.flush()


LOGGING_STREAM = LoggingStream()

_lock = threading.Lock()
_saved_level: list[int] = []  # the dspex logger's level before disable_logging()


def disable_logging() -> None:
    """Silence dspex's log output (telemetry lines, the dspex loggers) until enabled."""
    with _lock:
        LOGGING_STREAM.enabled = False
        root = logging.getLogger("dspex")
        if not _saved_level:
            _saved_level.append(root.level)
            root.setLevel(_SILENT)


def enable_logging() -> None:
    """Undo :func:`disable_logging`: log output flows again."""
    with _lock:
        LOGGING_STREAM.enabled = True
        if _saved_level:
            logging.getLogger("dspex").setLevel(_saved_level.pop())


def configure_dspy_loggers(root_module_name: str) -> None:
    """Send ``root_module_name``'s log records at INFO and above to stderr in DSPy's layout.

    Installs one handler on :data:`LOGGING_STREAM` (a second call replaces
    it) and stops the records propagating to the root logger.
    """
    handler = logging.StreamHandler(stream=LOGGING_STREAM)
    handler.setFormatter(
        logging.Formatter(fmt=LOGGING_LINE_FORMAT, datefmt=LOGGING_DATETIME_FORMAT)
    )
    handler.set_name(_HANDLER_NAME)
    logger = logging.getLogger(root_module_name)
    with _lock:
        if root_module_name == "dspex" and _saved_level:
            _saved_level[0] = logging.INFO  # keep the disable in force; enable restores INFO
        else:
            logger.setLevel(logging.INFO)
        logger.propagate = False
        for existing in list(logger.handlers):
            if existing.get_name() == _HANDLER_NAME:
                logger.removeHandler(existing)
        logger.addHandler(handler)
