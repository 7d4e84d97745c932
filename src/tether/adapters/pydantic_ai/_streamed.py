"""Pydantic AI's streaming APIs (``run_stream``, ``run_stream_events``, ``event_stream_handler``)
fed by a durable run's event log.

The run executes the agent's graph; its model steps stream the real model and publish
Pydantic AI's own ``ModelResponseStreamEvent``s as they come, and its tool calls publish
``FunctionToolCallEvent``/``FunctionToolResultEvent``. Everything here runs in the caller:
it reads the log (live, from an offset, or replayed after the run ended) and rebuilds the
events with Pydantic AI's types.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Coroutine
from datetime import datetime
from types import TracebackType
from typing import TYPE_CHECKING, Any

from pydantic import TypeAdapter
from pydantic_ai import RunContext
from pydantic_ai.messages import (
    AgentStreamEvent,
    ModelResponseStreamEvent,
    PartDeltaEvent,
    PartStartEvent,
    TextPart,
    TextPartDelta,
    ToolCallPart,
    ToolCallPartDelta,
)
from pydantic_ai.models.test import TestModel
from pydantic_ai.usage import RunUsage

from tether.adapters.pydantic_ai._adapter import STREAMED_OPTION
from tether.adapters.pydantic_ai._workflow_side import STREAM_EVENT
from tether.core.events import (
    MODEL_DELTA,
    MODEL_EVENT,
    RunEvent,
    StreamRetracted,
    reader_events,
)

if TYPE_CHECKING:
    from tether.core.handle import DurableAgent, RunHandle

POLL_INTERVAL = 0.05
IDLE_INTERVAL = 0.2
"""A chat reader waits for the first token: poll at least this often while nothing comes."""
_model_events: TypeAdapter[ModelResponseStreamEvent] = TypeAdapter(ModelResponseStreamEvent)
_agent_events: TypeAdapter[AgentStreamEvent] = TypeAdapter(AgentStreamEvent)

EventStreamHandler = Callable[[RunContext[Any], AsyncIterator[Any]], Coroutine[Any, Any, None]]


async def pydantic_events(
    handle: RunHandle, from_offset: int = 0
) -> AsyncIterator[tuple[int, AgentStreamEvent | StreamRetracted]]:
    """The run's Pydantic AI stream events from ``from_offset``, each with the offset to
    resume from once it is handled."""
    shown = reader_events(
        handle, STREAM_EVENT, from_offset, poll_interval=POLL_INTERVAL, idle_interval=IDLE_INTERVAL
    )
    async for resume, item in shown:
        if isinstance(item, StreamRetracted):
            yield resume, item
        elif item.type in (MODEL_DELTA, MODEL_EVENT):
            raw = item.data.get("raw")
            if isinstance(raw, dict):
                yield resume, _model_events.validate_python(raw)
        else:
            yield resume, _tool_event(item)


def _tool_event(event: RunEvent) -> AgentStreamEvent:
    """A tool call or result event, stamped with the run's time of it."""
    rebuilt = _agent_events.validate_python(event.data["event"])
    part = getattr(rebuilt, "part", None)
    if part is not None and hasattr(part, "timestamp") and event.time:
        part.timestamp = datetime.fromisoformat(event.time)
    return rebuilt


async def _start(durable: DurableAgent, input: Any, options: dict[str, Any]) -> RunHandle:
    return await durable.start(input, **{**options, STREAMED_OPTION: True})


class DurableRunStreamEvents:
    """``durable.run_stream_events(...)``: as ``agent.run_stream_events``, an async context
    manager whose value iterates the run's events, then an ``AgentRunResultEvent``."""

    def __init__(self, durable: DurableAgent, input: Any, options: dict[str, Any]) -> None:
        self._durable, self._input, self._options = durable, input, options
        self.handle: RunHandle | None = None

    async def __aenter__(self) -> DurableRunStreamEvents:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        return None

    async def __aiter__(self) -> AsyncIterator[Any]:
        from pydantic_ai.run import AgentRunResultEvent

        self.handle = await _start(self._durable, self._input, self._options)
        async for _, event in pydantic_events(self.handle):
            yield event
        yield AgentRunResultEvent(result=await self.handle.result())


