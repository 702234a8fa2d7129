"""The Ray pool's worker actors as a branch of ``rt.tree()`` (a tree source).

Registered (through ``_hooks``) with ``dspex.actors._remote.register_tree_source``
when a runtime starts (``_runtime_glue.install_backends``); it shows nothing until this
process's crew of pool workers (``_dispatch.crew()``) is running. The served
replicas have their own branch (``RayServers.tree``).
"""

from __future__ import annotations

import time
from typing import Any

from dspex.programs._ray import _dispatch
from dspex.supervision import Restart, TreeNode

__all__ = ["node_addresses", "pool_branch"]


def node_addresses() -> dict[str, str]:
    """Ray node id -> the address its raylet listens on (from the cluster's table)."""
    import ray

    nodes: list[dict[str, Any]] = ray.nodes()  # type: ignore[no-untyped-call]
    return {node["NodeID"]: node["NodeManagerAddress"] for node in nodes}


def pool_branch(timeout: float) -> TreeNode | None:
    """The crew's workers, each with its node and pid; None while no crew runs."""
    crew = _dispatch._crew  # read once: a crew stopping meanwhile shows its last state
    if crew is None:
        return None
    import ray

    deadline = time.monotonic() + timeout
    refs = [worker.handle.where.remote() for worker in crew.workers]
    ready, _ = ray.wait(refs, num_returns=len(refs), timeout=max(0.0, timeout))
    answered = set(ready)
    addresses = node_addresses() if time.monotonic() < deadline else {}
    children = []
    for worker, ref in zip(crew.workers, refs, strict=True):
        where: dict[str, Any] | None = None
        if ref in answered:
            try:
                where = ray.get(ref, timeout=0)
            except Exception:  # died after answering: shown as restarting
                where = None
        else:
            ray.cancel(ref)
        location = None
        if where is not None:
            node = str(where["node_id"])
            address = addresses.get(node, "?")
            location = f"node {node[:12]} {address} pid {where['pid']}"
        children.append(
            TreeNode(
                id=f"ray-worker#{worker.index}",
                kind="worker",
                actor_class="UnitWorker",
                status="alive" if where is not None else "restarting",
                restart=Restart.TRANSIENT,
                location=location,
            )
        )
    return TreeNode(
        id="ray-pool",
        kind="supervisor",
        actor_class="RayCrew",
        status="alive",
        restart=Restart.PERMANENT,
        strategy="ray max_restarts",
        children=tuple(children),
    )
