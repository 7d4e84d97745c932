"""Agents for the shared-store tests: a long tool loop, and a tool with a 300 KB result."""

from __future__ import annotations

import os
import time

from agents import Agent, function_tool

from apps.openai_apps import record

REPORT_BYTES = 300 * 1024


@function_tool
def lookup(n: int) -> str:
    """Look up item n."""
    record("lookup", str(n))
    time.sleep(float(os.environ.get("TETHER_TEST_TOOL_DELAY", "0")))
    return f"item {n}: " + "x" * 200


@function_tool
def fetch_report(name: str) -> str:
    """Fetch a large report (300 KB: stored outside the run's history)."""
    record("fetch_report", name)
    time.sleep(float(os.environ.get("TETHER_TEST_TOOL_DELAY", "0")))
    line = f"{name}: all systems nominal\n"
    return (line * (REPORT_BYTES // len(line) + 1))[:REPORT_BYTES]


looper = Agent(
    name="looper",
    instructions="Look up every item, then summarize.",
    tools=[lookup],
    model="gpt-looper",
)

reporter = Agent(
    name="reporter",
    instructions="Fetch the report, then summarize it.",
    tools=[fetch_report],
    model="gpt-reporter",
)
