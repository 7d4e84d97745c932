"""A worker of Pydantic AI's own Temporal integration (TemporalDurability), with its
defaults, as `bench/recovery.py` starts and kills it:

    python bench/_recovery_native_pai.py --address HOST:PORT --queue QUEUE
"""

from __future__ import annotations

import argparse
import asyncio

from pydantic_ai import Agent
from pydantic_ai.durable_exec.temporal import (
    PydanticAIPlugin,
    PydanticAIWorkflow,
    TemporalDurability,
)
from pydantic_ai.models.openai import OpenAIChatModel
from pydantic_ai.providers.openai import OpenAIProvider
from temporalio import workflow
from temporalio.client import Client
from temporalio.worker import Worker

# The model built here, not from "openai:..." at the first run: inferred inside the workflow,
# its lazy import of openai raced and failed the run's task once.
model = OpenAIChatModel("bench-recovery", provider=OpenAIProvider())
agent: Agent[None, str] = Agent(
    model, name="native-recovery-pai", capabilities=[TemporalDurability()]
)


@agent.tool_plain
def lookup(i: int) -> str:
    """A record."""
    return f"record {i}"


@workflow.defn(name="bench.RecoveryNativePAI", sandboxed=False)
class RecoveryNativePAI(PydanticAIWorkflow):
    __pydantic_ai_agents__ = [agent]

    @workflow.run
    async def run(self, prompt: str) -> str:
        return (await agent.run(prompt)).output


async def main(address: str, queue: str) -> None:
    client = await Client.connect(address, plugins=[PydanticAIPlugin()])
    await Worker(client, task_queue=queue, workflows=[RecoveryNativePAI]).run()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--address", required=True)
    parser.add_argument("--queue", required=True)
    args = parser.parse_args()
    asyncio.run(main(args.address, args.queue))
