"""One child OS process of a local model server: spawn, readiness, output tail, termination.

:class:`LocalProcess` knows nothing of actors. It runs ``python -m <module>``
in its own process group behind a tiny bootstrap that exits when its parent
dies (so a ``kill -9`` of the host process leaves no orphan server), keeps
the last lines of the child's merged stdout/stderr for error messages, and
has one watcher thread that drains that output, reaps the process and then
reports an exit nobody asked for.
"""

from __future__ import annotations

import collections
import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Final

from dspex.errors import LocalModelError

__all__ = ["LocalProcess", "free_loopback_port", "port_is_free"]

LOOPBACK: Final = "127.0.0.1"

# The child runs this instead of `python -m module` directly: a daemon thread
# watches the parent pid and ends the child once it has been re-parented,
# which is the only portable sign that the parent died without cleaning up.
_BOOTSTRAP: Final = """\
import os, runpy, sys, threading, time
_parent = int(sys.argv.pop(1))
_module = sys.argv.pop(1)
def _watch_parent():
    while os.getppid() == _parent:
        time.sleep(1.0)
    os._exit(70)
threading.Thread(target=_watch_parent, name="dspex-parent-watch", daemon=True).start()
sys.argv[0] = _module
runpy.run_module(_module, run_name="__main__", alter_sys=True)
"""

# llama.cpp's server reads these from the environment over its command line
# (HOST/PORT) or as unset settings (API_KEY would make it demand a key).
_SCRUBBED_ENV: Final = ("HOST", "PORT", "CONFIG_FILE", "API_KEY")
_KILL_WAIT: Final = 5.0
_JOIN_WAIT: Final = 5.0


def free_loopback_port(host: str = LOOPBACK) -> int:
    """A TCP port that is free on ``host`` right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def port_is_free(host: str, port: int) -> bool:
    """True if a server could listen on ``host:port`` now (TIME_WAIT does not count)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


class LocalProcess:
    """A running ``python -m <module>`` child in its own process group.

    ``on_exit(pid, returncode)`` runs in the watcher thread when the process
    ends without :meth:`stop` having been called; it must be quick (a tell).
    """

    def __init__(
        self,
        proc: subprocess.Popen[bytes],
        *,
        name: str,
        on_exit: Callable[[int, int], None] | None,
        tail_lines: int,
    ) -> None:
        self._proc = proc
        self.name = name
        self._on_exit = on_exit
        self._lines: collections.deque[str] = collections.deque(maxlen=tail_lines)
        self._lines_lock = threading.Lock()
        self._stopping = False
        self.exited = threading.Event()
        """Set once the process has ended and been reaped."""
        self._thread = threading.Thread(
            target=self._watch, name=f"{name}-watcher-{proc.pid}", daemon=True
        )
        self._thread.start()

    @classmethod
    def spawn(
        cls,
        module: str,
        args: Sequence[str],
        *,
        name: str = "dspex-local",
        on_exit: Callable[[int, int], None] | None = None,
        tail_lines: int = 200,
    ) -> LocalProcess:
        """Start ``sys.executable -m module *args`` (through the orphan guard)."""
        env = {k: v for k, v in os.environ.items() if k not in _SCRUBBED_ENV}
        env["PYTHONUNBUFFERED"] = "1"
        argv = [sys.executable, "-c", _BOOTSTRAP, str(os.getpid()), module, *args]
        try:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,  # own process group: one signal reaches it all
                close_fds=True,
            )
        except OSError as exc:
            raise LocalModelError(
                f"{name}: could not start '{sys.executable} -m {module}': {exc}"
            ) from exc
        return cls(proc, name=name, on_exit=on_exit, tail_lines=tail_lines)

    # -- state -------------------------------------------------------------------

    @property
    def pid(self) -> int:
        return self._proc.pid

    @property
    def returncode(self) -> int | None:
        """The exit code once the process has been reaped, else None."""
        return self._proc.returncode

    @property
    def watcher(self) -> threading.Thread:
        """The thread draining output and reaping the process (joined by :meth:`stop`)."""
        return self._thread

    def tail(self, lines: int = 20) -> str:
        """The last ``lines`` lines the process printed, for error messages."""
        with self._lines_lock:
            kept = list(self._lines)
        return "\n".join(kept[-lines:]) if lines > 0 else ""

    def _watch(self) -> None:
        """Watcher thread: keep the output tail until EOF, reap, report a surprise exit."""
        stream = self._proc.stdout
        if stream is not None:
            with stream:
                for raw in iter(stream.readline, b""):
                    line = raw.decode("utf-8", "replace").rstrip()
                    with self._lines_lock:
                        self._lines.append(line)
        returncode = self._proc.wait()
        self.exited.set()
        if not self._stopping and self._on_exit is not None:
            self._on_exit(self._proc.pid, returncode)

    # -- readiness -----------------------------------------------------------------

    def wait_ready(self, url: str, timeout: float, *, interval: float = 0.1) -> None:
        """Poll ``GET url`` until it answers 200; :class:`LocalModelError` on exit or deadline.

        The caller still owns the process after a failure and must :meth:`stop` it.
        """
        import httpx

        deadline = time.monotonic() + timeout
        # trust_env=False: a proxy from the environment must not see loopback polls.
        with httpx.Client(timeout=min(2.0, max(timeout, 0.1)), trust_env=False) as client:
            while True:
                if self.exited.is_set():
                    raise LocalModelError(
                        f"{self.name} (pid {self.pid}) exited with code {self.returncode} "
                        f"before it was ready at {url}.{self._tail_hint()}"
                    )
                with contextlib.suppress(httpx.HTTPError):
                    if client.get(url).status_code == 200:
                        return
                left = deadline - time.monotonic()
                if left <= 0:
                    raise LocalModelError(
                        f"{self.name} (pid {self.pid}) did not answer {url} within "
                        f"{timeout:g}s; raise ready_timeout if the machine is slow or the "
                        f"model large.{self._tail_hint()}"
                    )
                # Waiting on the exit event wakes us at once if the process dies.
                self.exited.wait(min(interval, left))

    def _tail_hint(self) -> str:
        tail = self.tail()
        return f" Last output:\n{tail}" if tail else " It printed nothing."

    # -- termination -----------------------------------------------------------------

    def stop(self, grace: float = 5.0) -> int | None:
        """End the whole process group and join the watcher; returns the exit code.

        SIGTERM first; SIGKILL if it has not exited after ``grace`` seconds.
        Safe to call more than once and after the process died on its own.
        """
        self._stopping = True
        if self._proc.returncode is None:
            self._signal_group(signal.SIGTERM)
            try:
                self._proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                self._signal_group(signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self._proc.wait(timeout=_KILL_WAIT)
        if self._thread is not threading.current_thread():
            self._thread.join(_JOIN_WAIT)
        return self._proc.returncode

    def _signal_group(self, sig: signal.Signals) -> None:
        # The child leads its own session, so its pid is the group id.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._proc.pid, sig)

    def __repr__(self) -> str:
        state = "running" if self._proc.returncode is None else f"exited {self._proc.returncode}"
        return f"<LocalProcess {self.name} pid={self.pid} {state}>"
