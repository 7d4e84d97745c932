"""A refund agent whose refunds a person must approve, in both frameworks, with one API.

    tether worker examples.refund_approval:agent            # OpenAI Agents SDK
    tether run examples.refund_approval:agent "Refund order 42" --follow
    tether runs pending RUN        # in another shell: what the run waits for
    tether approve RUN CALL        # or: --deny --reason "..."

`pai_agent` is the same agent in Pydantic AI. Both can also ask a person a question
(`tether.ask_human`), answered with `tether approve RUN CALL --answer TEXT`. Set
OPENAI_API_KEY for the real model, or OPENAI_BASE_URL for any OpenAI-compatible server.
"""

from __future__ import annotations

import agents
import pydantic_ai

import tether


def _refund(order: int) -> str:
    return f"order {order} refunded"


@agents.function_tool(needs_approval=True)
def refund(order: int) -> str:
    """Refund an order. A person approves every refund."""
    return _refund(order)


agent = agents.Agent(
    name="refunds",
    instructions="Refund what the user asks for; ask a human when unsure.",
    tools=[refund, agents.function_tool(tether.ask_human)],
    model="gpt-4o",
)

pai_agent = pydantic_ai.Agent(
    "openai:gpt-4o",
    name="pai-refunds",
    instructions="Refund what the user asks for; ask a human when unsure.",
    tools=[tether.ask_human],
)


@pai_agent.tool_plain(requires_approval=True)
def pai_refund(order: int) -> str:
    """Refund an order. A person approves every refund."""
    return _refund(order)
