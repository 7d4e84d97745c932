"""The native side of ``openai_agents_vs_native.py``: Temporal's own OpenAI Agents plugin.

Runs in its own virtualenv (``bench/setup_native.sh``), because ``temporalio-openai-agents``
pins openai-agents < 0.23 and cannot be installed beside the version Tether supports. It
connects to the driver's engine and scripted model server, runs the same N-step tool loop
with tools as activities (``activity_as_tool``, the integration's documented way to make a
tool durable), and prints one JSON line per run for the driver to read.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import uuid
from datetime import timedelta

from agents import Agent, Runner
from temporalio import activity, workflow
from temporalio.client import Client
from temporalio.contrib.openai_agents import ModelActivityParameters, OpenAIAgentsPlugin
from temporalio.contrib.openai_agents.workflow import activity_as_tool
from temporalio.worker import Worker

with workflow.unsafe.imports_passed_through():
    from tether.testing._history import history_stats

RESULT_BYTES = 2000


@activity.defn
async def lookup(i: int) -> str:
    """A record of RESULT_BYTES bytes."""
    return f"record {i}: " + "x" * RESULT_BYTES


@workflow.defn(name="bench.NativeOpenAILoop")
class NativeLoop:
    @workflow.run
    async def run(self, model: str) -> str:
        agent = Agent(
            name="native",
            instructions="Look the records up.",
            model=model,
            tools=[activity_as_tool(lookup, start_to_close_timeout=timedelta(seconds=30))],
        )
        result = await Runner.run(agent, "go", max_turns=100_000)
        return str(result.final_output)


async def main(args: argparse.Namespace) -> None:
    global RESULT_BYTES
    RESULT_BYTES = args.result_bytes
    plugin = OpenAIAgentsPlugin(
        model_params=ModelActivityParameters(
            start_to_close_timeout=timedelta(seconds=60),
            heartbeat_timeout=timedelta(seconds=5) if args.heartbeat else None,
        )
    )
    client = await Client.connect(args.address, plugins=[plugin])
    queue = f"bench-native-oa-{uuid.uuid4().hex[:6]}"
    async with Worker(client, task_queue=queue, workflows=[NativeLoop], activities=[lookup]):
        for _ in range(args.repeat):
            run_id = f"native-oa-{uuid.uuid4().hex[:8]}"
            t = time.perf_counter()
            await client.execute_workflow(NativeLoop.run, args.model, id=run_id, task_queue=queue)
            wall = time.perf_counter() - t
            stats = await history_stats(client, run_id)
            inputs = [s.input_bytes for s in stats.steps if "invoke_model" in s.name]
            row = {"s": wall, "events": stats.events, "bytes": stats.total_bytes}
            row.update({f"in@{k}": inputs[k - 1] for k in (1, 10, 50) if k <= len(inputs)})
            row[f"in@{len(inputs)}"] = inputs[-1]
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--address", required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--result-bytes", type=int, default=RESULT_BYTES)
    parser.add_argument("--heartbeat", action="store_true")
    asyncio.run(main(parser.parse_args()))
