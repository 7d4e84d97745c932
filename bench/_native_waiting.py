"""The native side of ``waiting_runs_memory.py``: Temporal's own OpenAI Agents plugin hosting
the same refund agent, approvals written the way that integration's users write them.

Runs in bench/.venv-native (``bench/setup_native.sh``): a worker process only. The driver
starts ``bench.NativeRefunds`` runs, reads the ``pending`` query and sends the ``approve``
update by name. The refund tool needs approval (the SDK's ``needs_approval``); the run waits
for the update on each interruption (``workflow.wait_condition``), as the SDK's
human-in-the-loop guide does in a workflow, and the approved tool's body runs as an activity
(durable, as Tether's tool steps are).
"""

from __future__ import annotations

import argparse
import asyncio
from datetime import timedelta

from agents import Agent, Runner, function_tool
from temporalio import activity, workflow
from temporalio.client import Client
from temporalio.contrib.openai_agents import ModelActivityParameters, OpenAIAgentsPlugin
from temporalio.worker import Worker


@activity.defn
async def refund_order(order: int) -> str:
    return f"order {order} refunded"


@function_tool(needs_approval=True)
async def refund(order: int) -> str:
    """Refund an order (a person must approve)."""
    return await workflow.execute_activity(
        refund_order, order, start_to_close_timeout=timedelta(seconds=30)
    )


@workflow.defn(name="bench.NativeRefunds")
class NativeRefunds:
    def __init__(self) -> None:
        self.pending: list[str] = []
        self.answers: dict[str, bool] = {}

    @workflow.run
    async def run(self, prompt: str) -> str:
        agent = Agent(
            name="refunds",
            instructions="Refund what the user asks for.",
            tools=[refund],
            model="gpt-4o",
        )
        result = await Runner.run(agent, prompt)
        while result.interruptions:
            state = result.to_state()
            for item in result.interruptions:
                raw = item.raw_item
                call_id = str(raw.get("call_id") if isinstance(raw, dict) else raw.call_id)
                self.pending.append(call_id)
                await workflow.wait_condition(lambda c=call_id: c in self.answers)  # type: ignore[misc]
                self.pending.remove(call_id)
                if self.answers[call_id]:
                    state.approve(item)
                else:
                    state.reject(item)
            result = await Runner.run(agent, state)
        return str(result.final_output)

    @workflow.query(name="pending")
    def get_pending(self) -> list[str]:
        return list(self.pending)

    @workflow.update(name="approve")
    def approve(self, call_id: str) -> bool:
        self.answers[call_id] = True
        return True

    @approve.validator
    def _known(self, call_id: str) -> None:
        if call_id not in self.pending:
            raise ValueError(f"not waiting for {call_id!r}")


async def main(args: argparse.Namespace) -> None:
    plugin = OpenAIAgentsPlugin(
        model_params=ModelActivityParameters(start_to_close_timeout=timedelta(seconds=60))
    )
    client = await Client.connect(args.address, plugins=[plugin])
    cache = {} if args.max_cached_runs is None else {"max_cached_workflows": args.max_cached_runs}
    async with Worker(
        client, task_queue=args.queue, workflows=[NativeRefunds], activities=[refund_order], **cache
    ):
        print("ready", flush=True)
        await asyncio.Event().wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--address", required=True)
    parser.add_argument("--queue", required=True)
    parser.add_argument("--max-cached-runs", type=int, default=None, help="default: Temporal's")
    asyncio.run(main(parser.parse_args()))
