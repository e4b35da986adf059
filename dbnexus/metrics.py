"""Prometheus metrics of one pool: its own registry, cheap counting, a scrape endpoint.

Every pool gets a fresh ``CollectorRegistry`` (two pools never collide). The
hot path does not call prometheus_client: an operation adds to plain counters
bound once per (table, action), and one collector turns them into counter and
histogram families when Prometheus scrapes. Live values (connections in use,
cache size) are read at scrape time too.

Operations run on the event loop's thread, so the counters need no lock.
"""

from __future__ import annotations

import asyncio
import logging
from bisect import bisect_left
from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = ["Count", "Histo", "Metrics", "OpMetrics"]

log = logging.getLogger(__name__)

BUCKETS = (
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
    0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip


class Count:
    """A counter value: ``inc()`` on the hot path, read at scrape time."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, amount: float = 1) -> None:
        self.value += amount


class Histo:
    """Histogram buckets (``le`` upper bounds) and sum of observed values."""

    __slots__ = ("counts", "sum")

    def __init__(self) -> None:
        self.counts = [0] * (len(BUCKETS) + 1)  # the last one is +Inf
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(BUCKETS, value)] += 1
        self.sum += value


class OpMetrics:
    """The counters of one (table, action); bound once, used on every operation."""

    __slots__ = ("denied", "duration", "error", "ok", "outcome_denied")

    def __init__(self) -> None:
        self.ok = Count()
        self.error = Count()
        self.outcome_denied = Count()
        self.denied = Count()
        self.duration = Histo()


Gauge = tuple[str, str, Callable[[], Iterable[tuple[tuple[str, ...], float]]], tuple[str, ...]]


class _Collector:
    """Turns the pool's counters into metric families at scrape time."""

    def __init__(self, m: Metrics) -> None:
        self.m = m
        self.gauges: list[Gauge] = []

    def collect(self) -> Iterable[Metric]:
        m = self.m
        ops = CounterMetricFamily(
            "dbnexus_operations",
            "Operations by table, action and outcome (ok, denied, error).",
            labels=["table", "action", "outcome"],
        )
        denied = CounterMetricFamily(
            "dbnexus_permission_denied",
            "Operations refused by the permission policy.",
            labels=["table", "action"],
        )
        duration = HistogramMetricFamily(
            "dbnexus_operation_duration_seconds",
            "Operation latency in seconds.",
            labels=["table", "action"],
        )
        for (table, action), om in list(m._ops.items()):
            ops.add_metric([table, action, "ok"], om.ok.value)
            ops.add_metric([table, action, "error"], om.error.value)
            ops.add_metric([table, action, "denied"], om.outcome_denied.value)
            denied.add_metric([table, action], om.denied.value)
            running = 0
            buckets = []
            for bound, n in zip((*BUCKETS, float("inf")), om.duration.counts, strict=True):
                running += n
                buckets.append((_le(bound), running))
            duration.add_metric([table, action], buckets, om.duration.sum)
        yield ops
        yield denied
        yield duration
        for name, doc, counts in (
            ("dbnexus_cache_hits", "Reads served from the cache.", m._hits),
            ("dbnexus_cache_misses", "Cacheable reads not in the cache.", m._misses),
        ):
            fam = CounterMetricFamily(name, doc, labels=["table"])
            for table, c in list(counts.items()):
                fam.add_metric([table], c.value)
            yield fam
        fam = CounterMetricFamily(
            "dbnexus_shard_operations", "Operations sent to each shard.", labels=["shard"]
        )
        for shard, c in list(m._shards.items()):
            fam.add_metric([shard], c.value)
        yield fam
        for name, doc, read, labels in self.gauges:
            g = GaugeMetricFamily(name, doc, labels=list(labels))
            for label_values, value in read():
                g.add_metric(list(label_values), value)
            yield g

    def describe(self) -> Iterable[Metric]:
        return []


def _le(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(float(bound))


class Metrics:
    """The metrics of one pool. ``registry`` is what a Prometheus scrape reads."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self._ops: dict[tuple[str, str], OpMetrics] = {}
        self._hits: dict[str, Count] = {}
        self._misses: dict[str, Count] = {}
        self._shards: dict[str, Count] = {}
        self._collector = _Collector(self)
        self.registry.register(self._collector)
        # not on the hot path: an ordinary prometheus_client counter
        self.signal_callbacks = Counter(
            "dbnexus_signal_callbacks",
            "Signal callbacks run, by outcome (ok, error, timeout, removed, dropped).",
            ["outcome"],
            registry=self.registry,
        )
        self._server: asyncio.Server | None = None

    def op(self, table: str, action: str) -> OpMetrics:
        """The counters for (table, action)."""
        key = (table, action)
        m = self._ops.get(key)
        if m is None:
            m = self._ops[key] = OpMetrics()
        return m

    def cache_hit(self, table: str) -> Count:
        c = self._hits.get(table)
        if c is None:
            c = self._hits[table] = Count()
        return c

    def cache_miss(self, table: str) -> Count:
        c = self._misses.get(table)
        if c is None:
            c = self._misses[table] = Count()
        return c

    def shard(self, name: str) -> Count:
        c = self._shards.get(name)
        if c is None:
            c = self._shards[name] = Count()
        return c

    def add_gauge(
        self,
        name: str,
        doc: str,
        read: Callable[[], Iterable[tuple[tuple[str, ...], float]]],
        labels: tuple[str, ...] = (),
    ) -> None:
        """A gauge whose values ``read()`` returns at scrape time."""
        self._collector.gauges.append((name, doc, read, labels))

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric of this pool."""
        return generate_latest(self.registry)

    async def serve(self, port: int, addr: str = "127.0.0.1") -> int:
        """Serve ``GET /metrics`` on ``addr:port``; returns the bound port (0 picks one)."""
        if self._server is not None:
            raise RuntimeError("metrics are already being served")
        self._server = await asyncio.start_server(self._handle, addr, port)
        return self._server.sockets[0].getsockname()[1]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            line = request.split(b"\r\n", 1)[0].split()
            path = line[1].split(b"?", 1)[0] if len(line) > 1 else b""
            if len(line) > 1 and line[0] in (b"GET", b"HEAD") and path in (b"/metrics", b"/"):
                body = self.render()
                head = (
                    f"HTTP/1.1 200 OK\r\nContent-Type: {CONTENT_TYPE_LATEST}\r\n"
                    f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
                )
                writer.write(head.encode() + (body if line[0] == b"GET" else b""))
            else:
                writer.write(
                    b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                )
            await writer.drain()
        except (
            TimeoutError,
            asyncio.IncompleteReadError,
            ConnectionError,
            asyncio.LimitOverrunError,
        ):
            pass
        except Exception:
            log.exception("error serving /metrics")
        finally:
            writer.close()

    async def close(self) -> None:
        """Stop serving /metrics."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
