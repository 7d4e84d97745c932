"""The OpenAI Agents SDK adapter: the SDK's loop in a Tether run, calls as steps."""

from __future__ import annotations

import typing
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import agents
from agents import Agent, FunctionTool, RunConfig, Runner, RunState
from agents.run import set_default_agent_runner

from tether.adapters import _openai_requests
from tether.adapters.openai_agents import _mcp, _worker_side
from tether.adapters.openai_agents._graph import index_agents
from tether.adapters.openai_agents._stream_codec import STREAM_EVENT, encode_event
from tether.adapters.openai_agents._tracing import run_trace
from tether.adapters.openai_agents._workflow_side import (
    MODEL_STEP,
    TOOL_STEP,
    RunProxy,
    TetherAgentRunner,
    approval_request,
    current_session,
    enter_run,
    leave_run,
    no_context,
)
from tether.core.contract import (
    JSON,
    MODEL_POLICY,
    TOOL_POLICY,
    Adapter,
    Capability,
    RunRequest,
    RunSession,
    StepDefinition,
)
from tether.core.values import pack, unpack
from tether.errors import ConfigurationError

DEFAULT_MAX_TURNS = 10


@dataclass(frozen=True)
class AgentResult:
    """What ``durable.run`` returns for an OpenAI Agents SDK agent."""

    final_output: Any
    last_agent: str
    usage: dict[str, int] = field(default_factory=dict)


class OpenAIAgentsAdapter(Adapter):
    name = "openai_agents"
    framework = "openai-agents"
    verified_versions = ">=0.24,<0.25 (tested: 0.24.0)"
    capabilities = frozenset(
        {
            Capability.HANDOFFS,
            Capability.AGENT_AS_TOOL,
            Capability.PARALLEL_TOOLS,
            Capability.STRUCTURED_OUTPUT,
            Capability.SYNC_TOOLS,
            Capability.MAX_TURNS,
            Capability.MCP,
            Capability.APPROVALS,
            Capability.STREAMING,
            Capability.CONTINUE_AS_NEW,
        }
    )

    def __init__(self) -> None:
        set_default_agent_runner(TetherAgentRunner())

    def claims(self, obj: object) -> bool:
        return isinstance(obj, Agent)

    def agent_name(self, agent: object) -> str:
        assert isinstance(agent, Agent)
        return agent.name

    def prepare(self, agent: object) -> None:
        assert isinstance(agent, Agent)
        problems = []
        for sub in index_agents(agent).values():
            for tool in sub.tools:
                if not isinstance(tool, FunctionTool) and not _hosted(tool):
                    problems.append(
                        f"agent {sub.name!r}: tool {getattr(tool, 'name', tool)!r} of type "
                        f"{type(tool).__name__} cannot run durably yet (function tools and "
                        "provider-hosted tools can)"
                    )
            problems.extend(_mcp.check_agent(sub))
        if problems:
            raise ConfigurationError("; ".join(problems))

    def warm_up(self) -> None:
        # What a worker's first model step would otherwise load: the OpenAI client's
        # Responses resource and response validators, the request hooks, and the SDK's
        # shared HTTP client (its TLS context reads the CA bundle, 45 ms).
        _openai_requests.warm_up("responses")
        _openai_requests.install_sdk()
        from agents.models.openai_provider import shared_http_client
        from agents.tracing import get_trace_provider

        shared_http_client()
        # The SDK's trace provider, made by a run's first trace: its exporter's HTTP client
        # reads the CA bundle too (40 ms in the first run task), tracing on or off.
        get_trace_provider()

    def steps(self) -> Sequence[StepDefinition]:
        return (
            StepDefinition(
                name=MODEL_STEP, kind="model", handler=_worker_side.model_step, policy=MODEL_POLICY
            ),
            StepDefinition(
                name=TOOL_STEP, kind="tool", handler=_worker_side.tool_step, policy=TOOL_POLICY
            ),
            *_mcp.step_definitions(),
        )

    def passthrough_modules(self) -> Sequence[str]:
        return ("agents", "openai", "httpx", "httpx2", "mcp", "griffe", "griffelib")

    def context_type(self, agent: object) -> Any:
        # `Agent[Ctx](...)` records its context type on the instance; a plain `Agent(...)`
        # declares none, and the value's own (importable) type is used.
        args = typing.get_args(getattr(agent, "__orig_class__", None))
        return args[0] if args and isinstance(args[0], type) else None

    def encode_input(self, value: object) -> JSON:
        if isinstance(value, str):
            return value
        from pydantic_core import to_jsonable_python

        return to_jsonable_python(value)

    def encode_options(self, agent: object, options: dict[str, Any]) -> dict[str, JSON]:
        state = options.get(RESPONSES_STATE_OPTION, False)
        if not isinstance(state, bool):
            raise ConfigurationError(
                f"{RESPONSES_STATE_OPTION}={state!r}: expected True or False. Fix: pass "
                f"{RESPONSES_STATE_OPTION}=True to send only new items to the Responses API"
            )
        return super().encode_options(agent, options)

    async def run(self, session: RunSession, agent: object, request: RunRequest) -> JSON:
        assert isinstance(agent, Agent)
        chained = request.options.get(RESPONSES_STATE_OPTION) is True
        proxy = RunProxy(session, stream_text=request.stream_text, responses_state=chained)
        context = None
        if request.context is not None:
            context = unpack(request.context, self.context_type(agent))
        max_turns = int(request.options.get("max_turns", DEFAULT_MAX_TURNS))
        proxy.context, proxy.max_turns = context, max_turns
        token = enter_run(proxy)
        streamed = bool(request.options.get(STREAMED_OPTION))
        proxy.checkpoints = not streamed
        run = _streamed_run if streamed else Runner.run
        try:
            # The SDK's tracing is on unless the process turned it off (its own switches);
            # the run's one trace is current, so the SDK adds its spans to it.
            with run_trace(session, agent.name) as traced:
                proxy.traced = traced
                config = RunConfig(tracing_disabled=not traced)
                saved = session.resumed()
                state: RunState[Any, Agent[Any]] | None = None
                if saved is None:
                    result = await run(
                        proxy.agent(agent),
                        request.input,
                        context=context,
                        max_turns=max_turns,
                        run_config=config,
                    )
                else:
                    # A continued segment of a long run: the SDK resumes from its own RunState.
                    state = await proxy.restore(agent, saved)
                    if not saved.get("interrupted"):
                        assert state._current_agent is not None
                        result = await run(
                            state._current_agent, state, max_turns=max_turns, run_config=config
                        )
                        state = None
                # The SDK's own approvals: tools with needs_approval interrupt the run; each
                # interruption becomes a durable wait here, and the SDK resumes from its state.
                answered: set[str] = set()
                while state is not None or result.interruptions:
                    if state is None:
                        state, items, current = result.to_state(), result.interruptions, None
                        await _approval_boundary(session, proxy, state, items)
                    else:
                        items, current = state.get_interruptions(), state._current_agent
                    for item in items:
                        request_ = approval_request(item)
                        if request_.id in answered:
                            # Never spin: an answered approval asked again is a defect to show.
                            raise RuntimeError(
                                f"the Agents SDK asked again to approve call {request_.id!r} "
                                "after it was answered; the run stops rather than loop"
                            )
                        answered.add(request_.id)
                        answer = await session.wait(request_)
                        if answer.approved:
                            state.approve(item)
                        else:
                            state.reject(item, rejection_message=answer.reason or None)
                    agent_now = current if current is not None else result.last_agent
                    result = await run(agent_now, state, max_turns=max_turns, run_config=config)
                    state = None
        finally:
            leave_run(token)
        return {
            "final_output": pack(result.final_output, what="the agent's final output"),
            "last_agent": result.last_agent.name,
            "usage": session.usage(),
        }

    def stream(self, durable: Any, api: str, input: Any, options: dict[str, Any]) -> Any:
        if api != "run_streamed":
            raise ConfigurationError(
                f"{api}() is Pydantic AI's API; an OpenAI Agents SDK agent streams with "
                "durable.run_streamed(input, ...) (as Runner.run_streamed)"
            )
        from tether.adapters.openai_agents._streamed import DurableRunResultStreaming

        return DurableRunResultStreaming(durable, input, options)

    def read_stream(self, durable: Any, handle: Any, from_offset: int) -> AsyncIterator[Any]:
        from tether.adapters.openai_agents._streamed import sdk_events

        return sdk_events(handle, durable.agent, from_offset)

    def decode_output(self, agent: object, value: JSON) -> object:
        return AgentResult(
            final_output=unpack(value["final_output"]),
            last_agent=value["last_agent"],
            usage=dict(value.get("usage", {})),
        )


