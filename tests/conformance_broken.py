"""Deliberately broken adapters, each with one defect the conformance suite must catch.

Built on the out-of-tree example adapter (``examples/rawloop``), which passes the suite;
each subclass breaks one rule. Registered with ``--tether-plugins conformance_broken:NAME``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import uuid
from datetime import UTC, datetime
from typing import Any, ClassVar

from tether_rawloop.adapter import MODEL_POLICY, TOOL_POLICY, RawLoopAdapter
from tether_rawloop.agent import (
    MaxTurnsExceeded,
    Message,
    ModelHTTPError,
    RawAgent,
    RawResult,
    RunTool,
    chat_request,
)
from tether_rawloop.kit import RawLoopKit

from tether import hookimpl
from tether.core.contract import JSON, RunRequest, RunSession, StepContext, StepOutcome
from tether.errors import NonRetryableError, RetryableError


class ToolOutsideStep(RawLoopAdapter):
    """Runs tools in the run itself, not in a step: replay (and a crash) runs them again."""

    name = "broken_outside"

    def run_tool(self, session: RunSession, agent: RawAgent) -> RunTool:
        async def run(name: str, arguments: str) -> str:
            return await agent.tool(name)(arguments)

        return run


class RandomStepName(RawLoopAdapter):
    """Its model step's persisted name has a random part (differs in every worker process)."""

    name = "broken_random"

    def __init__(self) -> None:
        self._suffix = uuid.uuid4().hex[:6]

    @property
    def model_step(self) -> str:
        return f"{self.name}.model.{self._suffix}"


class RetriesNonRetryable(RawLoopAdapter):
    """Turns a tool's non-retryable error into a retryable one."""

    name = "broken_retry"

    async def call_tool(self, ctx: StepContext, payload: JSON) -> StepOutcome:
        try:
            return await super().call_tool(ctx, payload)
        except NonRetryableError as exc:
            raise RuntimeError(str(exc)) from None


class BatchedModelCalls(RawLoopAdapter):
    """Makes two model calls (and the tools between them) in one step, so a crash inside the
    step makes the finished ones again."""

    name = "broken_batch"

    async def call_model(self, ctx: StepContext, payload: JSON) -> StepOutcome:
        agent = ctx.agent
        assert isinstance(agent, RawAgent)
        history: list[Message] = ctx.transcript()
        new: list[Message] = []
        ids: list[Any] = []
        for _ in range(2):
            response = await asyncio.to_thread(chat_request, agent, history + new)
            ids.append(response.get("id"))
            message = dict(response["choices"][0]["message"])
            new.append(message)
            calls = message.get("tool_calls") or []
            if not calls:
                break
            for call in calls:
                fn = call["function"]
                result = await agent.tool(fn["name"])(fn["arguments"])
                new.append({"role": "tool", "tool_call_id": call["id"], "content": result})
        return StepOutcome(value={"messages": new, "ids": ids})

    async def run(self, session: RunSession, agent: object, request: RunRequest) -> JSON:
        assert isinstance(agent, RawAgent)
        messages: list[Message] = [
            {"role": "system", "content": agent.instructions},
            {"role": "user", "content": str(request.input)},
        ]
        turns = 0
        while True:
            outcome = await session.step(
                self.model_step,
                {"agent": agent.name},
                kind="model",
                summary="model (batched)",
                policy=MODEL_POLICY,
                transcript=messages,
            )
            new = outcome.value["messages"]
            messages.extend(new)
            turns += len(outcome.value["ids"])
            last = new[-1]
            if last.get("role") == "assistant" and not last.get("tool_calls"):
                return {"output": last.get("content") or "", "turns": turns}


class WholeConversationInEveryStep(RawLoopAdapter):
    """Sends the whole conversation in every model step's payload (quadratic history)."""

    name = "broken_quadratic"

    async def call_model(self, ctx: StepContext, payload: JSON) -> StepOutcome:
        agent = ctx.agent
        assert isinstance(agent, RawAgent)
        response = await asyncio.to_thread(chat_request, agent, payload["messages"])
        return StepOutcome(value={"id": response.get("id"), **response["choices"][0]})

    def ask_model(self, session: RunSession, agent: RawAgent) -> Any:
        async def ask(messages: list[Message]) -> Message:
            outcome = await session.step(
                self.model_step,
                {"agent": agent.name, "messages": list(messages)},
                kind="model",
                summary="model (whole conversation)",
                policy=MODEL_POLICY,
            )
            return dict(outcome.value["message"])

        return ask


