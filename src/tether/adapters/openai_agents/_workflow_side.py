"""Run side: the SDK's own loop, with every model and function-tool call made a step.

A per-run proxy of the agent graph replaces each agent's model with :class:`StepModel`
and each function tool's invoker with a tool step. Agents reached at run time (handoff
targets, agents used as tools, whose nested ``Runner.run`` goes through the SDK's default
runner) are proxied on the way, so nothing in the run talks to a provider directly.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import json
from collections.abc import AsyncIterator
from typing import Any

from agents import (
    Agent,
    FunctionTool,
    Handoff,
    Model,
    ModelResponse,
    ModelSettings,
    ModelTracing,
    RunConfig,
    RunContextWrapper,
    RunState,
    Tool,
    Usage,
)
from agents.agent_output import AgentOutputSchemaBase
from agents.items import (
    ToolApprovalItem,
    TResponseInputItem,
    TResponseOutputItem,
    TResponseStreamEvent,
)
from agents.run import AgentRunner
from agents.tool_context import ToolContext
from agents.tracing import SpanError, generation_span
from openai.types.responses import Response, ResponseCompletedEvent, ResponseUsage
from pydantic import TypeAdapter
from pydantic_core import to_jsonable_python

from tether.adapters.openai_agents._graph import agent_tool_target, handoff_target, index_agents
from tether.adapters.openai_agents._mcp import stand_ins
from tether.core.contract import MODEL_POLICY, TOOL_POLICY, RunSession, WaitRequest
from tether.core.events import MODEL_STATE_FALLBACK, MODEL_UNSTREAMED
from tether.human import human_input_of

MODEL_STEP = "openai_agents.model"
TOOL_STEP = "openai_agents.tool"

_output_items: TypeAdapter[list[TResponseOutputItem]] = TypeAdapter(list[TResponseOutputItem])
_current: contextvars.ContextVar[RunProxy | None] = contextvars.ContextVar(
    "tether_openai_run", default=None
)


def tool_spec(tools: list[Tool], handoffs: list[Handoff[Any, Any]]) -> dict[str, Any]:
    """What the model needs to see of the tools and handoffs (schemas, not code)."""
    out_tools = []
    for t in tools:
        if isinstance(t, FunctionTool):
            out_tools.append(
                {
                    "kind": "function",
                    "name": t.name,
                    "description": t.description,
                    "params": t.params_json_schema,
                    "strict": t.strict_json_schema,
                }
            )
        else:
            out_tools.append({"kind": "builtin", "name": getattr(t, "name", type(t).__name__)})
    out_handoffs = [
        {
            "tool_name": h.tool_name,
            "tool_description": h.tool_description,
            "input_json_schema": h.input_json_schema,
            "agent_name": h.agent_name,
            "strict": h.strict_json_schema,
        }
        for h in handoffs
    ]
    return {"tools": out_tools, "handoffs": out_handoffs}


_usage: TypeAdapter[Usage] = TypeAdapter(Usage)


def usage_totals(usage: Usage) -> dict[str, int]:
    """The ledger's view of one model call's usage."""
    return {
        "requests": 1,
        "input_tokens": usage.input_tokens,
        "output_tokens": usage.output_tokens,
        "total_tokens": usage.total_tokens,
        "cached_tokens": usage.input_tokens_details.cached_tokens,
        "reasoning_tokens": usage.output_tokens_details.reasoning_tokens,
    }


class StepModel(Model):
    """A model whose every call is a durable step, made on a worker by the agent's real model."""

    def __init__(self, run: RunProxy, agent: Agent[Any]) -> None:
        self._run = run
        self._agent = agent.name
        self.original = agent

    async def get_response(
        self,
        system_instructions: str | None,
        input: str | list[TResponseInputItem],
        model_settings: ModelSettings,
        tools: list[Tool],
        output_schema: AgentOutputSchemaBase | None,
        handoffs: list[Handoff[Any, Any]],
        tracing: ModelTracing,
        *,
        previous_response_id: str | None,
        conversation_id: str | None,
        prompt: Any | None,
    ) -> ModelResponse:
        response, _ = await self._step(
            system_instructions,
            input,
            model_settings,
            tools,
            handoffs,
            previous_response_id,
            conversation_id,
            "text" if self._run.stream_text else None,
            tracing,
        )
        return response

    async def _step(
        self,
        system_instructions: str | None,
        input: str | list[TResponseInputItem],
        model_settings: ModelSettings,
        tools: list[Tool],
        handoffs: list[Handoff[Any, Any]],
        previous_response_id: str | None,
        conversation_id: str | None,
        stream: str | None,
        tracing: ModelTracing,
    ) -> tuple[ModelResponse, dict[str, Any]]:
        step = self._model_step(
            system_instructions,
            input,
            model_settings,
            tools,
            handoffs,
            previous_response_id,
            conversation_id,
            stream,
        )
        if tracing.is_disabled():
            return await step  # (the SDK's tracing is not even looked up)
        # The generation span the SDK's own models make, made here: the real model runs in
        # the step with tracing off (it runs on a worker, outside the run's trace).
        with generation_span(
            model_config=to_jsonable_python(model_settings.to_json_dict())
        ) as span:
            try:
                response, value = await step
            except Exception as exc:
                span.set_error(SpanError(message=f"{type(exc).__name__}: {exc}", data=None))
                raise
            data = span.span_data
            data.model = value.get("model")
            data.usage = {
                "input_tokens": response.usage.input_tokens,
                "output_tokens": response.usage.output_tokens,
            }
            if tracing.include_data():
                if isinstance(input, str):
                    data.input = [{"role": "user", "content": input}]
                else:
                    data.input = [dict(item) for item in input]
                data.output = [item.model_dump(exclude_unset=True) for item in response.output]
        return response, value

    async def _model_step(
        self,
        system_instructions: str | None,
        input: str | list[TResponseInputItem],
        model_settings: ModelSettings,
        tools: list[Tool],
        handoffs: list[Handoff[Any, Any]],
        previous_response_id: str | None,
        conversation_id: str | None,
        stream: str | None,
    ) -> tuple[ModelResponse, dict[str, Any]]:
        spec = tool_spec(tools, handoffs)
        payload = {
            "agent": self._agent,
            "system": system_instructions,
            "settings": to_jsonable_python(model_settings.to_json_dict()),
            "spec_ref": self._run.share(spec),
            "previous_response_id": previous_response_id,
            "conversation_id": conversation_id,
            "input_text": input if isinstance(input, str) else None,
        }
        if stream is not None and self._run.provider_streams:
            # True (not "text"): the payload of runs started before raw streams existed.
            payload["stream"] = "raw" if stream == "raw" else True
        items = None if isinstance(input, str) else self._run.jsonable(input)
        # The run's own loop (not a nested agent-as-tool run): its conversation may be the
        # tail of one whose earlier items the store holds (see RunProxy.checkpoint).
        main = _depth.get() == 1
        if main:
            await self._run.checkpoint(self.original, input, items)
        chain = None
        if items is not None and self._run.responses_state and model_settings.store is not False:
            chain = self._run.chain_for(self._agent, items, main)
            if chain is not None:
                payload["chain"] = chain
        outcome = await self._run.session.step(
            MODEL_STEP,
            payload,
            kind="model",
            summary=f"model: {self._agent}",
            policy=MODEL_POLICY,
            transcript=items if items is not None else [],
            prefixed=main,
            # A chained request needs only the items after the previous response.
            transcript_from=int(chain["new_from"]) if chain is not None else 0,
            frozen=items is not None,  # jsonable()'s own copies, reused while unchanged
        )
        value = outcome.value
        usage = _usage.validate_python(value["usage"])
        output = _output_items.validate_python(value["output"])
        session = self._run.session
        if value.get("stream_fallback"):
            # Asked once: the run's later model steps make plain requests.
            self._run.provider_streams = False
            session.publish(
                MODEL_UNSTREAMED, {"agent": self._agent, "reason": value["stream_fallback"]}
            )
        state = value.get("state")
        if isinstance(state, dict) and state.get("fallback"):
            session.publish(
                MODEL_STATE_FALLBACK,
                {"agent": self._agent, "fallback": state["fallback"], "reason": state["reason"]},
            )
        if items is not None and self._run.responses_state and value.get("response_id"):
            self._run.remember_chain(
                self._agent, items, value["output"], value["response_id"], main
            )
        session.publish("model.response", response_event(output))
        session.add_usage(usage_totals(usage), model=value.get("model"), provider="openai")
        response = ModelResponse(
            output=output,
            usage=usage,
            response_id=value.get("response_id"),
            request_id=value.get("request_id"),
        )
        return response, value

    async def stream_response(
        self,
        system_instructions: str | None,
        input: str | list[TResponseInputItem],
        model_settings: ModelSettings,
        tools: list[Tool],
        output_schema: AgentOutputSchemaBase | None,
        handoffs: list[Handoff[Any, Any]],
        tracing: ModelTracing,
        *,
        previous_response_id: str | None,
        conversation_id: str | None,
        prompt: Any | None,
    ) -> AsyncIterator[TResponseStreamEvent]:
        """The SDK's streamed loop (``run_streamed``) inside a run: the step streams the real
        model, publishing its raw events to the run's log as they come; the loop here gets
        the completed response only, as the one event it needs."""
        response, value = await self._step(
            system_instructions,
            input,
            model_settings,
            tools,
            handoffs,
            previous_response_id,
            conversation_id,
            "raw",
            tracing,
        )
        used = response.usage
        yield ResponseCompletedEvent(
            type="response.completed",
            sequence_number=0,
            response=Response.model_construct(
                id=response.response_id or "",
                created_at=0,
                model=str(value.get("model") or ""),
                object="response",
                output=list(response.output),
                parallel_tool_calls=True,
                tool_choice="auto",
                tools=[],
                status="completed",
                usage=ResponseUsage(
                    input_tokens=used.input_tokens,
                    output_tokens=used.output_tokens,
                    total_tokens=used.total_tokens,
                    input_tokens_details=used.input_tokens_details,
                    output_tokens_details=used.output_tokens_details,
                ),
            ),
        )


