"""tether.contrib.temporal: Tether agents as child runs of a user's own Temporal workflows,
on the user's own client and worker (real dev server, scripted model server)."""

from __future__ import annotations

import uuid
from typing import Any

from agents import Agent, OpenAIResponsesModel, function_tool
from openai import AsyncOpenAI
from temporalio.client import Client
from temporalio.worker import Worker

from apps.user_workflows import SupportTicket, Ticket, TicketReply, lookup_customer
from tether.contrib.temporal import TetherPlugin
from tether.core.devserver import EmbeddedEngine
from tether.core.store import BlobStore
from tether.testing import ScriptedModelServer, ToolCall, Turn


@function_tool
def get_weather_alerts(state: str) -> str:
    """Active weather alerts for a US state."""
    return f"alerts for {state}: heat advisory"


def oa_agent(server: ScriptedModelServer, name: str = "support-oa") -> Agent[Any]:
    client = AsyncOpenAI(base_url=server.base_url, api_key="t", max_retries=0)
    return Agent(
        name=name,
        instructions="Answer with the alerts.",
        tools=[get_weather_alerts],
        model=OpenAIResponsesModel(model="gpt-support", openai_client=client),
    )


async def user_client(engine: EmbeddedEngine, plugin: TetherPlugin) -> Client:
    return await Client.connect(engine.address, plugins=[plugin])


async def test_user_workflow_runs_an_openai_agent_as_a_child(
    engine: EmbeddedEngine, store: BlobStore, task_queue: str
) -> None:
    script = [
        Turn.tool_calls(ToolCall("get_weather_alerts", {"state": "CA"})),
        Turn.text("CA has a heat advisory."),
    ]
    with ScriptedModelServer(script) as server:
        agent = oa_agent(server)
        client = await user_client(engine, TetherPlugin(agents=[agent], store=store))
        async with Worker(
            client,
            task_queue=task_queue,
            workflows=[SupportTicket],
            activities=[lookup_customer],
        ):
            parent = f"ticket-{uuid.uuid4().hex[:8]}"
            reply = await client.execute_workflow(
                SupportTicket.run,
                Ticket(text="alerts?", agent="support-oa"),
                id=parent,
                task_queue=task_queue,
                result_type=TicketReply,
            )
    assert reply == TicketReply("customer-7", "CA has a heat advisory.", f"{parent}/agent-1")
