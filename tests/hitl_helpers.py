"""Shared pieces of the human-in-the-loop, events and usage tests: one agent with a tool a
person must approve, built for either adapter against the scripted model server."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import agents
import pydantic_ai
from openai import AsyncOpenAI
from pydantic_ai.models.openai import OpenAIChatModel
from pydantic_ai.providers.openai import OpenAIProvider

import tether
from tether.core.runtime import Runtime
from tether.testing import ScriptedModelServer

ADAPTERS = ["openai_agents", "pydantic_ai"]


def client(server: ScriptedModelServer) -> AsyncOpenAI:
    # No client-side retries: a provider error must reach the step, which retries it.
    return AsyncOpenAI(base_url=server.base_url, api_key="t", max_retries=0)


def build_agent(
    adapter: str,
    server: ScriptedModelServer,
    name: str,
    tools: dict[str, Callable[..., Any]],
    *,
    approval: tuple[str, ...] = (),
    lane: str = "gpt-4o",
    human: Callable[..., Any] | None = None,
) -> Any:
    """An agent of ``adapter`` with plain-function ``tools`` (those in ``approval`` need a
    person's approval) and, optionally, a human-input tool."""
    if adapter == "openai_agents":
        oa_tools: list[Any] = [
            agents.function_tool(fn, name_override=tool_name, needs_approval=tool_name in approval)
            for tool_name, fn in tools.items()
        ]
        if human is not None:
            oa_tools.append(agents.function_tool(human))
        model = agents.OpenAIResponsesModel(model=lane, openai_client=client(server))
        return agents.Agent(name=name, model=model, tools=oa_tools)
    provider = OpenAIProvider(openai_client=client(server))
    pai_tools: list[Any] = [
        pydantic_ai.Tool(fn, name=tool_name, requires_approval=tool_name in approval)
        for tool_name, fn in tools.items()
    ]
    if human is not None:
        pai_tools.append(human)
    return pydantic_ai.Agent(OpenAIChatModel(lane, provider=provider), name=name, tools=pai_tools)


def output_of(result: Any) -> Any:
    return getattr(result, "final_output", getattr(result, "output", result))


def wrap(agent: Any, runtime: Runtime, task_queue: str) -> tether.DurableAgent:
    return tether.durable(agent, runtime=runtime, task_queue=task_queue, local_worker=False)


async def wait_pending(
    handle: tether.RunHandle, count: int = 1, timeout: float = 30
) -> list[tether.PendingRequest]:
    """Poll until the run waits for ``count`` requests."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        pending = await handle.pending()
        if len(pending) >= count:
            return pending
        if loop.time() > deadline:
            raise AssertionError(f"run {handle.id} waits for {pending} after {timeout}s")
        await asyncio.sleep(0.05)


async def all_events(handle: tether.RunHandle, after: int | None = None) -> list[tether.RunEvent]:
    return [e async for e in handle.events(after=after, poll_interval=0.05)]
