"""``dspex serve`` as a real process: real HTTP, a fake OpenAI-compatible provider behind it.

The programs come from tests/serve_app.py. The fake's reply function waits on
a gate (``threading.Event``) when a test needs requests held in flight: the
test waits for markers (the fake saw the call, ``/metrics`` shows the queue)
rather than for time to pass.
"""

from __future__ import annotations

import gc
import os
import queue
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from serve_app import QA
from wait_helpers import wait_until

import dspex
from dspex.testing import FakeOpenAI

ROOT = Path(__file__).resolve().parents[1]
APP = Path(__file__).resolve().parent / "serve_app.py"
WAIT = 60.0
ANSWER = "[[ ## answer ## ]]\nParis\n\n[[ ## verdict ## ]]\ngood\n\n[[ ## completed ## ]]"


class Gate:
    """A fake reply that blocks until opened (the fake answers one call at a time then)."""

    def __init__(self) -> None:
        self.opened = threading.Event()
        self.opened.set()

    def close(self) -> None:
        self.opened.clear()

    def open(self) -> None:
        self.opened.set()

    def __call__(self, body: Any) -> str:
        assert self.opened.wait(WAIT), "the test never opened the gate"
        return ANSWER


class Served:
    """A running ``dspex serve`` process: its URL, its stdout lines, its exit."""

    def __init__(self, args: list[str], fake_url: str) -> None:
        env = {**os.environ, "SERVE_TEST_FAKE_URL": fake_url, "PYTHONPATH": str(ROOT)}
        env["DSPEX_CACHE__ENABLED"] = "false"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "dspex.cli", "serve", *args, "--port", "0"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.stderr: list[str] = []
        self._readers = [
            threading.Thread(target=self._read, args=(self.proc.stdout, self.lines.put)),
            threading.Thread(target=self._read, args=(self.proc.stderr, self.stderr.append)),
        ]
        for reader in self._readers:
            reader.start()
        ready = self.expect("serving")
        found = re.search(r"on (http://\S+) ", ready)
        assert found, ready
        self.url = found.group(1)
        self.ready = ready

    @staticmethod
    def _read(stream: Any, put: Any) -> None:
        for line in stream:
            put(line.rstrip("\n"))

    def expect(self, text: str) -> str:
        """The next stdout line containing ``text`` (fails after WAIT s or if the process ends)."""
        while True:
            try:
                line = self.lines.get(timeout=WAIT)
            except queue.Empty:
                pytest.fail(f"dspex serve printed no {text!r}; stderr: {self.stderr[-20:]}")
            if text in line:
                return line

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(WAIT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait(WAIT)
        for reader in self._readers:
            reader.join(WAIT)
        return code


@pytest.fixture
def gate() -> Gate:
    return Gate()


@pytest.fixture
def fake(gate: Gate) -> Iterator[FakeOpenAI]:
    with FakeOpenAI(reply=gate) as server:
        try:
            yield server
        finally:
            gate.open()  # never leave the fake's loop blocked: stop() would time out


def serve(fake: FakeOpenAI, *args: str) -> Served:
    return Served([*args], fake.url)


def metric(url: str, name: str, server: str) -> float:
    text = httpx.get(f"{url}/metrics", timeout=WAIT).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels.get("server") == server:
                return float(sample.value)
    raise AssertionError(f"no {name}{{server={server!r}}} in /metrics")


def test_json_requests_health_metrics_and_openapi(fake: FakeOpenAI) -> None:
    served = serve(fake, f"{APP}:programs")
    try:
        with httpx.Client(base_url=served.url, timeout=WAIT) as client:
            assert client.get("/healthz").json() == {"status": "ok"}
            assert client.get("/readyz").status_code == 200
            names = [p["name"] for p in client.get("/v1/programs").json()["programs"]]
            assert names == ["qa", "rate"]
            reply = client.post("/v1/programs/qa", json={"question": "Capital of France?"})
            assert reply.status_code == 200
            assert reply.json() == {"answer": "Paris"}
            rated = client.post("/v1/programs/rate", json={"review": "fine", "stars": 4})
            assert rated.json() == {"verdict": "good"}
            bad = client.post("/v1/programs/rate", json={"review": "fine", "stars": "four"})
            assert bad.status_code == 422
            assert bad.json()["error"]["errors"][0]["field"] == "stars"
            unknown = client.post("/v1/programs/qa", json={"question": "q", "lang": "fr"})
            assert unknown.status_code == 422
            assert "'lang'" in unknown.json()["error"]["message"]
            doc = client.get("/openapi.json").json()
            assert "/v1/programs/rate" in doc["paths"]
            families = {
                f.name: f for f in text_string_to_metric_families(client.get("/metrics").text)
            }
        assert fake.request_count == 2  # the 422s never reached the LM
        assert fake.requests[0].json["messages"][-1]["content"].count("Capital of France?") == 1
        completed = {
            s.labels["server"]: s.value for s in families["dspex_server_completed"].samples
        }
        assert completed == {"qa": 1.0, "rate": 1.0}
        requests = families["dspex_lm_requests"].samples
        assert sum(s.value for s in requests) == 2.0
    finally:
        assert served.stop() == 0
    assert "sk-test-secret-key-123" not in "\n".join(served.stderr)


def test_a_full_queue_is_429_with_retry_after(fake: FakeOpenAI, gate: Gate) -> None:
    served = serve(fake, f"{APP}:qa", "--max-concurrency", "1", "--queue-limit", "1")
    gate.close()
    try:
        with ThreadPoolExecutor(max_workers=2) as pool:

            def ask(question: str) -> httpx.Response:
                return httpx.post(
                    f"{served.url}/v1/programs/qa", json={"question": question}, timeout=WAIT
                )

            first = pool.submit(ask, "one")
            wait_until(lambda: fake.request_count == 1, WAIT, "the first call reached the LM")
            second = pool.submit(ask, "two")
            wait_until(
                lambda: metric(served.url, "dspex_server_queued", "qa") == 1.0,
                WAIT,
                "the second call is queued",
            )
            refused = httpx.post(
                f"{served.url}/v1/programs/qa", json={"question": "three"}, timeout=WAIT
            )
            gate.open()
            answers = [first.result(WAIT), second.result(WAIT)]
        assert refused.status_code == 429
        assert refused.json()["error"]["type"] == "OverloadedError"
        assert int(refused.headers["retry-after"]) >= 1
        assert [a.status_code for a in answers] == [200, 200]
        assert metric(served.url, "dspex_server_rejected_total", "qa") == 1.0
    finally:
        gate.open()
        assert served.stop() == 0


def test_sigterm_mid_flight_answers_every_accepted_request(fake: FakeOpenAI, gate: Gate) -> None:
    served = serve(fake, f"{APP}:qa", "--max-concurrency", "2", "--queue-limit", "4")
    gate.close()
    accepted: list[Future[httpx.Response]] = []
    try:
        with ThreadPoolExecutor(max_workers=4) as pool:
            for i in range(4):
                accepted.append(
                    pool.submit(
                        httpx.post,
                        f"{served.url}/v1/programs/qa",
                        json={"question": f"q{i}"},
                        timeout=WAIT,
                    )
                )
            wait_until(
                lambda: (
                    metric(served.url, "dspex_server_queued", "qa") == 2.0
                    and metric(served.url, "dspex_server_executing", "qa") == 2.0
                ),
                WAIT,
                "two calls executing and two queued",
            )
            served.proc.send_signal(signal.SIGTERM)
            served.expect("draining")
            try:
                late = httpx.post(
                    f"{served.url}/v1/programs/qa", json={"question": "late"}, timeout=WAIT
                )
                late_status: int | str = late.status_code
            except httpx.TransportError:  # the listener is already closed (refused or reset)
                late_status = "not connected"
            gate.open()
            answers = [f.result(WAIT) for f in accepted]
        assert [a.status_code for a in answers] == [200] * 4
        assert all(a.json() == {"answer": "Paris"} for a in answers)
        assert late_status in (503, "not connected")
        assert served.proc.wait(WAIT) == 0
        served.expect("stopped (exit code 0)")
    finally:
        gate.open()
        served.stop()


def test_reload_over_http_with_config_and_default_lm(fake: FakeOpenAI, tmp_path: Path) -> None:
    config = tmp_path / "dspex.toml"
    config.write_text(
        f'[models."openai/test-model"]\napi_base = "{fake.url}"\napi_key = "sk-from-toml-123"\n'
    )
    state = tmp_path / "qa.json"
    tuned = dspex.Predict(QA)
    tuned.demos = [dspex.Example(question="2+2?", answer="4")]
    tuned.save(str(state))
    served = serve(
        fake,
        f"{APP}:bare_qa",
        "--name",
        "qa",
        "--config",
        str(config),
        "--lm",
        "openai/test-model",
        "--allow-reload",
    )
    try:
        before = httpx.post(f"{served.url}/v1/programs/qa", json={"question": "q"}, timeout=WAIT)
        assert before.json() == {"answer": "Paris"}
        assert not any("2+2?" in str(m["content"]) for m in fake.requests[-1].json["messages"])
        reply = httpx.post(
            f"{served.url}/v1/programs/qa/reload", json={"path": str(state)}, timeout=WAIT
        )
        assert reply.status_code == 200
        assert reply.json() == {"name": "qa", "version": 2}
        after = httpx.post(f"{served.url}/v1/programs/qa", json={"question": "q2"}, timeout=WAIT)
        assert after.json() == {"answer": "Paris"}
        prompt = fake.requests[-1].json["messages"]
        assert any("2+2?" in str(m["content"]) for m in prompt)  # the reloaded demo is used
    finally:
        assert served.stop() == 0


def test_a_bad_target_exits_2_with_the_reason() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "dspex.cli", "serve", f"{APP}:nothing", "--port", "0"],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), "SERVE_TEST_FAKE_URL": "http://127.0.0.1:9"},
        capture_output=True,
        text=True,
        timeout=WAIT,
        check=False,
    )
    assert out.returncode == 2
    assert "no attribute 'nothing'" in out.stderr


