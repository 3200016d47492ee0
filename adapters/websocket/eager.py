"""Run a coroutine inline up to its first suspension, and only then give it a task.

A turn through the embedded navigator never suspends: its coroutine finishes
on the first `send(None)`, so the socket's reader runs it directly, without a
task, a callback or a loop iteration. A turn that waits for a bot or a
remote navigator suspends on a future; `finish` then carries it on inside a
task, as `asyncio.Task` would have from that point: it waits for the future
the coroutine is blocked on and resumes the coroutine, which reads the
future's result (or exception) itself.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

Started = tuple[bool, Any]


def start(coro: Coroutine[Any, Any, T]) -> Started:
    """(True, result) when `coro` finished at once, else (False, what it waits on)."""
    try:
        return False, coro.send(None)
    except StopIteration as stop:
        return True, stop.value


async def finish(coro: Coroutine[Any, Any, T], waiting: Any) -> T:
    """Drive a coroutine `start` left suspended on `waiting` to its end."""
    while True:
        thrown: BaseException | None = None
        try:
            if waiting is None:
                await asyncio.sleep(0)  # a bare `yield`: one loop iteration
            else:
                # As a task does on taking the future: clear the flag the
                # coroutine's `await` set (the C future refuses a second await
                # while it is set), then wait for it here.
                waiting._asyncio_future_blocking = False
                await waiting
        except BaseException as exc:
            # The future failed: the coroutine reads that from the future when
            # resumed. Anything else (this task was cancelled while the future
            # is still pending) is thrown into the coroutine.
            if waiting is None or not waiting.done():
                thrown = exc
        try:
            waiting = coro.send(None) if thrown is None else coro.throw(thrown)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]
