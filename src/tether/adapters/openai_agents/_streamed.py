"""``durable.run_streamed``: the SDK's ``RunResultStreaming`` shape, fed by a durable run.

The run executes the SDK's own streamed loop; this object reads the run's event log and
yields the SDK's stream events from it (raw response events as the model step streams them,
run item and agent-updated events as the run produces them), so a reader may disconnect,
come back from an offset, or replay a finished run.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from agents import Agent
from agents.items import ModelResponse, RunItem
from agents.stream_events import RawResponsesStreamEvent, RunItemStreamEvent, StreamEvent
from agents.usage import Usage

from tether.adapters.openai_agents._graph import index_agents
from tether.adapters.openai_agents._stream_codec import (
    STREAM_EVENT,
    decode_event,
    decode_raw,
)
from tether.core.events import (
    MODEL_DELTA,
    MODEL_EVENT,
    StreamRetracted,
    reader_events,
)
from tether.errors import RunFailedError

if TYPE_CHECKING:
    from tether.core.handle import DurableAgent, RunHandle

POLL_INTERVAL = 0.05
IDLE_INTERVAL = 0.2
"""A chat reader waits for the first token: poll at least this often while nothing comes."""


async def sdk_events(
    handle: RunHandle, root: Agent[Any], from_offset: int = 0
) -> AsyncIterator[tuple[int, StreamEvent | StreamRetracted]]:
    """The run's SDK stream events from ``from_offset``, each with the offset to resume from
    once it is handled (the offset after the run event it came from)."""
    agents = index_agents(root)
    shown = reader_events(
        handle, STREAM_EVENT, from_offset, poll_interval=POLL_INTERVAL, idle_interval=IDLE_INTERVAL
    )
    async for resume, item in shown:
        if isinstance(item, StreamRetracted):
            yield resume, item
        elif item.type in (MODEL_DELTA, MODEL_EVENT):
            raw = item.data.get("raw")
            if isinstance(raw, dict):
                yield resume, decode_raw(raw)
        else:
            yield resume, decode_event(item.data, agents)


@dataclass
class DurableRunResultStreaming:
    """What ``durable.run_streamed(...)`` returns: shaped like the SDK's
    ``RunResultStreaming``. Iterate :meth:`stream_events`; once it ends, ``final_output``,
    ``last_agent``, ``new_items``, ``raw_responses`` and ``usage`` hold the run's outcome.

    ``run_id`` names the durable run (set once it started); ``next_offset`` is where a
    reader that stops now resumes (``get_run(run_id).stream_events(from_offset=...)``).
    A model step whose worker died after streaming part of a reply and whose retry streamed
    something else yields a :class:`tether.StreamRetracted` before the retry's events.
    """

    durable: DurableAgent
    input: Any
    options: dict[str, Any] = field(default_factory=dict)
    handle: RunHandle | None = None
    next_offset: int = 0
    final_output: Any = None
    is_complete: bool = False
    current_agent: Agent[Any] | None = None
    new_items: list[RunItem] = field(default_factory=list)
    raw_responses: list[ModelResponse] = field(default_factory=list)
    usage: dict[str, int] = field(default_factory=dict)
    _started: asyncio.Task[RunHandle] | None = field(default=None, repr=False)
    _cancelled: bool = field(default=False, repr=False)

    def __post_init__(self) -> None:
        agent = self.durable.agent
        assert isinstance(agent, Agent)
        self.current_agent = agent
        if self.handle is None:
            try:
                asyncio.get_running_loop()
            except RuntimeError:
                return  # started by the first stream_events()
            self._started = asyncio.ensure_future(self._start())

    async def _start(self) -> RunHandle:
        from tether.adapters.openai_agents._adapter import STREAMED_OPTION

        options = dict(self.options)
        options[STREAMED_OPTION] = True
        return await self.durable.start(self.input, **options)

    async def started(self) -> RunHandle:
        """The durable run's handle, once it has started (e.g. to save its id early)."""
        if self.handle is None:
            self.handle = await (self._started or self._start())
        return self.handle

    @property
    def run_id(self) -> str | None:
        return self.handle.id if self.handle is not None else None

    @property
    def last_agent(self) -> Agent[Any] | None:
        return self.current_agent

    async def stream_events(self) -> AsyncIterator[StreamEvent | StreamRetracted]:
        """The SDK's stream events of the durable run, live, then its outcome is set."""
        handle = await self.started()
        root = self.durable.agent
        assert isinstance(root, Agent)
        async for resume, event in sdk_events(handle, root, self.next_offset):
            self.next_offset = resume
            if isinstance(event, RunItemStreamEvent):
                self.new_items.append(event.item)
            elif isinstance(event, RawResponsesStreamEvent):
                self._record_raw(event)
            elif getattr(event, "type", None) == "agent_updated_stream_event":
                self.current_agent = event.new_agent  # type: ignore[union-attr]
            yield event
        try:
            result = await handle.result()  # raises the run's failure, as the SDK does
        except RunFailedError as exc:
            if not (self._cancelled and exc.error_type == "Cancelled"):
                raise
            self.is_complete = True  # cancelled here: the stream just ends, as in the SDK
            return
        self.final_output = result.final_output
        self.usage = dict(result.usage)
        last = index_agents(root).get(result.last_agent)
        if last is not None:
            self.current_agent = last
        self.is_complete = True

    def _record_raw(self, event: RawResponsesStreamEvent) -> None:
        data = event.data
        if getattr(data, "type", None) == "response.completed":
            response = data.response  # type: ignore[union-attr]
            used = response.usage
            self.raw_responses.append(
                ModelResponse(
                    output=list(response.output),
                    usage=Usage(
                        requests=1,
                        input_tokens=used.input_tokens if used else 0,
                        output_tokens=used.output_tokens if used else 0,
                        total_tokens=used.total_tokens if used else 0,
                    ),
                    response_id=response.id,
                )
            )

    def final_output_as(self, cls: type[Any]) -> Any:
        return self.final_output

    def cancel(self, mode: str = "immediate") -> asyncio.Task[None]:
        """Cancel the durable run, as the SDK's ``cancel()`` (its stream then ends, and the
        run ends *cancelled*); ``mode`` is accepted for the SDK's signature. Returns the
        task that asks the engine (await it to know the request was made)."""

        self._cancelled = True

        async def cancel() -> None:
            handle = await self.started()
            await handle.cancel()

        return asyncio.ensure_future(cancel())
