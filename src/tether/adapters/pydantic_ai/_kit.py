"""The Pydantic AI adapter's conformance kit: neutral scenarios as Pydantic AI agents."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastmcp.client.transports import StdioTransport
from openai import AsyncOpenAI
from pydantic import BaseModel, TypeAdapter
from pydantic_ai import Agent, DeferredToolRequests, DeferredToolResults, NativeOutput, Tool
from pydantic_ai.exceptions import UsageLimitExceeded
from pydantic_ai.mcp import MCPToolset
from pydantic_ai.messages import AgentStreamEvent, PartStartEvent
from pydantic_ai.models.openai import OpenAIChatModel
from pydantic_ai.providers.openai import OpenAIProvider
from pydantic_ai.usage import UsageLimits

from tether.conformance_tests.kit import ConformanceKit, KitEnv, StreamedRun, shown_events
from tether.conformance_tests.scenarios import MAIN, Scenario, ToolSpec
from tether.errors import RunFailedError

if TYPE_CHECKING:
    from tether.core.handle import DurableAgent

_EVENTS: TypeAdapter[AgentStreamEvent] = TypeAdapter(AgentStreamEvent)


def _stream_shape(event: Any) -> Any:
    """One Pydantic AI stream event as JSON (tool events by tool name and call id)."""
    kind = getattr(event, "event_kind", None)
    if kind in ("function_tool_call", "function_tool_result"):
        return [kind, event.part.tool_name, event.part.tool_call_id]
    return _EVENTS.dump_python(event, mode="json")


def _mcp_toolset(env: KitEnv) -> MCPToolset[Any]:
    command, args, environ = env.mcp_command()
    # The suite's server is a fresh Python process: on a loaded machine its start alone can
    # pass the client's default 5 s for the handshake.
    return MCPToolset(StdioTransport(command, args, env=environ), id="conformance", init_timeout=60)


def _opens_response(event: Any) -> bool:
    return isinstance(event, PartStartEvent) and event.index == 0


class CityAlerts(BaseModel):
    """The structured output of the ``structured_output`` scenario."""

    city: str
    alerts: int


def _tool(spec: ToolSpec, env: KitEnv) -> Tool[Any]:
    func = env.tool_function(spec)
    return Tool(
        func,
        takes_ctx=False,
        name=spec.name,
        description=spec.description,
        requires_approval=spec.approval,
    )


class PydanticAIKit(ConformanceKit):
    adapter_name = "pydantic_ai"
    pinned_steps = {
        "pydantic_ai.model": "model",
        "pydantic_ai.tool": "tool",
        "pydantic_ai.mcp_list_tools": "mcp",
        "pydantic_ai.mcp_call_tool": "mcp",
    }

    def build(self, scenario: Scenario, env: KitEnv) -> object:
        client = AsyncOpenAI(base_url=env.base_url, api_key="conformance", max_retries=0)
        model = OpenAIChatModel(env.lane(MAIN), provider=OpenAIProvider(openai_client=client))
        output: Any = str
        if scenario.structured:
            output = NativeOutput(CityAlerts)
        return Agent(
            model,
            name=self.agent_name(scenario),
            instructions="You are a conformance scenario agent.",
            output_type=output,
            tools=[_tool(spec, env) for spec in scenario.tools],
            toolsets=[_mcp_toolset(env)] if scenario.mcp else [],
        )

    def run_options(self, scenario: Scenario) -> dict[str, Any]:
        if scenario.max_turns:
            return {"usage_limits": UsageLimits(request_limit=scenario.max_turns)}
        return {}

    async def run_plain(self, agent: object, scenario: Scenario, env: KitEnv) -> object:
        assert isinstance(agent, Agent)
        # Durably, an approval is a wait inside the run; plainly, Pydantic AI ends the run with
        # the deferred requests, and a second run continues with the person's answers.
        extra: dict[str, Any] = {"output_type": [str, DeferredToolRequests]}
        result = await agent.run(
            scenario.prompt(), **self.run_options(scenario), **(extra if scenario.approvals else {})
        )
        if isinstance(result.output, DeferredToolRequests):  # the person approves all
            approvals: dict[str, Any] = {c.tool_call_id: True for c in result.output.approvals}
            result = await agent.run(
                None,
                message_history=result.all_messages(),
                deferred_tool_results=DeferredToolResults(approvals=approvals),
                **self.run_options(scenario),
            )
        return result

    async def run_streamed(
        self,
        agent: object,
        scenario: Scenario,
        env: KitEnv,
        durable: DurableAgent | None = None,
    ) -> StreamedRun:
        assert isinstance(agent, Agent)
        options = self.run_options(scenario)
        source: Any = (
            agent.run_stream_events(scenario.prompt(), **options)
            if durable is None
            else durable.run_stream_events(scenario.prompt(), **options)
        )
        async with source as stream:
            events = [e async for e in stream]
        # The last event carries the run's result: its output is compared, not the object.
        last = events.pop() if events and events[-1].event_kind == "agent_run_result" else None
        shapes, retracted = shown_events(
            events, shape=_stream_shape, opens_response=_opens_response
        )
        handle = getattr(stream, "handle", None)
        return StreamedRun(
            events=shapes,
            output=self.output(last.result) if last is not None else None,
            run_id=handle.id if handle is not None else None,
            retracted=retracted,
        )

    def output(self, result: object) -> Any:
        value = getattr(result, "output", None)
        if isinstance(value, BaseModel):
            return value.model_dump(mode="json")
        return value

    def error_kind(self, error: BaseException) -> str | None:
        if isinstance(error, UsageLimitExceeded):
            return "max_turns"
        if isinstance(error, RunFailedError) and error.error_type == "UsageLimitExceeded":
            return "max_turns"
        return None
