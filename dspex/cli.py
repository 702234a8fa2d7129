"""The ``dspex`` command."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def _serve_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    serve = sub.add_parser(
        "serve",
        help="serve programs over HTTP (needs dspex[serve])",
        description=(
            "Serve a program, or a dict of name -> program, over HTTP. TARGET is "
            "module_or_file:attr (a Module, a dict of Modules, a saved program directory, or a "
            "function returning one), or a saved program directory. See docs/serve.md."
        ),
    )
    serve.add_argument("target", metavar="TARGET", help="module_or_file:attr, e.g. app.py:qa")
    serve.add_argument("--name", help="the name to serve a single program under (default: attr)")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on")
    serve.add_argument("--port", type=int, default=8000, help="port (0 picks a free one)")
    serve.add_argument("--config", help="a dspex.toml settings file")
    serve.add_argument("--lm", help="the default LM, e.g. openai/gpt-4o-mini")
    serve.add_argument("--state", help="a saved .json state to load into the program")
    serve.add_argument("--max-concurrency", type=int, default=8, help="requests run at once")
    serve.add_argument("--queue-limit", type=int, default=128, help="requests that may wait")
    serve.add_argument(
        "--allow-reload",
        action="store_true",
        help="enable POST /v1/programs/{name}/reload (loads a state file named by the caller)",
    )
    serve.add_argument(
        "--allow-pickle",
        action="store_true",
        help="allow loading a saved program directory (it unpickles: trusted files only)",
    )
    serve.add_argument(
        "--drain-timeout", type=float, default=30.0, help="seconds to finish requests on SIGTERM"
    )
    serve.add_argument("--log-level", default="warning", help="uvicorn's log level")
    serve.add_argument(
        "--workers",
        type=int,
        default=1,
        help="worker processes sharing the port (SO_REUSEPORT); limits and metrics are per worker",
    )
    serve.add_argument(
        "--gc-threshold",
        type=int,
        default=50_000,
        help=(
            "the garbage collector's youngest-generation threshold while serving "
            "(Python's default is 700; 0 keeps Python's settings). See docs/serve.md"
        ),
    )
    serve.add_argument(
        "--keep-history",
        action="store_true",
        help=(
            "record LM calls in the served modules' history and inspect_history's ring "
            "(off by default: nothing reads them in the server, and they hold past prompts)"
        ),
    )
    serve.add_argument("--reuse-port", action="store_true", help=argparse.SUPPRESS)


def _serve(args: argparse.Namespace) -> int:
    try:
        from dspex.serve._command import ServeOptions, serve_command
    except ImportError as exc:  # starlette/uvicorn/prometheus-client missing
        print(
            f"dspex serve needs the serve extra: pip install 'dspex[serve]' ({exc})",
            file=sys.stderr,
        )
        return 2
    from dspex.errors import DSPexError

    options = ServeOptions(
        target=args.target,
        name=args.name,
        host=args.host,
        port=args.port,
        config=args.config,
        lm=args.lm,
        state=args.state,
        max_concurrency=args.max_concurrency,
        queue_limit=args.queue_limit,
        allow_reload=args.allow_reload,
        allow_pickle=args.allow_pickle,
        drain_timeout=args.drain_timeout,
        log_level=args.log_level,
        workers=args.workers,
        gc_threshold=args.gc_threshold,
        keep_history=args.keep_history,
        reuse_port=args.reuse_port,
    )
    try:
        return serve_command(options)
    except DSPexError as exc:
        print(f"dspex serve: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``dspex`` console script; returns the exit code."""
    parser = argparse.ArgumentParser(prog="dspex", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("demo", help="run the end-to-end demo")
    sub.add_parser("version", help="print the version")
    _serve_parser(sub)
    args = parser.parse_args(argv)
    if args.command == "version":
        from dspex import __version__

        print(__version__)
        return 0
    if args.command == "demo":
        from dspex._demo import run_demo

        return run_demo()
    if args.command == "serve":
        return _serve(args)
    return 2  # pragma: no cover - argparse rejects unknown commands


if __name__ == "__main__":
    sys.exit(main())
