"""Run side: Pydantic AI's own graph loop, with model requests and tool calls made steps.

A capability added to the run (Pydantic AI's public extension point) wraps the model that
serves each request and the run's assembled toolset; the wrappers send the request or the
call to a step, so the graph, output validation, usage limits, retries and deferred tools
run unchanged in the run.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any

from pydantic import TypeAdapter
from pydantic_ai import Agent, DeferredToolRequests, DeferredToolResults, RunContext, ToolDenied
from pydantic_ai._run_context import get_current_run_context
from pydantic_ai.capabilities import AbstractCapability, CombinedCapability
from pydantic_ai.capabilities.abstract import CapabilityOrdering
from pydantic_ai.exceptions import ApprovalRequired, CallDeferred, ModelRetry
from pydantic_ai.messages import (
    AgentStreamEvent,
    FunctionToolCallEvent,
    FunctionToolResultEvent,
    ModelMessage,
    ModelMessagesTypeAdapter,
    ModelResponse,
    TextPart,
    ToolCallPart,
    ToolReturnPart,
)
from pydantic_ai.models import Model, ModelRequestParameters
from pydantic_ai.models.wrapper import WrapperModel
from pydantic_ai.settings import ModelSettings
from pydantic_ai.toolsets import AbstractToolset, FunctionToolset, ToolsetTool, WrapperToolset
from pydantic_core import to_jsonable_python

from tether.adapters.pydantic_ai._mcp import replace_mcp, routes_to_mcp
from tether.core.contract import JSON, MODEL_POLICY, TOOL_POLICY, RunSession, WaitRequest
from tether.core.events import MODEL_STATE_FALLBACK, MODEL_UNSTREAMED
from tether.core.values import unpack
from tether.human import human_input_of

MODEL_STEP = "pydantic_ai.model"
TOOL_STEP = "pydantic_ai.tool"

_params: TypeAdapter[ModelRequestParameters] = TypeAdapter(ModelRequestParameters)


@functools.cache
def _agent_events() -> TypeAdapter[AgentStreamEvent]:
    """Built at the first streamed event, not at import (a worker's start)."""
    return TypeAdapter(AgentStreamEvent)


STREAM_EVENT = "pydantic_ai.stream"
_VOLATILE = ("timestamp", "run_id", "conversation_id")


def messages_json(messages: list[ModelMessage]) -> list[Any]:
    """Messages as JSON, without the fields that differ between a run and its replay.

    Timestamps and run ids come from the clock and the random generator while the run is
    rebuilt; the model does not read them, and leaving them out keeps the transcript's
    content hashes stable across replays.
    """
    raw = ModelMessagesTypeAdapter.dump_python(messages, mode="json")
    return [_strip(m) for m in raw]


class MessagesJson:
    """:func:`messages_json` for a run's growing history, each message dumped once.

    A message already dumped at the same position (the same object) reuses its JSON, so a
    model call costs its new messages, not the conversation. The last two messages are
    always dumped again: the framework may still be completing them when it asks.
    """

    RECENT = 2

    def __init__(self) -> None:
        self._seen: list[tuple[ModelMessage, Any]] = []

    def __call__(self, messages: list[ModelMessage]) -> list[Any]:
        settled = len(messages) - self.RECENT
        out: list[Any] = []
        for i, message in enumerate(messages):
            if i < settled and i < len(self._seen) and self._seen[i][0] is message:
                out.append(self._seen[i][1])
            else:
                out.extend(messages_json([message]))
        self._seen = list(zip(messages, out, strict=True))
        return out


def _strip(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items() if k not in _VOLATILE}
    if isinstance(value, list):
        return [_strip(v) for v in value]
    return value


class StepModel(WrapperModel):
    """Sends each request of the wrapped model to a step, made on a worker."""

    def __init__(
        self,
        wrapped: Model,
        session: RunSession,
        agent_name: str,
        override: str | None,
        stream_text: bool = False,
        streams: StreamState | None = None,
        as_json: MessagesJson | None = None,
    ) -> None:
        super().__init__(wrapped)
        self._as_json = as_json or MessagesJson()
        self._session = session
        self._agent = agent_name
        self._override = override
        self._streams = streams or StreamState(text=stream_text)

    async def request(
        self,
        messages: list[ModelMessage],
        model_settings: ModelSettings | None,
        model_request_parameters: ModelRequestParameters,
    ) -> ModelResponse:
        payload = {
            "agent": self._agent,
            "model_override": self._override,
            "settings": to_jsonable_python(model_settings) if model_settings else None,
            "params_ref": self._session.share(
                _params.dump_python(model_request_parameters, mode="json")
            ),
        }
        streams = self._streams
        if streams.provider_streams and (streams.raw or streams.text):
            payload["stream"] = "raw" if streams.raw else True
        transcript = self._as_json(messages)
        chain = streams.continued(messages, transcript, model_settings, self._prefix())
        if chain is not None:
            # The provider holds the history up to its response: the step's worker reads
            # and sends only what follows it.
            payload["chain"] = {"response_id": chain.response_id, "from": chain.at}
        if self._streams.checkpoints:
            # A step boundary: a long run may continue as new here (Pydantic AI resumes
            # from the message history, ending with this request, and the run's usage).
            await self._session.checkpoint(
                functools.partial(loop_state, streams, chain),
                transcript=transcript,
                prefixed=True,
                tail_only=self._streams.tail_only,
            )
        outcome = await self._session.step(
            MODEL_STEP,
            payload,
            kind="model",
            summary=f"model: {self._agent}",
            policy=MODEL_POLICY,
            transcript=transcript,
            prefixed=True,  # the run's own history (tools run nested agents on workers)
            transcript_from=chain.at if chain is not None else 0,
            frozen=True,  # MessagesJson's own dicts, reused while a message is unchanged
        )
        response = ModelMessagesTypeAdapter.validate_python([outcome.value["response"]])[0]
        assert isinstance(response, ModelResponse)
        streams.answered(transcript, response, model_settings, self._prefix())
        usage = response.usage
        if outcome.value.get("stream_fallback"):
            # Asked once: the run's later model steps make plain requests.
            streams.provider_streams = False
            self._session.publish(
                MODEL_UNSTREAMED, {"agent": self._agent, "reason": outcome.value["stream_fallback"]}
            )
        state = outcome.value.get("state")
        if isinstance(state, dict) and state.get("fallback"):
            self._session.publish(
                MODEL_STATE_FALLBACK,
                {"agent": self._agent, "fallback": state["fallback"], "reason": state["reason"]},
            )
        self._session.publish("model.response", response_event(response))
        self._session.add_usage(
            {
                "requests": 1,
                "input_tokens": usage.input_tokens,
                "output_tokens": usage.output_tokens,
                "total_tokens": usage.input_tokens + usage.output_tokens,
                "cached_tokens": usage.cache_read_tokens,
            },
            model=response.model_name,
            provider=response.provider_name,
        )
        return response

    def _prefix(self) -> int:
        """Where this segment's history starts in the run's (after a tail-only resume)."""
        return self._session.resumed_prefix()

    def prepare_request(
        self,
        model_settings: ModelSettings | None,
        model_request_parameters: ModelRequestParameters,
    ) -> tuple[ModelSettings | None, ModelRequestParameters]:
        return self.wrapped.prepare_request(model_settings, model_request_parameters)


@dataclass
class StreamState:
    """What one run's model steps stream: text previews, or every event (framework-shaped
    streams); ``provider_streams`` turns false once the provider was found not to stream."""

    text: bool = False
    raw: bool = False
    provider_streams: bool = True
    checkpoints: bool = False
    """Whether the run's loop marks its step boundaries (a long run continues as new there)."""
    tail_only: bool = False
    """Whether a continued segment's loop may resume from the history's tail (see
    ``resumes_from_tail``)."""
    chain: ResponseChain | None = None
    """The provider-stored response the next request may continue (Responses state)."""
    chainable: bool = True
    """False once the history holds a part a request reads beyond its last response."""
    scanned: int = 0

    def continued(
        self,
        messages: list[ModelMessage],
        transcript: list[Any],
        settings: ModelSettings | None,
        prefix: int,
    ) -> ResponseChain | None:
        """The stored response this request continues, when its worker may send only the
        messages after it (as Pydantic AI's ``openai_previous_response_id`` does, but
        without reading, parsing and digesting the history before it on the worker).

        Decided here, from the run's own record, where the whole history is at hand: the
        response is this run's, the history before it is what its request sent, and no part
        that Pydantic AI reads further back (settings deltas, compaction, instruction
        baselines) has ever been in the run's history; nor anything in the agent's loop
        that rewrites history (``resumes_from_tail``).
        """
        if not self.tail_only or not _chains(settings):
            return None
        if self.scanned > len(transcript):
            self.scanned = 0
        for item in transcript[self.scanned :]:
            parts = item.get("parts", ()) if isinstance(item, dict) else ()
            if any(not isinstance(p, dict) or p.get("part_kind") not in _PLAIN for p in parts):
                self.chainable = False
        self.scanned = max(0, len(transcript) - MessagesJson.RECENT)
        chain = self.chain
        if chain is None or not self.chainable:
            return None
        at = chain.at - prefix
        if at < 0 or at + 1 >= len(messages):
            return None
        response = messages[at]
        if not isinstance(response, ModelResponse):
            return None
        if response.provider_response_id != chain.response_id:
            return None
        if chain.sent is not None and transcript[:at] != chain.sent:
            return None
        return chain

    def answered(
        self,
        transcript: list[Any],
        response: ModelResponse,
        settings: ModelSettings | None,
        prefix: int,
    ) -> None:
        """Remember the response a next request may continue (it follows ``transcript``)."""
        self.chain = None
        if self.tail_only and _chains(settings) and response.provider_response_id:
            self.chain = ResponseChain(
                prefix + len(transcript), response.provider_response_id, list(transcript)
            )


@dataclass(frozen=True)
class ResponseChain:
    """A response the provider stores, and where it sits in the run's history."""

    at: int
    """Its position in the run's whole history (earlier segments' included)."""
    response_id: str
    sent: list[Any] | None
    """The history its request sent (this segment's part); None when carried over from
    the previous segment, whose boundary checked it."""

    def carried(self) -> dict[str, Any]:
        return {"at": self.at, "response_id": self.response_id}

    @classmethod
    def resumed(cls, saved: Any) -> ResponseChain | None:
        if not isinstance(saved, dict) or "at" not in saved:
            return None
        return cls(int(saved["at"]), str(saved["response_id"]), None)


_PLAIN = frozenset(
    {"system-prompt", "user-prompt", "tool-return", "retry-prompt", "text", "tool-call", "thinking"}
)
"""Message parts that no request reads past the last stored response: a history of only
these may be continued from that response with the messages after it."""


def _chains(settings: ModelSettings | None) -> bool:
    """Whether requests continue the provider's stored responses (Responses API state)."""
    return bool(
        settings
        and settings.get("openai_previous_response_id")
        and not settings.get("openai_conversation_id")
    )


@dataclass
class StepToolset(WrapperToolset[Any]):
    """Sends each tool call to a step; control flow (retry, approval, deferral) comes back as
    data and is raised here, where Pydantic AI expects it."""

    session: RunSession | None = field(default=None, kw_only=True)
    agent_name: str = field(default="", kw_only=True)
    streams: StreamState | None = field(default=None, kw_only=True)

    def _publish(self, event: Any) -> None:
        if self.session is not None and self.streams is not None and self.streams.raw:
            # Without the clock's timestamp (a replay would publish another): readers take
            # the event's own (deterministic) time instead.
            data = _strip(_agent_events().dump_python(event, mode="json"))
            self.session.publish(STREAM_EVENT, {"event": data})

    async def call_tool(
        self, name: str, tool_args: dict[str, Any], ctx: RunContext[Any], tool: ToolsetTool[Any]
    ) -> Any:
        assert self.session is not None
        if routes_to_mcp(tool):
            return await self.wrapped.call_tool(name, tool_args, ctx, tool)
        human = human_input_of(_function_of(tool, name))
        if human is not None:
            # A person answers instead of a step: the run waits durably for them.
            answer = await self.session.wait(
                WaitRequest(
                    id=ctx.tool_call_id or f"{name}-{ctx.run_step}",
                    kind="question",
                    tool=name,
                    question=str(tool_args.get("question", tool_args)),
                    timeout=human.timeout,
                    on_timeout=human.on_timeout,
                    default=human.default,
                )
            )
            return "" if answer.value is None else str(answer.value)
        part = ToolCallPart(
            tool_name=name, args=to_jsonable_python(tool_args), tool_call_id=ctx.tool_call_id or ""
        )
        self._publish(FunctionToolCallEvent(part=part))
        outcome = await self.session.step(
            TOOL_STEP,
            {
                "agent": self.agent_name,
                "tool": name,
                "args": to_jsonable_python(tool_args),
                "ctx": {
                    "tool_call_id": ctx.tool_call_id,
                    "retry": ctx.retry,
                    "run_step": ctx.run_step,
                    "tool_call_approved": ctx.tool_call_approved,
                },
            },
            kind="tool",
            summary=f"tool: {name}",
            policy=TOOL_POLICY,
            info={"tool": name, "call_id": ctx.tool_call_id},
        )
        error = outcome.error
        if error is None:
            result = unpack(outcome.value)
            self._publish(
                FunctionToolResultEvent(
                    part=ToolReturnPart(
                        tool_name=name, content=result, tool_call_id=part.tool_call_id
                    )
                )
            )
            return result
        if error.type == "ModelRetry":
            raise ModelRetry(error.message)
        if error.type == "ApprovalRequired":
            raise ApprovalRequired()
        if error.type == "CallDeferred":
            raise CallDeferred()
        raise ToolStepError(name, error.type, error.message)


def _function_of(tool: ToolsetTool[Any], name: str) -> object:
    """The Python function behind a function-toolset tool (None for other toolsets)."""
    toolset = tool.toolset
    if not isinstance(toolset, FunctionToolset):
        return None
    found = toolset.tools.get(getattr(tool, "original_name", None) or name)
    return found.function if found is not None else None


def response_event(response: ModelResponse) -> dict[str, Any]:
    """The neutral ``model.response`` event of one model response."""
    text = "".join(p.content for p in response.parts if isinstance(p, TextPart))
    calls = [
        {"name": p.tool_name, "call_id": p.tool_call_id}
        for p in response.parts
        if isinstance(p, ToolCallPart)
    ]
    return {"text": text or None, "tool_calls": calls}


class ToolStepError(Exception):
    """A tool failed for good; as outside Tether, the run fails with it."""

    def __init__(self, tool: str, error_type: str, message: str) -> None:
        super().__init__(f"tool {tool!r} failed ({error_type}): {message}")


class TetherCapability(AbstractCapability[Any]):
    """Makes one run's model requests and tool calls durable steps (added per run)."""

    def __init__(
        self,
        session: RunSession,
        agent_name: str,
        model: str | None = None,
        *,
        wait_for_deferred: bool = True,
        stream_text: bool = False,
        stream_events: bool = False,
        checkpoints: bool = False,
        tail_only: bool = False,
    ) -> None:
        self._session = session
        self._agent = agent_name
        self._model = model
        self._wait_for_deferred = wait_for_deferred
        self._streams = StreamState(
            text=stream_text, raw=stream_events, checkpoints=checkpoints, tail_only=tail_only
        )
        self._as_json = MessagesJson()  # one per run: the history's JSON, dumped once

    def resume(self, loop: dict[str, Any], tail: bool) -> None:
        """A continued segment: the stored response its first request may continue.
        Resumed from the tail, the history before it was read for plain parts by an earlier
        segment (a checkpoint of an earlier version did not say: no chaining)."""
        self._streams.chain = ResponseChain.resumed(loop.get("chain"))
        if tail:
            self._streams.chainable = bool(loop.get("chainable", False))

    async def handle_deferred_tool_calls(
        self, ctx: RunContext[Any], *, requests: DeferredToolRequests
    ) -> DeferredToolResults | None:
        """Deferred calls become durable waits: the run carries on with people's answers."""
        if not self._wait_for_deferred:
            return None
        return await wait_for_results(
            self._session,
            requests,
            ctx,
            checkpoints=self._streams.checkpoints,
            tail_only=self._streams.tail_only,
            streams=self._streams,
        )

    def get_ordering(self) -> CapabilityOrdering | None:
        return CapabilityOrdering(position="innermost")

    def get_wrapper_model(self, model: Model) -> Model | None:
        if isinstance(model, StepModel):
            return None
        return StepModel(
            model,
            self._session,
            self._agent,
            self._model,
            streams=self._streams,
            as_json=self._as_json,
        )

    def get_wrapper_toolset(self, toolset: AbstractToolset[Any]) -> AbstractToolset[Any] | None:
        toolset = replace_mcp(toolset, self._session, self._agent)
        return StepToolset(
            toolset, session=self._session, agent_name=self._agent, streams=self._streams
        )


_TAIL_SAFE = frozenset({"ToolSearch", "PendingMessageDrainCapability", "TetherCapability"})
"""Capabilities that do not read a run's earlier history (tool search does only to keep the
tools it found, and finds none where no tool loads on demand, checked below)."""


def resumes_from_tail(agent: Agent[Any, Any]) -> bool:
    """Whether the agent's loop can go on from the end of its history alone, so that a
    continued segment holds the tail only (the rest stays in the store; steps read it
    whole). Not when anything in the loop reads the history further back: a capability
    not known not to (history processors, hooks), a dynamic system prompt (matched against
    the history), a tool that loads on demand (tool search remembers what it found there),
    a toolset other than functions (MCP servers' tools may load on demand)."""
    if agent._system_prompt_dynamic_functions:
        return False
    pending: list[Any] = [agent._root_capability]
    while pending:
        capability = pending.pop()
        if isinstance(capability, CombinedCapability):
            pending.extend(capability.capabilities)
        elif type(capability).__name__ not in _TAIL_SAFE:
            return False
    for toolset in agent.toolsets:
        if not isinstance(toolset, FunctionToolset):
            return False
        if any(getattr(tool, "defer_loading", False) for tool in toolset.tools.values()):
            return False
    return True


def loop_state(streams: StreamState | None = None, chain: ResponseChain | None = None) -> JSON:
    """The loop's state at a step boundary besides its message history (which crosses as
    the checkpoint's transcript): the run's usage so far (usage limits count it), and the
    stored response the boundary's request continues (Responses state)."""
    ctx = get_current_run_context()
    usage = to_jsonable_python(ctx.usage) if ctx is not None else None
    state: dict[str, Any] = {"usage": usage}
    if streams is not None:
        state["chainable"] = streams.chainable
        if chain is not None:
            state["chain"] = chain.carried()
    return state


async def wait_for_results(
    session: RunSession,
    requests: DeferredToolRequests,
    ctx: RunContext[Any] | None = None,
    checkpoints: bool = False,
    tail_only: bool = False,
    streams: StreamState | None = None,
) -> DeferredToolResults:
    """Wait durably for a person's answer to each deferred call; the results continue the run."""
    approvals = [
        WaitRequest(
            id=call.tool_call_id,
            kind="approval",
            tool=call.tool_name,
            args=to_jsonable_python(call.args_as_dict()),
        )
        for call in requests.approvals
    ]
    questions = []
    for call in requests.calls:
        meta = requests.metadata.get(call.tool_call_id, {})
        question = meta.get("question") if isinstance(meta, dict) else None
        questions.append(
            WaitRequest(
                id=call.tool_call_id,
                kind="question",
                tool=call.tool_name,
                args=to_jsonable_python(call.args_as_dict()),
                question=str(
                    question or f"the result of {call.tool_name}({call.args_as_json_str()})"
                ),
            )
        )
    if checkpoints and ctx is not None and _all_deferred(ctx.messages, approvals + questions):
        # A step boundary too: a long run may continue as new here, its waits asked now and
        # answered in the next segment (which resumes from the response that asked for
        # them; no call of it ran yet, so none runs twice).
        transcript = messages_json(ctx.messages)
        await session.checkpoint(
            functools.partial(loop_state, streams, streams.chain if streams else None),
            transcript=transcript,
            asking=approvals + questions,
            prefixed=True,
            tail_only=tail_only,
        )
    results = DeferredToolResults()
    for request in approvals:
        answer = await session.wait(request)
        results.approvals[request.id] = (
            True if answer.approved else ToolDenied(answer.reason or "The tool call was denied.")
        )
    for request in questions:
        answer = await session.wait(request)
        results.calls[request.id] = answer.value
    return results


def _all_deferred(messages: list[ModelMessage], waits: list[WaitRequest]) -> bool:
    """Whether the history ends with the response whose every tool call waits for a person."""
    if not messages or not isinstance(messages[-1], ModelResponse):
        return False
    calls = {c.tool_call_id for c in messages[-1].tool_calls}
    return bool(calls) and calls == {w.id for w in waits}


NODE_EVENT = "pydantic_ai.node"


def node_event(node: Any) -> dict[str, Any]:
    """The log's record of one graph node the run is about to run (for ``durable.iter``)."""
    from pydantic_ai import Agent

    data: dict[str, Any] = {"node": type(node).__name__}
    if Agent.is_user_prompt_node(node):
        prompt = node.user_prompt
        data["user_prompt"] = prompt if isinstance(prompt, str) else to_jsonable_python(prompt)
    elif Agent.is_model_request_node(node):
        data["request"] = messages_json([node.request])[0]
    elif Agent.is_call_tools_node(node):
        data["model_response"] = messages_json([node.model_response])[0]
    return data
