"""Connections a worker process keeps open between steps (MCP servers, for now).

Each connection is owned by a task of its own that opens it and later closes it, so setup
and teardown run in one task (as anyio's cancel scopes require) while any step's task uses
it. A step whose call fails because the connection broke drops it; the step's retry opens
a fresh one. Shared by the adapters; nothing here knows a framework.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable


class ConnectionPool:
    """Open connections keyed by the object they belong to (one per object per process)."""

    def __init__(self) -> None:
        self._held: dict[int, _Held] = {}

    async def ensure(
        self,
        owner: object,
        open: Callable[[], Awaitable[object]],
        close: Callable[[], Awaitable[object]],
        label: str,
    ) -> None:
        """Open ``owner``'s connection unless it is open already (then this costs nothing)."""
        held = self._held.get(id(owner))
        if held is None or held.closed or held.loop is not asyncio.get_running_loop():
            held = _Held(open, close, label)
            self._held[id(owner)] = held
        await held.ready()

    async def drop(self, owner: object) -> None:
        """Close ``owner``'s connection (it broke); the next :meth:`ensure` reopens it."""
        held = self._held.pop(id(owner), None)
        if held is not None and held.loop is asyncio.get_running_loop():
            await held.close()

    async def close(self) -> None:
        """Close every connection (a worker shutting down; tests)."""
        while self._held:
            _, held = self._held.popitem()
            if held.loop is asyncio.get_running_loop():
                await held.close()

    def __len__(self) -> int:
        """How many connections are open."""
        return sum(1 for h in self._held.values() if not h.closed)


class _Held:
    def __init__(
        self,
        open: Callable[[], Awaitable[object]],
        close: Callable[[], Awaitable[object]],
        label: str,
    ) -> None:
        self._open = open
        self._close = close
        self.loop = loop = asyncio.get_running_loop()
        self._ready: asyncio.Future[None] = loop.create_future()
        self._closing = asyncio.Event()
        self._task = loop.create_task(self._own(), name=f"tether-connection-{label}")

    @property
    def closed(self) -> bool:
        return self._task.done()

    async def _own(self) -> None:
        try:
            await self._open()
        except BaseException as exc:
            self._ready.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        self._ready.set_result(None)
        try:
            await self._closing.wait()
        finally:
            with contextlib.suppress(Exception):
                await self._close()

    async def ready(self) -> None:
        await asyncio.shield(self._ready)

    async def close(self) -> None:
        self._closing.set()
        with contextlib.suppress(Exception, asyncio.CancelledError):
            await self._task


def connection_lost(exc: BaseException) -> bool:
    """Whether ``exc`` says an MCP server's connection is gone (its process died, the network
    dropped), as opposed to an answer from the server: the step reconnects and retries."""
    try:
        from mcp.shared.exceptions import MCPError
        from mcp.types import CONNECTION_CLOSED
    except ImportError:  # pragma: no cover - no MCP client installed
        return False
    return isinstance(exc, MCPError) and exc.code == CONNECTION_CLOSED


POOL = ConnectionPool()
"""This worker process's open connections."""
