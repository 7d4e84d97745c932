"""A user's own Temporal code (plain temporalio) that calls Tether agents as child runs."""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from temporalio import activity, workflow

from tether.contrib.temporal import run_agent, start_agent


@dataclass
class Ticket:
    text: str
    agent: str
    customer_id: int = 7
    deps_user: str | None = None
    max_turns: int | None = None


@dataclass
class TicketReply:
    customer: str
    answer: str
    run_id: str


def _record(line: str) -> None:
    path = os.environ.get("TETHER_TEST_CALLS")
    if path:
        with Path(path).open("a") as f:
            f.write(line + "\n")


@activity.defn
async def lookup_customer(customer_id: int) -> str:
    """The user's own activity (counts its executions in TETHER_TEST_CALLS)."""
    await asyncio.to_thread(_record, f"lookup_customer:{customer_id}")
    return f"customer-{customer_id}"


@workflow.defn
class SupportTicket:
    """Looks the customer up (an ordinary activity), then asks a Tether agent."""

    @workflow.run
    async def run(self, ticket: Ticket) -> TicketReply:
        customer = await workflow.execute_activity(
            lookup_customer, ticket.customer_id, start_to_close_timeout=timedelta(seconds=30)
        )
        options: dict[str, Any] = {}
        if ticket.max_turns is not None:
            options["max_turns"] = ticket.max_turns
        deps = {"user": ticket.deps_user} if ticket.deps_user else None
        child = await start_agent(ticket.agent, f"{customer}: {ticket.text}", deps=deps, **options)
        result = await child.result()
        answer = result.final_output if hasattr(result, "final_output") else result.output
        return TicketReply(customer=customer, answer=str(answer), run_id=child.id)


@workflow.defn
class TwoAgents:
    """Two agent runs in one workflow (ids agent-1, agent-2), the second with run_agent."""

    @workflow.run
    async def run(self, agent: str) -> list[str]:
        first = await start_agent(agent, "first")
        out = [first.id, (await first.result()).final_output]
        second = await run_agent(agent, "second")
        out.append(second.final_output)
        return out
