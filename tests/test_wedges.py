"""No wedged runs: each fault finishes the run or fails it clearly, in bounded time."""

from __future__ import annotations

import asyncio
import shutil
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from agents import Agent, OpenAIResponsesModel, function_tool
from openai import AsyncOpenAI

import tether
from tether.core.devserver import EmbeddedEngine
from tether.core.runtime import Runtime
from tether.core.store import BlobStore
from tether.errors import NoWorkerError, RunFailedError, StoreUnavailableError
from tether.testing import ScriptedModelServer, ToolCall, Turn, history_stats

pytestmark = pytest.mark.timeout(600)
BIG = 300 * 1024


def model(server: ScriptedModelServer, lane: str) -> OpenAIResponsesModel:
    client = AsyncOpenAI(base_url=server.base_url, api_key="test", max_retries=0)
    return OpenAIResponsesModel(model=lane, openai_client=client)


class FullDisk(BlobStore):
    """A store whose writes of large blobs fail (as on a full disk) until ``free()``."""

    def __init__(self, location: Path) -> None:
        super().__init__(location)
        self.full = True
        self.refused = 0

    def free(self) -> None:
        self.full = False

    async def put(self, data: bytes, ref: str | None = None) -> str:
        if self.full and len(data) > 100 * 1024:
            self.refused += 1
            raise StoreUnavailableError(self.name, "write", ref or "?", "No space left on device")
        return await super().put(data, ref)


async def test_a_full_disk_delays_the_run_and_never_reruns_the_tool(
    engine: EmbeddedEngine, tmp_path: Path, task_queue: str
) -> None:
    store = FullDisk(tmp_path / "store")
    runs: list[str] = []

    @function_tool
    def fetch_report(name: str) -> str:
        """A 300 KB report (kept in the store, not in the run's history)."""
        runs.append(name)
        return (f"{name}: nominal\n" * BIG)[:BIG]

    script = [
        Turn.tool_calls(ToolCall("fetch_report", {"name": "q3"})),
        Turn.text("all nominal"),
    ]
    runtime = await Runtime.start(address=engine.address, store=store)
    try:
        with ScriptedModelServer(script) as server:
            agent = Agent(name="full-disk", tools=[fetch_report], model=model(server, "gpt-fd"))
            durable = tether.durable(
                agent, runtime=runtime, task_queue=task_queue, local_worker=False
            )
            async with runtime.worker(task_queue=task_queue):
                handle = await durable.start("report?", id=f"full-{uuid.uuid4().hex[:6]}")
                loop = asyncio.get_running_loop()
                deadline = loop.time() + 120
                while store.refused < 3:  # the result's write failed, and was tried again
                    assert loop.time() < deadline, "the result was never written"
                    await asyncio.sleep(0.2)
                assert (await handle.describe()).status == "running"
                store.free()
                result = await asyncio.wait_for(handle.result(), 180)
        assert result.final_output == "all nominal"
        assert runs == ["q3"]  # the tool ran once; only its result's write was retried
        assert server.count() == 2
    finally:
        await runtime.close()


class HeldSegments(BlobStore):
    """A store whose transcript segment writes wait for ``release``, after refusing the
    first ``refuse`` of them (as a store that drops connections would)."""

    def __init__(self, location: Path, refuse: int = 0) -> None:
        super().__init__(location)
        self.release = asyncio.Event()
        self.refuse = refuse
        self.refused = 0
        self.held = 0

    async def put_segment(self, data: bytes) -> str:
        if self.refused < self.refuse:
            self.refused += 1
            raise StoreUnavailableError(self.name, "write", "segment", "connection reset")
        self.held += 1
        await self.release.wait()
        return await super().put_segment(data)


async def _two_turn_run(
    engine: EmbeddedEngine, store: BlobStore, task_queue: str, lane: str, watch: Any
) -> tuple[Any, ScriptedModelServer]:
    @function_tool
    def lookup(name: str) -> str:
        """A record."""
        return f"{name}: ok"

    script = [Turn.tool_calls(ToolCall("lookup", {"name": "a"})), Turn.text("done")]
    runtime = await Runtime.start(address=engine.address, store=store)
    try:
        with ScriptedModelServer(script) as server:
            agent = Agent(name=f"seg-{lane}", tools=[lookup], model=model(server, lane))
            durable = tether.durable(
                agent, runtime=runtime, task_queue=task_queue, local_worker=False
            )
            async with runtime.worker(task_queue=task_queue):
                handle = await durable.start("go", id=f"{lane}-{uuid.uuid4().hex[:6]}")
                await watch(server)
                result = await asyncio.wait_for(handle.result(), 180)
        return result, server
    finally:
        await runtime.close()


async def test_a_model_request_does_not_wait_for_its_transcript_write(
    engine: EmbeddedEngine, tmp_path: Path, task_queue: str
) -> None:
    store = HeldSegments(tmp_path / "store")

    async def watch(server: ScriptedModelServer) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 120
        while server.count() < 1:
            assert loop.time() < deadline, "the model was not asked while the write was held"
            await asyncio.sleep(0.05)
        # The provider has the request; the step's segment is still being written.
        assert store.held >= 1
        await asyncio.sleep(0.5)
        assert server.count() == 1  # the step waits for its write before it completes
        store.release.set()

    result, server = await _two_turn_run(engine, store, task_queue, "gpt-held", watch)
    assert result.final_output == "done"
    assert server.count() == 2


