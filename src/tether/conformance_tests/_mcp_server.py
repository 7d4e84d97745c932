"""The suite's stdio MCP server: one tool, ``forecast(arg)``, each execution recorded in the
scenario's calls file (``TETHER_CONFORMANCE_CALLS``), as the kit's own tools are.

Kits start it with :meth:`tether.conformance_tests.kit.KitEnv.mcp_command`.
"""

from __future__ import annotations

import os
from pathlib import Path

from mcp.server.mcpserver import MCPServer

from tether.conformance_tests.kit import _record
from tether.conformance_tests.scenarios import MCP_TOOL

server = MCPServer("conformance", instructions="Forecasts, for the conformance suite.")


@server.tool()
def forecast(arg: str) -> str:
    """Tomorrow's forecast for a place."""
    path = os.environ.get("TETHER_CONFORMANCE_CALLS")
    if path:
        _record(Path(path), MCP_TOOL, arg, "ok")
    return f"{MCP_TOOL}({arg}): ok"


if __name__ == "__main__":
    server.run("stdio")
