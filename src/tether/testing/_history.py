"""Read a run's Temporal history: which steps completed, and how big their inputs were.

These observe the run through the engine, independently of what an adapter reports.
"""

from __future__ import annotations

from dataclasses import dataclass

from temporalio.api.enums.v1 import EventType
from temporalio.client import Client


@dataclass(frozen=True)
class StepRecord:
    """One scheduled step as the history shows it."""

    name: str
    scheduled_event_id: int
    input_bytes: int
    completed: bool
    result_bytes: int


@dataclass(frozen=True)
class HistoryStats:
    steps: list[StepRecord]
    total_bytes: int
    events: int

    def completed(self) -> list[StepRecord]:
        return [s for s in self.steps if s.completed]


async def history_stats(client: Client, run_id: str) -> HistoryStats:
    """Steps (activities) of ``run_id`` in schedule order, with input and result sizes."""
    history = await client.get_workflow_handle(run_id).fetch_history()
    scheduled: dict[int, StepRecord] = {}
    order: list[int] = []
    for event in history.events:
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            attrs = event.activity_task_scheduled_event_attributes
            scheduled[event.event_id] = StepRecord(
                name=attrs.activity_type.name,
                scheduled_event_id=event.event_id,
                input_bytes=attrs.input.ByteSize(),
                completed=False,
                result_bytes=0,
            )
            order.append(event.event_id)
        elif event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
            attrs_c = event.activity_task_completed_event_attributes
            prev = scheduled[attrs_c.scheduled_event_id]
            scheduled[attrs_c.scheduled_event_id] = StepRecord(
                name=prev.name,
                scheduled_event_id=prev.scheduled_event_id,
                input_bytes=prev.input_bytes,
                completed=True,
                result_bytes=attrs_c.result.ByteSize(),
            )
    return HistoryStats(
        steps=[scheduled[i] for i in order],
        total_bytes=sum(e.ByteSize() for e in history.events),
        events=len(history.events),
    )
