"""The Pydantic AI adapter: Pydantic AI's graph in a Tether run, calls as steps."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import TypeAdapter, ValidationError
from pydantic_ai import Agent, DeferredToolRequests, DeferredToolResults
from pydantic_ai.durable_exec._utils import disable_threads
from pydantic_ai.messages import ModelMessage, ModelMessagesTypeAdapter
from pydantic_ai.usage import RunUsage, UsageLimits
from pydantic_core import to_jsonable_python

from tether.adapters.pydantic_ai import _mcp, _worker_side
from tether.adapters.pydantic_ai._workflow_side import (
    MODEL_STEP,
    NODE_EVENT,
    TOOL_STEP,
    TetherCapability,
    node_event,
    resumes_from_tail,
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
from tether.errors import ConfigurationError, StepInputError

STREAMED_OPTION = "streamed"
"""The run option the framework-shaped streams set: model steps publish every event."""

_deferred: TypeAdapter[DeferredToolResults] = TypeAdapter(DeferredToolResults)
_limits: TypeAdapter[UsageLimits] = TypeAdapter(UsageLimits)
_run_usage: TypeAdapter[RunUsage] = TypeAdapter(RunUsage)


@dataclass(frozen=True)
class AgentRunResult:
    """What ``durable.run`` returns for a Pydantic AI agent (like its ``AgentRunResult``)."""

    output: Any
    usage: dict[str, int] = field(default_factory=dict)
    messages: list[ModelMessage] = field(default_factory=list)

    def all_messages(self) -> list[ModelMessage]:
        """The whole conversation, to pass as ``message_history`` to the next run."""
        return list(self.messages)


class PydanticAIAdapter(Adapter):
    name = "pydantic_ai"
    framework = "pydantic-ai-slim"
    verified_versions = ">=2.68,<2.69 (tested: 2.68.0)"
    capabilities = frozenset(
        {
            Capability.CONTINUE_AS_NEW,
            Capability.PARALLEL_TOOLS,
            Capability.STRUCTURED_OUTPUT,
            Capability.APPROVALS,
            Capability.SYNC_TOOLS,
            Capability.MCP,
            Capability.MAX_TURNS,
            Capability.STREAMING,
        }
    )

    def claims(self, obj: object) -> bool:
        return isinstance(obj, Agent)

    def agent_name(self, agent: object) -> str:
        assert isinstance(agent, Agent)
        if not agent.name:
            raise ConfigurationError(
                "a Pydantic AI agent needs a name to run durably (runs and steps find it by "
                "name). Fix: Agent(..., name='support'), or tether.durable(agent, name='support')"
            )
        return agent.name

    def prepare(self, agent: object) -> None:
        assert isinstance(agent, Agent)
        _mcp.check_or_raise(agent)

    def warm_up(self) -> None:
        # Pydantic AI builds its message schema at first use (50 ms): the run's first model
        # request dumps the history with it, the step validates it.
        ModelMessagesTypeAdapter.validate_python([])
        # What the OpenAI client loads at its first call and response, for both of Pydantic
        # AI's OpenAI models ("openai:" names the Responses one, compatible providers use
        # chat); skipped when the openai extra is not installed.
        with contextlib.suppress(ImportError):
            from tether.adapters import _openai_requests

            _openai_requests.warm_up("responses")
            _openai_requests.warm_up("chat")
            # Pydantic AI validates each Chat Completions reply again with a class of its
            # own (7 ms to build at the first reply); a private name, so only if found.
            with contextlib.suppress(ImportError):
                from pydantic_ai.models.openai._chat_completions import LenientChatCompletion

                LenientChatCompletion.model_validate(_openai_requests.sample_response("chat"))

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

    def encode_options(self, agent: object, options: dict[str, Any]) -> dict[str, JSON]:
        out: dict[str, JSON] = {}
        for key, value in options.items():
            if key == "message_history":
                out[key] = ModelMessagesTypeAdapter.dump_python(list(value), mode="json")
            elif key == "deferred_tool_results":
                out[key] = _deferred.dump_python(value, mode="json")
            elif key == "usage_limits":
                out[key] = _limits.dump_python(value, mode="json")
            elif key == "event_stream_handler":
                raise ConfigurationError(
                    "event_stream_handler= cannot cross to a worker: pass it to durable.run() "
                    "(it runs in the caller, fed from the run's event log)"
                )
            elif key == "model":
                if not isinstance(value, str):
                    raise ConfigurationError(
                        "model= must be a model name (e.g. 'openai:gpt-4o') in a durable run: "
                        "model objects cannot cross to workers; set it on the Agent instead"
                    )
                out[key] = value
            else:
                out[key] = to_jsonable_python(value)
        return out

    def context_type(self, agent: object) -> Any:
        deps_type = getattr(agent, "deps_type", None)
        return None if deps_type in (None, type(None)) else deps_type

    def prepare_context(self, agent: object, context: object) -> object:
        assert isinstance(agent, Agent)
        deps_type = getattr(agent, "deps_type", None)
        if deps_type in (None, type(None)):
            return context
        try:
            return TypeAdapter(deps_type).validate_python(context)
        except ValidationError as exc:
            raise StepInputError(
                f"deps of type {type(context).__qualname__} do not match the agent's deps_type "
                f"{getattr(deps_type, '__qualname__', deps_type)}: {exc}"
            ) from None

    async def run(self, session: RunSession, agent: object, request: RunRequest) -> JSON:
        assert isinstance(agent, Agent)
        opts = request.options
        deps = (
            unpack(request.context, self.context_type(agent))
            if request.context is not None
            else None
        )
        history = (
            ModelMessagesTypeAdapter.validate_python(opts["message_history"])
            if "message_history" in opts
            else None
        )
        # The run's event loop has no threads: sync validators and instructions run inline,
        # through the switch Pydantic AI provides to durable engines. Sync tools are steps,
        # so they run on a worker's thread pool as usual.
        with disable_threads():
            result = await self._run(agent, request, session, deps, history)
        messages = result.all_messages()
        if session.resumed_prefix():
            # The loop held the history's tail: the result holds all of it (one read).
            earlier = ModelMessagesTypeAdapter.validate_python(await session.stored_prefix())
            messages = earlier + messages
        return {
            "output": pack(result.output, what="the agent's output"),
            "usage": session.usage(),
            "messages": ModelMessagesTypeAdapter.dump_python(messages, mode="json"),
        }

    async def _run(
        self,
        agent: Agent[Any, Any],
        request: RunRequest,
        session: RunSession,
        deps: object,
        history: list[ModelMessage] | None,
    ) -> Any:
        opts = request.options
        # Deferred tools (requires_approval, ApprovalRequired, CallDeferred) become durable
        # waits inside the run (the capability's handle_deferred_tool_calls hook), unless the
        # agent declares DeferredToolRequests among its output types: then, as in Pydantic AI
        # itself, the run ends with the requests and the caller continues it with
        # deferred_tool_results.
        capability = TetherCapability(
            session,
            self.agent_name(agent),
            opts.get("model"),
            wait_for_deferred=not declares_deferred(agent.output_type),
            stream_text=request.stream_text,
            stream_events=bool(opts.get(STREAMED_OPTION)),
            # Streamed runs publish the graph's nodes: they run in one segment.
            checkpoints=not opts.get(STREAMED_OPTION),
            tail_only=resumes_from_tail(agent),
        )
        user_prompt = request.input
        saved = session.resumed()
        if saved is not None:
            # A continued segment of a long run: Pydantic AI resumes from the history (its
            # last message is the request the previous segment was about to send, or the
            # response whose calls wait for people) and the run's usage so far.
            user_prompt = None
            history = ModelMessagesTypeAdapter.validate_python(session.resumed_transcript())
            capability.resume(saved, tail=session.resumed_prefix() > 0)
        kwargs: dict[str, Any] = dict(
            deps=deps,
            message_history=history,
            deferred_tool_results=_deferred.validate_python(opts["deferred_tool_results"])
            if "deferred_tool_results" in opts and saved is None
            else None,
            usage_limits=_limits.validate_python(opts["usage_limits"])
            if "usage_limits" in opts
            else None,
            model=opts.get("model"),
            model_settings=opts.get("model_settings"),
            capabilities=[capability],
        )
        if saved is not None and saved.get("usage") is not None:
            kwargs["usage"] = _run_usage.validate_python(saved["usage"])
        if opts.get(STREAMED_OPTION) or agent.event_stream_handler is not None:
            # Driven node by node (as agent.iter): each node is published for durable.iter(),
            # and an agent's own event_stream_handler never runs here (the caller runs it,
            # fed from the log), so no model is streamed outside a step.
            async with agent.iter(user_prompt, **kwargs) as run:
                async for node in run:
                    if opts.get(STREAMED_OPTION) and type(node).__name__ != "End":
                        session.publish(NODE_EVENT, node_event(node))
            assert run.result is not None
            if opts.get(STREAMED_OPTION):
                session.publish(
                    NODE_EVENT,
                    {"node": "End", "output": pack(run.result.output, what="the agent's output")},
                )
            return run.result
        return await agent.run(user_prompt, **kwargs)

    def stream(self, durable: Any, api: str, input: Any, options: dict[str, Any]) -> Any:
        from tether.adapters.pydantic_ai import _streamed

        if api == "run_stream":
            return _streamed.DurableRunStream(durable, input, options)
        if api == "run_stream_events":
            return _streamed.DurableRunStreamEvents(durable, input, options)
        if api == "run":
            return _streamed.run_with_handler(durable, input, options)
        if api == "iter":
            return _streamed.DurableAgentRun(durable, input, options)
        raise ConfigurationError(
            f"{api}() is the Agents SDK's API; a Pydantic AI agent streams with "
            "durable.run_stream(...), durable.run_stream_events(...) or durable.iter(...)"
        )

    def read_stream(self, durable: Any, handle: Any, from_offset: int) -> AsyncIterator[Any]:
        from tether.adapters.pydantic_ai._streamed import pydantic_events

        return pydantic_events(handle, from_offset)

    def decode_output(self, agent: object, value: JSON) -> object:
        return AgentRunResult(
            output=unpack(value["output"]),
            usage=dict(value.get("usage", {})),
            messages=ModelMessagesTypeAdapter.validate_python(value.get("messages", [])),
        )


def declares_deferred(output_type: object) -> bool:
    """Whether ``DeferredToolRequests`` is among an agent's output types."""
    if output_type is DeferredToolRequests:
        return True
    if isinstance(output_type, list | tuple):
        return any(declares_deferred(t) for t in output_type)
    return False