def _context(durable: DurableAgent, options: dict[str, Any]) -> RunContext[Any]:
    """The ``RunContext`` a caller-side handler gets: the run's deps; the model and usage
    are the caller's view (the run's own context lives on the workers)."""
    deps = options.get("deps", options.get("context"))
    return RunContext(deps=deps, model=TestModel(), usage=RunUsage())


async def run_with_handler(durable: DurableAgent, input: Any, options: dict[str, Any]) -> Any:
    """``durable.run(..., event_stream_handler=h)``: the run is durable; ``h`` runs here, in
    the caller, once per model step (its stream events) and once per batch of tool calls
    (their call and result events), as Pydantic AI calls it per graph node."""
    handler: EventStreamHandler = options.pop("event_stream_handler")
    ctx = _context(durable, options)
    handle = await _start(durable, input, options)
    queue: asyncio.Queue[Any] | None = None
    task: asyncio.Task[None] | None = None
    group: str | None = None

    async def feed(q: asyncio.Queue[Any]) -> AsyncIterator[Any]:
        while (item := await q.get()) is not _END:
            yield item

    async def close() -> None:
        if queue is not None and task is not None:
            queue.put_nowait(_END)
            await task

    async for _, event in pydantic_events(handle):
        model_side = getattr(event, "event_kind", None) in _MODEL_KINDS
        kind = "model" if model_side or isinstance(event, StreamRetracted) else "tools"
        if kind != group:
            await close()
            group, queue = kind, asyncio.Queue()
            task = asyncio.create_task(handler(ctx, feed(queue)))
        assert queue is not None
        queue.put_nowait(event)
    await close()
    return await handle.result()


_END = object()
_MODEL_KINDS = ("part_start", "part_delta", "part_end", "final_result")


class DurableStreamedRunResult:
    """What ``async with durable.run_stream(...) as result`` gives: like Pydantic AI's
    ``StreamedRunResult``. ``stream_text()`` and ``stream_output()`` follow the run's model
    text (or its output tool's arguments) as it streams; ``get_output()`` waits for the
    run's validated output."""

    def __init__(self, durable: DurableAgent, handle: RunHandle) -> None:
        self._durable = durable
        self.handle = handle
        self.run_id = handle.id
        self.next_offset = 0
        self.is_complete = False
        self._result: Any = None

    async def _events(self) -> AsyncIterator[Any]:
        async for resume, event in pydantic_events(self.handle, self.next_offset):
            self.next_offset = resume
            yield event

    async def stream_text(
        self, *, delta: bool = False, debounce_by: float | None = None
    ) -> AsyncIterator[str]:
        """The model's text as it streams: the whole text so far (``delta=False``), or each
        new piece. A step retried with a different reply restarts the whole text (with
        ``delta=True`` a retracted reply cannot be taken back: prefer the default)."""
        text = ""
        async for event in self._events():
            piece = None
            if isinstance(event, StreamRetracted) or (
                isinstance(event, PartStartEvent) and event.index == 0
            ):
                text = ""
            if isinstance(event, PartStartEvent) and isinstance(event.part, TextPart):
                piece = event.part.content
            elif isinstance(event, PartDeltaEvent) and isinstance(event.delta, TextPartDelta):
                piece = event.delta.content_delta
            if piece:
                text += piece
                yield piece if delta else text
        await self._finish()

    async def stream_output(self, *, debounce_by: float | None = None) -> AsyncIterator[Any]:
        """The output as it streams: text so far for text output, or the output tool's
        arguments validated as partial output for structured output; the final, validated
        output last."""
        agent = self._durable.agent
        output_type = getattr(agent, "output_type", str)
        adapter: TypeAdapter[Any] | None = None if output_type is str else TypeAdapter(output_type)
        text, args, last = "", "", None
        async for event in self._events():
            if isinstance(event, StreamRetracted):
                text, args = "", ""
                continue
            if adapter is None:
                if isinstance(event, PartStartEvent) and isinstance(event.part, TextPart):
                    text += event.part.content
                elif isinstance(event, PartDeltaEvent) and isinstance(event.delta, TextPartDelta):
                    text += event.delta.content_delta
                else:
                    continue
                yield text
                continue
            if isinstance(event, PartStartEvent) and isinstance(event.part, ToolCallPart):
                args = event.part.args_as_json_str() if event.part.args else ""
            elif isinstance(event, PartDeltaEvent) and isinstance(event.delta, ToolCallPartDelta):
                chunk = event.delta.args_delta
                args += chunk if isinstance(chunk, str) else ""
            else:
                continue
            try:
                value = adapter.validate_json(args, experimental_allow_partial="trailing-strings")
            except ValueError:
                continue
            if value != last:
                last = value
                yield value
        output = await self.get_output()
        if output != last:
            yield output

    async def _finish(self) -> None:
        if not self.is_complete:
            self._result = await self.handle.result()
            self.is_complete = True

    async def get_output(self) -> Any:
        await self._finish()
        return self._result.output

    def usage(self) -> dict[str, int]:
        return dict(self._result.usage) if self._result is not None else {}

    def all_messages(self) -> list[Any]:
        return self._result.all_messages() if self._result is not None else []


