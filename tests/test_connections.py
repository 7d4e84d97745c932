"""The worker's connection pool: one connection per owner, opened and closed in a task of
its own, reopened after a drop or a failed open."""

from __future__ import annotations

import asyncio

import pytest

from tether.adapters._connections import ConnectionPool


class Server:
    def __init__(self, fail_opens: int = 0) -> None:
        self.opens = 0
        self.closes = 0
        self.fail_opens = fail_opens
        self.tasks: list[asyncio.Task[object] | None] = []

    async def open(self) -> None:
        self.tasks.append(asyncio.current_task())
        self.opens += 1
        if self.opens <= self.fail_opens:
            raise ConnectionError("server not up yet")

    async def close(self) -> None:
        self.tasks.append(asyncio.current_task())
        self.closes += 1


async def test_one_connection_per_owner_reused_then_reopened_after_a_drop() -> None:
    pool = ConnectionPool()
    server = Server()
    for _ in range(3):
        await asyncio.gather(
            *(pool.ensure(server, server.open, server.close, "s") for _ in range(4))
        )
    assert (server.opens, server.closes, len(pool)) == (1, 0, 1)
    await pool.drop(server)
    assert (server.closes, len(pool)) == (1, 0)
    await pool.ensure(server, server.open, server.close, "s")
    await pool.close()
    assert (server.opens, server.closes, len(pool)) == (2, 2, 0)
    # Opened and closed in the same (owner) task, never in the callers' task.
    assert server.tasks[0] is server.tasks[1] is not asyncio.current_task()


async def test_a_failed_open_is_raised_to_the_step_and_retried_by_the_next() -> None:
    pool = ConnectionPool()
    server = Server(fail_opens=1)
    with pytest.raises(ConnectionError, match="not up yet"):
        await pool.ensure(server, server.open, server.close, "s")
    await pool.ensure(server, server.open, server.close, "s")
    assert (server.opens, len(pool)) == (2, 1)
    await pool.close()
