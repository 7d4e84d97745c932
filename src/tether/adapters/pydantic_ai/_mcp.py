"""MCP toolsets made durable: listing a server's tools and calling one are steps.

Run side: every :class:`~pydantic_ai.mcp.MCPToolset` leaf of a run's toolset is replaced by
:class:`StepMCPToolset`, which knows the server only by its ``id`` and never connects to it.
Its tool list comes from the ``pydantic_ai.mcp_list_tools`` step (kept for the whole run
when the server caches its tools, as ``MCPToolset`` does by default, else listed once per run
step), and each call is a ``pydantic_ai.mcp_call_tool`` step. Replays read both from history.

Worker side: the step finds the agent's real ``MCPToolset`` by ``id`` and reaches the server
the worker's connection pool (:mod:`tether.adapters._connections`): one connection per server
per worker process, opened on first use and kept for later steps and runs (a stdio server is
started once, not per step). A toolset whose ``auth``/``headers`` come from the run context
connects per step, as that run's user.
"""

from __future__ import annotations

import contextlib
import dataclasses
import sys
from collections.abc import AsyncIterator, Iterable
from typing import Any

from pydantic import TypeAdapter
from pydantic_ai import Agent, RunContext
from pydantic_ai.exceptions import (
    ApprovalRequired,
    CallDeferred,
    ModelRetry,
    ToolFailed,
    UserError,
)
from pydantic_ai.messages import InstructionPart
from pydantic_ai.tools import ToolDefinition
from pydantic_ai.toolsets import AbstractToolset, FunctionToolset, ToolsetTool
from pydantic_ai.usage import RunUsage
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
from tether.core.values import pack, unpack
from tether.errors import ConfigurationError, RetryableError, StepInputError


def _mcp_toolset_class() -> type[Any] | None:
    """``pydantic_ai.mcp.MCPToolset`` if anything imported it, else None.

    An agent that holds an MCP toolset was built by code that imported the module, so an
    agent without one never pays for importing the MCP client stack (about a second, a cost
    every worker start would otherwise carry).
    """
    module = sys.modules.get("pydantic_ai.mcp")
    return getattr(module, "MCPToolset", None) if module is not None else None


MCP_LIST_STEP = "pydantic_ai.mcp_list_tools"
MCP_CALL_STEP = "pydantic_ai.mcp_call_tool"

_tool_defs: TypeAdapter[list[ToolDefinition]] = TypeAdapter(list[ToolDefinition])
_tool_def: TypeAdapter[ToolDefinition] = TypeAdapter(ToolDefinition)


def is_mcp(toolset: AbstractToolset[Any]) -> bool:
    cls = _mcp_toolset_class()
    return cls is not None and isinstance(toolset, cls)


def mcp_leaves(toolsets: Iterable[AbstractToolset[Any]]) -> list[Any]:
    """The MCP toolsets among ``toolsets`` and everything they wrap."""
    found: list[Any] = []
    for toolset in toolsets:
        toolset.apply(lambda leaf: found.append(leaf) if is_mcp(leaf) else None)
    return found


def check_agent(agent: Agent[Any, Any]) -> list[str]:
    """What stops the agent's MCP toolsets from running durably (empty when nothing)."""
    problems = []
    seen: set[str] = set()
    for toolset in mcp_leaves(agent.toolsets):
        ident = toolset._explicit_id
        if ident is None:
            problems.append(
                f"agent {agent.name!r}: {toolset!r} needs an id to run durably (steps find the "
                "server on a worker by it, and it is recorded in the run's history). "
                "Fix: MCPToolset(..., id='weather')"
            )
        elif ident in seen:
            problems.append(
                f"agent {agent.name!r}: two MCP toolsets share the id {ident!r}. "
                "Fix: give each MCPToolset its own id"
            )
        seen.add(ident or "")
    return problems


# -- run side --------------------------------------------------------------------------------


