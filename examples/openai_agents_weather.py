"""The weather-alerts agent (OpenAI Agents SDK), made durable with Tether.

Host it and run it from two shells:

    tether worker examples.openai_agents_weather:agent
    tether run examples.openai_agents_weather:agent "Any weather alerts in California?"

or run this file, which hosts the agent in-process on the embedded engine:

    python examples/openai_agents_weather.py

The tools return canned data so the example needs no network besides the model. Set
OPENAI_API_KEY for the real model, or OPENAI_BASE_URL for any OpenAI-compatible server.
"""

from __future__ import annotations

import asyncio
import sys

from agents import Agent, function_tool

import tether

ALERTS = {
    "CA": "Heat Advisory for the Central Valley until 8 PM; Red Flag Warning in the hills.",
    "TX": "Flood Watch for the Gulf coast.",
}


@function_tool
def get_weather_alerts(state: str) -> str:
    """Active weather alerts for a US state, given its two-letter code (e.g. CA)."""
    return ALERTS.get(state.upper(), "No active alerts.")


agent = Agent(
    name="weather",
    instructions="You are a weather assistant. Use get_weather_alerts; answer briefly.",
    tools=[get_weather_alerts],
    model="gpt-4o-mini",
)


async def main() -> None:
    durable = tether.durable(agent)
    prompt = " ".join(sys.argv[1:]) or "Are there any weather alerts in California?"
    result = await durable.run(prompt)
    print(result.final_output)
    await (await durable.runtime()).close()


if __name__ == "__main__":
    asyncio.run(main())