class DurableRunStream:
    """``durable.run_stream(...)``: an async context manager, as ``agent.run_stream``."""

    def __init__(self, durable: DurableAgent, input: Any, options: dict[str, Any]) -> None:
        self._durable = durable
        self._input = input
        self._options = options

    async def __aenter__(self) -> DurableStreamedRunResult:
        handle = await _start(self._durable, self._input, self._options)
        return DurableStreamedRunResult(self._durable, handle)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        return None


class DurableAgentRun:
    """``async with durable.iter(...) as run``: like Pydantic AI's ``AgentRun``, ``async for
    node in run`` yields the graph's nodes as the durable run reaches them (rebuilt from its
    log: ``UserPromptNode``, ``ModelRequestNode``, ``CallToolsNode``, ``End``), and
    ``run.result`` holds the result once it ended. The nodes are records: the run drives the
    graph on its workers, so ``run.next(node)`` and ``node.stream(ctx)`` are not available."""

    def __init__(self, durable: DurableAgent, input: Any, options: dict[str, Any]) -> None:
        self._durable, self._input, self._options = durable, input, options
        self.handle: RunHandle | None = None
        self.result: Any = None

    async def __aenter__(self) -> DurableAgentRun:
        self.handle = await _start(self._durable, self._input, self._options)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        return None

    async def __aiter__(self) -> AsyncIterator[Any]:
        from pydantic_ai._agent_graph import CallToolsNode, ModelRequestNode, UserPromptNode
        from pydantic_ai.messages import ModelMessagesTypeAdapter
        from pydantic_ai.result import FinalResult
        from pydantic_graph import End

        from tether.adapters.pydantic_ai._workflow_side import NODE_EVENT
        from tether.core.values import unpack

        assert self.handle is not None, "use `async with durable.iter(...) as run`"
        async for event in self.handle.events(
            poll_interval=POLL_INTERVAL, idle_interval=IDLE_INTERVAL
        ):
            if event.type != NODE_EVENT:
                continue
            data = event.data
            kind = data["node"]
            if kind == "UserPromptNode":
                yield UserPromptNode(user_prompt=data.get("user_prompt"))
            elif kind == "ModelRequestNode":
                [request] = ModelMessagesTypeAdapter.validate_python([data["request"]])
                yield ModelRequestNode(request=request)  # type: ignore[arg-type]
            elif kind == "CallToolsNode":
                [response] = ModelMessagesTypeAdapter.validate_python([data["model_response"]])
                yield CallToolsNode(model_response=response)  # type: ignore[arg-type]
            elif kind == "End":
                self.result = await self.handle.result()
                yield End(FinalResult(unpack(data["output"])))
        if self.result is None:
            self.result = await self.handle.result()
