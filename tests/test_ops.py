"""Operating runs through RunHandle: cancel, terminate, retry (from the failed step or from
the start), the created flag, search attributes and phase, attempts in progress, and events
read without growing the run's history. Real dev server, scripted model server."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.api.history.v1 import HistoryEvent
from temporalio.worker import Worker

import tether
from hitl_helpers import all_events, build_agent, output_of, wait_pending, wrap
from tether.core.ops import plan_reset
from tether.core.runtime import Runtime
from tether.errors import RetryUnsafeError, RunFailedError, RunNotFoundError, RunStateError
from tether.testing import Fault, RecordedRequest, ScriptedModelServer, ToolCall, Turn
from workers import steps_ended


async def eventually(check: Callable[[], Awaitable[bool]], what: str, timeout: float = 60) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await check():
        if loop.time() > deadline:
            raise AssertionError(f"not within {timeout}s: {what}")
        await asyncio.sleep(0.2)


def lookup_agent(server: ScriptedModelServer, ran: list[str], name: str) -> Any:
    def lookup(state: str) -> str:
        """Weather alerts for a state."""
        ran.append(state)
        return f"{state}: quiet"

    return build_agent("openai_agents", server, name, {"lookup": lookup})


TOOL_THEN_TEXT = [Turn.tool_calls(ToolCall("lookup", {"state": "CA"})), Turn.text("all quiet")]


class Switch:
    """A responder whose turn 1 fails with a non-retryable 400 while ``failing`` is set."""

    def __init__(self) -> None:
        self.failing = threading.Event()
        self.failing.set()

    def __call__(self, req: RecordedRequest) -> Turn:
        turn = TOOL_THEN_TEXT[min(req.turn, 1)]
        if req.turn == 1 and self.failing.is_set():
            return Turn.text("unused", faults=[Fault.server_error(400)] * 100)
        return turn


async def failed_run(
    runtime: Runtime, task_queue: str, server: ScriptedModelServer, ran: list[str]
) -> tether.RunHandle:
    durable = wrap(lookup_agent(server, ran, "ops-retry"), runtime, task_queue)
    handle = await durable.start("alerts?", id=f"ops-retry-{uuid.uuid4().hex[:6]}")
    assert handle.created
    with pytest.raises(RunFailedError):
        await handle.result()
    return handle


async def test_retry_resumes_from_the_failed_step_without_making_completed_calls_again(
    runtime: Runtime, task_queue: str, worker: Worker
) -> None:
    ran: list[str] = []
    switch = Switch()
    with ScriptedModelServer(responder=switch) as server:
        handle = await failed_run(runtime, task_queue, server, ran)
        assert (await handle.describe()).status == "failed"
        assert server.count(turn=0) == 1 and server.count(turn=1) == 1
        switch.failing.clear()  # the provider is fixed
        retried = await handle.retry()
        assert retried.created and retried.id == handle.id
        assert "openai_agents.model" in (retried.note or "")
        assert output_of(await retried.result()) == "all quiet"
        # Zero completed calls made again: turn 0 once, the tool once; turn 1 twice
        # (the failed attempt, then the retried step).
        assert server.count(turn=0) == 1
        assert server.count(turn=1) == 2
    assert ran == ["CA"]
    desc = await handle.describe()
    assert desc.status == "completed"
    # Retrying a completed run is refused with the reason.
    with pytest.raises(RunStateError, match="completed, so there is nothing to retry"):
        await handle.retry()


async def test_retry_from_start_runs_the_same_input_again(
    runtime: Runtime, task_queue: str, worker: Worker
) -> None:
    ran: list[str] = []
    switch = Switch()
    with ScriptedModelServer(responder=switch) as server:
        handle = await failed_run(runtime, task_queue, server, ran)
        switch.failing.clear()
        again = await handle.retry(from_start=True)
        assert output_of(await again.result()) == "all quiet"
        assert server.count(turn=0) == 2  # from the start: the first call is made again
    assert ran == ["CA", "CA"]


async def test_cancel_ends_the_run_cancelled_and_retry_resumes_it(
    runtime: Runtime, task_queue: str, worker: Worker
) -> None:
    ran: list[str] = []
    script = [
        Turn.tool_calls(ToolCall("lookup", {"state": "CA"})),
        # The first attempt of turn 1 hangs: the step is in flight when the cancel comes.
        Turn.text("all quiet", faults=[Fault.hang(60)]),
    ]
    with ScriptedModelServer(script) as server:
        durable = wrap(lookup_agent(server, ran, "ops-cancel"), runtime, task_queue)
        handle = await durable.start("alerts?", id=f"ops-cancel-{uuid.uuid4().hex[:6]}")

        async def in_second_model_step() -> bool:
            desc = await handle.describe()  # the hang is recorded at the server only after it
            return desc.steps >= 2 and any(a.state == "started" for a in desc.attempts)

        await eventually(in_second_model_step, "the second model step started")
        await handle.cancel()
        with pytest.raises(RunFailedError) as failed:
            await handle.result()
        assert failed.value.error_type == "Cancelled"
        # The held model call is stopped while the server still holds it: the run ended, so
        # no attempt will take its answer.
        await steps_ended(timeout=30, settle=0)
        desc = await handle.describe()
        assert desc.status == "cancelled"
        assert not desc.failures  # a cancelled step is not a step failure
        events = await all_events(handle)
        assert events[-1].type == "run.cancelled"
        with pytest.raises(RunStateError, match="already ended \\(cancelled\\)"):
            await handle.cancel()
        # Retried: it resumes at the interrupted model step (turn 1, now answered).
        retried = await handle.retry()
        assert output_of(await retried.result()) == "all quiet"
        assert server.count(turn=0) == 1
    # The server's exit answered the first run's held request: its step ends here, not
    # while the worker shuts down after the test.
    await steps_ended()
    assert ran == ["CA"]


async def test_terminate_with_a_reason_then_retry(
    runtime: Runtime, task_queue: str, worker: Worker
) -> None:
    ran: list[str] = []
    script = [
        Turn.tool_calls(ToolCall("lookup", {"state": "CA"})),
        Turn.text("all quiet", faults=[Fault.hang(60)]),
    ]
    with ScriptedModelServer(script) as server:
        durable = wrap(lookup_agent(server, ran, "ops-terminate"), runtime, task_queue)
        handle = await durable.start("alerts?", id=f"ops-term-{uuid.uuid4().hex[:6]}")

        async def in_second_model_step() -> bool:
            desc = await handle.describe()  # the hang is recorded at the server only after it
            return desc.steps >= 2 and any(a.state == "started" for a in desc.attempts)

        await eventually(in_second_model_step, "the second model step started")
        await handle.terminate("stuck")
        with pytest.raises(RunFailedError) as failed:
            await handle.result()
        assert failed.value.error_type == "Terminated"
        await steps_ended(timeout=30, settle=0)  # the held model call is stopped
        assert (await handle.describe()).status == "terminated"
        with pytest.raises(RunStateError):
            await handle.terminate()
        retried = await handle.retry()
        assert output_of(await retried.result()) == "all quiet"
        assert server.count(turn=0) == 1
    # The server's exit answered the first run's held request: its step ends here, not
    # while the worker shuts down after the test.
    await steps_ended()
    assert ran == ["CA"]


async def test_a_running_run_is_not_retried_and_unknown_runs_are_named(
    runtime: Runtime, task_queue: str, worker: Worker
) -> None:
    ran: list[str] = []
    script = [Turn.tool_calls(ToolCall("lookup", {"state": "CA"}), delay=2), Turn.text("ok")]
    with ScriptedModelServer(script) as server:
        durable = wrap(lookup_agent(server, ran, "ops-running"), runtime, task_queue)
        handle = await durable.start("alerts?", id=f"ops-running-{uuid.uuid4().hex[:6]}")
        first = handle.created
        again = await durable.start("alerts?", id=handle.id)
        with pytest.raises(RunStateError, match="still running"):
            await handle.retry()
        await handle.result()
        closed = await durable.start("alerts?", id=handle.id)
    assert first is True
    assert again.created is False  # attached to the running run
    assert closed.created is False  # the id is taken by the completed run
    with pytest.raises(RunNotFoundError, match="no run 'nope-"):
        await (await tether.get_run(f"nope-{uuid.uuid4().hex[:6]}", runtime)).describe()


async def test_search_attributes_name_agent_adapter_and_phase(
    runtime: Runtime, task_queue: str, worker: Worker
) -> None:
    agent_name = f"ops-sa-{uuid.uuid4().hex[:6]}"
    script = [
        Turn.tool_calls(ToolCall("lookup", {"state": "CA"})),
        Turn.text("all quiet"),
    ]
    with ScriptedModelServer(script) as server:
        agent = build_agent(
            "openai_agents",
            server,
            agent_name,
            {"lookup": lambda state: f"{state}: quiet"},
            approval=("lookup",),
        )
        handle = await wrap(agent, runtime, task_queue).start("alerts?")
        [request] = await wait_pending(handle)
        client = runtime.client

        async def listed(query: str) -> bool:
            return [wf.id async for wf in client.list_workflows(query)] == [handle.id]

        await eventually(
            lambda: listed(f"TetherAgent = '{agent_name}' AND TetherPhase = 'waiting'"),
            "the waiting run listed by agent and phase",
        )
        assert await listed(f"TetherAgent = '{agent_name}' AND TetherAdapter = 'openai_agents'")
        await handle.approve(request.id)
        await handle.result()
        await eventually(
            lambda: listed(f"TetherAgent = '{agent_name}' AND TetherPhase = 'completed'"),
            "the completed run listed by phase",
        )
    desc = await client.get_workflow_handle(handle.id).describe()
    memo = await desc.memo()
    assert memo["agent"] == agent_name and memo["adapter"] == "openai_agents"
    assert memo["started_by"]
    assert await desc.static_summary() == f"openai_agents: {agent_name}"
    details = await desc.static_details()
    assert details is not None and "started by" in details


async def test_attempts_in_progress_show_attempt_error_and_next_time(
    runtime: Runtime, task_queue: str, worker: Worker
) -> None:
    ran: list[str] = []
    # The first model call fails with 500 three times (backoff 1 s, 2 s, 4 s), then answers.
    script = [Turn.text("all quiet", faults=[Fault.server_error(500)] * 3)]
    with ScriptedModelServer(script) as server:
        durable = wrap(lookup_agent(server, ran, "ops-attempts"), runtime, task_queue)
        handle = await durable.start("alerts?")
        seen: list[Any] = []

        async def retrying() -> bool:
            desc = await handle.describe()
            seen[:] = desc.attempts
            return bool(desc.attempts) and desc.attempts[0].attempt >= 2

        await eventually(retrying, "a model step retrying")
        attempt = seen[0]
        assert attempt.name == "openai_agents.model"
        assert attempt.step == 1
        assert attempt.summary and "model" in attempt.summary
        assert attempt.last_error and "500" in attempt.last_error
        assert attempt.max_attempts == 8
        assert "attempt" in attempt.describe() and "last error" in attempt.describe()
        assert output_of(await handle.result()) == "all quiet"
        assert (await handle.describe()).attempts == []


async def test_following_a_run_adds_nothing_to_its_history(
    runtime: Runtime, task_queue: str, worker: Worker
) -> None:
    ran: list[str] = []
    script = [
        Turn.tool_calls(ToolCall("lookup", {"state": "CA"}), delay=0.3),
        Turn.text("all quiet", delay=0.3),
    ]
    lengths: list[int] = []
    with ScriptedModelServer(script) as server:
        durable = wrap(lookup_agent(server, ran, "ops-follow"), runtime, task_queue)
        for follow in (False, True):
            server.reset()
            handle = await durable.start("alerts?")
            if follow:
                events = await all_events(handle)
                assert events[-1].type == "run.finished"
            await handle.result()
            history = await runtime.client.get_workflow_handle(handle.id).fetch_history()
            lengths.append(len(history.events))
            kinds = {e.event_type for e in history.events}
            assert EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED not in kinds
    assert lengths[0] == lengths[1]


# -- where a retry resets to (synthetic histories) -------------------------------------------


def _event(event_id: int, kind: str, **attrs: int | str) -> HistoryEvent:
    e = HistoryEvent(event_id=event_id)
    if kind == "task":
        e.event_type = EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED
    elif kind == "scheduled":
        e.event_type = EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
        a = e.activity_task_scheduled_event_attributes
        a.activity_type.name = str(attrs["name"])
        a.workflow_task_completed_event_id = int(attrs["task"])
    elif kind == "completed":
        e.event_type = EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED
        e.activity_task_completed_event_attributes.scheduled_event_id = int(attrs["of"])
    elif kind == "failed":
        e.event_type = EventType.EVENT_TYPE_ACTIVITY_TASK_FAILED
        e.activity_task_failed_event_attributes.scheduled_event_id = int(attrs["of"])
    elif kind == "run_failed":
        e.event_type = EventType.EVENT_TYPE_WORKFLOW_EXECUTION_FAILED
    return e


def test_reset_point_is_the_task_that_scheduled_the_failed_step() -> None:
    events = [
        _event(4, "task"),
        _event(5, "scheduled", name="m", task=4),
        _event(7, "completed", of=5),
        _event(10, "task"),
        _event(11, "scheduled", name="t", task=10),
        _event(13, "failed", of=11),
        _event(16, "task"),
        _event(17, "run_failed"),
    ]
    plan = plan_reset("r", events)
    assert plan.event_id == 10 and plan.step == "t"


def test_reset_is_refused_when_a_parallel_step_completed_after_the_point() -> None:
    events = [
        _event(4, "task"),
        _event(5, "scheduled", name="tool_a", task=4),
        _event(6, "scheduled", name="tool_b", task=4),
        _event(9, "completed", of=5),
        _event(10, "failed", of=6),
        _event(13, "task"),
        _event(14, "run_failed"),
    ]
    with pytest.raises(RetryUnsafeError, match=r"'tool_a' \(event 9\).*--from-start"):
        plan_reset("r", events)


def test_without_a_failed_step_the_reset_point_is_the_last_task() -> None:
    events = [
        _event(4, "task"),
        _event(5, "scheduled", name="m", task=4),
        _event(7, "completed", of=5),
        _event(10, "task"),
        _event(11, "run_failed"),
    ]
    plan = plan_reset("r", events)
    assert plan.event_id == 10 and plan.step is None
    assert "no step failed" in plan.note


async def test_events_of_an_ended_run_no_worker_polls_for_end_without_waiting_on_a_query(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An ended run's events are read by a query that a worker answers by replaying it. With
    no worker polling its queue, the query could only wait out its timeout (twice: `tether
    runs follow` of such a run took about 21 s); the reader now ends at once, and the
    caller reads how the run ended from the engine."""
    from tether.core import ops

    queue = f"unhosted-{uuid.uuid4().hex[:8]}"  # no worker ever polls it
    with ScriptedModelServer([Turn.text("never asked")]) as server:
        durable = wrap(lookup_agent(server, [], "ops-unhosted"), runtime, queue)
        handle = await durable.start("hello?", id=f"ops-unhosted-{uuid.uuid4().hex[:6]}")
        await handle.terminate("nobody hosts it")
    asked: list[str] = []
    real_query = ops.query

    async def counted(*args: Any, **kwargs: Any) -> Any:
        asked.append(str(args[1]))
        return await real_query(*args, **kwargs)

    monkeypatch.setattr(ops, "query", counted)
    assert [e async for e in handle.events()] == []
    assert asked == []
    assert (await handle.describe()).status == "terminated"
