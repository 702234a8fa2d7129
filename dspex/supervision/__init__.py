"""OTP-style supervision on pykka: actors, monitors, supervisors, registry, pools.

This layer knows nothing of language models and could be published alone.
"""

from dspex.supervision._actor import (
    NOPROC,
    NORMAL,
    SHUTDOWN,
    Actor,
    ActorAbortError,
    Down,
    ExitReason,
    LightProcess,
    MonitorRef,
    ProcessRef,
    Watcher,
    await_started,
    demonitor,
    is_abnormal,
    monitor,
    shutdown,
    wait_dead,
)
from dspex.supervision._base import SupervisorStats
from dspex.supervision._child import ChildCounts, ChildInfo
from dspex.supervision._client import (
    adopt_child,
    call,
    count_children,
    delete_child,
    restart_child,
    start_child,
    statistics,
    terminate_child,
    which_children,
)
from dspex.supervision._clock import Clock, SystemClock, VirtualClock
from dspex.supervision._dynamic import DynamicSupervisor
from dspex.supervision._events import (
    CHILD_RESTARTED,
    CHILD_STARTED,
    CHILD_TERMINATED,
    INTENSITY_EXCEEDED,
    Event,
    EventBus,
    EventSink,
)
from dspex.supervision._pool import WorkerPool
from dspex.supervision._pool_lease import Lease, current_lease
from dspex.supervision._pool_results import (
    POOL_INTENSITY_EXCEEDED,
    POOL_TASK_RETRIED,
    POOL_WORKER_ABANDONED,
    POOL_WORKER_RESTARTED,
    Failed,
    Ok,
    PoolStats,
    Result,
)
from dspex.supervision._registry import NamedRef, Registry, default_registry
from dspex.supervision._spec import ChildSpec, Restart, Strategy
from dspex.supervision._supervisor import AutoShutdown, Supervisor
from dspex.supervision._tree import TreeNode, render_tree, tree

__all__ = [
    "CHILD_RESTARTED",
    "CHILD_STARTED",
    "CHILD_TERMINATED",
    "INTENSITY_EXCEEDED",
    "NOPROC",
    "NORMAL",
    "POOL_INTENSITY_EXCEEDED",
    "POOL_TASK_RETRIED",
    "POOL_WORKER_ABANDONED",
    "POOL_WORKER_RESTARTED",
    "SHUTDOWN",
    "Actor",
    "ActorAbortError",
    "AutoShutdown",
    "ChildCounts",
    "ChildInfo",
    "ChildSpec",
    "Clock",
    "Down",
    "DynamicSupervisor",
    "Event",
    "EventBus",
    "EventSink",
    "ExitReason",
    "Failed",
    "Lease",
    "LightProcess",
    "MonitorRef",
    "NamedRef",
    "Ok",
    "PoolStats",
    "ProcessRef",
    "Registry",
    "Restart",
    "Result",
    "Strategy",
    "Supervisor",
    "SupervisorStats",
    "SystemClock",
    "TreeNode",
    "VirtualClock",
    "Watcher",
    "WorkerPool",
    "adopt_child",
    "await_started",
    "call",
    "count_children",
    "current_lease",
    "default_registry",
    "delete_child",
    "demonitor",
    "is_abnormal",
    "monitor",
    "render_tree",
    "restart_child",
    "shutdown",
    "start_child",
    "statistics",
    "terminate_child",
    "tree",
    "wait_dead",
    "which_children",
]
