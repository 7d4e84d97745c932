"""The OpenAI Agents SDK adapter's conformance kit: neutral scenarios as SDK agents."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

from agents import Agent, FunctionTool, Handoff, OpenAIResponsesModel, RunConfig, Runner
from agents import function_tool as make_function_tool
from agents.exceptions import MaxTurnsExceeded
from agents.mcp import MCPServerStdio
from openai import AsyncOpenAI
from pydantic import BaseModel

from tether.conformance_tests.kit import ConformanceKit, KitEnv, StreamedRun, shown_events
from tether.conformance_tests.scenarios import HELPER, MAIN, Helper, Scenario, ToolSpec
from tether.errors import RunFailedError

if TYPE_CHECKING:
    from tether.core.handle import DurableAgent


class CityAlerts(BaseModel):
    """The structured output of the ``structured_output`` scenario."""

    city: str
    alerts: int


def _error_text(ctx: Any, error: Exception) -> str:
    # The SDK's default hides the error from the model; the suite checks that the cause of a
    # non-retryable failure reaches the model, so say what it was.
    return f"tool failed: {error}"


def _stream_shape(event: Any) -> Any:
    """What a chat UI reads of one SDK stream event: its type and content (agents by name)."""
    kind = event.type
    if kind == "raw_response_event":
        return [kind, event.data.model_dump(mode="json")]
    if kind == "run_item_stream_event":
        raw = event.item.raw_item
        dumped = raw.model_dump(mode="json") if hasattr(raw, "model_dump") else raw
        return [kind, event.name, type(event.item).__name__, event.item.agent.name, dumped]
    if kind == "agent_updated_stream_event":
        return [kind, event.new_agent.name]
    return [kind]


def _opens_response(event: Any) -> bool:
    return bool(event.type == "raw_response_event" and event.data.type == "response.created")


def _tool(spec: ToolSpec, env: KitEnv) -> FunctionTool:
    func = env.tool_function(spec)
    return make_function_tool(
        func,
        name_override=spec.name,
        description_override=spec.description,
        failure_error_function=_error_text,
        needs_approval=spec.approval,
    )


class OpenAIAgentsKit(ConformanceKit):
    adapter_name = "openai_agents"
    pinned_steps = {
        "openai_agents.model": "model",
        "openai_agents.tool": "tool",
        "openai_agents.mcp_list_tools": "mcp",
        "openai_agents.mcp_call_tool": "mcp",
    }

    def _model(self, env: KitEnv, lane: str) -> OpenAIResponsesModel:
        client = AsyncOpenAI(base_url=env.base_url, api_key="conformance", max_retries=0)
        return OpenAIResponsesModel(model=env.lane(lane), openai_client=client)

    def _helper(self, scenario: Scenario, env: KitEnv | None) -> Agent[Any]:
        model = self._model(env, HELPER) if env is not None else None
        return Agent(name=f"{self.agent_name(scenario)}-helper", model=model)

    def handoff_tool_name(self, scenario: Scenario) -> str:
        return Handoff.default_tool_name(self._helper(scenario, None))

    def build(self, scenario: Scenario, env: KitEnv) -> object:
        tools: list[Any] = [_tool(spec, env) for spec in scenario.tools]
        handoffs: list[Any] = []
        if scenario.helper is Helper.HANDOFF:
            handoffs.append(self._helper(scenario, env))
        elif scenario.helper is Helper.AGENT_TOOL:
            tools.append(
                self._helper(scenario, env).as_tool(
                    tool_name=scenario.helper_tool, tool_description="Ask the helper agent."
                )
            )
        servers: list[Any] = []
        if scenario.mcp:
            command, args, environ = env.mcp_command()
            params: Any = {"command": command, "args": args, "env": environ}
            # A fresh Python process: on a loaded machine its start can pass the default 5 s.
            servers.append(
                MCPServerStdio(
                    params,
                    name="conformance",
                    cache_tools_list=True,
                    client_session_timeout_seconds=60,
                )
            )
        return Agent(
            name=self.agent_name(scenario),
            instructions="You are a conformance scenario agent.",
            model=self._model(env, MAIN),
            tools=tools,
            handoffs=handoffs,
            mcp_servers=servers,
            output_type=CityAlerts if scenario.structured else None,
        )

    def run_options(self, scenario: Scenario) -> dict[str, Any]:
        return {"max_turns": scenario.max_turns} if scenario.max_turns else {}

    async def run_plain(self, agent: object, scenario: Scenario, env: KitEnv) -> object:
        assert isinstance(agent, Agent)
        async with contextlib.AsyncExitStack() as stack:
            for server in agent.mcp_servers:  # plainly, the caller connects its servers
                await server.connect()  # type: ignore[no-untyped-call]
                stack.push_async_callback(server.cleanup)
            return await self._run_plain(agent, scenario)

    async def _run_plain(self, agent: Agent[Any], scenario: Scenario) -> object:
        config = RunConfig(tracing_disabled=True)
        options = self.run_options(scenario)
        result = await Runner.run(agent, scenario.prompt(), run_config=config, **options)
        while result.interruptions:  # the person approves every call, as the suite does
            state = result.to_state()
            for item in result.interruptions:
                state.approve(item)
            result = await Runner.run(result.last_agent, state, run_config=config, **options)
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
        if durable is None:
            plain = Runner.run_streamed(
                agent, scenario.prompt(), run_config=RunConfig(tracing_disabled=True), **options
            )
            events = [e async for e in plain.stream_events()]
            shapes, retracted = shown_events(
                events, shape=_stream_shape, opens_response=_opens_response
            )
            return StreamedRun(events=shapes, output=self.output(plain))
        streamed = durable.run_streamed(scenario.prompt(), **options)
        events = [e async for e in streamed.stream_events()]
        shapes, retracted = shown_events(
            events, shape=_stream_shape, opens_response=_opens_response
        )
        return StreamedRun(
            events=shapes,
            output=self.output(streamed),
            run_id=streamed.run_id,
            retracted=retracted,
        )

    def output(self, result: object) -> Any:
        value = getattr(result, "final_output", None)
        if isinstance(value, BaseModel):
            return value.model_dump(mode="json")
        return value

    def error_kind(self, error: BaseException) -> str | None:
        if isinstance(error, MaxTurnsExceeded):
            return "max_turns"
        if isinstance(error, RunFailedError) and error.error_type == "MaxTurnsExceeded":
            return "max_turns"
        return None