def replace_mcp(
    toolset: AbstractToolset[Any], session: RunSession, agent_name: str
) -> AbstractToolset[Any]:
    """``toolset`` with each MCP leaf swapped for its step-backed stand-in."""
    if _mcp_toolset_class() is None:
        return toolset

    def visit(leaf: AbstractToolset[Any]) -> AbstractToolset[Any]:
        if is_mcp(leaf):
            return StepMCPToolset(leaf, session, agent_name)
        return leaf

    return toolset.visit_and_replace(visit)


def routes_to_mcp(tool: ToolsetTool[Any]) -> bool:
    """Whether a call of ``tool`` ends at a :class:`StepMCPToolset` (which makes its own step)."""
    toolset: Any = tool.toolset
    while not isinstance(toolset, StepMCPToolset):
        toolset = getattr(toolset, "wrapped", None)
        if toolset is None:
            return False
    return True


class StepMCPToolset(AbstractToolset[Any]):
    """Stands in for an MCP toolset in a run: its tool list and calls are steps."""

    def __init__(self, real: Any, session: RunSession, agent_name: str) -> None:
        self._real = real
        self._session = session
        self._agent = agent_name
        self._listed: tuple[int | None, dict[str, Any]] | None = None

    @property
    def id(self) -> str | None:
        ident: str | None = self._real.id
        return ident

    @property
    def _explicit_id(self) -> str | None:
        ident: str | None = self._real._explicit_id
        return ident

    @property
    def label(self) -> str:
        label: str = self._real.label
        return label

    @property
    def tool_name_conflict_hint(self) -> str:
        hint: str = self._real.tool_name_conflict_hint
        return hint

    async def _listing(self, ctx: RunContext[Any]) -> dict[str, Any]:
        # A caching server lists once per run; otherwise once per run step (as often as the
        # real toolset would ask its server).
        key = None if self._real.cache_tools else ctx.run_step
        if self._listed is None or self._listed[0] != key:
            outcome = await self._session.step(
                MCP_LIST_STEP,
                {"agent": self._agent, "toolset": self._explicit_id, "ctx": _ctx_info(ctx)},
                kind="mcp",
                summary=f"mcp list tools: {self._explicit_id}",
                policy=TOOL_POLICY,
            )
            if outcome.error is not None:
                raise MCPStepError(f"listing the tools of {self.label}", outcome.error)
            self._listed = (key, outcome.value)
        return self._listed[1]

    async def get_tools(self, ctx: RunContext[Any]) -> dict[str, ToolsetTool[Any]]:
        listing = await self._listing(ctx)
        tools: dict[str, ToolsetTool[Any]] = {}
        for tool_def in _tool_defs.validate_python(listing["tools"]):
            tool = self._real.tool_for_tool_def(tool_def, ctx=ctx)
            tools[tool_def.name] = dataclasses.replace(tool, toolset=self)
        return tools

    async def get_tool_for_tool_def(
        self, tool_def: ToolDefinition, ctx: RunContext[Any]
    ) -> ToolsetTool[Any]:
        return dataclasses.replace(self._real.tool_for_tool_def(tool_def, ctx=ctx), toolset=self)

    async def get_instructions(self, ctx: RunContext[Any]) -> InstructionPart | None:
        if not self._real.include_instructions:
            return None
        text = (await self._listing(ctx)).get("instructions")
        if self.id is None:
            return None if text is None else InstructionPart(content=text)
        return InstructionPart(content=text or "", dynamic=False, on_change="append")

    async def call_tool(
        self, name: str, tool_args: dict[str, Any], ctx: RunContext[Any], tool: ToolsetTool[Any]
    ) -> Any:
        outcome = await self._session.step(
            MCP_CALL_STEP,
            {
                "agent": self._agent,
                "toolset": self._explicit_id,
                "tool": name,
                "args": to_jsonable_python(tool_args),
                "tool_def": _tool_def.dump_python(tool.tool_def, mode="json"),
                "ctx": _ctx_info(ctx),
            },
            kind="mcp",
            summary=f"mcp tool: {self._explicit_id}:{name}",
            policy=TOOL_POLICY,
        )
        error = outcome.error
        if error is None:
            return decode_result(outcome.value)
        if error.type == "ModelRetry":
            raise ModelRetry(error.message)
        if error.type == "ToolFailed":
            raise ToolFailed(error.message)
        if error.type == "ApprovalRequired":
            raise ApprovalRequired()
        if error.type == "CallDeferred":
            raise CallDeferred()
        raise MCPStepError(f"MCP tool {name!r} of {self.label}", error)


