"""``dspex serve --workers N``: N worker processes on one port, and their parent.

One Python process runs its HTTP loop, its program runs and its LM client
loops under one GIL, so it uses about one core however many the machine
has. With ``--workers N`` the parent starts N ordinary ``dspex serve``
processes that all listen on the same address with ``SO_REUSEPORT`` (the
kernel spreads connections across them) and supervises them:

- each worker is a whole server: its own runtime, LM clients, program
  servers, cache and metrics. ``--max-concurrency``/``--queue-limit`` hold
  per worker (the port admits up to N times as many), and ``/metrics``
  reports the worker that answered the scrape (its ``pid`` is on the ready
  line);
- SIGTERM/SIGINT to the parent is sent on to every worker, which drains as a
  single server does; the parent exits when they all have (0 if all exited 0);
- a worker that exits on its own takes the others down (exit 1): restarting
  the service is the process manager's job, as for a single server.
"""

from __future__ import annotations

import dataclasses
import re
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from typing import IO, Any

from dspex.errors import UsageError

__all__ = ["serve_workers"]

_STARTUP_WAIT = 60.0  # seconds for each worker to print its ready line
_READY = re.compile(r"^dspex serve: serving (.*) on (\S+) \(pid (\d+)\)")


def _worker_argv(options: Any, port: int) -> list[str]:
    argv = [sys.executable, "-m", "dspex.cli", "serve", options.target]
    defaults = type(options)(target=options.target)
    for field in dataclasses.fields(options):
        name = field.name
        value = getattr(options, name)
        if name in ("target", "port", "workers", "reuse_port") or value == getattr(defaults, name):
            continue
        flag = "--" + name.replace("_", "-")
        if isinstance(value, bool):
            argv.append(flag)
        else:
            argv += [flag, str(value)]
    return [*argv, "--port", str(port), "--reuse-port"]


def _copy_lines(stream: IO[str]) -> None:
    for line in stream:  # the worker's later lines (drain, stop) go to our stdout
        sys.stdout.write(line)
        sys.stdout.flush()


def serve_workers(options: Any, listen: Callable[..., socket.socket]) -> int:
    """Run ``options.workers`` servers on one port until SIGTERM/SIGINT; the exit code."""
    if not hasattr(socket, "SO_REUSEPORT"):
        raise UsageError("dspex serve --workers needs SO_REUSEPORT (Linux, macOS, BSD)")
    # Bound, not listening: it fixes the port (--port 0) and takes no connections.
    reserved = listen(options.host, options.port, reuse_port=True, backlog=0)
    port = reserved.getsockname()[1]
    argv = _worker_argv(options, port)
    procs: list[subprocess.Popen[str]] = []
    wake = threading.Event()
    signalled: list[int] = []

    def on_signal(signum: int, frame: Any) -> None:
        signalled.append(signum)
        wake.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        pids, url, names = [], "", ""
        for _ in range(options.workers):
            proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
            procs.append(proc)
            assert proc.stdout is not None
            line = _first_line(proc.stdout)
            ready = _READY.match(line)
            if ready is None:
                print(f"dspex serve: a worker did not start ({line.strip()!r})", file=sys.stderr)
                return _stop_all(procs, options.drain_timeout) or 1
            names, url = ready.group(1), ready.group(2)
            pids.append(ready.group(3))
            threading.Thread(target=_copy_lines, args=(proc.stdout,), daemon=True).start()
            threading.Thread(target=_watch, args=(proc, wake), daemon=True).start()
        reserved.close()
        print(
            f"dspex serve: serving {names} on {url} (pid {pids[0]}; {len(pids)} workers, "
            f"pids {', '.join(pids)})",
            flush=True,
        )
        wake.wait()
        crashed = not signalled  # a worker ended by itself
        if crashed:
            print("dspex serve: a worker exited; stopping the others", flush=True)
        code = 1 if _stop_all(procs, options.drain_timeout) or crashed else 0
        print(f"dspex serve: stopped {len(procs)} workers (exit code {code})", flush=True)
        return code
    finally:
        reserved.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _watch(proc: subprocess.Popen[str], wake: threading.Event) -> None:
    proc.wait()
    wake.set()


def _first_line(stream: IO[str]) -> str:
    got: list[str] = []
    reader = threading.Thread(target=lambda: got.append(stream.readline()), daemon=True)
    reader.start()
    reader.join(_STARTUP_WAIT)
    return got[0] if got else ""


def _stop_all(procs: list[subprocess.Popen[str]], drain_timeout: float) -> int:
    """SIGTERM every worker still running, wait for each; 0 if all exited 0."""
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    code = 0
    for proc in procs:
        try:
            code = code or proc.wait(drain_timeout + 15.0)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            code = 1
    return 1 if code else 0
