"""A worker of Temporal's own OpenAI Agents integration (OpenAIAgentsPlugin), with its
defaults, as `bench/recovery.py` starts and kills it. Runs in bench/.venv-native
(bench/setup_native.sh: the integration pins openai-agents < 0.23):

    bench/.venv-native/bin/python bench/_recovery_native_oa.py --address HOST:PORT --queue Q
"""

from __future__ import annotations

import argparse
import asyncio
from datetime import timedelta

from agents import Agent, Runner
from temporalio import activity, workflow
from temporalio.client import Client
from temporalio.contrib.openai_agents import OpenAIAgentsPlugin
from temporalio.contrib.openai_agents.workflow import activity_as_tool
from temporalio.worker import Worker


@activity.defn
async def lookup(i: int) -> str:
    """A record."""
    return f"record {i}"


@workflow.defn(name="bench.RecoveryNativeOA")
class RecoveryNativeOA:
    @workflow.run
    async def run(self, prompt: str) -> str:
        agent = Agent(
            name="native-recovery-oa",
            model="bench-recovery",
            tools=[activity_as_tool(lookup, start_to_close_timeout=timedelta(seconds=30))],
        )
        return str((await Runner.run(agent, prompt)).final_output)


async def main(address: str, queue: str) -> None:
    client = await Client.connect(address, plugins=[OpenAIAgentsPlugin()])
    worker = Worker(client, task_queue=queue, workflows=[RecoveryNativeOA], activities=[lookup])
    await worker.run()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--address", required=True)
    parser.add_argument("--queue", required=True)
    args = parser.parse_args()
    asyncio.run(main(args.address, args.queue))