class CachesRepliesInTheRun(RawLoopAdapter):
    """Memoizes model replies in a process-wide dict on the run side: a run rebuilt in the
    same process takes the cache instead of its recorded step (not deterministic)."""

    name = "broken_cache"
    _replies: dict[str, Message] = {}

    def ask_model(self, session: RunSession, agent: RawAgent) -> Any:
        ask = super().ask_model(session, agent)

        async def cached(messages: list[Message]) -> Message:
            key = json.dumps(messages, sort_keys=True)
            if key not in self._replies:
                self._replies[key] = await ask(messages)
            return self._replies[key]

        return cached


class AnnouncesEachAttempt(RawLoopAdapter):
    """Publishes ``tool.started`` from its tool step, so every attempt announces it again."""

    name = "broken_events"

    async def call_tool(self, ctx: StepContext, payload: JSON) -> StepOutcome:
        ctx.publish("tool.started", {"tool": payload["tool"], "summary": "tool"})
        return await super().call_tool(ctx, payload)


class RetriesEveryModelError(RawLoopAdapter):
    """Retries every provider HTTP error, 400/401/404 included (they can never succeed)."""

    name = "broken_model_retry"

    async def call_model(self, ctx: StepContext, payload: JSON) -> StepOutcome:
        try:
            return await super().call_model(ctx, payload)
        except NonRetryableError as exc:
            raise RetryableError(str(exc), error_type=exc.error_type) from None
        except ModelHTTPError as exc:  # pragma: no cover - the parent classifies them
            raise RetryableError(str(exc)) from None


class TimeInThePrompt(RawLoopAdapter):
    """Puts the current time (to the minute, as a framework option does) in the system
    prompt: the same steps are scheduled on replay, with another conversation."""

    name = "broken_clock"

    def stamp(self, session: RunSession) -> datetime:
        return datetime.now(UTC)

    async def run(self, session: RunSession, agent: object, request: RunRequest) -> JSON:
        assert isinstance(agent, RawAgent)
        now = self.stamp(session)
        stamped = dataclasses.replace(
            agent, instructions=f"{agent.instructions} It is {now:%Y-%m-%d %H:%M} UTC."
        )
        return await super().run(session, stamped, request)


class TimeFromTheSession(TimeInThePrompt):
    """The control of ``broken_clock``: the same prompt, with the run's replay-safe clock."""

    name = "control_clock"

    def stamp(self, session: RunSession) -> datetime:
        return session.now()


class RandomRequestIds(RawLoopAdapter):
    """Gives each tool step a request id made with ``uuid4()``: another id on replay."""

    name = "broken_uuid"

    def new_id(self, session: RunSession) -> str:
        return uuid.uuid4().hex

    def run_tool(self, session: RunSession, agent: RawAgent) -> RunTool:
        async def run(name: str, arguments: str) -> str:
            outcome = await session.step(
                self.tool_step,
                {"tool": name, "args": arguments, "request_id": self.new_id(session)},
                kind="tool",
                summary=f"tool: {name}",
                policy=TOOL_POLICY,
            )
            return str(outcome.value)

        return run


class IdsFromTheSession(RandomRequestIds):
    """The control of ``broken_uuid``: ids from the run's replay-safe ``session.uuid()``."""

    name = "control_uuid"

    def new_id(self, session: RunSession) -> str:
        return session.uuid()


