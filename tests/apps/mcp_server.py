"""A tiny stdio MCP server for tests: one tool, executions recorded to TETHER_TEST_CALLS.

Each start is recorded too (``start:<pid>``), so tests see how often a server was started.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from mcp.server.mcpserver import MCPServer

server = MCPServer("forecasts", instructions="Forecasts for cities.")


def record(entry: str) -> None:
    path = os.environ.get("TETHER_TEST_CALLS")
    if path:
        with Path(path).open("a") as f:
            f.write(entry + "\n")
            f.flush()
            os.fsync(f.fileno())


@server.tool()
def forecast(city: str) -> str:
    """Tomorrow's forecast for a city."""
    record(f"forecast:{city}")
    time.sleep(float(os.environ.get("TETHER_TEST_TOOL_DELAY", "0")))
    return f"{city}: sunny, 21C"


@server.tool()
def storm_warning(city: str) -> str:
    """Storm warnings for a city (the warning service is down: always an error)."""
    record(f"storm_warning:{city}")
    raise RuntimeError("the warning service is down")


if __name__ == "__main__":
    record(f"start:{os.getpid()}")
    server.run("stdio")
