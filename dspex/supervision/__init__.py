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
    MonitorRef,
    Watcher,
    await_started,
    demonitor,
    is_abnormal,
    monitor,
    shutdown,
    wait_dead,
)
from dspex.supervision._clock import Clock, SystemClock, VirtualClock
from dspex.supervision._events import (
    CHILD_RESTARTED,
    CHILD_STARTED,
    CHILD_TERMINATED,
    INTENSITY_EXCEEDED,
    Event,
    EventBus,
    EventSink,
)
from dspex.supervision._spec import ChildSpec, Restart, Strategy

__all__ = [
    "CHILD_RESTARTED",
    "CHILD_STARTED",
    "CHILD_TERMINATED",
    "INTENSITY_EXCEEDED",
    "NOPROC",
    "NORMAL",
    "SHUTDOWN",
    "Actor",
    "ActorAbortError",
    "ChildSpec",
    "Clock",
    "Down",
    "Event",
    "EventBus",
    "EventSink",
    "ExitReason",
    "MonitorRef",
    "Restart",
    "Strategy",
    "SystemClock",
    "VirtualClock",
    "Watcher",
    "await_started",
    "demonitor",
    "is_abnormal",
    "monitor",
    "shutdown",
    "wait_dead",
]
