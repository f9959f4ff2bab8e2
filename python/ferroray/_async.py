"""``await ref`` and ``async for ref in gen``: the waits run on a pool of
threads (the GIL is released while they wait), so the event loop never blocks.

Each pending await holds one of ``_POOL``'s threads; more awaits than threads
queue behind them (they still complete, as the earlier ones do).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from typing import Any, Optional

_POOL: Optional[concurrent.futures.ThreadPoolExecutor] = None


def _pool() -> concurrent.futures.ThreadPoolExecutor:
    global _POOL
    if _POOL is None:
        _POOL = concurrent.futures.ThreadPoolExecutor(max_workers=64, thread_name_prefix="ferroray-await")
    return _POOL


async def await_ref(ref: Any) -> Any:
    from ferroray import get

    if ref._is_ready():
        return get(ref)
    return await asyncio.get_running_loop().run_in_executor(_pool(), get, ref)


def _next_or_none(gen: Any) -> Any:
    try:
        return next(gen)
    except StopIteration:
        return None


async def next_item(gen: Any) -> Any:
    item = await asyncio.get_running_loop().run_in_executor(_pool(), _next_or_none, gen)
    if item is None:
        raise StopAsyncIteration
    return item
