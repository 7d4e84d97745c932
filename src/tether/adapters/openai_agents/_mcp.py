"""MCP servers made durable for the OpenAI Agents SDK, through the SDK's own ``MCPServer`` class.

Run side: each agent's ``mcp_servers`` are replaced, in the run's proxy of the agent, by
:class:`StepMCPServer` stand-ins. The SDK turns their tools into function tools as usual
(names, strict schemas, approval policy, failure handler, guardrails all apply unchanged);
listing the tools is the ``openai_agents.mcp_list_tools`` step (once per run when the server
caches its tool list, else once per turn, as the SDK would ask the server) and each call is an
``openai_agents.mcp_call_tool`` step. A replay reads both from history.

Worker side: the step finds the real server by agent and server name and reaches it through
the worker's connection pool (:mod:`tether.adapters._connections`): connected on first use,
kept for later steps and runs. Users do not ``async with`` their servers for durable runs.
"""

from __future__ import annotations

from typing import Any

from agents import Agent, RunContextWrapper
from agents.exceptions import UserError
from agents.mcp import MCPServer
from mcp.shared.exceptions import MCPError
from mcp.types import CallToolResult, GetPromptResult, ListPromptsResult
from mcp.types import Tool as MCPTool
from pydantic import TypeAdapter
from pydantic_core import to_jsonable_python

from tether.adapters._connections import POOL, connection_lost
from tether.core.contract import (
    TOOL_POLICY,
    RunSession,
    StepContext,
    StepDefinition,
    StepError,
    StepOutcome,
)
from tether.errors import RetryableError

MCP_LIST_STEP = "openai_agents.mcp_list_tools"
MCP_CALL_STEP = "openai_agents.mcp_call_tool"

_tools: TypeAdapter[list[MCPTool]] = TypeAdapter(list[MCPTool])


def check_agent(agent: Agent[Any]) -> list[str]:
    """What stops ``agent``'s MCP servers from running durably (empty when nothing)."""
    names = [s.name for s in agent.mcp_servers]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        return [
            f"agent {agent.name!r}: several MCP servers are named {dupes} (steps find a server "
            "on a worker by its name). Fix: pass name='...' to each server"
        ]
    return []


# -- run side --------------------------------------------------------------------------------


def stand_ins(session: RunSession, agent: Agent[Any]) -> list[MCPServer]:
    """Step-backed stand-ins for ``agent``'s MCP servers (one run's)."""
    return [StepMCPServer(session, agent.name, server) for server in agent.mcp_servers]


class StepMCPServer(MCPServer):
    """Stands in for an MCP server in a run: listing its tools and calling one are steps."""

    def __init__(self, session: RunSession, agent_name: str, real: MCPServer) -> None:
        super().__init__(
            use_structured_content=real.use_structured_content,
            tool_meta_resolver=real.tool_meta_resolver,
            custom_data_extractor=real.custom_data_extractor,
            tool_input_guardrails=real.tool_input_guardrails,
            tool_output_guardrails=real.tool_output_guardrails,
        )
        # The approval policy and failure handler as the user configured them on the real
        # server (normalized by its constructor, which the stand-in cannot call again).
        for attr in ("_needs_approval_policy", "_failure_error_function"):
            if hasattr(real, attr):
                setattr(self, attr, getattr(real, attr))
        self._session = session
        self._agent = agent_name
        self._name = real.name
        self._cache = bool(getattr(real, "cache_tools_list", False))
        self._listed: list[MCPTool] | None = None

    @property
    def name(self) -> str:
        return self._name

    async def connect(self) -> None:
        """Nothing to do: workers connect to the real server."""

    async def cleanup(self) -> None:
        """Nothing to do: workers own the real server's connection."""

    @property
    def cached_tools(self) -> list[MCPTool] | None:
        return self._listed

    async def list_tools(
        self, run_context: RunContextWrapper[Any] | None = None, agent: Any | None = None
    ) -> list[MCPTool]:
        if self._cache and self._listed is not None:
            return self._listed
        outcome = await self._session.step(
            MCP_LIST_STEP,
            {"agent": self._agent, "server": self._name},
            kind="mcp",
            summary=f"mcp list tools: {self._name}",
            policy=TOOL_POLICY,
        )
        if outcome.error is not None:
            raise UserError(
                f"listing the tools of MCP server {self._name!r} failed "
                f"({outcome.error.type}): {outcome.error.message}"
            )
        self._listed = _tools.validate_python(outcome.value["tools"])
        return self._listed

    async def call_tool(
        self, tool_name: str, arguments: dict[str, Any] | None, meta: dict[str, Any] | None = None
    ) -> CallToolResult:
        outcome = await self._session.step(
            MCP_CALL_STEP,
            {
                "agent": self._agent,
                "server": self._name,
                "tool": tool_name,
                "args": to_jsonable_python(arguments),
                "meta": to_jsonable_python(meta),
            },
            kind="mcp",
            summary=f"mcp tool: {self._name}:{tool_name}",
            policy=TOOL_POLICY,
        )
        error = outcome.error
        if error is None:
            return CallToolResult.model_validate(outcome.value["result"])
        # Raised as the real server would, so the SDK's failure handling treats it the same.
        if error.type == "MCPError":
            code = int((outcome.value or {}).get("code") or 0)
            raise MCPError(code, error.message)
        if error.type == "UserError":
            raise UserError(error.message)
        raise MCPStepError(tool_name, self._name, error)

    async def list_prompts(self) -> ListPromptsResult:
        raise UserError(
            f"MCP server {self._name!r}: prompts are not available inside a durable run "
            "(only its tools are). Fix: fetch prompts before starting the run"
        )

    async def get_prompt(
        self, name: str, arguments: dict[str, Any] | None = None
    ) -> GetPromptResult:
        raise UserError(
            f"MCP server {self._name!r}: prompts are not available inside a durable run "
            "(only its tools are). Fix: fetch prompts before starting the run"
        )