def test_workers_below_one_exits_2_naming_the_option() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "dspex.cli", "serve", f"{APP}:qa", "--port", "0", "--workers", "0"],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=WAIT,
        check=False,
    )
    assert out.returncode == 2
    assert "--workers 0: must be an int >= 1" in out.stderr


@pytest.mark.parametrize(("flags", "kept"), [([], [0, 0]), (["--keep-history"], [1, 2])])
def test_served_modules_keep_no_lm_history_unless_asked(
    fake: FakeOpenAI, flags: list[str], kept: list[int]
) -> None:
    served = serve(fake, f"{APP}:remembering", "--name", "qa", *flags)
    try:
        with httpx.Client(base_url=served.url, timeout=WAIT) as client:
            counts = []
            for question in ("first?", "second?"):
                reply = client.post("/v1/programs/qa", json={"question": question})
                assert reply.status_code == 200, reply.text
                assert reply.json()["answer"] == "Paris"
                counts.append(reply.json()["kept"])
        assert counts == kept
    finally:
        served.stop()


def test_a_negative_gc_threshold_exits_2_naming_the_option() -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "dspex.cli",
            "serve",
            f"{APP}:qa",
            "--port",
            "0",
            "--gc-threshold",
            "-5",
        ],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=WAIT,
        check=False,
    )
    assert out.returncode == 2
    assert "--gc-threshold -5: must be an int >= 0" in out.stderr


