"""What following a run costs its history: Workflow Streams' long-poll updates against
Tether's query reads (``handle.events()``), and no follower at all.

    python bench/follow_history.py --steps 20 --step-seconds 1

Each run is an OpenAI Agents SDK agent on the scripted model server calling a tool
``--steps`` times (each tool call and model reply takes a while, so events trickle in as in
a real run). Printed per reader: the run's history events, its duration, and the events per
minute of following it beyond the unfollowed run's.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
import uuid
from datetime import timedelta

os.environ.setdefault("OPENAI_AGENTS_DISABLE_TRACING", "1")

import agents
from openai import AsyncOpenAI
from temporalio.contrib.workflow_streams import WorkflowStreamClient

import tether
from tether.core.devserver import EmbeddedEngine
from tether.core.events import EVENTS_TOPIC
from tether.core.runtime import Runtime
from tether.testing import ScriptedModelServer, ToolCall, Turn


async def one(durable: tether.DurableAgent, runtime: Runtime, reader: str) -> tuple[int, float]:
    start = time.monotonic()
    handle = await durable.start("go", id=f"follow-{reader}-{uuid.uuid4().hex[:6]}", max_turns=100)
    if reader == "updates":
        stream = WorkflowStreamClient.create(runtime.client, handle.id)
        async for item in stream.subscribe(EVENTS_TOPIC, poll_cooldown=timedelta(milliseconds=100)):
            if item.data["type"] in ("run.finished", "run.failed"):
                break
    elif reader == "queries":
        async for _ in handle.events():
            pass
    await handle.result()
    took = time.monotonic() - start
    history = await runtime.client.get_workflow_handle(handle.id).fetch_history()
    return len(history.events), took


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--step-seconds", type=float, default=1.0)
    args = parser.parse_args()
    delay = args.step_seconds / 2
    turns = [
        Turn.tool_calls(ToolCall("lookup", {"i": i}), delay=delay) for i in range(args.steps)
    ] + [Turn.text("done", delay=delay)]

    def lookup(i: int) -> str:
        """Look something up (slowly)."""
        time.sleep(delay)
        return f"item {i}"

    with ScriptedModelServer(turns) as server:
        client = AsyncOpenAI(base_url=server.base_url, api_key="t", max_retries=0)
        model = agents.OpenAIResponsesModel(model="gpt-bench", openai_client=client)
        agent = agents.Agent(name="bench-follow", model=model, tools=[agents.function_tool(lookup)])
        async with EmbeddedEngine(persist=False, ui=False) as engine:
            runtime = await Runtime.start(address=engine.address, task_queue="bench-follow")
            durable = tether.durable(agent, runtime=runtime, local_worker=True)
            results: dict[str, tuple[int, float]] = {}
            for reader in ("none", "updates", "queries"):
                server.reset()
                results[reader] = await one(durable, runtime, reader)
            await runtime.close()
    base, _ = results["none"]
    print(f"{'reader':<10} {'history events':>15} {'run s':>7} {'extra events/min':>17}")
    for reader, (events, took) in results.items():
        extra = (events - base) / took * 60
        print(f"{reader:<10} {events:>15} {took:>7.1f} {extra:>17.1f}")


if __name__ == "__main__":
    asyncio.run(main())
