"""Agents with a tool a person must approve, for both adapters (worker subprocesses host
them; models by name read OPENAI_BASE_URL, which tests point at the scripted server)."""

from __future__ import annotations

import agents
import pydantic_ai

import tether
from apps.openai_apps import record


@agents.function_tool(needs_approval=True)
def refund(order: int) -> str:
    """Refund an order (a person must approve)."""
    record("refund", str(order))
    return f"order {order} refunded"


openai_refunds = agents.Agent(
    name="refunds",
    instructions="Refund what the user asks for.",
    tools=[refund, agents.function_tool(tether.ask_human)],
    model="gpt-4o",
)

pai_refunds = pydantic_ai.Agent("openai:gpt-4o", name="pai-refunds", tools=[tether.ask_human])


@pai_refunds.tool_plain(requires_approval=True)
def pai_refund(order: int) -> str:
    """Refund an order (a person must approve)."""
    record("refund", str(order))
    return f"order {order} refunded"
