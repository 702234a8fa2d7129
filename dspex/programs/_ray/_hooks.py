"""What a starting runtime registers for the Ray backend, kept light.

``dspex.start`` registers these with the actors layer
(``_runtime_glue.install_backends``); each loads the Ray modules (not Ray
itself) only when first called, so starting a runtime stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dspex.supervision import TreeNode

__all__ = ["POOL_BRANCH", "pool_branch", "ray_servers"]

POOL_BRANCH = "ray-pool"


def ray_servers(runtime: Any) -> Any:
    """The ``"ray"`` serve backend's factory: the runtime's :class:`RayServers`."""
    from dspex.programs._ray._serve import ray_servers as make

    return make(runtime)


def pool_branch(timeout: float) -> TreeNode | None:
    """The Ray pool's workers for ``rt.tree()``; None while no crew runs."""
    from dspex.programs._ray._tree import pool_branch as branch

    return branch(timeout)
