"""A program run as `python script_app.py FRAMEWORK RUN_ID`: its deps / context types live in
``__main__``. It starts a run that a `tether worker script_app:...` subprocess hosts, and
prints the result."""

from __future__ import annotations

import asyncio
import sys
from dataclasses import dataclass

import pydantic_ai
from agents import Agent, RunContextWrapper, function_tool
from pydantic_ai import RunContext

import tether


@dataclass
class Deps:
    user: str


pai_agent = pydantic_ai.Agent("openai:gpt-script-pai", name="script-pai", deps_type=Deps)


@pai_agent.tool
def whoami(ctx: RunContext[Deps]) -> str:
    """The user asking."""
    return f"you are {ctx.deps.user} ({type(ctx.deps).__module__})"


@function_tool
def who(ctx: RunContextWrapper[Deps]) -> str:
    """The user asking."""
    return f"you are {ctx.context.user} ({type(ctx.context).__module__})"


oa_agent = Agent(name="script-oa", tools=[who], model="gpt-script-oa")


async def main(framework: str, run_id: str) -> None:
    agent: object = pai_agent if framework == "pydantic_ai" else oa_agent
    durable = tether.durable(agent, local_worker=False)
    result = await durable.run("who am I?", id=run_id, deps=Deps(user="ada"))
    print(getattr(result, "output", getattr(result, "final_output", result)))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
