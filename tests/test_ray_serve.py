"""Program servers on Ray, cluster-wide rate limits, and the tree across the boundary.

One local Ray cluster for the whole module (``ray.init(num_cpus=2)``, bound to
127.0.0.1, no dashboard, no usage stats). The served programs call the fake
OpenAI provider of ``dspex.testing`` on loopback from the Ray worker processes.
Waits are on conditions with deadlines, never on the wall clock.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import ray

import dspex
from dspex.actors._lm._resilience import SharedRateLimiter
from dspex.errors import (
    ActorStoppedError,
    OverloadedError,
    ProgramError,
    RegistryError,
    UsageError,
)
from dspex.testing import FakeOpenAI

MODEL = "openai/test-model"
QA = "question -> answer"
API_BASE_ENV = "FAKE_PROVIDER_URL_FOR_RAY_TESTS"
API_KEY = "sk-ray-test"
WAIT = 60.0  # bound of every wait on a condition


def chat_reply(body: dict[str, Any]) -> str:
    """ChatAdapter's format, answering with the question it was asked."""
    question = body["messages"][-1]["content"].split("[[ ## question ## ]]")[-1]
    question = question.split("\n\n")[0].strip()
    return f"[[ ## answer ## ]]\nre: {question}\n\n[[ ## completed ## ]]"


def _lm(rpm: int | None = None) -> dspex.LM:
    # The fake provider's URL reaches the Ray workers through their environment.
    return dspex.LM(MODEL, api_base=os.environ[API_BASE_ENV], rpm=rpm, cache=False)


class RayQA(dspex.Module):
    """A program the workers import by name (this module is on their path)."""

    def __init__(self) -> None:
        super().__init__()
        self.qa = dspex.Predict(QA)
        self.qa.lm = _lm()

    def forward(self, question: str) -> Any:
        if question == "boom":
            raise ValueError(f"cannot answer {question!r}")
        return self.qa(question=question)


class LimitedQA(RayQA):
    """The same program on a model limited to 2 requests per minute."""

    def __init__(self) -> None:
        super().__init__()
        self.qa.lm = _lm(rpm=2)


def until(condition: Callable[[], bool], what: str, timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"not within {timeout}s: {what}")
        time.sleep(0.05)


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(reply=chat_reply) as server:
        yield server


@pytest.fixture(scope="module")
def cluster(fake: FakeOpenAI) -> Iterator[None]:
    names = (API_BASE_ENV, "PYTHONPATH", "OPENAI_API_KEY")
    saved = {k: os.environ.get(k) for k in names}
    tests = str(Path(__file__).parent)
    os.environ[API_BASE_ENV] = fake.url
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (saved["PYTHONPATH"], tests) if p)
    # Keys never travel to workers: they read them from their own environment.
    os.environ["OPENAI_API_KEY"] = API_KEY
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        object_store_memory=100 * 1024 * 1024,
        _node_ip_address="127.0.0.1",
        log_to_driver=False,
    )
    try:
        yield
    finally:
        ray.shutdown()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture(scope="module")
def rt(cluster: None) -> Iterator[Any]:
    runtime = dspex.start()
    yield runtime
    runtime.stop()


@pytest.fixture(scope="module")
def qa(rt: Any) -> Iterator[Any]:
    """Two replicas, each holding at most one request (capacity 2 in all)."""
    handle = rt.serve("qa", RayQA(), backend="ray", replicas=2, max_concurrency=1, queue_limit=0)
    yield handle
    handle.stop()


def test_served_replicas_answer_sync_and_awaited(rt: Any, qa: Any) -> None:
    first = rt.ask("qa", question="one")
    assert first.get(timeout=WAIT).answer == "re: one"
    second = rt.ask("qa", question="two")
    assert second.result(timeout=WAIT).answer == "re: two"
    # Idle replicas take turns: the two requests went to different replicas.
    assert {first.replica, second.replica} == {0, 1}

    async def awaited() -> Any:
        return await rt.ask("qa", question="three")

    assert asyncio.run(awaited()).answer == "re: three"


