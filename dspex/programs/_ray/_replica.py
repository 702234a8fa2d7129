"""One ProgramServer replica as a Ray actor (this code runs in a Ray worker process).

The replica is a thin shell around the worker's own dspex runtime: it builds
the shipped program and serves it there as an ordinary named ProgramServer,
so admission (``max_concurrency`` + ``queue_limit``, ``OverloadedError`` past
them), the worker pool and the program run are exactly the local ones. Ray
restarts a dead replica (``max_restarts``) by running ``__init__`` again
with the same arguments: the program is rebuilt from its shipped form.

The actor is *async* (its methods run on Ray's event loop in the worker):
``ask`` awaits the local server's future without holding a thread, so the
replica's concurrency is bounded by its ProgramServer, not by Ray.
"""

from __future__ import annotations

import asyncio
import os
import pickle
import threading
import warnings
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from dspex.errors import ProgramError
from dspex.programs._prediction import Completions, Prediction
from dspex.programs._ray._node import node_runtime
from dspex.programs._ray._shipping import ShippedProgram

__all__ = ["ReplicaInfo", "portable_error", "portable_result", "replica_class"]

_actor_class: Any = None
_class_lock = threading.Lock()


@dataclass(frozen=True, slots=True)
class ReplicaInfo:
    """Where a replica runs and how its local server is doing (``describe``)."""

    server: str
    index: int
    node_id: str
    address: str
    pid: int
    reconstructed: bool
    stats: Mapping[str, Any]


class _Replica:
    """The actor body (decorated with ``ray.remote`` by :func:`replica_class`)."""

    def __init__(
        self,
        server: str,
        index: int,
        shipped: ShippedProgram,
        *,
        settings: Mapping[str, Any],
        max_concurrency: int,
        queue_limit: int,
    ) -> None:
        import ray

        self.server = server
        self.index = index
        self.local = f"{server}#{index}"
        # One per worker process, shared with pools; its LM clients draw from the
        # cluster-wide rate budgets (node_runtime installs them).
        self.runtime = node_runtime(settings)
        self.runtime.serve(
            self.local,
            shipped.build(),
            max_concurrency=max_concurrency,
            queue_limit=queue_limit,
        )
        context = ray.get_runtime_context()
        with warnings.catch_warnings():  # Ray's own property reads a deprecated id
            warnings.simplefilter("ignore", DeprecationWarning)
            reconstructed = bool(context.was_current_actor_reconstructed)
        self._where = (
            context.get_node_id(),
            ray.util.get_node_ip_address(),  # type: ignore[no-untyped-call]
            os.getpid(),
            reconstructed,
        )

    async def ask(self, inputs: dict[str, Any]) -> Any:
        # Admission happens here, synchronously: a full replica raises
        # OverloadedError before anything is queued.
        try:
            return portable_result(await self.runtime.ask(self.local, **inputs))
        except Exception as exc:
            raise portable_error(exc, self.local) from None

    async def describe(self) -> ReplicaInfo:
        node_id, address, pid, reconstructed = self._where
        stats = self.runtime.servers.stats(self.local)
        return ReplicaInfo(
            server=self.server,
            index=self.index,
            node_id=node_id,
            address=address,
            pid=pid,
            reconstructed=reconstructed,
            stats=asdict(stats),
        )

    async def drain(self, timeout: float) -> int:
        """Finish what is admitted (up to ``timeout`` s); the number of requests expired."""
        # In a thread: the loop must stay free to send the answers being finished.
        report = await asyncio.to_thread(self.runtime.servers.drain, self.local, timeout)
        return int(report.expired)


def replica_class() -> Any:
    """``_Replica`` as a Ray actor class (made once per process)."""
    global _actor_class
    import ray

    with _class_lock:
        if _actor_class is None:
            _actor_class = ray.remote(_Replica)
        return _actor_class


def portable_result(value: Any) -> Any:
    """``value`` as it can cross to the driver: a Prediction loses its signature class.

    A signature made from a string is a class built at run time, which no
    other process can import; the fields, completions and usage travel.
    """
    if not isinstance(value, Prediction):
        return value
    out = Prediction(**dict(value.items()))
    completions = value.completions
    if completions is not None:
        object.__setattr__(out, "_completions", Completions(dict(completions.items())))
    out.set_lm_usage(value.get_lm_usage())
    return out


def portable_error(exc: BaseException, where: str) -> BaseException:
    """``exc`` as it can cross to the driver (Ray pickles it).

    A program's error is a ProgramError of a type made at run time (it is
    also the user's exception type, so ``except ValueError`` works); that
    type cannot be imported elsewhere, so a plain ProgramError carries the
    message, the original exception (when it pickles) and the run's names,
    and the driver wraps the original again (``_serve._as_local``).
    """
    if not isinstance(exc, ProgramError) or type(exc) is ProgramError:
        return exc
    original: BaseException | None = exc.original
    try:
        pickle.dumps(original)
    except Exception:
        original = None
    out = ProgramError(str(exc), original=original)
    out.run_id, out.run_label = exc.run_id, exc.run_label
    for note in getattr(exc, "__notes__", ()):
        out.add_note(note)
    out.add_note(f"on ray replica {where}")
    return out
