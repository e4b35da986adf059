"""The signal system: callbacks told about committed writes.

Events are handed over only after their transaction commits, in commit order.
Each connected callback has its own queue and worker task, so it sees events in
order, and a slow or failing callback delays only itself, never the operation
that caused the event. Sync callbacks run in a worker thread.

A callback that raises or times out ``max_consecutive_failures`` times in a row
is disconnected (when ``remove_failing_callbacks``) with a warning.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import inspect
import itertools
import logging
from collections.abc import Awaitable, Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from .errors import ConfigError, ValidationError

__all__ = ["DatabaseEvent", "SignalConfig", "SignalHandle", "Signals"]

log = logging.getLogger(__name__)

EVENT_TYPES = frozenset({"create", "update", "delete"})

Callback = Callable[["DatabaseEvent"], Awaitable[Any] | Any]


@dataclasses.dataclass(frozen=True, slots=True)
class DatabaseEvent:
    """A committed write.

    ``payload``: the new values for ``create``, ``{field: (old, new)}`` of the
    changed fields for ``update``, the old values for ``delete``.
    """

    event_type: str
    table_name: str
    record_id: Any
    user_id: str
    tags: tuple[str, ...]
    payload: dict[str, Any]
    timestamp: dt.datetime


@dataclasses.dataclass(frozen=True, slots=True)
class SignalConfig:
    """Limits of the signal system.

    Args:
        callback_timeout: seconds one callback call may take before it counts as failed.
        max_callbacks: how many callbacks may be connected at once.
        remove_failing_callbacks: disconnect a callback after too many failures in a row.
        max_consecutive_failures: how many failures in a row that is.
        max_queued: events waiting per callback; beyond it the oldest are dropped
            (and counted) rather than growing memory without bound.
    """

    callback_timeout: float = 30.0
    max_callbacks: int = 100
    remove_failing_callbacks: bool = True
    max_consecutive_failures: int = 3
    max_queued: int = 100_000

    def __post_init__(self) -> None:
        if not self.callback_timeout > 0:
            raise ConfigError(f"callback_timeout must be positive, got {self.callback_timeout}")
        for name in ("max_callbacks", "max_consecutive_failures", "max_queued"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)}")


class SignalHandle:
    """What :meth:`Signals.connect` returns; pass it to :meth:`Signals.disconnect`."""

    __slots__ = (
        "callback",
        "events",
        "failures",
        "id",
        "is_async",
        "queue",
        "table",
        "task",
        "thread",
    )

    def __init__(
        self, id: int, callback: Callback, table: str | None, events: frozenset[str] | None
    ) -> None:
        self.id = id
        self.callback = callback
        self.table = table
        self.events = events
        self.failures = 0
        # an object with an async __call__ counts as async too
        self.is_async = inspect.iscoroutinefunction(callback) or (
            not inspect.isroutine(callback) and inspect.iscoroutinefunction(type(callback).__call__)
        )
        self.queue: asyncio.Queue[DatabaseEvent] = asyncio.Queue()
        # a sync callback runs on a thread of its own: one that blocks holds up only itself
        self.thread: ThreadPoolExecutor | None = None
        self.task: asyncio.Task[None] | None = None

    def wants(self, event: DatabaseEvent) -> bool:
        return (self.table is None or self.table == event.table_name) and (
            self.events is None or event.event_type in self.events
        )

    def __repr__(self) -> str:
        return f"<SignalHandle {self.id} {getattr(self.callback, '__name__', self.callback)!r}>"


class Signals:
    """The callbacks of one pool (``pool.signals``)."""

    def __init__(
        self, config: SignalConfig | None = None, count: Callable[[str], Any] | None = None
    ) -> None:
        self.config = config or SignalConfig()
        self._count = count or (lambda outcome: None)
        self._handles: dict[int, SignalHandle] = {}
        self._ids = itertools.count(1)
        self._workers: set[SignalHandle] = set()

    @property
    def active(self) -> bool:
        """True when at least one callback is connected."""
        return bool(self._handles)

    @property
    def handles(self) -> list[SignalHandle]:
        return list(self._handles.values())

    def connect(
        self, callback: Callback, table: str | None = None, events: Iterable[str] | None = None
    ) -> SignalHandle:
        """Call ``callback(event)`` for committed writes (of ``table``, of ``events`` kinds)."""
        if not callable(callback):
            raise ValidationError(f"callback must be callable, got {callback!r}")
        if len(self._handles) >= self.config.max_callbacks:
            raise ConfigError(
                f"already {self.config.max_callbacks} callbacks connected; disconnect one or "
                "raise SignalConfig.max_callbacks"
            )
        kinds = None
        if events is not None:
            kinds = frozenset([events] if isinstance(events, str) else events)
            bad = kinds - EVENT_TYPES
            if bad:
                raise ValidationError(
                    f"unknown event types {sorted(bad)}; use {sorted(EVENT_TYPES)}"
                )
        if table is not None and not isinstance(table, str):
            # an entity class is accepted for convenience
            table = getattr(getattr(table, "__dbnexus__", None), "table_name", None) or str(table)
        handle = SignalHandle(next(self._ids), callback, table, kinds)
        self._handles[handle.id] = handle
        return handle

    def disconnect(self, handle: SignalHandle) -> bool:
        """Stop calling ``handle``'s callback; True if it was connected."""
        if self._handles.pop(handle.id, None) is None:
            return False
        self._retire(handle)
        return True

    def _retire(self, handle: SignalHandle) -> None:
        # a call in progress finishes; the worker then skips what is queued and ends
        if handle.task is not None:
            handle.queue.put_nowait(None)  # type: ignore[arg-type]

    def emit(self, events: list[DatabaseEvent]) -> None:
        """Queue committed events for every interested callback (never blocks)."""
        for handle in list(self._handles.values()):
            for event in events:
                if handle.wants(event):
                    if handle.queue.qsize() >= self.config.max_queued:
                        handle.queue.get_nowait()
                        handle.queue.task_done()
                        self._count("dropped")
                    handle.queue.put_nowait(event)
            if handle.task is None and not handle.queue.empty():
                handle.task = asyncio.get_running_loop().create_task(self._worker(handle))
                self._workers.add(handle)

    async def _worker(self, handle: SignalHandle) -> None:
        timeout = self.config.callback_timeout
        while True:
            event = await handle.queue.get()
            try:
                if event is None:
                    self._workers.discard(handle)
                    return
                if handle.id not in self._handles:
                    continue
                try:
                    # asyncio.timeout, not wait_for: wait_for can swallow a cancellation
                    # that races the callback's completion, and the worker would never end
                    async with asyncio.timeout(timeout):
                        if handle.is_async:
                            await handle.callback(event)
                        else:
                            # a thread of our own: a blocking callback never blocks the loop
                            if handle.thread is None:
                                handle.thread = ThreadPoolExecutor(
                                    max_workers=1, thread_name_prefix=f"dbnexus-signal-{handle.id}"
                                )
                            await asyncio.get_running_loop().run_in_executor(
                                handle.thread, handle.callback, event
                            )
                except TimeoutError:
                    self._failed(handle, "timeout", f"took longer than {timeout}s")
                except Exception as exc:
                    self._failed(handle, "error", f"raised {exc!r}")
                else:
                    handle.failures = 0
                    self._count("ok")
            finally:
                handle.queue.task_done()

    def _failed(self, handle: SignalHandle, outcome: str, why: str) -> None:
        self._count(outcome)
        handle.failures += 1
        cfg = self.config
        log.debug("signal callback %r %s", handle, why)
        if cfg.remove_failing_callbacks and handle.failures >= cfg.max_consecutive_failures:
            self._handles.pop(handle.id, None)
            self._retire(handle)
            self._count("removed")
            log.warning(
                "signal callback %r removed after %d consecutive failures (last: %s)",
                handle,
                handle.failures,
                why,
            )

    async def drain(self) -> None:
        """Wait until every queued event has been handed to its callback."""
        # retired callbacks too: a call that started before disconnect() still counts
        for handle in list(self._workers):
            await handle.queue.join()

    async def close(self) -> None:
        """Drain, then stop every worker (also those of callbacks removed for failing)."""
        await self.drain()
        self._handles.clear()
        workers, self._workers = self._workers, set()
        for handle in workers:
            if handle.task is not None:
                handle.task.cancel()
        for handle in workers:
            if handle.task is not None:
                with contextlib.suppress(asyncio.CancelledError):
                    await handle.task
            if handle.thread is not None:
                # a callback still blocked in its thread is abandoned, not waited for
                handle.thread.shutdown(wait=False, cancel_futures=True)