class MCPStepError(Exception):
    """An MCP step failed for good; as outside Tether, the run fails with it."""

    def __init__(self, what: str, error: StepError) -> None:
        super().__init__(f"{what} failed ({error.type}): {error.message}")


def _ctx_info(ctx: RunContext[Any]) -> dict[str, Any]:
    return {
        "tool_call_id": ctx.tool_call_id,
        "retry": ctx.retry,
        "run_step": ctx.run_step,
        "tool_call_approved": ctx.tool_call_approved,
    }


# -- results ---------------------------------------------------------------------------------


def encode_result(value: object) -> dict[str, Any]:
    """An MCP tool's result as JSON that keeps its parts' types (text, JSON, binary, lists)."""
    if isinstance(value, list):
        return {"list": [pack(v, what="a part of an MCP tool's result") for v in value]}
    return pack(value, what="an MCP tool's result")


def decode_result(value: dict[str, Any]) -> object:
    if "list" in value:
        return [unpack(v) for v in value["list"]]
    return unpack(value)


# -- worker side -----------------------------------------------------------------------------


def find_toolset(agent: Agent[Any, Any], ident: str) -> Any:
    for toolset in mcp_leaves(agent.toolsets):
        if toolset._explicit_id == ident:
            return toolset
    raise LookupError(
        f"agent {agent.name!r} on this worker has no MCP toolset with id {ident!r}. "
        "Fix: deploy the same agent code to every worker."
    )


def without_mcp(toolsets: Iterable[AbstractToolset[Any]]) -> list[AbstractToolset[Any]]:
    """``toolsets`` with MCP servers left out: a function-tool lookup must not reach them."""
    empty: FunctionToolset[Any] = FunctionToolset()
    return [t.visit_and_replace(lambda leaf: empty if is_mcp(leaf) else leaf) for t in toolsets]


@contextlib.asynccontextmanager
async def _server(toolset: Any, run_ctx: RunContext[Any]) -> AsyncIterator[Any]:
    """The toolset, connected: pooled, or per step when it connects as the run's user."""
    per_run = await toolset.for_run(run_ctx)
    if per_run is not toolset:
        async with per_run:
            yield per_run
        return
    try:
        await POOL.ensure(toolset, toolset.__aenter__, toolset.__aexit__, f"mcp-{toolset.id}")
        yield toolset
    except (ModelRetry, ToolFailed, ApprovalRequired, CallDeferred):
        raise
    except Exception as exc:
        if not _answered(exc):
            # The server may have died (a stdio process gone): reconnect on the next attempt.
            await POOL.drop(toolset)
        raise


def _answered(exc: Exception) -> bool:
    """Whether the server answered with an error (a deterministic outcome, not a lost server)."""
    if connection_lost(exc):
        return False
    return type(exc).__name__ in ("ToolError", "McpError", "MCPError")


def _run_context(ctx: StepContext, agent: Agent[Any, Any], info: dict[str, Any]) -> RunContext[Any]:
    from tether.adapters.pydantic_ai._worker_side import resolve_model

    return RunContext(
        deps=ctx.run_context(),
        model=resolve_model(agent),
        usage=RunUsage(),
        tool_call_id=info.get("tool_call_id"),
        retry=int(info.get("retry", 0)),
        run_step=int(info.get("run_step", 0)),
        tool_call_approved=bool(info.get("tool_call_approved", False)),
    )