@dataclasses.dataclass(frozen=True)
class _Chain:
    """A response the provider stores: the request's items it answered and its output.

    ``main``: a response of the run's own loop, whose ``items`` are positions in the loop's
    conversation (which may follow a stored prefix: RunProxy.prefix), not a nested run's.
    """

    response_id: str
    items: list[Any]
    output: list[Any]
    main: bool = True

    @property
    def length(self) -> int:
        return len(self.items) + len(self.output)

    def continued_by(self, items: list[Any]) -> bool:
        n = len(self.items)
        if len(items) <= self.length or items[:n] != self.items:
            return False
        return all(
            _same_output(got, sent) for got, sent in zip(items[n:], self.output, strict=False)
        )


def _same_output(got: Any, sent: Any) -> bool:
    """Whether a conversation item is the response's output item (as the SDK re-sends it)."""
    if not isinstance(got, dict) or not isinstance(sent, dict):
        return False
    return all(got.get(k) == sent.get(k) for k in ("type", "id", "call_id", "role"))


class RunProxy:
    """Per-run state on the run side: the proxied agents and what was shared with steps."""

    def __init__(
        self, session: RunSession, *, stream_text: bool = False, responses_state: bool = False
    ) -> None:
        self.session = session
        self.stream_text = stream_text
        self.provider_streams = True
        """False once a step found that the provider does not stream (asked once per run)."""
        self.traced = False
        """Whether the SDK's tracing records this run (one trace, see ``_tracing``)."""
        self.responses_state = responses_state
        """Responses state mode: model steps continue the previous response (see chain_for)."""
        self._chains: dict[tuple[str, bool], _Chain] = {}
        self._last_chain: _Chain | None = None
        self._last_agent = ""
        self._jsonable: list[Any] = []
        self._proxies: dict[int, Agent[Any]] = {}
        self.context: Any = None
        self.max_turns = 10
        self.turns = 0
        """Model calls the run's own loop made (the SDK's turns), carried across segments."""
        self.checkpoints = True
        """False in streamed runs: their loop runs in the SDK's background task."""
        self.prefix = 0
        """How many items of the loop's conversation precede the ones it holds: they stay in
        the store (a segment resumed from the tail, see ``checkpoint``)."""
        self._tail_ok: dict[int, bool] = {}

    def jsonable(self, items: list[Any]) -> list[Any]:
        """``items`` as JSON, converting only the items after the longest prefix equal to the
        previous call's result: the conversation grows by a few items per turn, and
        converting all of it at every model call cost 60 ms at 9,000 items. Items are
        compared by value with the converted copies kept here (C-level equality), so an
        item changed in place is converted again."""
        mine = self._jsonable
        n = min(len(mine), len(items))
        same = n if items[:n] == mine[:n] else next(i for i in range(n) if items[i] != mine[i])
        fresh: list[Any] = to_jsonable_python(items[same:])
        out = mine[:same] + fresh
        self._jsonable = out
        return out

    async def checkpoint(
        self,
        agent: Agent[Any],
        input: str | list[TResponseInputItem],
        conversation: list[Any] | None,
    ) -> None:
        """The run's loop is about to call the model: a long run may continue as new here.
        The snapshot is the SDK's own ``RunState`` of the loop at this point: the
        conversation so far (``conversation``, the input as JSON) as its input, the current
        agent, the turns made."""
        turns, self.turns = self.turns, self.turns + 1
        if not self.checkpoints:
            return

        def snapshot() -> Any:
            # The conversation crosses as the checkpoint's transcript (by reference to the
            # store), not inside the state: its input is filled in again on restore.
            state: RunState[Any, Agent[Any]] = RunState(
                context=RunContextWrapper(context=self.context),
                original_input=input if conversation is None else [],
                starting_agent=agent,
                max_turns=self.max_turns,
            )
            state._current_turn = turns
            saved: dict[str, Any] = {
                "state": state.to_json(context_serializer=no_context),
                "turns": turns,
            }
            chain = self._last_chain
            if (
                chain is not None
                and chain.main
                and conversation is not None
                and chain.continued_by(conversation)
            ):
                # The next segment's first request continues the stored response too (sent
                # whole, it would cost what the conversation costs).
                saved["chain"] = {
                    "agent": self._last_agent,
                    "response_id": chain.response_id,
                    "items": self.prefix + len(chain.items),
                    "output": chain.output,
                }
            return saved

        await self.session.checkpoint(
            snapshot, transcript=conversation, prefixed=True, tail_only=self.tail_only(agent)
        )

    def tail_only(self, agent: Agent[Any]) -> bool:
        """Whether the next segment's loop may hold the conversation's tail only: the SDK
        then walks a segment's items per turn, not the conversation's (steps read it whole
        from the store). Not when a handoff rewrites the history it is handed (an input
        filter, nested history): that needs the whole conversation in the loop."""
        known = self._tail_ok.get(id(agent))
        if known is None:
            known = not any(
                isinstance(h, Handoff) and (h.input_filter is not None or h.nest_handoff_history)
                for reachable in index_agents(agent).values()
                for h in reachable.handoffs
            )
            self._tail_ok[id(agent)] = known
        return known

    async def restore(self, agent: Agent[Any], saved: Any) -> RunState[Any, Agent[Any]]:
        """The SDK's ``RunState`` a checkpoint saved, with the run's step-backed agents."""
        # Read against the step-backed graph: the state's agents (and the tools its
        # approvals name) are the run's own proxies.
        state: RunState[Any, Agent[Any]] = await RunState.from_json(
            self.agent(agent),
            saved["state"],
            context_override=RunContextWrapper(context=self.context),
        )
        self.turns = int(saved.get("turns", state._current_turn))
        conversation = self.session.resumed_transcript()
        self.prefix = self.session.resumed_prefix()
        if conversation is not None:
            state._original_input = list(conversation)
            carried = saved.get("chain")
            n = int(carried["items"]) - self.prefix if isinstance(carried, dict) else -1
            if isinstance(carried, dict) and self.responses_state and n >= 0:
                chain = _Chain(
                    str(carried["response_id"]), list(conversation[:n]), carried["output"]
                )
                if chain.continued_by(list(conversation)):
                    self._chains[str(carried["agent"]), True] = chain
                    self._last_chain, self._last_agent = chain, str(carried["agent"])
        return state

    def chain_for(self, agent: str, items: list[Any], main: bool) -> dict[str, Any] | None:
        """The stored response ``items`` continue, and where the items after it start.

        A candidate is the last response of this agent (a nested agent-as-tool run keeps its
        own), else the run's last response (a handoff continues the conversation). It is used
        only when ``items`` begin with exactly what the provider holds for it: the request
        it answered and its output. Decided from recorded step results, so a replay (after a
        crash, on another worker) decides the same.
        """
        for chain in (self._chains.get((agent, main)), self._last_chain):
            if chain is not None and chain.main == main and chain.continued_by(items):
                # Positions in the conversation the step's worker reads (whole).
                start = self.prefix if main else 0
                return {"previous_response_id": chain.response_id, "new_from": start + chain.length}
        return None

    def remember_chain(
        self, agent: str, items: list[Any], output: list[Any], response_id: str, main: bool
    ) -> None:
        chain = _Chain(response_id, items, output, main)
        self._chains[agent, main] = chain
        self._last_chain, self._last_agent = chain, agent

    def share(self, value: Any) -> str:
        return self.session.share(value)

    def agent(self, agent: Agent[Any]) -> Agent[Any]:
        """The step-backed copy of ``agent`` (memoized: one copy per agent per run)."""
        if any(p is agent for p in self._proxies.values()):
            return agent
        key = id(agent)
        proxy = self._proxies.get(key)
        if proxy is None:
            proxy = agent.clone(model=StepModel(self, agent))
            self._proxies[key] = proxy
            proxy.tools = [self._tool(agent, t) for t in agent.tools]
            proxy.mcp_servers = stand_ins(self.session, agent)
            proxy.handoffs = [self._handoff(h) for h in agent.handoffs]
        return proxy

    def _handoff(self, h: Agent[Any] | Handoff[Any, Any]) -> Agent[Any] | Handoff[Any, Any]:
        if isinstance(h, Agent):
            return self.agent(h)
        original = h.on_invoke_handoff

        async def invoke(ctx: Any, args: str) -> Agent[Any]:
            target = await original(ctx, args)
            return self.agent(target) if isinstance(target, Agent) else target

        copy = dataclasses.replace(h, on_invoke_handoff=invoke)
        target = handoff_target(h)
        if target is not None:
            copy._agent_ref = h._agent_ref
        return copy

    def _tool(self, owner: Agent[Any], tool: Tool) -> Tool:
        if not isinstance(tool, FunctionTool) or agent_tool_target(tool) is not None:
            # Hosted tools run at the provider; agents used as tools run their nested loop
            # here, and its model and tools are steps through the proxied sub-agent.
            return tool
        run = self
        name = tool.name
        human = human_input_of(_wrapped(tool))
        if human is not None:

            async def ask(ctx: ToolContext[Any], args: str) -> Any:
                # A person answers instead of a step: the run waits durably for them.
                question = str(json.loads(args or "{}").get("question", args))
                call_id = getattr(ctx, "tool_call_id", None) or f"{name}:{args}"
                answer = await run.session.wait(
                    WaitRequest(
                        id=call_id,
                        kind="question",
                        tool=name,
                        question=question,
                        timeout=human.timeout,
                        on_timeout=human.on_timeout,
                        default=human.default,
                    )
                )
                return "" if answer.value is None else str(answer.value)

            return dataclasses.replace(tool, on_invoke_tool=ask)

        async def invoke(ctx: ToolContext[Any], args: str) -> Any:
            call_id = getattr(ctx, "tool_call_id", None)
            outcome = await run.session.step(
                TOOL_STEP,
                {
                    "agent": owner.name,
                    "tool": name,
                    "args": args,
                    "call_id": call_id,
                },
                kind="tool",
                summary=f"tool: {name}",
                policy=TOOL_POLICY,
                info={"tool": name, "call_id": call_id},
            )
            if outcome.error is not None:
                if outcome.error.fatal:
                    raise ToolStepError(name, outcome.error.type, outcome.error.message)
                return outcome.error.model_text
            from tether.core.values import unpack

            return unpack(outcome.value)

        return dataclasses.replace(tool, on_invoke_tool=invoke)