def test_serving_freezes_the_startup_heap_and_raises_the_young_threshold() -> None:
    from dspex.serve._command import _tune_gc

    before = gc.get_threshold()
    try:
        _tune_gc(0)  # 0: Python's own settings stay
        assert gc.get_threshold() == before
        assert gc.get_freeze_count() == 0
        _tune_gc(12_345)
        assert gc.get_threshold() == (12_345, before[1], before[2])
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


def test_serving_looks_up_every_served_models_price_before_it_listens(
    start_runtime: Any,
) -> None:
    # Left to the first cost read, a server would load the price table mid-traffic
    # and keep its answers alive until then (tests/test_cost.py).
    from dspex.serve._command import _look_up_prices

    rt = start_runtime()
    own = dspex.Predict("question -> answer")
    own.lm = dspex.LM("openai/gpt-4o-mini", api_base="http://127.0.0.1:9/v1", api_key="sk-x")
    default = dspex.LM("openai/default-model", api_base="http://127.0.0.1:9/v1", api_key="sk-x")
    dspex.configure(lm=default)
    uses_default = dspex.ChainOfThought("question -> answer")
    assert not rt.prices.known("openai/gpt-4o-mini")
    _look_up_prices(rt, [own, uses_default])
    assert rt.prices.known("openai/gpt-4o-mini") and rt.prices.known("openai/default-model")
    assert rt.prices.price("openai/gpt-4o-mini") is not None