def _lookup(ctx: StepContext, payload: dict[str, Any]) -> tuple[Agent[Any, Any], Any]:
    agent = ctx.agent
    assert isinstance(agent, Agent)
    return agent, find_toolset(agent, payload["toolset"])


def _not_found(exc: LookupError, ctx: StepContext) -> StepOutcome:
    return StepOutcome(
        error=StepError(type="ToolNotFound", message=str(exc), attempts=ctx.attempt, fatal=True)
    )


async def list_tools_step(ctx: StepContext, payload: Any) -> StepOutcome:
    try:
        agent, toolset = _lookup(ctx, payload)
    except LookupError as exc:
        return _not_found(exc, ctx)
    run_ctx = _run_context(ctx, agent, payload.get("ctx", {}))
    try:
        async with _server(toolset, run_ctx) as server:
            tools = await server.get_tools(run_ctx)
            instructions = server.instructions if server.include_instructions else None
    except UserError as exc:
        return StepOutcome(
            error=StepError(type="UserError", message=str(exc), attempts=ctx.attempt, fatal=True)
        )
    except Exception as exc:
        raise RetryableError(
            f"MCP server {toolset.id!r} could not list its tools: {type(exc).__name__}: {exc}",
            error_type="MCPUnavailable",
        ) from exc
    defs = [t.tool_def for t in tools.values()]
    return StepOutcome(
        value={"tools": _tool_defs.dump_python(defs, mode="json"), "instructions": instructions}
    )


async def call_tool_step(ctx: StepContext, payload: Any) -> StepOutcome:
    try:
        agent, toolset = _lookup(ctx, payload)
    except LookupError as exc:
        return _not_found(exc, ctx)
    name = payload["tool"]
    run_ctx = dataclasses.replace(_run_context(ctx, agent, payload.get("ctx", {})), tool_name=name)
    tool_def = _tool_def.validate_python(payload["tool_def"])
    try:
        async with _server(toolset, run_ctx) as server:
            tool = server.tool_for_tool_def(tool_def, ctx=run_ctx)
            result = await server.call_tool(name, payload["args"], run_ctx, tool)
    except (ModelRetry, ToolFailed, ApprovalRequired, CallDeferred) as exc:
        # Control flow, not failure: returned as data and raised again in the run.
        return StepOutcome(
            error=StepError(type=type(exc).__name__, message=str(exc), attempts=ctx.attempt)
        )
    except Exception as exc:
        if isinstance(exc, UserError) or _answered(exc) or ctx.final_attempt:
            return StepOutcome(
                error=StepError(
                    type=type(exc).__name__,
                    message=f"MCP tool {name!r}: {exc}",
                    attempts=ctx.attempt,
                    fatal=True,
                )
            )
        raise RetryableError(
            f"MCP tool {name!r} raised {type(exc).__name__}: {exc}",
            error_type=type(exc).__name__,
        ) from exc
    try:
        return StepOutcome(value=encode_result(result))
    except StepInputError as exc:
        return StepOutcome(
            error=StepError(
                type="StepInputError", message=str(exc), attempts=ctx.attempt, fatal=True
            )
        )


def check_or_raise(agent: Agent[Any, Any]) -> None:
    problems = check_agent(agent)
    if problems:
        raise ConfigurationError("; ".join(problems))


def step_definitions() -> tuple[StepDefinition, ...]:
    """The MCP step types (names are persisted data, pinned by tests)."""
    return (
        StepDefinition(name=MCP_LIST_STEP, kind="mcp", handler=list_tools_step, policy=TOOL_POLICY),
        StepDefinition(name=MCP_CALL_STEP, kind="mcp", handler=call_tool_step, policy=TOOL_POLICY),
    )
