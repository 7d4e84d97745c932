"""OpenAI Agents SDK agents that test workers host (models by name: the SDK's default
client reads OPENAI_BASE_URL, which tests point at the scripted model server)."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from agents import Agent, function_tool
from agents.mcp import MCPServerStdio


def record(tool: str, arg: str) -> None:
    """Append one execution to the file the test reads (counts survive a SIGKILL)."""
    path = os.environ.get("TETHER_TEST_CALLS")
    if path:
        with Path(path).open("a") as f:
            f.write(f"{tool}:{arg}\n")
            f.flush()
            os.fsync(f.fileno())


@function_tool
def get_weather_alerts(state: str) -> str:
    """Active weather alerts for a US state."""
    record("get_weather_alerts", state)
    time.sleep(float(os.environ.get("TETHER_TEST_TOOL_DELAY", "0")))
    return f"alerts for {state}: heat advisory"


weather = Agent(
    name="weather",
    instructions="Answer with the alerts.",
    tools=[get_weather_alerts],
    model="gpt-weather",
)

specialist = Agent(
    name="specialist",
    instructions="You answer alert questions.",
    tools=[get_weather_alerts],
    model="gpt-specialist",
)
triage = Agent(
    name="triage",
    instructions="Hand off to the specialist.",
    handoffs=[specialist],
    model="gpt-triage",
)

translator = Agent(name="translator", instructions="Translate to French.", model="gpt-translator")
orchestrator = Agent(
    name="orchestrator",
    instructions="Use the translator tool.",
    tools=[
        translator.as_tool(tool_name="translate", tool_description="Translate text to French."),
        get_weather_alerts,
    ],
    model="gpt-orchestrator",
)


def forecast_server(cache: bool = True) -> MCPServerStdio:
    """The test MCP server (tests/apps/mcp_server.py) over stdio, with this process's env."""
    script = str(Path(__file__).with_name("mcp_server.py"))
    params = {"command": sys.executable, "args": [script], "env": dict(os.environ)}
    return MCPServerStdio(params, name="forecasts", cache_tools_list=cache)  # type: ignore[arg-type]


forecaster = Agent(
    name="oa-forecaster",
    instructions="Use the forecast tool.",
    mcp_servers=[forecast_server()],
    model="gpt-oa-mcp",
)