class MCPStepError(Exception):
    """An MCP tool call failed after its retries (the SDK's failure handler sees it)."""

    def __init__(self, tool: str, server: str, error: StepError) -> None:
        super().__init__(f"MCP tool {tool!r} of {server!r} failed ({error.type}): {error.message}")


# -- worker side -----------------------------------------------------------------------------


def _server(ctx: StepContext, payload: dict[str, Any]) -> tuple[Agent[Any], MCPServer]:
    from tether.adapters.openai_agents._worker_side import _resolve_agent

    agent = _resolve_agent(ctx, payload["agent"])
    for server in agent.mcp_servers:
        if server.name == payload["server"]:
            return agent, server
    raise LookupError(
        f"agent {agent.name!r} on this worker has no MCP server named {payload['server']!r}. "
        "Fix: deploy the same agent code to every worker."
    )


async def _connected(server: MCPServer) -> None:
    await POOL.ensure(server, server.connect, server.cleanup, f"mcp-{server.name}")


def _fatal(kind: str, message: str, ctx: StepContext, value: Any = None) -> StepOutcome:
    return StepOutcome(
        value=value, error=StepError(type=kind, message=message, attempts=ctx.attempt, fatal=True)
    )


async def list_tools_step(ctx: StepContext, payload: Any) -> StepOutcome:
    try:
        agent, server = _server(ctx, payload)
    except LookupError as exc:
        return _fatal("MCPServerNotFound", str(exc), ctx)
    try:
        await _connected(server)
        tools = await server.list_tools(RunContextWrapper(context=ctx.run_context()), agent)
    except Exception as exc:
        await POOL.drop(server)
        if ctx.final_attempt:
            return _fatal(type(exc).__name__, str(exc), ctx)
        raise RetryableError(
            f"MCP server {server.name!r} could not list its tools: {type(exc).__name__}: {exc}",
            error_type="MCPUnavailable",
        ) from exc
    return StepOutcome(value={"tools": _tools.dump_python(tools, mode="json", by_alias=True)})


async def call_tool_step(ctx: StepContext, payload: Any) -> StepOutcome:
    try:
        _, server = _server(ctx, payload)
    except LookupError as exc:
        return _fatal("MCPServerNotFound", str(exc), ctx)
    name = payload["tool"]
    try:
        await _connected(server)
        result = await server.call_tool(name, payload["args"], meta=payload.get("meta"))
    except MCPError as exc:
        if connection_lost(exc):
            await POOL.drop(server)
            if not ctx.final_attempt:
                raise RetryableError(
                    f"MCP server {server.name!r} lost its connection: {exc}",
                    error_type="MCPUnavailable",
                ) from exc
        # The server answered with an error: deterministic, handed to the SDK's handler.
        return _fatal("MCPError", str(exc), ctx, value={"code": exc.code})
    except UserError as exc:
        # The SDK's own check (missing arguments) or a lost connection: reconnect next time.
        await POOL.drop(server)
        return _fatal("UserError", str(exc), ctx)
    except Exception as exc:
        await POOL.drop(server)
        if ctx.final_attempt:
            return _fatal(type(exc).__name__, str(exc), ctx)
        raise RetryableError(
            f"MCP tool {name!r} of {server.name!r} raised {type(exc).__name__}: {exc}",
            error_type=type(exc).__name__,
        ) from exc
    return StepOutcome(value={"result": result.model_dump(mode="json", by_alias=True)})


def step_definitions() -> tuple[StepDefinition, ...]:
    """The MCP step types (names are persisted data, pinned by tests)."""
    return (
        StepDefinition(name=MCP_LIST_STEP, kind="mcp", handler=list_tools_step, policy=TOOL_POLICY),
        StepDefinition(name=MCP_CALL_STEP, kind="mcp", handler=call_tool_step, policy=TOOL_POLICY),
    )
