"""Checks and conversions of program servers: limits, programs, errors, reload loading."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dspex.actors._program_run import RunContext, wrap_program_error
from dspex.errors import ProgramError, UsageError

__all__ = [
    "as_program_error",
    "check_limit",
    "check_program",
    "load_into_copy",
    "original_error",
]


def original_error(error: BaseException) -> BaseException:
    original = getattr(error, "original", None)
    return original if isinstance(original, BaseException) else error


def as_program_error(exc: BaseException, server: str, request_id: int) -> ProgramError:
    if isinstance(exc, ProgramError):
        return exc
    run = RunContext(label=f"server:{server} request {request_id}")
    if isinstance(exc, Exception):
        return wrap_program_error(exc, run)
    wrapped = ProgramError(
        f"program server {server!r}: request {request_id} raised {exc!r}", original=exc
    )
    wrapped.__cause__ = exc
    return wrapped


def check_limit(name: str, field: str, value: object, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise UsageError(
            f"serve({name!r}, {field}={value!r}): must be an int >= {minimum}, "
            f"e.g. {field}={max(minimum, 8)}"
        )


def check_program(name: str, program: object) -> None:
    if not callable(program):
        raise UsageError(
            f"serve({name!r}, program={program!r}): a program must be callable with the "
            "inputs as keywords, e.g. a dspex.Module such as dspex.Predict('question -> answer')"
        )


def load_into_copy(name: str, current: Any, path: Path) -> Any:
    """A copy of ``current`` with the saved state at ``path`` loaded (for ``reload``)."""
    if not path.exists():
        raise UsageError(
            f"reload({name!r}, {str(path)!r}): no such file; pass the JSON file written by "
            "program.save(path), or a program instance"
        )
    copy_fn = getattr(current, "deepcopy", None)
    if not callable(copy_fn) or not callable(getattr(current, "load", None)):
        raise UsageError(
            f"reload({name!r}, {str(path)!r}): the served program "
            f"({type(current).__name__}) has no deepcopy()/load(), so a saved state cannot "
            "be loaded into it; pass a program instance instead"
        )
    new = copy_fn()
    new.load(path)
    return new
