"""The signal dispatcher on its own: queues, workers, failures, limits; no database."""

import asyncio
import dataclasses
import datetime as dt
import threading

import pytest

from dbnexus import ConfigError, ValidationError
from dbnexus.signals import DatabaseEvent, SignalConfig, Signals


def event(n, kind="create", table="t"):
    return DatabaseEvent(kind, table, n, "alice", (), {"n": n}, dt.datetime.now(dt.UTC))


def counting(config=None):
    counted: list[str] = []
    return Signals(config, counted.append), counted


@pytest.mark.parametrize(
    "kwargs",
    [
        {"callback_timeout": 0},
        {"callback_timeout": -1},
        {"max_callbacks": 0},
        {"max_consecutive_failures": 0},
        {"max_queued": 0},
    ],
)
def test_bad_config_is_a_config_error(kwargs):
    with pytest.raises(ConfigError):
        SignalConfig(**kwargs)


def test_config_defaults_and_events_are_frozen():
    c = SignalConfig()
    assert (c.callback_timeout, c.max_callbacks) == (30, 100)
    assert (c.remove_failing_callbacks, c.max_consecutive_failures) == (True, 3)
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.max_callbacks = 5
    with pytest.raises(dataclasses.FrozenInstanceError):
        event(1).tags = ("x",)


async def test_each_callback_gets_its_events_in_order():
    signals, counted = counting()
    got_async, got_sync = [], []

    async def a(e):
        await asyncio.sleep(0)
        got_async.append(e.record_id)

    signals.connect(a)
    signals.connect(lambda e: got_sync.append(e.record_id))
    assert signals.active
    signals.emit([event(1), event(2)])
    signals.emit([event(3)])
    await signals.drain()
    assert got_async == got_sync == [1, 2, 3]
    assert counted == ["ok"] * 6
    await signals.close()


async def test_an_object_with_an_async_call_is_awaited():
    signals, counted = counting()
    seen = []

    class Listener:
        async def __call__(self, e):
            await asyncio.sleep(0)
            seen.append(e.record_id)

    signals.connect(Listener())
    signals.emit([event(1)])
    await signals.drain()
    assert seen == [1] and counted == ["ok"]
    await signals.close()


async def test_filters_by_table_and_event_type():
    signals, _ = counting()
    got: dict[str, list] = {"t": [], "del": [], "u_upd": []}
    signals.connect(lambda e: got["t"].append(e.record_id), table="t")
    signals.connect(lambda e: got["del"].append(e.record_id), events=["delete"])
    signals.connect(lambda e: got["u_upd"].append(e.record_id), table="u", events="update")
    signals.emit([event(1), event(2, "delete"), event(3, "update", "u"), event(4, "delete", "u")])
    await signals.drain()
    assert got == {"t": [1, 2], "del": [2, 4], "u_upd": [3]}
    with pytest.raises(ValidationError):
        signals.connect(print, events=["create", "insert"])
    with pytest.raises(ValidationError):
        signals.connect(None)
    await signals.close()


async def test_max_callbacks_and_disconnect():
    signals, _ = counting(SignalConfig(max_callbacks=1))
    seen = []
    h = signals.connect(seen.append)
    with pytest.raises(ConfigError):
        signals.connect(print)
    assert signals.disconnect(h) and not signals.disconnect(h)
    assert not signals.active
    signals.emit([event(1)])
    await signals.drain()
    assert seen == []
    signals.connect(seen.append)
    signals.emit([event(2)])
    await signals.drain()
    assert [e.record_id for e in seen] == [2]
    await signals.close()


async def test_a_disconnected_callback_gets_nothing_more_even_if_events_were_queued():
    signals, _ = counting()
    release = asyncio.Event()
    seen = []

    async def slow(e):
        seen.append(e.record_id)
        await release.wait()

    h = signals.connect(slow)
    signals.emit([event(1), event(2), event(3)])
    while not seen:
        await asyncio.sleep(0)
    signals.disconnect(h)
    release.set()
    for _ in range(10):
        await asyncio.sleep(0)
    assert seen == [1]
    await signals.close()


