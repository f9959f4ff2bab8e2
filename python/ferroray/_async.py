"""``await ref`` and ``async for ref in gen``, without blocking the event loop
and without a thread per wait: the extension waits for every pending ref on
one background thread of its own and calls back when each is ready
(``ObjectRef._when_ready``, ``ObjectRefGenerator._when_ready``; see
``crates/ferroray-python/src/aio.rs``). The callback only hops onto the loop
(``call_soon_threadsafe``) to settle the awaiting future; the value is then
read with an ordinary ``get``, and a generator's next item is taken on the
loop, so an awaiter that gives up takes nothing.
"""

from __future__ import annotations

import asyncio
from typing import Any


def _settle(fut: "asyncio.Future[Any]", value: Any) -> None:
    # The awaiter may have been cancelled meanwhile.
    if not fut.done():
        fut.set_result(value)


def _waiter(loop: asyncio.AbstractEventLoop, fut: "asyncio.Future[Any]") -> Any:
    """The callback the extension calls (on its own thread) with the result."""

    def done(*value: Any) -> None:
        try:
            loop.call_soon_threadsafe(_settle, fut, value[0] if value else None)
        except RuntimeError:
            # The loop was closed: nobody awaits this any more.
            pass

    return done


async def await_ref(ref: Any) -> Any:
    from ferroray import get

    if not ref._is_ready():
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        ref._when_ready(_waiter(loop, fut))
        await fut
    return get(ref)


async def next_item(gen: Any) -> Any:
    from ferroray.exceptions import GetTimeoutError

    while True:
        # Taken here, on the loop, only once it is here: an awaiter that
        # gives up (a cancel, a timeout) takes nothing.
        try:
            item = gen._next_timeout(0.0)
        except GetTimeoutError:
            loop = asyncio.get_running_loop()
            fut = loop.create_future()
            gen._when_ready(_waiter(loop, fut))
            await fut
            continue
        if item is None:
            raise StopAsyncIteration
        return item
