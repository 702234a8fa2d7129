"""The dispatcher actor of a named program server (see :mod:`dspex.actors._program_server`)."""

from __future__ import annotations

from types import TracebackType
from typing import Any

from dspex.actors._server_requests import Dispatch, ServerStats
from dspex.actors._server_state import ServerState
from dspex.errors import UsageError
from dspex.supervision import Actor

__all__ = ["ProgramServer", "server_key"]


def server_key(name: str) -> str:
    """The registry name of program server ``name`` (kept apart from service names)."""
    return f"server:{name}"


class ProgramServer(Actor):
    """The dispatcher of one named program server (actor thread).

    Requests never execute here, so the mailbox stays responsive while all
    workers are busy. An unexpected message is a bug: like an unmatched cast
    in OTP it crashes the actor, and its supervisor restarts it on the same state.
    """

    def __init__(self, state: ServerState) -> None:
        super().__init__()
        self.state = state

    def on_start(self) -> None:
        if not self.state.adopt(self.actor_ref):
            self.stop()  # drained or stopped while this incarnation was starting
            return
        self.state.dispatch()

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, Dispatch):
            self.state.dispatch()
            return None
        raise UsageError(
            f"program server {self.state.name!r} got an unexpected message {message!r}; "
            "send requests with ask()/tell() by name"
        )

    def on_failure(
        self,
        exception_type: type[BaseException] | None,
        exception_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.state.detach(self.actor_ref)  # queued work waits for the next incarnation

    def on_stop(self) -> None:
        self.state.detach(self.actor_ref)
        # Not ordered by the directory (it closes the state first): the
        # supervisor is stopping, maybe to restart, which the state asks about.
        self.state.orphaned("its actor was stopped")

    def stats(self) -> ServerStats:
        """The server's counters, answered by the actor (proves its mailbox is live)."""
        return self.state.stats()
