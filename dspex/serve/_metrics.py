"""``GET /metrics``: ``rt.metrics()`` and the program servers' counters as Prometheus metrics.

:class:`RuntimeCollector` is a prometheus-client custom collector: each scrape
takes one ``rt.metrics()`` snapshot plus every server's ``stats()`` and turns
them into metric families; prometheus-client writes the text exposition.
A scrape blocks on an actor call, so the app runs it in a worker thread.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

__all__ = ["RuntimeCollector", "metrics_registry"]

_MODEL_COUNTERS = {
    "requests": "LM requests",
    "retries": "LM request retries",
    "cache_hits": "LM responses served from the cache",
    "prompt_tokens": "prompt tokens used",
    "completion_tokens": "completion tokens used",
    "fallbacks": "LM calls passed on to a fallback model",
}
_SERVER_COUNTERS = {
    "completed": "requests a program answered",
    "failed": "requests whose program raised",
    "rejected": "requests refused because the server was full (HTTP 429)",
    "expired": "requests refused at a drain deadline",
    "restarts": "restarts of the server actor",
}
_SERVER_GAUGES = {
    "executing": "requests executing now",
    "queued": "requests waiting in the queue",
    "max_concurrency": "requests that may execute at once",
    "queue_limit": "requests that may wait",
    "version": "program version (reloads add one)",
}
_CACHE_COUNTERS = ("hits", "memory_hits", "disk_hits", "misses")
_CACHE_GAUGES = ("memory_entries", "disk_entries", "disk_bytes")


def _seconds(ms: Any) -> float | None:
    return None if ms is None else float(ms) / 1000.0


class RuntimeCollector(Collector):
    """Collects a runtime's metrics at scrape time (called in the scraping thread)."""

    def __init__(self, runtime: Any) -> None:
        self.runtime = runtime

    def collect(self) -> Iterator[Metric]:
        snapshot: Mapping[str, Any] = self.runtime.metrics()
        yield from self._models(snapshot.get("models", {}))
        yield from self._runs(snapshot.get("runs", {}))
        yield from self._cache(snapshot.get("cache", {}))
        yield from self._lm_clients(snapshot.get("lm_clients", {}))
        yield from self._budget(snapshot.get("budget", {}))
        yield from self._servers()
        restarts = CounterMetricFamily(
            "dspex_supervision_restarts", "actor restarts by their supervisors"
        )
        restarts.add_metric([], float(snapshot.get("supervision", {}).get("restarts", 0)))
        yield restarts
        uptime = GaugeMetricFamily("dspex_uptime_seconds", "seconds since the runtime started")
        uptime.add_metric([], float(snapshot.get("uptime_s", 0.0)))
        yield uptime

    def _models(self, models: Mapping[str, Mapping[str, Any]]) -> Iterator[Metric]:
        for key, doc in _MODEL_COUNTERS.items():
            family = CounterMetricFamily(f"dspex_lm_{key}", doc, labels=["model"])
            for model, m in models.items():
                family.add_metric([model], float(m.get(key, 0)))
            yield family
        errors = CounterMetricFamily(
            "dspex_lm_errors", "failed LM requests by error type", labels=["model", "error"]
        )
        latency = GaugeMetricFamily(
            "dspex_lm_latency_seconds",
            "LM request latency percentiles over the recent window",
            labels=["model", "quantile"],
        )
        for model, m in models.items():
            for error, count in m.get("errors", {}).items():
                errors.add_metric([model, error], float(count))
            for quantile, key in (("0.5", "p50_ms"), ("0.95", "p95_ms")):
                value = _seconds(m.get(key))
                if value is not None:
                    latency.add_metric([model, quantile], value)
        yield errors
        yield latency
        # A model whose cost is unknown (None) has no sample: unknown is not zero.
        cost = CounterMetricFamily(
            "dspex_lm_cost_usd", "USD spent on LM calls (priced models only)", labels=["model"]
        )
        for model, m in models.items():
            if m.get("cost_usd") is not None:
                cost.add_metric([model], float(m["cost_usd"]))
        yield cost

    def _budget(self, budget: Mapping[str, Any]) -> Iterator[Metric]:
        spent = GaugeMetricFamily(
            "dspex_budget_spent", "what the runtime-wide budget counted", labels=["unit"]
        )
        spent.add_metric(["usd"], float(budget.get("priced_cost_usd", 0.0)))
        spent.add_metric(["tokens"], float(budget.get("tokens", 0)))
        yield spent

    def _runs(self, runs: Mapping[str, Any]) -> Iterator[Metric]:
        family = CounterMetricFamily(
            "dspex_program_runs", "top-level program runs by outcome", labels=["outcome"]
        )
        for outcome in ("started", "succeeded", "failed"):
            family.add_metric([outcome], float(runs.get(outcome, 0)))
        yield family
        latency = GaugeMetricFamily(
            "dspex_program_run_latency_seconds",
            "program run latency percentiles over the recent window",
            labels=["quantile"],
        )
        for quantile, key in (("0.5", "p50_ms"), ("0.95", "p95_ms")):
            value = _seconds(runs.get(key))
            if value is not None:
                latency.add_metric([quantile], value)
        yield latency

    def _cache(self, cache: Mapping[str, Any]) -> Iterator[Metric]:
        for key in _CACHE_COUNTERS:
            family = CounterMetricFamily(f"dspex_cache_{key}", f"LM cache {key.replace('_', ' ')}")
            family.add_metric([], float(cache.get(key, 0)))
            yield family
        for key in _CACHE_GAUGES:
            gauge = GaugeMetricFamily(f"dspex_cache_{key}", f"LM cache {key.replace('_', ' ')}")
            gauge.add_metric([], float(cache.get(key, 0)))
            yield gauge

    def _lm_clients(self, clients: Mapping[str, Mapping[str, Any]]) -> Iterator[Metric]:
        keys = ("upstream_requests", "successes", "failures", "throttled", "circuit_rejections")
        for key in keys:
            family = CounterMetricFamily(
                f"dspex_lm_client_{key}",
                f"LM client {key.replace('_', ' ')}",
                labels=["client"],
            )
            for client, stats in clients.items():
                family.add_metric([client], float(stats.get(key, 0)))
            yield family

    def _servers(self) -> Iterator[Metric]:
        servers = self.runtime.servers
        stats = []
        for name in servers.names():
            try:
                stats.append(servers.stats(name))
            except Exception:  # stopped between names() and stats(): skip it
                continue
        for key, doc in _SERVER_COUNTERS.items():
            family = CounterMetricFamily(f"dspex_server_{key}", doc, labels=["server"])
            for s in stats:
                family.add_metric([s.name], float(getattr(s, key)))
            yield family
        for key, doc in _SERVER_GAUGES.items():
            gauge = GaugeMetricFamily(f"dspex_server_{key}", doc, labels=["server"])
            for s in stats:
                gauge.add_metric([s.name], float(getattr(s, key)))
            yield gauge
        accepting = GaugeMetricFamily(
            "dspex_server_accepting", "1 while the server accepts requests", labels=["server"]
        )
        for s in stats:
            accepting.add_metric([s.name], 1.0 if s.accepting and not s.closed else 0.0)
        yield accepting


def metrics_registry(runtime: Any) -> CollectorRegistry:
    """A registry of its own (not the global one) holding ``runtime``'s collector."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(RuntimeCollector(runtime))
    return registry
