"""A long run's segments also end by what replaying them costs (``ContinueAsNew.replay_items``):
each model step counts the conversation handed to it plus ``STEP_ITEMS``, so a segment holds
fewer steps as the conversation grows, every segment replays as it ran, and runs recorded
before the trigger existed (no version marker) replay as they ran."""

from __future__ import annotations

from typing import Any

from agents import Agent, OpenAIResponsesModel, function_tool
from openai import AsyncOpenAI
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowHistory
from temporalio.worker import Worker

import tether
from tether import ContinueAsNew
from tether.core.contract import STEP_ITEMS
from tether.core.replay import replay_check
from tether.core.run import REPLAY_ITEMS_PATCH
from tether.core.runtime import Runtime
from tether.testing import ScriptedModelServer, ToolCall, Turn

TURNS = 12


def lookup_agent(name: str, server: ScriptedModelServer) -> Agent[Any]:
    @function_tool
    def lookup(i: int) -> str:
        """A record."""
        return f"record {i}"

    client = AsyncOpenAI(base_url=server.base_url, api_key="test", max_retries=0)
    model = OpenAIResponsesModel(model="gpt-test", openai_client=client)
    return Agent(name=name, instructions="Look records up.", tools=[lookup], model=model)


def script() -> list[Turn]:
    turns = [Turn.tool_calls(ToolCall("lookup", {"i": i})) for i in range(TURNS - 1)]
    return [*turns, Turn.text("looked up")]


async def segments(runtime: Runtime, run_id: str) -> list[WorkflowHistory]:
    """The run's segment histories, oldest first."""
    out: list[WorkflowHistory] = []
    segment: str | None = None
    while True:
        history = await runtime.client.get_workflow_handle(run_id, run_id=segment).fetch_history()
        out.append(history)
        started = history.events[0].workflow_execution_started_event_attributes
        segment = started.continued_execution_run_id or None
        if segment is None:
            return out[::-1]


def model_steps(history: WorkflowHistory) -> int:
    return sum(
        e.activity_task_scheduled_event_attributes.activity_type.name == "openai_agents.model"
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
    )


def marked(history: WorkflowHistory) -> bool:
    """Whether the segment recorded the trigger's version marker (a patch marker)."""
    return any(
        REPLAY_ITEMS_PATCH.encode() in payload.data
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_MARKER_RECORDED
        for payloads in e.marker_recorded_event_attributes.details.values()
        for payload in payloads.payloads
    )


async def test_segments_end_by_replay_cost_and_replay_as_they_ran(
    runtime: Runtime, task_queue: str, worker: Worker
) -> None:
    # Three model steps' worth: each counts its conversation (a few items) plus STEP_ITEMS.
    budget = 3 * STEP_ITEMS
    with ScriptedModelServer(script()) as server:
        agent = lookup_agent("replay-budget", server)
        durable = tether.durable(agent, runtime=runtime, task_queue=task_queue, local_worker=False)
        handle = await durable.start(
            "look up", max_turns=100, continue_as_new=ContinueAsNew(replay_items=budget)
        )
        result = await handle.result()
        served = [r.turn for r in server.requests if r.status == 200]
        histories = await segments(runtime, handle.id)

    assert result.final_output == "looked up"
    assert served == list(range(TURNS))  # every model call made once, across the segments
    # The budget is passed at the third model step of a segment: it continues before the
    # fourth (a segment's first model step may start it with a carried conversation).
    counts = [model_steps(h) for h in histories]
    assert len(histories) >= 3, counts
    assert all(c <= 3 for c in counts[:-1]), counts
    assert sum(counts) == TURNS
    # Each segment that ended by the trigger carries the version marker, and replays as it ran.
    assert all(marked(h) for h in histories[:-1])
    for history in histories:
        report = await replay_check(history, data_converter=runtime.client.data_converter)
        assert report.differences == [], report.differences


async def test_without_the_trigger_a_run_stays_in_one_segment(
    runtime: Runtime, task_queue: str, worker: Worker
) -> None:
    with ScriptedModelServer(script()) as server:
        agent = lookup_agent("no-replay-budget", server)
        durable = tether.durable(agent, runtime=runtime, task_queue=task_queue, local_worker=False)
        handle = await durable.start(
            "look up", max_turns=100, continue_as_new=ContinueAsNew(replay_items=None)
        )
        await handle.result()
        histories = await segments(runtime, handle.id)

    assert len(histories) == 1
    assert not marked(histories[0])
