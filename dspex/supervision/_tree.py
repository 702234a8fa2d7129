"""The live supervision tree as data (:func:`tree`) and as text (:func:`render_tree`)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import pykka

from dspex.supervision._child import ALIVE, SUPERVISOR, ChildSnapshot, SupervisorSnapshot
from dspex.supervision._client import call
from dspex.supervision._spec import Restart

__all__ = ["TreeNode", "render_tree", "tree"]


@dataclass(frozen=True, slots=True)
class TreeNode:
    """One actor in the tree.

    ``status`` is ``"alive"``, ``"dead"`` (terminated, not coming back by
    itself) or ``"restarting"``; ``restart`` is None for the root, ``restarts``
    counts this child's restarts by its current supervisor, and ``strategy`` is
    set for supervisors. ``str(node)`` renders the subtree as text.
    """

    id: str
    kind: str
    actor_class: str
    status: str
    restart: Restart | None = None
    restarts: int = 0
    strategy: str | None = None
    children: tuple[TreeNode, ...] = ()

    def __str__(self) -> str:
        return render_tree(self)

    def find(self, id: str) -> TreeNode | None:
        """The first node with ``id`` in this subtree (depth first), or None."""
        if self.id == id:
            return self
        for child in self.children:
            found = child.find(id)
            if found is not None:
                return found
        return None


def _describe(ref: pykka.ActorRef[Any], timeout: float) -> SupervisorSnapshot:
    snapshot: SupervisorSnapshot = call(ref, "describe", timeout=timeout)
    return snapshot


def _node(child: ChildSnapshot, deadline: float) -> TreeNode:
    strategy: str | None = None
    children: tuple[TreeNode, ...] = ()
    ref = child.ref
    if child.kind == SUPERVISOR and isinstance(ref, pykka.ActorRef) and child.status == ALIVE:
        try:
            snapshot = _describe(ref, max(0.0, deadline - time.monotonic()))
        except Exception:  # died, busy or not describable: show it as a leaf
            pass
        else:
            strategy = snapshot.strategy
            children = tuple(_node(c, deadline) for c in snapshot.children)
    return TreeNode(
        id=child.id,
        kind=child.kind,
        actor_class=child.actor_class,
        status=child.status,
        restart=child.restart,
        restarts=child.restarts,
        strategy=strategy,
        children=children,
    )


def tree(sup: pykka.ActorRef[Any], *, timeout: float = 5.0) -> TreeNode:
    """Walk the live tree under ``sup`` (any thread); ``timeout`` bounds the whole walk.

    Raises :class:`CallTimeoutError` or :class:`ActorStoppedError` if the root
    does not answer; a nested supervisor that does not answer in time appears
    without its children.
    """
    deadline = time.monotonic() + timeout
    root = _describe(sup, timeout)
    return TreeNode(
        id=root.name,
        kind=SUPERVISOR,
        actor_class=root.actor_class,
        status=ALIVE,
        strategy=root.strategy,
        children=tuple(_node(c, deadline) for c in root.children),
    )


def _label(node: TreeNode, *, root: bool) -> str:
    head = f"{node.actor_class}, {node.strategy}" if node.strategy else node.actor_class
    text = f"{node.id} ({head})"
    if root:
        return text
    text += f" {node.status}"
    if node.restart is not None and node.restart is not Restart.PERMANENT:
        text += f" [{node.restart.value}]"
    if node.restarts:
        text += f" restarts={node.restarts}"
    return text


def render_tree(node: TreeNode, *, max_children: int | None = None) -> str:
    """An indented text tree; ``max_children`` elides long child lists (e.g. runs)."""
    lines = [_label(node, root=True)]

    def walk(parent: TreeNode, prefix: str) -> None:
        shown = list(parent.children)
        hidden = 0
        if max_children is not None and len(shown) > max_children:
            hidden = len(shown) - max_children
            shown = shown[:max_children]
        for i, child in enumerate(shown):
            last = i == len(shown) - 1 and not hidden
            lines.append(f"{prefix}{'└── ' if last else '├── '}{_label(child, root=False)}")
            walk(child, prefix + ("    " if last else "│   "))
        if hidden:
            lines.append(f"{prefix}└── … {hidden} more")

    walk(node, "")
    return "\n".join(lines)