async def test_timeouts_and_errors_are_counted_and_repeat_offenders_removed(caplog):
    signals, counted = counting(SignalConfig(callback_timeout=0.2, max_consecutive_failures=2))
    never = asyncio.Event()

    async def hang(e):
        await never.wait()

    def fail(e):
        raise RuntimeError("no")

    hh = signals.connect(hang)
    hf = signals.connect(fail)
    signals.emit([event(1), event(2), event(3)])
    await signals.drain()
    assert sorted(counted) == sorted(["timeout"] * 2 + ["error"] * 2 + ["removed"] * 2)
    assert signals.handles == [] and not signals.active
    assert not signals.disconnect(hh) and not signals.disconnect(hf)
    assert sum("removed" in r.getMessage() for r in caplog.records) == 2
    await signals.close()


async def test_a_blocked_sync_callback_does_not_hold_up_a_sync_callback_it_shares_threads_with():
    # "a slow or failing callback delays only itself" (dbnexus.signals)
    signals, counted = counting(SignalConfig(callback_timeout=0.5))
    stuck = threading.Event()
    try:
        for _ in range(4):
            signals.connect(lambda e: stuck.wait(10))
        healthy = []
        signals.connect(lambda e: healthy.append(e.record_id))
        signals.emit([event(1)])
        await signals.drain()
        assert healthy == [1]
        assert counted.count("ok") == 1
    finally:
        stuck.set()
        await signals.close()


async def test_queues_are_bounded_and_drop_the_oldest():
    signals, counted = counting(SignalConfig(max_queued=2))
    seen = []
    signals.connect(lambda e: seen.append(e.record_id))
    signals.emit([event(k) for k in range(1, 6)])
    await signals.drain()
    assert seen == [4, 5]
    assert counted.count("dropped") == 3
    await signals.close()


async def test_drain_waits_and_close_stops_every_worker():
    signals, _ = counting(SignalConfig(max_consecutive_failures=1))
    release = asyncio.Event()
    done = []

    async def slow(e):
        await release.wait()
        done.append(e.record_id)

    def fail(e):
        raise RuntimeError("removed after one failure")

    handles = [signals.connect(slow), signals.connect(fail), signals.connect(lambda e: None)]
    gone = handles[-1]
    signals.emit([event(1)])
    signals.disconnect(gone)
    drain = asyncio.create_task(signals.drain())
    for _ in range(10):
        await asyncio.sleep(0)
    assert not drain.done()
    release.set()
    await drain
    assert done == [1]
    await signals.close()
    for _ in range(3):
        await asyncio.sleep(0)
    # disconnected and removed callbacks included: no worker is left waiting forever
    assert signals.handles == []
    assert [h for h in handles if not h.task.done()] == []


async def test_disconnect_lets_the_call_in_progress_finish():
    signals, counted = counting()
    gate, started = asyncio.Event(), asyncio.Event()
    done = []

    async def slow(e):
        started.set()
        await gate.wait()
        done.append(e.record_id)

    handle = signals.connect(slow)
    signals.emit([event(1)])
    await started.wait()
    assert signals.disconnect(handle)
    gate.set()
    for _ in range(5):
        await asyncio.sleep(0)
    assert done == [1], "disconnect() cancelled the call in progress"
    assert counted == ["ok"]
    await signals.close()


async def test_drain_and_close_wait_for_a_callback_that_disconnected_itself():
    # a one-shot listener: it disconnects itself, then does its work
    signals, counted = counting()
    started = asyncio.Event()
    done = []

    async def once(e):
        signals.disconnect(handle)
        started.set()
        await asyncio.sleep(0.01)
        done.append(e.record_id)

    handle = signals.connect(once)
    signals.emit([event(1)])
    await started.wait()
    await signals.drain()
    assert done == [1]

    handle = signals.connect(once)
    started.clear()
    signals.emit([event(2)])
    await started.wait()
    await signals.close()
    assert done == [1, 2]
    assert counted == ["ok", "ok"]