class StartsToolsInAnotherOrder(RawLoopAdapter):
    """Starts a turn's tool calls in an order that depends on process state (here whether
    the process ran the run before; in real code e.g. a set's order): replay starts them in
    another order."""

    name = "broken_order"
    _seen: ClassVar[set[str]] = set()

    async def run(self, session: RunSession, agent: object, request: RunRequest) -> JSON:
        assert isinstance(agent, RawAgent)
        backwards = session.run_id in self._seen
        self._seen.add(session.run_id)
        ask, run_tool = self.ask_model(session, agent), self.run_tool(session, agent)
        messages: list[Message] = [
            {"role": "system", "content": agent.instructions},
            {"role": "user", "content": str(request.input)},
        ]
        for turn in range(1, int(request.options.get("max_turns", 10)) + 1):
            reply = await ask(messages)
            messages.append(reply)
            calls = list(reply.get("tool_calls") or [])
            if not calls:
                result = RawResult(reply.get("content") or "", turn)
                return {"output": result.output, "turns": result.turns}
            order = calls[::-1] if backwards else calls
            done = await asyncio.gather(
                *(run_tool(c["function"]["name"], c["function"]["arguments"]) for c in order)
            )
            results = dict(zip([c["id"] for c in order], done, strict=True))
            for call in calls:
                messages.append(
                    {"role": "tool", "tool_call_id": call["id"], "content": results[call["id"]]}
                )
        raise MaxTurnsExceeded(f"agent {agent.name!r} exceeded the turn limit")


class SharedReplyCache(RawLoopAdapter):
    """Answers a model step from a process-wide cache keyed by the conversation: another
    run of the same conversation never reaches the provider."""

    name = "broken_shared_cache"
    _replies: ClassVar[dict[str, StepOutcome]] = {}

    async def call_model(self, ctx: StepContext, payload: JSON) -> StepOutcome:
        key = json.dumps(ctx.transcript(), sort_keys=True)
        if key not in self._replies:
            self._replies[key] = await super().call_model(ctx, payload)
        return self._replies[key]


class ReportsUsageTwice(RawLoopAdapter):
    """Reports each model step's usage twice (e.g. from a callback and after the step)."""

    name = "broken_usage"

    def ask_model(self, session: RunSession, agent: RawAgent) -> Any:
        ask = super().ask_model(session, agent)

        async def twice(messages: list[Message]) -> Message:
            reply = await ask(messages)
            session.add_usage({"requests": 1, "input_tokens": 1, "output_tokens": 1})
            return reply

        return twice


class PublishesItsOwnToolEvents(RawLoopAdapter):
    """Publishes ``tool.started`` / ``tool.finished`` itself, beside the run's own."""

    name = "broken_tool_events"

    def run_tool(self, session: RunSession, agent: RawAgent) -> RunTool:
        run = super().run_tool(session, agent)

        async def announced(name: str, arguments: str) -> str:
            session.publish("tool.started", {"tool": name, "summary": f"tool: {name}"})
            result = await run(name, arguments)
            session.publish("tool.finished", {"tool": name, "summary": f"tool: {name}"})
            return result

        return announced


class KnownRetryDefect(RetriesNonRetryable):
    """The same defect, declared by its kit as known: a strict xfail, not a failure."""

    name = "broken_known"


class _Plugin:
    """A tether plugin serving one broken adapter and its kit."""

    def __init__(
        self, adapter: type[RawLoopAdapter], known: dict[tuple[str, str], str] | None = None
    ) -> None:
        self._adapter = adapter
        self._known = known or {}

    @hookimpl
    def tether_adapter(self) -> RawLoopAdapter:
        return self._adapter()

    @hookimpl
    def tether_conformance_kit(self) -> RawLoopKit:
        name = self._adapter.name
        kit = RawLoopKit()
        kit.adapter_name = name
        kit.pinned_steps = {f"{name}.model": "model", f"{name}.tool": "tool"}
        kit.known_defects = self._known
        return kit


outside = _Plugin(ToolOutsideStep)
random_name = _Plugin(RandomStepName)
retry = _Plugin(RetriesNonRetryable)
batch = _Plugin(BatchedModelCalls)
quadratic = _Plugin(WholeConversationInEveryStep)
cache = _Plugin(CachesRepliesInTheRun)
events = _Plugin(AnnouncesEachAttempt)
model_retry = _Plugin(RetriesEveryModelError)
clock = _Plugin(TimeInThePrompt)
clock_ok = _Plugin(TimeFromTheSession)
uuid4 = _Plugin(RandomRequestIds)
uuid_ok = _Plugin(IdsFromTheSession)
order = _Plugin(StartsToolsInAnotherOrder)
shared_cache = _Plugin(SharedReplyCache)
usage = _Plugin(ReportsUsageTwice)
tool_events = _Plugin(PublishesItsOwnToolEvents)
known = _Plugin(
    KnownRetryDefect, {("fatal_tool", "errors_classified"): "retries NonRetryableError"}
)