def _wrapped(tool: FunctionTool) -> object:
    try:
        return tool.__wrapped__
    except AttributeError:
        return None


def response_event(output: list[TResponseOutputItem]) -> dict[str, Any]:
    """The neutral ``model.response`` event of one model response."""
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for item in output:
        if item.type == "message":
            texts.extend(c.text for c in item.content if c.type == "output_text")
        elif item.type == "function_call":
            calls.append({"name": item.name, "call_id": item.call_id})
    return {"text": "".join(texts) or None, "tool_calls": calls}


def approval_request(item: ToolApprovalItem) -> WaitRequest:
    """The durable wait for one of the SDK's approval interruptions (id: the call id)."""
    raw = item.raw_item
    get = raw.get if isinstance(raw, dict) else lambda key: getattr(raw, key, None)
    call_id = get("call_id") or get("id")
    arguments = get("arguments")
    try:
        args = json.loads(arguments) if isinstance(arguments, str) else arguments
    except ValueError:
        args = arguments
    return WaitRequest(
        id=str(call_id),
        kind="approval",
        tool=item.tool_name or get("name"),
        args=to_jsonable_python(args),
    )


class ToolStepError(Exception):
    """A tool failed in a way its failure policy hands to the run, not the model."""

    def __init__(self, tool: str, error_type: str, message: str) -> None:
        super().__init__(f"tool {tool!r} failed ({error_type}): {message}")


