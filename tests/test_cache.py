"""The two-tier cache: memory LRU, SQLite disk tier, the Cache actor, fallbacks."""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

import pytest

from dspex.actors._cache import Cache, CacheClient, Flush, Persist
from dspex.actors._cache_store import DB_NAME, CacheStore, decode_response, encode_response
from dspex.actors._lm._types import Completion, LMResponse, Usage


def _resp(text: str, model: str = "openai/m") -> LMResponse:
    return LMResponse((Completion(text, "stop"),), Usage(3, 4), model)


def test_memory_hit_miss_and_stats() -> None:
    store = CacheStore(memory_max_entries=10)
    assert store.get("k") is None
    store.put_memory("k", _resp("a"))
    hit = store.get("k")
    assert hit is not None and hit.texts == ["a"] and hit.cache_hit
    stats = store.stats()
    assert (stats.hits, stats.misses, stats.memory_entries) == (1, 1, 1)
    assert stats.hit_rate == 0.5
    assert not stats.disk_enabled


def test_memory_tier_is_a_bounded_lru() -> None:
    store = CacheStore(memory_max_entries=2)
    store.put_memory("a", _resp("a"))
    store.put_memory("b", _resp("b"))
    assert store.get("a") is not None  # a is now most recent
    store.put_memory("c", _resp("c"))
    assert store.get("b") is None
    assert store.get("a") is not None and store.get("c") is not None
    assert store.stats().memory_entries == 2


def test_encoding_is_json_not_pickle() -> None:
    blob = encode_response(_resp("hello"))
    assert blob.startswith(b"{")
    back = decode_response(blob)
    assert back.texts == ["hello"] and back.usage == Usage(3, 4) and back.cache_hit


def test_persistence_across_a_restart_through_the_actor(tmp_path: Path) -> None:
    store = CacheStore(disk_dir=tmp_path)
    ref = Cache.start_link(store)
    client = CacheClient(store, lambda: ref)
    client.put("k1", _resp("one"))
    client.put("k2", _resp("two"))
    ref.stop()  # on_stop flushes what is pending
    store.close()

    fresh = CacheStore(disk_dir=tmp_path)
    try:
        got = fresh.get("k1")
        assert got is not None and got.texts == ["one"]
        stats = fresh.stats()
        assert stats.disk_hits == 1 and stats.disk_entries == 2
        # promoted to memory: the second read is a memory hit
        assert fresh.get("k1") is not None and fresh.stats().memory_hits == 1
    finally:
        fresh.close()


def test_flush_message_writes_now(tmp_path: Path) -> None:
    store = CacheStore(disk_dir=tmp_path)
    ref = Cache.start_link(store)
    try:
        store.put_memory("x", _resp("x"))
        ref.tell(Persist("x", _resp("x")))
        ref.ask(Flush(), timeout=5)
        with sqlite3.connect(tmp_path / DB_NAME) as db:
            assert db.execute("SELECT COUNT(*) FROM entries").fetchone() == (1,)
    finally:
        ref.stop()
        store.close()


def test_disk_tier_is_bounded_by_bytes(tmp_path: Path) -> None:
    one = len(encode_response(_resp("x" * 100)))
    store = CacheStore(disk_dir=tmp_path, disk_max_bytes=one * 3, memory_enabled=False)
    try:
        for i in range(6):
            store.persist([(f"k{i}", _resp("x" * 100))])
        stats = store.stats()
        assert stats.disk_bytes <= one * 3
        assert stats.disk_entries == 3
        assert store.get("k0") is None  # oldest evicted
        assert store.get("k5") is not None
    finally:
        store.close()


def test_unusable_directory_falls_back_to_memory_with_one_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the cache dir should be")
    with caplog.at_level(logging.WARNING, logger="dspex.cache"):
        store = CacheStore(disk_dir=blocker / "cache")
        store.put_memory("k", _resp("a"))
        assert store.get("k") is not None
        assert store.persist([("k", _resp("a"))]) == 0
    warnings = [r for r in caplog.records if "disk tier disabled" in r.getMessage()]
    assert len(warnings) == 1
    assert "memory only" in warnings[0].getMessage()
    assert not store.disk_enabled


def test_two_stores_share_one_directory(tmp_path: Path) -> None:
    a = CacheStore(disk_dir=tmp_path, memory_enabled=False)
    b = CacheStore(disk_dir=tmp_path, memory_enabled=False)
    try:
        a.persist([("from-a", _resp("a"))])
        b.persist([("from-b", _resp("b"))])
        got_a, got_b = b.get("from-a"), a.get("from-b")
        assert got_a is not None and got_a.texts == ["a"]
        assert got_b is not None and got_b.texts == ["b"]
    finally:
        a.close()
        b.close()


def test_corrupt_disk_entry_is_a_miss(tmp_path: Path) -> None:
    store = CacheStore(disk_dir=tmp_path, memory_enabled=False)
    try:
        store.persist([("k", _resp("a"))])
        with sqlite3.connect(tmp_path / DB_NAME) as db:
            db.execute("UPDATE entries SET value = ? WHERE key = 'k'", (b"not json",))
        assert store.get("k") is None
        assert store.stats().misses == 1
    finally:
        store.close()


def test_client_put_survives_a_dead_cache_actor(tmp_path: Path) -> None:
    store = CacheStore(disk_dir=tmp_path)
    ref = Cache.start_link(store)
    ref.stop()
    client = CacheClient(store, lambda: ref)
    client.put("k", _resp("a"))  # must not raise
    assert client.get("k") is not None
    store.close()


def test_a_checkpointed_compile_writes_answers_through_to_disk(tmp_path: Path) -> None:
    from dspex.programs._teleprompt._checkpoint import Journal

    store = CacheStore(disk_dir=tmp_path / "cache")
    # No Cache actor (as while it restarts): a normal put reaches memory only.
    client = CacheClient(store, actor=lambda: None)
    client.put("k1", _resp("one"))
    assert store._disk_get("k1") is None
    journal = Journal(tmp_path / "ck", optimizer="GEPA", fingerprint={})
    try:
        # Under a checkpoint's journal the answer is on disk when put returns: a kill -9
        # right after loses nothing the resumed compile would ask for again.
        client.put("k2", _resp("two"))
        assert store._disk_get("k2") is not None
    finally:
        journal.close()
    client.put("k3", _resp("three"))  # the journal closed: back to batched writes
    assert store._disk_get("k3") is None
    store.close()