def test_program_error_arrives_as_a_local_server_raises_it(rt: Any, qa: Any) -> None:
    future = rt.ask("qa", question="boom")
    with pytest.raises(ValueError, match="cannot answer 'boom'") as caught:
        future.result(timeout=WAIT)
    assert isinstance(caught.value, ProgramError)
    assert caught.value.run_label == f"server:qa#{future.replica}"
    assert f"on ray replica qa#{future.replica}" in caught.value.__notes__


def test_tell_is_answered_by_a_replica(rt: Any, qa: Any) -> None:
    def completed() -> int:
        return sum(info.stats["completed"] for info in qa.replicas(timeout=WAIT) if info)

    before = completed()
    request_id = rt.tell("qa", question="told")
    assert isinstance(request_id, int) and request_id > 0
    until(lambda: completed() == before + 1, "the told request answered")


def test_backpressure_across_replicas_is_overloaded_error(
    rt: Any, qa: Any, fake: FakeOpenAI
) -> None:
    fake.latency = 2.0  # both replicas stay busy while the third request arrives
    try:
        busy = [rt.ask("qa", question=f"busy {i}") for i in range(2)]
        assert {f.replica for f in busy} == {0, 1}
        with pytest.raises(OverloadedError, match="each of its 2 replica"):
            rt.ask("qa", question="one too many")
        assert [f.result(timeout=WAIT).answer for f in busy] == ["re: busy 0", "re: busy 1"]
    finally:
        fake.latency = 0.0
    assert rt.ask("qa", question="after").result(timeout=WAIT).answer == "re: after"


def test_killed_replica_is_restarted_and_serves_again(rt: Any, qa: Any, fake: FakeOpenAI) -> None:
    before = qa.replicas(timeout=WAIT)
    fake.latency = 2.0
    try:
        doomed = rt.ask("qa", question="in flight")
        index = doomed.replica
        ray.kill(qa.actors()[index], no_restart=False)
        with pytest.raises(ActorStoppedError, match=f"replica qa#{index} died"):
            doomed.result(timeout=WAIT)
    finally:
        fake.latency = 0.0

    def restarted() -> bool:
        info = qa.replicas(timeout=5.0)[index]
        return info is not None and info.pid != before[index].pid

    until(restarted, f"replica qa#{index} restarted by Ray")
    after = qa.replicas(timeout=WAIT)[index]
    assert after.reconstructed
    answers = []
    for i in range(4):  # one at a time: idle replicas take turns
        future = rt.ask("qa", question=f"again {i}")
        assert future.result(timeout=WAIT).answer == f"re: again {i}"
        answers.append(future)
    assert index in {f.replica for f in answers}
    assert qa.replicas(timeout=WAIT)[index].stats["completed"] >= 1
    node = rt.tree().find(f"qa#{index}")
    assert node is not None and node.restarts == 1 and node.status == "alive"


def test_tree_shows_replicas_with_their_node(rt: Any, qa: Any) -> None:
    infos = qa.replicas(timeout=WAIT)
    tree = rt.tree()
    text = str(tree)
    for info in infos:
        node = tree.find(f"qa#{info.index}")
        assert node is not None and node.status == "alive"
        assert node.location == f"node {info.node_id[:12]} 127.0.0.1 pid {info.pid}"
        assert f"qa#{info.index} (ProgramServer) alive" in text
    assert tree.find("server:qa") is not None
    assert tree.find("servers") is not None  # the local tree is still all there