def no_context(context: Any) -> dict[str, Any]:
    # The run context is the run's input (request.context), restored from there: the
    # snapshot need not carry it.
    return {}


_depth: contextvars.ContextVar[int] = contextvars.ContextVar("tether_openai_depth", default=0)
"""How many runner calls deep the code runs: 1 is the Tether run's own loop."""


class TetherAgentRunner(AgentRunner):
    """The SDK's default runner, made to proxy agents when called inside a Tether run.

    Agents used as tools start nested runs through ``Runner.run``; inside a Tether run
    (a context variable tells) their starting agent is swapped for its step-backed copy.
    Outside one it behaves exactly like the SDK's runner.
    """

    async def run(self, starting_agent: Agent[Any], input: Any, **kwargs: Any) -> Any:
        run = _current.get()
        if run is not None:
            starting_agent = run.agent(starting_agent)
            config = kwargs.get("run_config") or RunConfig()
            # A traced run's nested runs are spans of its one trace (the SDK reuses it).
            if isinstance(config, RunConfig) and not config.tracing_disabled and not run.traced:
                kwargs["run_config"] = dataclasses.replace(config, tracing_disabled=True)
        token = _depth.set(_depth.get() + 1)
        try:
            return await super().run(starting_agent, input, **kwargs)
        finally:
            with contextlib.suppress(ValueError):
                _depth.reset(token)


def current_run() -> RunProxy | None:
    """The proxy of the Tether run this code runs in, or None outside runs."""
    return _current.get()


def current_session() -> RunSession:
    """The session of the Tether run this code runs in."""
    run = _current.get()
    if run is None:
        raise RuntimeError("not inside a Tether run")
    return run.session


def enter_run(proxy: RunProxy) -> contextvars.Token[RunProxy | None]:
    return _current.set(proxy)


def leave_run(token: contextvars.Token[RunProxy | None]) -> None:
    # A run evicted from the worker's cache while it waits is closed by the garbage
    # collector, in another context than the one that entered it: nothing to restore then.
    with contextlib.suppress(ValueError):
        _current.reset(token)
