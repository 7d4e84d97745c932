"""Shared fixtures: a real Temporal dev server, a runtime per session, unique task queues."""

from __future__ import annotations

import asyncio
import os
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

os.environ.setdefault("OPENAI_AGENTS_DISABLE_TRACING", "1")
os.environ.setdefault("OPENAI_API_KEY", "test-key-not-used")


from s3 import s3_env, s3_server  # noqa: F401  (fixtures: a real S3 server, started on demand)
from tether.adapters._connections import POOL
from tether.core import registry
from tether.core.devserver import EmbeddedEngine
from tether.core.runtime import AgentWorker, Runtime
from tether.core.store import BlobStore

HERE = Path(__file__).parent


@pytest.fixture(scope="session")
def state_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("tether-state")


@pytest.fixture(scope="session")
async def engine(state_dir: Path) -> AsyncIterator[EmbeddedEngine]:
    """One dev server for the session (the same code path as `tether dev`)."""
    eng = EmbeddedEngine(state_dir=state_dir, persist=False, ui=False)
    await eng.start()
    try:
        yield eng
    finally:
        eng.stop()


@pytest.fixture(scope="session")
def store(state_dir: Path) -> BlobStore:
    return BlobStore(state_dir / "store")


@pytest.fixture(scope="session")
async def runtime(engine: EmbeddedEngine, store: BlobStore) -> AsyncIterator[Runtime]:
    rt = await Runtime.start(address=engine.address, store=store)
    try:
        yield rt
    finally:
        await rt.close()


@pytest.fixture
def task_queue() -> str:
    """A task queue of this test's own, so workers of other tests never take its runs."""
    return f"test-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def worker_env(
    engine: EmbeddedEngine, store: BlobStore, task_queue: str
) -> Iterator[dict[str, str]]:
    """Environment for `tether worker` subprocesses of this test."""
    env = dict(os.environ)
    env.update(
        {
            "TEMPORAL_ADDRESS": engine.address,
            "TETHER_STORE": store.url,
            "TETHER_TASK_QUEUE": task_queue,
            "PYTHONPATH": os.pathsep.join([str(HERE), env.get("PYTHONPATH", "")]),
            # A crash in native code (once: SIGSEGV in `tether run`'s first model step, not
            # reproduced) leaves each thread's Python stack on stderr, which tests print.
            "PYTHONFAULTHANDLER": "1",
        }
    )
    yield env


@pytest.fixture(autouse=True)
def _fresh_registry() -> Iterator[None]:
    """Each test registers the agents it runs; none leak into the next test."""
    registry.clear()
    yield
    registry.clear()


@pytest.fixture
async def worker(runtime: Runtime, task_queue: str) -> AsyncIterator[AgentWorker]:
    """An in-process worker on this test's task queue (MCP connections closed after it)."""
    watchdog: asyncio.Task[None] | None = None
    try:
        async with runtime.worker(task_queue=task_queue) as w:
            yield w
            watchdog = asyncio.create_task(_dump_tasks_after(60.0))
    finally:
        if watchdog is not None:
            watchdog.cancel()
    await POOL.close()


async def _dump_tasks_after(seconds: float) -> None:
    """Print every asyncio task's stack when a worker's shutdown takes ``seconds`` (a hung
    teardown otherwise shows only threads, not what the event loop waits for)."""
    await asyncio.sleep(seconds)
    for task in asyncio.all_tasks():
        print(f"--- {task.get_name()}: {task.get_coro()}", file=sys.stderr)
        task.print_stack(file=sys.stderr)