def test_rate_limit_is_global_across_replicas(rt: Any, fake: FakeOpenAI) -> None:
    from dspex.programs._ray._limits import budget_stats, kill_budgets

    def budget() -> dict[str, Any]:
        """The one budget of the model (its key also digests endpoint and API key)."""
        found = [v for k, v in budget_stats().items() if k.startswith(f"{MODEL}#")]
        assert len(found) <= 1
        return found[0] if found else {}

    sent_before = fake.request_count
    limited = rt.serve(
        "limited", LimitedQA(), backend="ray", replicas=2, max_concurrency=2, queue_limit=0
    )
    try:
        futures = [rt.ask("limited", question=f"limited {i}") for i in range(4)]
        assert sorted(f.replica for f in futures) == [0, 0, 1, 1]
        # Every request leases one unit of the model's one budget (rpm=2: a lease is 1).
        until(lambda: budget().get("leases") == 4, "four leases granted")
        stats = budget()
        assert (stats["rpm"], stats["immediate"], stats["delayed"]) == (2, 2, 2)
        until(lambda: fake.request_count - sent_before == 2, "two requests sent")
        # The other two wait for the minute's allowance (30 s and 60 s): not sent.
        done = [f for f in futures if f.done()]
        assert len(done) <= 2 and fake.request_count - sent_before == 2
    finally:
        limited.stop()
        kill_budgets()
    for future in futures:
        if not future.done() or future.exception(timeout=WAIT) is not None:
            with pytest.raises(ActorStoppedError, match="was stopped"):
                future.result(timeout=WAIT)


def test_drain_finishes_in_flight_then_stops(rt: Any, fake: FakeOpenAI) -> None:
    handle = rt.serve("drained", RayQA(), backend="ray", replicas=1)
    fake.latency = 1.0
    try:
        pending = rt.ask("drained", question="last one")
        report = handle.drain(timeout=WAIT)
    finally:
        fake.latency = 0.0
    assert pending.result(timeout=WAIT).answer == "re: last one"
    assert report.expired == 0 and report.servers == ("drained",)
    assert "drained" not in rt.remote_servers["ray"].names()
    with pytest.raises(RegistryError, match="no program server named 'drained'"):
        rt.ask("drained", question="too late")


def test_tree_shows_the_ray_pool_workers_with_their_node(rt: Any) -> None:
    from dspex.programs._ray._dispatch import crew, shutdown_crew

    assert rt.tree().find("ray-pool") is None  # no crew yet: no branch
    workers = crew()
    try:
        where = workers.where()
        branch = rt.tree().find("ray-pool")
        assert branch is not None
        assert [node.id for node in branch.children] == [
            f"ray-worker#{i}" for i in range(len(where))
        ]
        for node, place in zip(branch.children, where, strict=True):
            assert node.status == "alive"
            assert node.location == f"node {place['node_id'][:12]} 127.0.0.1 pid {place['pid']}"
    finally:
        shutdown_crew()
    assert rt.tree().find("ray-pool") is None


def test_unknown_backend_is_a_clear_error(rt: Any) -> None:
    with pytest.raises(UsageError, match=r"serve\(backend='nope'\) is not available.*'ray'"):
        rt.serve("x", RayQA(), backend="nope")


class _Source:
    """A lease source that grants at once and counts what it was asked."""

    def __init__(self) -> None:
        self.leases: list[tuple[int, int, int]] = []
        self.charged = 0
        self.throttles = 0

    async def lease(self, requests: int, tokens: int, successes: int) -> float:
        self.leases.append((requests, tokens, successes))
        return 0.0

    def charge(self, tokens: int) -> None:
        self.charged += tokens

    def throttled(self) -> None:
        self.throttles += 1


def test_shared_limiter_leases_in_batches() -> None:
    source = _Source()
    limiter = SharedRateLimiter(source, rpm=6000, tpm=None)

    async def calls() -> list[float]:
        waits = []
        for _ in range(100):
            waits.append(await limiter.acquire(10))
            limiter.on_success()
        return waits

    assert asyncio.run(calls()) == [0.0] * 100
    # 100 requests at 6000 rpm: leases of 64 (capped a second's 100), two remote calls.
    assert source.leases == [(64, 0, 0), (64, 0, 64)]
    limiter.on_rate_limited()
    assert source.throttles == 1 and limiter.requests == 0


def test_shared_limiter_tokens_and_settle() -> None:
    source = _Source()
    limiter = SharedRateLimiter(source, rpm=None, tpm=600)

    async def call() -> float:
        return await limiter.acquire(50)

    assert asyncio.run(call()) == 0.0
    assert source.leases == [(0, 50, 0)]  # a second's 10 tokens would not cover 50
    limiter.settle(50, 80)
    assert source.charged == 30
