"""A Tether agent inside your own Temporal workflow (plain temporalio code).

`SupportTicket` is an ordinary Temporal workflow: it runs an activity of its own, then asks
the weather agent of examples/openai_agents_weather.py, which Tether runs durably as a child
workflow (`tether.AgentRun`) on the same worker. Tether joins the user's own client and
worker through `TetherPlugin`; nothing else about them changes.

    python examples/temporal_workflow.py

runs it on an embedded engine. Without OPENAI_API_KEY the model is Tether's scripted
OpenAI-compatible server (tether.testing), so it needs no key and no network. Set
OPENAI_API_KEY for the real model; TEMPORAL_ADDRESS to use your own Temporal server.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
import tempfile
import uuid
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from temporalio import activity, workflow
from temporalio.client import Client
from temporalio.worker import Worker

from tether.contrib.temporal import TetherPlugin, run_agent

with workflow.unsafe.imports_passed_through():
    # The agent object must be the worker's own (the plugin registers it), not a copy the
    # workflow sandbox would build by re-running its module.
    sys.path.insert(0, str(Path(__file__).parent))
    from openai_agents_weather import agent

TASK_QUEUE = "support"


@dataclass
class Reply:
    ticket: str
    customer: str
    answer: str
    agent_run: str


@activity.defn
async def look_up_customer(ticket: str) -> str:
    """An ordinary activity of the user's (a CRM lookup, say)."""
    return "Ada (Sacramento, CA)"


@workflow.defn
class SupportTicket:
    @workflow.run
    async def run(self, ticket: str) -> Reply:
        customer = await workflow.execute_activity(
            look_up_customer, ticket, start_to_close_timeout=timedelta(seconds=10)
        )
        # One call: a durable agent run as a child workflow. Its id defaults to one derived
        # from this workflow's (".../agent-1"); any deterministic id will do.
        run_id = f"{workflow.info().workflow_id}/weather"
        result = await run_agent(agent, f"Customer {customer} asks: {ticket}", id=run_id)
        return Reply(ticket, customer, answer=result.final_output, agent_run=run_id)


def scripted_model() -> Any:
    """The scripted model: one tool call, then the answer (used without OPENAI_API_KEY)."""
    from tether.testing import ScriptedModelServer, ToolCall, Turn

    return ScriptedModelServer(
        [
            Turn.tool_calls(ToolCall("get_weather_alerts", {"state": "CA"})),
            Turn.text("Yes: a Heat Advisory for the Central Valley until 8 PM."),
        ]
    )


async def main() -> None:
    from agents import set_default_openai_client
    from openai import AsyncOpenAI

    from tether import EmbeddedEngine

    ticket = " ".join(sys.argv[1:]) or "Will the heat affect my delivery today?"
    home = Path(tempfile.mkdtemp(prefix="tether-temporal-"))
    server = None if os.environ.get("OPENAI_API_KEY") else scripted_model()
    if server is not None:
        server.start()
        set_default_openai_client(AsyncOpenAI(base_url=server.base_url, api_key="scripted"))
    engine: EmbeddedEngine | None = None
    address = os.environ.get("TEMPORAL_ADDRESS")
    if address is None:
        engine = EmbeddedEngine(state_dir=home, persist=False, ui=False)
        await engine.start()
        address = engine.address
    try:
        # The user's own client and worker; the plugin adds Tether to both.
        plugin = TetherPlugin(agents=[agent], store=home / "store")
        client = await Client.connect(address, plugins=[plugin])
        async with Worker(
            client,
            task_queue=TASK_QUEUE,
            workflows=[SupportTicket],
            activities=[look_up_customer],
            sticky_queue_schedule_to_start_timeout=timedelta(seconds=3),
        ):
            reply = await client.execute_workflow(
                SupportTicket.run,
                ticket,
                id=f"ticket-{uuid.uuid4().hex[:8]}",
                task_queue=TASK_QUEUE,
            )
        print(f"{reply.customer}: {reply.ticket}")
        print(f"  agent run {reply.agent_run}")
        print(f"  answer    {reply.answer}")
    finally:
        if engine is not None:
            engine.stop()
        if server is not None:
            server.stop()
        shutil.rmtree(home, ignore_errors=True)  # the scratch store of this demo run


if __name__ == "__main__":
    asyncio.run(main())
