"""What callers of program servers hold: a :class:`ServerHandle` by name, and
the :class:`DrainReport` a drain returns (see :mod:`dspex.actors._program_server`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from dspex.actors._server_requests import ServerFuture, ServerStats

__all__ = ["DrainReport", "ServerCalls", "ServerHandle"]


@dataclass(frozen=True, slots=True)
class DrainReport:
    """What a drain did: servers drained, requests answered meanwhile, requests expired."""

    servers: tuple[str, ...]
    answered: int
    expired: int
    elapsed_s: float

    @property
    def ok(self) -> bool:
        """True when every admitted request was answered before the deadline."""
        return self.expired == 0


class ServerCalls(Protocol):
    """What a handle asks of its directory (``_program_server.ServerDirectory``)."""

    def ask(self, name: str, /, **inputs: Any) -> ServerFuture: ...

    def tell(self, name: str, /, **inputs: Any) -> int: ...

    def reload(self, name: str, program_or_path: Any, /) -> int: ...

    def drain(self, name: str, timeout: float = ..., /) -> DrainReport: ...

    def stop(self, name: str, /) -> None: ...

    def stats(self, name: str, /) -> ServerStats: ...


class ServerHandle:
    """A program server by name, as returned by ``serve`` (any thread).

    It holds the name, not the server: after a restart of the ProgramServers
    supervisor it reaches the re-served program.
    """

    def __init__(self, directory: ServerCalls, name: str) -> None:
        self.directory = directory
        self.name = name

    def ask(self, /, **inputs: Any) -> ServerFuture:
        """See :meth:`ServerDirectory.ask`."""
        return self.directory.ask(self.name, **inputs)

    def tell(self, /, **inputs: Any) -> int:
        """See :meth:`ServerDirectory.tell`."""
        return self.directory.tell(self.name, **inputs)

    def reload(self, program_or_path: Any) -> int:
        """See :meth:`ServerDirectory.reload`."""
        return self.directory.reload(self.name, program_or_path)

    def drain(self, timeout: float = 30.0) -> DrainReport:
        """See :meth:`ServerDirectory.drain`."""
        return self.directory.drain(self.name, timeout)

    def stop(self) -> None:
        """See :meth:`ServerDirectory.stop`."""
        self.directory.stop(self.name)

    def stats(self) -> ServerStats:
        """See :meth:`ServerDirectory.stats`."""
        return self.directory.stats(self.name)

    def __repr__(self) -> str:
        return f"<ServerHandle {self.name!r}>"
