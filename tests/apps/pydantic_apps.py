"""Pydantic AI agents that test workers host (models by name: `openai:<lane>` reads
OPENAI_BASE_URL, which tests point at the scripted model server)."""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from fastmcp.client.transports import StdioTransport
from pydantic import BaseModel
from pydantic_ai import Agent, ModelRetry, RunContext
from pydantic_ai.mcp import MCPToolset

from apps.openai_apps import record


@dataclass
class Deps:
    user: str


class Answer(BaseModel):
    summary: str
    states: list[str]


weather = Agent("openai:gpt-pai-weather", name="pai-weather", deps_type=Deps)


@weather.tool
def get_weather_alerts(ctx: RunContext[Deps], state: str) -> str:
    """Active weather alerts for a US state."""
    record("get_weather_alerts", state)
    time.sleep(float(os.environ.get("TETHER_TEST_TOOL_DELAY", "0")))
    return f"alerts for {state} (asked by {ctx.deps.user}): heat advisory"


structured = Agent(
    "openai:gpt-pai-structured", name="pai-structured", deps_type=Deps, output_type=Answer
)


@structured.tool
def lookup(ctx: RunContext[Deps], state: str) -> str:
    """Looks a state up; the first call for a state asks the model to retry."""
    record("lookup", f"{state}-retry{ctx.retry}")
    if ctx.retry == 0:
        raise ModelRetry(f"use the two-letter code, not {state!r}")
    return f"{state}: quiet"


def forecast_server(id: str = "forecasts", include_instructions: bool = False) -> MCPToolset:
    """The test MCP server (tests/apps/mcp_server.py) over stdio, with this process's env."""
    transport = StdioTransport(
        sys.executable, [str(Path(__file__).with_name("mcp_server.py"))], env=dict(os.environ)
    )
    return MCPToolset(transport, id=id, include_instructions=include_instructions)


forecaster = Agent(
    "openai:gpt-pai-mcp", name="pai-mcp", deps_type=Deps, toolsets=[forecast_server()]
)
