"""Prometheus metrics of one pool: its own registry, pre-bound children, a scrape endpoint.

Every pool gets a fresh ``CollectorRegistry`` (two pools never collide). Label
children are bound once per (table, action) and reused, so counting an
operation allocates nothing. Live values (connections in use, cache size) are
read at scrape time by a collector instead of being pushed on every operation.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = ["Metrics", "OpMetrics"]

log = logging.getLogger(__name__)

_BUCKETS = (
    0.00005,
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)


class OpMetrics:
    """The label children for one (table, action); bound once, used on every operation."""

    __slots__ = ("denied", "duration", "error", "ok", "outcome_denied")

    def __init__(self, m: Metrics, table: str, action: str) -> None:
        self.ok = m.operations.labels(table, action, "ok")
        self.error = m.operations.labels(table, action, "error")
        self.outcome_denied = m.operations.labels(table, action, "denied")
        self.denied = m.permission_denied.labels(table, action)
        self.duration = m.duration.labels(table, action)


class _LiveCollector:
    """Reads gauges from callbacks at scrape time."""

    def __init__(self) -> None:
        self.gauges: list[
            tuple[str, str, Callable[[], Iterable[tuple[tuple[str, ...], float]]], tuple[str, ...]]
        ] = []

    def collect(self) -> Iterable[Metric]:
        for name, doc, read, labels in self.gauges:
            g = GaugeMetricFamily(name, doc, labels=list(labels))
            for label_values, value in read():
                g.add_metric(list(label_values), value)
            yield g

    def describe(self) -> Iterable[Metric]:
        return []


class Metrics:
    """The metrics of one pool. ``registry`` is what a Prometheus scrape reads."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.operations = Counter(
            "dbnexus_operations",
            "Operations by table, action and outcome (ok, denied, error).",
            ["table", "action", "outcome"],
            registry=r,
        )
        self.duration = Histogram(
            "dbnexus_operation_duration_seconds",
            "Operation latency in seconds.",
            ["table", "action"],
            buckets=_BUCKETS,
            registry=r,
        )
        self.cache_hits = Counter(
            "dbnexus_cache_hits", "Reads served from the cache.", ["table"], registry=r
        )
        self.cache_misses = Counter(
            "dbnexus_cache_misses", "Cacheable reads not in the cache.", ["table"], registry=r
        )
        self.permission_denied = Counter(
            "dbnexus_permission_denied",
            "Operations refused by the permission policy.",
            ["table", "action"],
            registry=r,
        )
        self.shard_operations = Counter(
            "dbnexus_shard_operations", "Operations sent to each shard.", ["shard"], registry=r
        )
        self.signal_callbacks = Counter(
            "dbnexus_signal_callbacks", "Signal callbacks run, by outcome.", ["outcome"], registry=r
        )
        self._live = _LiveCollector()
        r.register(self._live)
        self._ops: dict[tuple[str, str], OpMetrics] = {}
        self._hits: dict[str, Any] = {}
        self._misses: dict[str, Any] = {}
        self._shards: dict[str, Any] = {}
        self._server: asyncio.Server | None = None

    def op(self, table: str, action: str) -> OpMetrics:
        """The bound children for (table, action)."""
        key = (table, action)
        m = self._ops.get(key)
        if m is None:
            m = self._ops[key] = OpMetrics(self, table, action)
        return m

    def cache_hit(self, table: str) -> Any:
        c = self._hits.get(table)
        if c is None:
            c = self._hits[table] = self.cache_hits.labels(table)
        return c

    def cache_miss(self, table: str) -> Any:
        c = self._misses.get(table)
        if c is None:
            c = self._misses[table] = self.cache_misses.labels(table)
        return c

    def shard(self, name: str) -> Any:
        c = self._shards.get(name)
        if c is None:
            c = self._shards[name] = self.shard_operations.labels(name)
        return c

    def add_gauge(
        self,
        name: str,
        doc: str,
        read: Callable[[], Iterable[tuple[tuple[str, ...], float]]],
        labels: tuple[str, ...] = (),
    ) -> None:
        """A gauge whose values ``read()`` returns at scrape time."""
        self._live.gauges.append((name, doc, read, labels))

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