@pytest.mark.local_model
@pytest.mark.timeout(300)
def test_the_demo_serve_command_serves_the_classifier_on_the_real_model(tmp_path: Path) -> None:
    from dspex import _demo

    state = _demo.save_served(_demo.Predict(_demo.Sentiment), tmp_path)
    args = _demo.serve_command(state).split()[2:]  # after "dspex serve"
    served = Served(args, fake_url="http://127.0.0.1:9/v1")
    try:
        reply = httpx.post(
            f"{served.url}/v1/programs/sentiment",
            json={"review": "Absolutely loved it, would buy again!"},
            timeout=120,
        )
        assert reply.status_code == 200, reply.text
        assert reply.json()["sentiment"] in ("positive", "negative")
    finally:
        assert served.stop() == 0


def test_a_port_in_use_exits_2_naming_it() -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        out = subprocess.run(
            [sys.executable, "-m", "dspex.cli", "serve", f"{APP}:qa", "--port", str(port)],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT), "SERVE_TEST_FAKE_URL": "http://x"},
            capture_output=True,
            text=True,
            timeout=WAIT,
            check=False,
        )
    assert out.returncode == 2
    assert f"cannot listen on 127.0.0.1:{port}" in out.stderr


def test_sse_streams_chunks_and_a_stream_in_flight_at_sigterm_finishes(fake: FakeOpenAI) -> None:
    fake.configure(stream_delay=0.05)  # the reply trickles in, word by word
    served = serve(fake, f"{APP}:qa")
    first_chunk = threading.Event()
    try:
        with ThreadPoolExecutor(max_workers=1) as pool:

            def stream() -> tuple[int, list[str]]:
                lines: list[str] = []
                with httpx.stream(
                    "POST",
                    f"{served.url}/v1/programs/qa",
                    json={"question": "Capital of France?"},
                    headers={"accept": "text/event-stream"},
                    timeout=WAIT,
                ) as reply:
                    for line in reply.iter_lines():
                        lines.append(line)
                        if line == "event: chunk":
                            first_chunk.set()
                    return reply.status_code, lines

            streaming = pool.submit(stream)
            assert first_chunk.wait(WAIT), "no chunk event arrived"
            served.proc.send_signal(signal.SIGTERM)
            served.expect("draining")
            status, lines = streaming.result(WAIT)
        assert status == 200
        events = [line.removeprefix("event: ") for line in lines if line.startswith("event: ")]
        assert events[0] == "chunk" and events[-1] == "prediction"
        assert lines[lines.index("event: prediction") + 1] == 'data: {"answer":"Paris"}'
        assert fake.requests[0].json["stream"] is True
        assert served.proc.wait(WAIT) == 0
    finally:
        served.stop()


def test_an_sse_client_hanging_up_cancels_the_upstream_request(fake: FakeOpenAI) -> None:
    fake.configure(stream_delay=0.3)
    served = serve(fake, f"{APP}:qa")
    try:
        with httpx.stream(
            "POST",
            f"{served.url}/v1/programs/qa",
            json={"question": "Capital of France?"},
            headers={"accept": "text/event-stream"},
            timeout=WAIT,
        ) as reply:
            for line in reply.iter_lines():
                if line == "event: chunk":
                    break  # leave mid-stream: the connection closes
        assert fake.wait_disconnect(WAIT), "the provider's stream went on after the client left"
        assert fake.stream_disconnects == 1
    finally:
        assert served.stop() == 0


def test_workers_share_the_port_and_each_drains_on_sigterm(fake: FakeOpenAI) -> None:
    served = serve(fake, f"{APP}:qa", "--workers", "2")
    pids: list[int] = []
    try:
        with ThreadPoolExecutor(
            max_workers=4
        ) as pool:  # a connection each: the kernel spreads them
            replies = list(
                pool.map(
                    lambda i: httpx.post(
                        f"{served.url}/v1/programs/qa", json={"question": f"q{i}"}, timeout=WAIT
                    ),
                    range(8),
                )
            )
        assert [r.status_code for r in replies] == [200] * 8
        assert fake.request_count == 8
        pids = [int(p) for p in re.findall(r"\d+", served.ready.split("pids", 1)[1])]
        assert len(pids) == 2 and served.proc.pid not in pids
        for pid in pids:
            os.kill(pid, 0)  # alive
    finally:
        code = served.stop()
    assert code == 0
    lines = []
    while not served.lines.empty():
        lines.append(served.lines.get_nowait())
    assert sum("SIGTERM received; draining" in line for line in lines) == 2  # each worker drained
    assert sum("stopped (exit code 0)" in line for line in lines) == 2
    for pid in pids:
        with pytest.raises(ProcessLookupError):  # reaped by the parent
            os.kill(pid, 0)