async def test_a_failed_transcript_write_is_retried_without_asking_the_model_again(
    engine: EmbeddedEngine, tmp_path: Path, task_queue: str
) -> None:
    store = HeldSegments(tmp_path / "store", refuse=2)
    store.release.set()

    async def watch(server: ScriptedModelServer) -> None:
        return None

    result, server = await _two_turn_run(engine, store, task_queue, "gpt-refused", watch)
    assert result.final_output == "done"
    assert store.refused == 2  # the first step's write failed twice, then was stored
    assert server.count() == 2  # one request per turn: the first was not sent again


async def test_a_lost_large_blob_fails_the_run_naming_blob_store_and_fix(
    engine: EmbeddedEngine, tmp_path: Path, task_queue: str
) -> None:
    """The store is deleted under a run whose history references a 300 KB tool result; a
    worker that must replay the run fails it with the fix instead of retrying its task."""

    @function_tool
    def fetch_report(name: str) -> str:
        """A 300 KB report."""
        return ("x" * BIG)[:BIG]

    script = [
        Turn.tool_calls(ToolCall("fetch_report", {"name": "q4"})),
        Turn.text("never reached", delay=30),
    ]
    path = tmp_path / "store"
    first = await Runtime.start(address=engine.address, store=BlobStore(path))
    with ScriptedModelServer(script) as server:
        agent = Agent(name="lost-blob", tools=[fetch_report], model=model(server, "gpt-lb"))
        durable = tether.durable(agent, runtime=first, task_queue=task_queue, local_worker=False)
        run_id = f"lost-{uuid.uuid4().hex[:6]}"
        try:
            async with first.worker(task_queue=task_queue):
                await durable.start("report?", id=run_id)
                loop = asyncio.get_running_loop()
                deadline = loop.time() + 120
                # The tool's result is recorded (a reference in history); model call 2 runs.
                while len((await history_stats(first.client, run_id)).completed()) < 2:
                    assert loop.time() < deadline
                    await asyncio.sleep(0.2)
        finally:
            await first.close()
        shutil.rmtree(path)
        second = await Runtime.start(address=engine.address, store=BlobStore(path))
        try:
            async with second.worker(task_queue=task_queue):
                began = time.monotonic()
                with pytest.raises(RunFailedError) as info:
                    await asyncio.wait_for(second_handle(second, run_id).result(), 120)
                assert time.monotonic() - began < 120
        finally:
            await second.close()
    text = str(info.value)
    assert "not in this worker's store" in text and path.as_uri() in text, text
    assert "TETHER_STORE" in text, text


def second_handle(runtime: Runtime, run_id: str) -> Any:
    return tether.RunHandle(runtime, run_id, None)


async def test_the_sdk_tool_timeout_tells_the_model_as_outside_temporal(
    runtime: Runtime, task_queue: str
) -> None:
    started: list[str] = []

    @function_tool(timeout=2)
    async def hangs(q: str) -> str:
        """A tool that never answers."""
        started.append(q)
        await asyncio.sleep(3600)
        return "never"

    script = [
        Turn.tool_calls(ToolCall("hangs", {"q": "x"})),
        Turn.text("the tool timed out, sorry"),
    ]
    with ScriptedModelServer(script) as server:
        agent = Agent(name="timeouts", tools=[hangs], model=model(server, "gpt-to"))
        durable = tether.durable(agent, runtime=runtime, task_queue=task_queue, local_worker=False)
        async with runtime.worker(task_queue=task_queue):
            result = await asyncio.wait_for(durable.run("go"), 120)
        assert result.final_output == "the tool timed out, sorry"
        told = server.requests[-1].body_text
        assert "timed out after 2 seconds" in told, told
    assert started == ["x"]


async def test_answers_and_pending_with_no_worker_return_at_once(
    runtime: Runtime, task_queue: str
) -> None:
    agent = Agent(name="nobody-home", model="gpt-none")
    durable = tether.durable(agent, runtime=runtime, task_queue=task_queue, local_worker=False)
    handle = await durable.start("hello", id=f"nobody-{uuid.uuid4().hex[:6]}")
    began = time.monotonic()
    with pytest.raises(NoWorkerError) as info:
        await handle.approve("call_1")
    with pytest.raises(NoWorkerError):
        await handle.pending()
    assert time.monotonic() - began < 60  # two calls, each waiting 10 s for a worker
    text = str(info.value)
    assert "no worker hosts agent 'nobody-home'" in text and "tether worker" in text, text
    assert "nothing was recorded" in text
    await handle.terminate()


async def test_tools_get_an_idempotency_key_shared_by_every_attempt(
    runtime: Runtime, task_queue: str
) -> None:
    keys: list[tuple[str, int]] = []

    @function_tool
    def charge(amount: int) -> str:
        """Charge a card (fails on its first attempt)."""
        step = tether.current_step()
        assert step is not None
        keys.append((step.idempotency_key, step.attempt))
        if len(keys) == 1:
            raise ConnectionError("payment service reset the connection")
        return "charged"

    script = [
        Turn.tool_calls(ToolCall("charge", {"amount": 5})),
        Turn.text("done"),
    ]
    run_id = f"pay-{uuid.uuid4().hex[:6]}"
    with ScriptedModelServer(script) as server:
        agent = Agent(name="payer", tools=[charge], model=model(server, "gpt-pay"))
        durable = tether.durable(agent, runtime=runtime, task_queue=task_queue, local_worker=False)
        async with runtime.worker(task_queue=task_queue):
            assert (await durable.run("pay", id=run_id)).final_output == "done"
    assert [a for _, a in keys] == [1, 2]
    assert keys[0][0] == keys[1][0]
    assert keys[0][0].startswith(f"{run_id}:call_")
