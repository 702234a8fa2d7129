"""An ``ask`` that notices when the actor dies instead of waiting out its timeout."""

from __future__ import annotations

import queue
from contextlib import suppress
from typing import Any

import pykka

from dspex.supervision._actor import Actor, Down, demonitor, monitor

__all__ = ["ask"]


def ask(ref: pykka.ActorRef[Any], message: Any, timeout: float) -> Any:
    """``ref.ask(message, timeout=timeout)``, failing fast if the actor dies first.

    pykka answers messages left in a dying actor's inbox with ``ActorDeadError``,
    but a message that slips in after that final sweep is never answered. For
    dspex actors a monitor closes the gap: once the death is reported, an
    unanswered future fails with ``ActorDeadError`` too.
    """
    future = ref.ask(message, block=False)
    if not issubclass(ref.actor_class, Actor):
        return future.get(timeout=timeout)

    def abandon(down: Down) -> None:  # runs in the dying actor's thread
        error = pykka.ActorDeadError(f"{ref} stopped before handling the message")
        with suppress(queue.Full):  # it was answered after all
            future.set_exception((pykka.ActorDeadError, error, None))

    mref = monitor(ref, abandon)
    try:
        return future.get(timeout=timeout)
    finally:
        demonitor(mref)
