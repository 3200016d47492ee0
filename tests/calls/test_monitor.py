from __future__ import annotations

import asyncio

from gateway.calls.monitor import Monitor


def publish(monitor: Monitor, instance: str, conversation: str) -> None:
    monitor.publish("rpc", instance, conversation, "Dialogue", "Broadcast", "ok", 0.002)


def test_monitor_filters_and_bounds_each_watcher() -> None:
    async def scenario() -> None:
        monitor = Monitor(backlog=3)
        everything = monitor.watch()
        only_b = monitor.watch(frozenset({"b"}))
        for i in range(5):
            publish(monitor, "a", f"a{i}")
        publish(monitor, "b", "b0")
        events, dropped = await everything.take()
        # The oldest fell out; the watcher is told how many.
        assert [e.conversation for e in events] == ["a3", "a4", "b0"]
        assert dropped == 3
        assert monitor.dropped_total == 3
        events, dropped = await only_b.take()
        assert [e.conversation for e in events] == ["b0"] and dropped == 0
        assert abs(events[0].latency_ms - 2.0) < 1e-9
        monitor.unwatch(only_b)
        publish(monitor, "b", "b1")
        assert not only_b.backlog
        assert [e.conversation for e in (await everything.take())[0]] == ["b1"]
        waiter = asyncio.create_task(everything.take())
        await asyncio.sleep(0)
        assert not waiter.done()
        publish(monitor, "a", "a5")
        events, _ = await asyncio.wait_for(waiter, 1)
        assert [e.conversation for e in events] == ["a5"]

    asyncio.run(scenario())


def test_turn_frame_is_json_without_caller_content() -> None:
    monitor = Monitor()
    watcher = monitor.watch()
    publish(monitor, "demo", "c1")
    frame = watcher.backlog[0].frame()
    assert frame.startswith(b'{"type":"turn"')
    assert b'"conversation":"c1"' in frame and b'"latency_ms":2.0' in frame
