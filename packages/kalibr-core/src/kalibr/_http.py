"""HTTP clients shared by every Router in the process (connection pools are per host, not per router).

The sync client lives for the process and closes at exit. An async client belongs to one event loop: each
loop gets its own, closed when the loop shuts down its async generators (``asyncio.run`` and pytest-asyncio
both do), so no socket outlives its loop.
"""

from __future__ import annotations

import asyncio
import atexit
import threading
import weakref
from collections.abc import AsyncIterator

import httpx

__all__ = ["async_client", "sync_client"]

_lock = threading.Lock()
_sync: httpx.Client | None = None
_async: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, httpx.AsyncClient] = weakref.WeakKeyDictionary()
_keepers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, AsyncIterator[None]] = weakref.WeakKeyDictionary()


def sync_client() -> httpx.Client:
    global _sync
    if _sync is None:
        with _lock:
            if _sync is None:
                _sync = httpx.Client()
                atexit.register(_sync.close)
    return _sync


async def async_client() -> httpx.AsyncClient:
    loop = asyncio.get_running_loop()
    client = _async.get(loop)
    if client is None:
        client = _async[loop] = httpx.AsyncClient()
        keeper = _close_at_loop_shutdown(client)
        await keeper.__anext__()  # started on this loop, so loop.shutdown_asyncgens() will finalise it
        _keepers[loop] = keeper
    return client


async def _close_at_loop_shutdown(client: httpx.AsyncClient) -> AsyncIterator[None]:
    try:
        yield
    finally:
        await client.aclose()