async def _approval_boundary(
    session: RunSession, proxy: RunProxy, state: RunState[Any, Agent[Any]], items: Any
) -> None:
    """Approvals are a step boundary: a long run may continue as new here, its approvals
    asked now and answered in the next segment, which resumes from the SDK's RunState."""
    original = state._original_input
    # The loop's input crosses by reference to the store, as at a model call's boundary.
    conversation = None if isinstance(original, str) else proxy.jsonable(list(original))
    current = state._current_agent

    def snapshot() -> JSON:
        saved = state.to_json(context_serializer=no_context)
        if conversation is not None:
            saved["original_input"] = []
        return {"state": saved, "turns": proxy.turns, "interrupted": True}

    await session.checkpoint(
        snapshot,
        transcript=conversation,
        asking=[approval_request(i) for i in items],
        prefixed=True,
        tail_only=current is not None and proxy.tail_only(current),
    )


RESPONSES_STATE_OPTION = "auto_previous_response_id"
"""The opt-in run option of the Responses state mode (the SDK's own name for it): each model
step after the first sends only the items after the previous response, which the provider
keeps (``previous_response_id``); a provider that lost it gets the whole conversation."""

STREAMED_OPTION = "streamed"
"""The run option ``durable.run_streamed`` sets: the SDK's streamed loop, events published."""


async def _streamed_run(agent: Agent[Any], input: Any, **kwargs: Any) -> Any:
    """``Runner.run_streamed`` inside the run: its run item and agent-updated events go to
    the run's log (deterministic: the loop is replayed identically); the raw response events
    come from the model steps themselves."""
    session = current_session()
    result = Runner.run_streamed(agent, input, **kwargs)
    async for event in result.stream_events():
        data = encode_event(event)
        if data is not None:
            session.publish(STREAM_EVENT, data)
    return result


def _hosted(tool: object) -> bool:
    hosted = tuple(
        getattr(agents, n)
        for n in (
            "WebSearchTool",
            "FileSearchTool",
            "CodeInterpreterTool",
            "ImageGenerationTool",
            "HostedMCPTool",
        )
        if hasattr(agents, n)
    )
    return isinstance(tool, hosted)
