"""The weather-alerts agent (Pydantic AI), made durable with Tether.

The same program as examples/openai_agents_weather.py, and the same commands:

    tether worker examples.pydantic_ai_weather:agent
    tether run examples.pydantic_ai_weather:agent "Any weather alerts in California?" \\
        --context '{"units": "metric"}'

or run this file, which hosts the agent in-process on the embedded engine:

    python examples/pydantic_ai_weather.py

The tool returns canned data so the example needs no network besides the model. Set
OPENAI_API_KEY for the real model, or OPENAI_BASE_URL for any OpenAI-compatible server.
"""

from __future__ import annotations

import asyncio
import sys
from dataclasses import dataclass

from pydantic_ai import Agent, RunContext

import tether

ALERTS = {
    "CA": "Heat Advisory for the Central Valley until 8 PM; Red Flag Warning in the hills.",
    "TX": "Flood Watch for the Gulf coast.",
}


@dataclass
class Settings:
    """Deps: handed to tools; they cross to workers once per run."""

    units: str = "metric"


agent = Agent(
    "openai:gpt-4o-mini",
    name="weather-pai",
    deps_type=Settings,
    instructions="You are a weather assistant. Use get_weather_alerts; answer briefly.",
)


@agent.tool
def get_weather_alerts(ctx: RunContext[Settings], state: str) -> str:
    """Active weather alerts for a US state, given its two-letter code (e.g. CA)."""
    return f"{ALERTS.get(state.upper(), 'No active alerts.')} (units: {ctx.deps.units})"


async def main() -> None:
    durable = tether.durable(agent)
    prompt = " ".join(sys.argv[1:]) or "Are there any weather alerts in California?"
    result = await durable.run(prompt, deps=Settings())
    print(result.output)
    await (await durable.runtime()).close()


if __name__ == "__main__":
    asyncio.run(main())
