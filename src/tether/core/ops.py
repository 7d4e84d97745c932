"""Operating runs: cancel, terminate, retry, attempts in progress, events read by query.

:class:`~tether.core.handle.RunHandle` exposes these; the CLI is a thin layer over it.
"""

from __future__ import annotations

import asyncio
import base64
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from temporalio.api.common.v1 import Payload, WorkflowExecution
from temporalio.api.enums.v1 import EventType, ResetReapplyExcludeType, TaskQueueType
from temporalio.api.history.v1 import HistoryEvent
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import (
    DescribeTaskQueueRequest,
    ResetWorkflowExecutionRequest,
)
from temporalio.client import (
    Client,
    WorkflowExecutionDescription,
    WorkflowExecutionStatus,
    WorkflowHandle,
    WorkflowQueryFailedError,
)
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.contrib.workflow_streams import PollInput, PollResult
from temporalio.service import RPCError, RPCStatusCode

from tether.core import attributes
from tether.core.contract import LOST_ATTEMPTS
from tether.core.events import EVENTS_TOPIC, RunEvent
from tether.errors import RetryUnsafeError, RunNotFoundError, RunStateError

STREAM_POLL = "__temporal_workflow_stream_poll"
SEGMENTS_QUERY = "tether.segments"
"""A run's segments (it continued as new): run id, first event offset, first step and first
timeline entry of each."""
"""The stream's poll handler: an update (long poll, lands in history) and a query (not)."""

CLOSED = {
    WorkflowExecutionStatus.COMPLETED: "completed",
    WorkflowExecutionStatus.FAILED: "failed",
    WorkflowExecutionStatus.CANCELED: "cancelled",
    WorkflowExecutionStatus.TERMINATED: "terminated",
    WorkflowExecutionStatus.TIMED_OUT: "timed_out",
    WorkflowExecutionStatus.CONTINUED_AS_NEW: "continued_as_new",
}
RETRYABLE = ("failed", "cancelled", "terminated", "timed_out")


def status_name(status: WorkflowExecutionStatus | None) -> str:
    if status is None:
        return "unknown"
    if status == WorkflowExecutionStatus.RUNNING:
        return "running"
    return CLOSED.get(status, status.name.lower())


def not_found(exc: BaseException) -> bool:
    return isinstance(exc, RPCError) and exc.status == RPCStatusCode.NOT_FOUND


REPLAY_RACE_RETRIES = 3


async def query(handle: WorkflowHandle[Any, Any], name: str, *args: Any, **options: Any) -> Any:
    """``handle.query``, asked again when the worker's replay of a just-closed run fails.

    A query to a closed run makes a worker rebuild the run from its history. Right after the
    run closes, the worker may still hold the finished run in its cache; the SDK then can
    answer with a spurious "Nondeterminism error" (the cached run's last commands matched
    against the history's first events; a known class of engine-side races around queries to
    closed workflows). The worker evicts the run on that error, so asking again replays it
    from the start. A run that really does not replay fails every time and the error stays.
    """
    for attempt in range(REPLAY_RACE_RETRIES + 1):
        try:
            return await handle.query(name, *args, **options)
        except WorkflowQueryFailedError as exc:
            if "Nondeterminism" not in str(exc) or attempt == REPLAY_RACE_RETRIES:
                raise
            await asyncio.sleep(0.2 * (attempt + 1))
    raise AssertionError("unreachable")


@dataclass(frozen=True)
class StepAttempt:
    """A step the engine is running or retrying now (from the run's pending activities)."""

    step: int | None
    name: str
    summary: str | None
    attempt: int
    max_attempts: int | None
    state: str
    last_error: str | None = None
    next_attempt_at: str | None = None
    next_attempt_in: float | None = None

    def describe(self) -> str:
        """One line: ``step 5 model: weather (openai_agents.model): attempt 6 of 8 (...)``."""
        what = f"step {self.step} " if self.step is not None else ""
        label = f"{self.summary} ({self.name})" if self.summary else self.name
        of = f" of {self.max_attempts}" if self.max_attempts else ""
        notes = []
        if self.last_error:
            notes.append(f"last error: {self.last_error}")
        if self.next_attempt_in is not None:
            notes.append(f"next attempt in {max(self.next_attempt_in, 0):.0f}s")
        elif self.state == "started":
            notes.append("running")
        tail = f" ({'; '.join(notes)})" if notes else ""
        return f"{what}{label}: attempt {self.attempt}{of}{tail}"


def attempts_in_progress(
    desc: WorkflowExecutionDescription, in_flight: Sequence[dict[str, Any]] = ()
) -> list[StepAttempt]:
    """The run's pending steps with their attempt, last error and next attempt time.

    ``in_flight`` (the run's own list of started steps) names them: pending activities and
    in-flight steps of one step type are matched in schedule order.
    """
    now = datetime.now(UTC)
    by_name: dict[str, list[dict[str, Any]]] = {}
    for step in sorted(in_flight, key=lambda s: int(s.get("step") or 0)):
        by_name.setdefault(str(step.get("name")), []).append(step)
    pending = sorted(
        desc.raw_description.pending_activities,
        key=lambda p: (p.scheduled_time.seconds, p.scheduled_time.nanos, p.activity_id),
    )
    out: list[StepAttempt] = []
    for p in pending:
        name = p.activity_type.name
        mine = by_name.get(name) or []
        match = mine.pop(0) if mine else {}
        next_at: datetime | None = None
        if p.HasField("next_attempt_schedule_time"):
            next_at = p.next_attempt_schedule_time.ToDatetime(tzinfo=UTC)
        message = p.last_failure.message if p.HasField("last_failure") else ""
        state = p.state and _state_name(p.state)
        out.append(
            StepAttempt(
                step=match.get("step"),
                name=name,
                summary=match.get("summary"),
                attempt=max(p.attempt, 1),
                max_attempts=_error_attempts(p.maximum_attempts),
                state=state or "scheduled",
                last_error=message.splitlines()[0][:200] if message else None,
                next_attempt_at=next_at.isoformat(timespec="seconds") if next_at else None,
                next_attempt_in=(next_at - now).total_seconds() if next_at else None,
            )
        )
    return out


def _error_attempts(engine_limit: int) -> int | None:
    """The step's policy's ``max_attempts`` from the engine's limit, which allows
    ``LOST_ATTEMPTS`` more for attempts lost with a worker (a limit no larger than that is
    a step scheduled before lost attempts were counted apart: its own)."""
    if engine_limit <= 0:
        return None
    return engine_limit - LOST_ATTEMPTS if engine_limit > LOST_ATTEMPTS else engine_limit


def _state_name(state: Any) -> str:
    from temporalio.api.enums.v1 import PendingActivityState

    return PendingActivityState.Name(state).removeprefix("PENDING_ACTIVITY_STATE_").lower()


def task_attempt(desc: WorkflowExecutionDescription) -> int:
    """The attempt of the run's pending workflow task (>1: the run's own code keeps failing
    on the worker, e.g. a bug or a determinism error; the worker's log says why)."""
    raw = desc.raw_description
    if not raw.HasField("pending_workflow_task"):
        return 0
    return int(raw.pending_workflow_task.attempt)


# -- retry -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ResetPlan:
    """Where a retry resets a run to, and why that is safe."""

    event_id: int
    step: str | None
    note: str


def plan_reset(run_id: str, events: Sequence[HistoryEvent]) -> ResetPlan:
    """Find the run task to reset to so the run resumes at its failed (or unfinished) step.

    The reset point is the workflow task that scheduled the earliest unfinished step; every
    event after it is discarded and its commands are made again. That is safe only when no
    step *completed* after that point (its result would be lost and the call made again), so
    that case is refused. Without an unfinished step (the run failed in its own code, or was
    terminated while it waited) the reset point is the last workflow task: the run replays to
    where it stopped and carries on with the code the workers run now.
    """
    scheduled: dict[int, tuple[str, int]] = {}
    outcome: dict[int, tuple[str, int]] = {}
    last_task: int | None = None
    closing: HistoryEvent | None = None
    for e in events:
        t = e.event_type
        if t == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            a = e.activity_task_scheduled_event_attributes
            scheduled[e.event_id] = (a.activity_type.name, a.workflow_task_completed_event_id)
        elif t == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
            sid = e.activity_task_completed_event_attributes.scheduled_event_id
            outcome[sid] = ("completed", e.event_id)
        elif t == EventType.EVENT_TYPE_ACTIVITY_TASK_FAILED:
            sid = e.activity_task_failed_event_attributes.scheduled_event_id
            outcome[sid] = ("failed", e.event_id)
        elif t == EventType.EVENT_TYPE_ACTIVITY_TASK_TIMED_OUT:
            sid = e.activity_task_timed_out_event_attributes.scheduled_event_id
            outcome[sid] = ("timed out", e.event_id)
        elif t == EventType.EVENT_TYPE_ACTIVITY_TASK_CANCELED:
            sid = e.activity_task_canceled_event_attributes.scheduled_event_id
            outcome[sid] = ("cancelled", e.event_id)
        elif t == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED:
            last_task = e.event_id
        elif t in (
            EventType.EVENT_TYPE_WORKFLOW_EXECUTION_FAILED,
            EventType.EVENT_TYPE_WORKFLOW_EXECUTION_TERMINATED,
            EventType.EVENT_TYPE_WORKFLOW_EXECUTION_TIMED_OUT,
            EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CANCELED,
        ):
            closing = e
    unfinished = [sid for sid in scheduled if outcome.get(sid, ("open", 0))[0] != "completed"]
    step: str | None = None
    if unfinished:
        first = min(unfinished, key=lambda sid: scheduled[sid][1])
        step, point = scheduled[first][0], scheduled[first][1]
        how = outcome.get(first, ("in flight", 0))[0]
        note = (
            f"retrying from step {step!r} ({how}): the run task that scheduled it runs again; "
            "completed steps before it are kept, not made again"
        )
    elif last_task is not None:
        point = last_task
        why = _closing_reason(closing)
        note = (
            f"no step failed ({why}): retrying from the run's last task, so the run replays to "
            "where it stopped and carries on with the code the workers run now (after a fix, "
            "or a worker hosting its agent, this succeeds; unchanged, a failure repeats)"
        )
    else:
        raise RetryUnsafeError(
            run_id,
            "failed",
            f"run {run_id!r} never completed a run task, so there is no step to resume from. "
            f"Fix: `tether runs retry {run_id} --from-start`",
        )
    lost = [
        (scheduled[sid][0], eid)
        for sid, (kind, eid) in outcome.items()
        if kind == "completed" and eid > point
    ]
    if lost:
        names = ", ".join(f"{name!r} (event {eid})" for name, eid in lost)
        raise RetryUnsafeError(
            run_id,
            "failed",
            f"retrying run {run_id!r} from its last completed step is not safe: the step(s) "
            f"{names} completed after the run task it would resume from (run in parallel with "
            "the failed one), so they would run again. Fix: `tether runs retry "
            f"{run_id} --from-start` to start over with the same input",
        )
    return ResetPlan(event_id=point, step=step, note=note)


def _closing_reason(closing: HistoryEvent | None) -> str:
    if closing is None:
        return "the run stopped"
    t = closing.event_type
    if t == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_FAILED:
        failure = closing.workflow_execution_failed_event_attributes.failure
        kind = failure.application_failure_info.type or "error"
        return f"the run failed in its own code: {kind}"
    if t == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_TERMINATED:
        return "the run was terminated"
    if t == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_TIMED_OUT:
        return "the run timed out"
    return "the run was cancelled"


async def check_retryable(client: Client, run_id: str) -> WorkflowExecutionDescription:
    """The run's description, or a RunStateError when it is running or completed."""
    try:
        desc = await client.get_workflow_handle(run_id).describe()
    except RPCError as exc:
        if not_found(exc):
            raise RunNotFoundError(run_id, client.namespace) from None
        raise
    status = status_name(desc.status)
    if status == "running":
        raise RunStateError(
            run_id,
            status,
            f"run {run_id!r} is still running, so there is nothing to retry. Fix: wait for "
            f"it, or stop it first (`tether runs cancel {run_id}` or `tether runs terminate "
            f"{run_id}`)",
        )
    if status not in RETRYABLE:
        raise RunStateError(
            run_id,
            status,
            f"run {run_id!r} {status}, so there is nothing to retry. Fix: start a new run "
            "(another --id) to run the same input again",
        )
    return desc


async def reset_to_last_step(client: Client, run_id: str) -> tuple[str, ResetPlan]:
    """Reset a failed/terminated/timed-out/cancelled run to its last completed step.

    Returns the new run's Temporal run id and the plan (what is re-run and why).
    """
    desc = await check_retryable(client, run_id)
    handle = client.get_workflow_handle(run_id, run_id=desc.run_id)
    history = await handle.fetch_history()
    plan = plan_reset(run_id, history.events)
    resp = await client.workflow_service.reset_workflow_execution(
        ResetWorkflowExecutionRequest(
            namespace=client.namespace,
            workflow_execution=WorkflowExecution(workflow_id=run_id, run_id=desc.run_id),
            reason=f"tether runs retry: {plan.note}"[:1000],
            workflow_task_finish_event_id=plan.event_id,
            request_id=str(uuid.uuid4()),
            # Stream publishes, stream polls and the cancel request of the old run are not
            # replayed into the new one (a cancelled run would be cancelled again).
            reset_reapply_exclude_types=[
                ResetReapplyExcludeType.RESET_REAPPLY_EXCLUDE_TYPE_SIGNAL,
                ResetReapplyExcludeType.RESET_REAPPLY_EXCLUDE_TYPE_UPDATE,
                ResetReapplyExcludeType.RESET_REAPPLY_EXCLUDE_TYPE_CANCEL_REQUEST,
            ],
            identity=client.identity,
        ),
        retry=True,
    )
    return resp.run_id, plan


async def start_again(client: Client, run_id: str) -> str:
    """Start the run ``run_id`` anew with the same input (allowed after a failed end only)."""
    from tether.core.contract import RunRequest
    from tether.core.run import WORKFLOW_NAME

    desc = await check_retryable(client, run_id)
    handle = client.get_workflow_handle(run_id, run_id=desc.run_id)
    first: HistoryEvent | None = None
    async for event in handle.fetch_history_events():
        first = event
        break
    if first is None or not first.HasField("workflow_execution_started_event_attributes"):
        raise RunStateError(run_id, "unknown", f"run {run_id!r} has no start event to repeat")
    started = first.workflow_execution_started_event_attributes
    [request] = await client.data_converter.decode(started.input.payloads, [RunRequest])
    assert isinstance(request, RunRequest)
    options = attributes.start_options(
        client,
        agent=request.agent,
        adapter=request.adapter,
        with_attributes=await attributes.registered(client),
    )
    new = await client.start_workflow(
        WORKFLOW_NAME,
        request,
        id=run_id,
        task_queue=started.task_queue.name,
        id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE_FAILED_ONLY,
        id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
        task_timeout=started.workflow_task_timeout.ToTimedelta(),
        **options,
    )
    return new.result_run_id or ""


# -- events ----------------------------------------------------------------------------------


async def read_events(
    client: Client,
    run_id: str,
    after: int | None = None,
    *,
    poll_interval: float = 0.1,
    idle_interval: float = 1.0,
) -> AsyncIterator[RunEvent]:
    """The run's events through the stream's *query*, polled from here.

    A query never enters the run's history (the stream's long-poll update does: two or more
    events per poll). Polls come every ``poll_interval`` while events arrive and slow down
    to ``idle_interval`` while the run is quiet (e.g. waiting for a person). The iterator
    ends after the run's final event, or once the run has closed without one (terminated,
    timed out).
    """
    handle = client.get_workflow_handle(run_id)
    offset = 0 if after is None else after + 1
    converter = client.data_converter.payload_converter
    delay = poll_interval
    loop = asyncio.get_running_loop()
    next_check = loop.time() + idle_interval
    closed = False
    segments = Segments(client, run_id)
    if await _unreadable(client, handle):
        return
    while True:
        try:
            result: PollResult = await query(
                handle,
                STREAM_POLL,
                PollInput(topics=[EVENTS_TOPIC], from_offset=offset),
                result_type=PollResult,
                rpc_timeout=timedelta(seconds=10),
            )
            first = result.items[0].offset if result.items else result.next_offset
            if first > offset:
                # The run continued as new: events before this segment are read from the
                # earlier segment's run (closed; a worker replays it for the query).
                result = await segments.read(offset, result)
        except RPCError as exc:
            if not_found(exc):
                raise RunNotFoundError(run_id, client.namespace) from None
            if exc.status in (RPCStatusCode.INVALID_ARGUMENT, RPCStatusCode.PERMISSION_DENIED):
                raise
            # No worker right now (a crash, a restart) or the first run task has not
            # completed yet: the run goes on, so keep asking. An ended run that no worker
            # answered for will not be answered by asking again.
            if closed or await run_closed(handle):
                return
            await asyncio.sleep(max(delay, 0.25))
            continue
        except WorkflowQueryFailedError:
            # A worker took the query but could not replay the run (its code changed, or a
            # payload the run needs is missing from its store): an ended run's events cannot
            # be read here, so stop (the caller reads how it ended); a running one may
            # reach a worker that can, so keep asking.
            if await run_closed(handle):
                return
            await asyncio.sleep(max(delay, 0.25))
            continue
        for wire in result.items:
            payload = Payload()
            payload.ParseFromString(base64.b64decode(wire.data))
            data = converter.from_payload(payload)
            event = RunEvent(
                offset=wire.offset,
                type=str(data["type"]),
                time=str(data["time"]),
                data=dict(data.get("data") or {}),
            )
            yield event
            if event.final:
                return
        offset = result.next_offset
        if result.more_ready:
            continue
        if result.items:
            delay = poll_interval
        else:
            if closed:
                return  # the run closed without a final event; everything is read
            if loop.time() >= next_check:
                next_check = loop.time() + idle_interval
                closed = await run_closed(handle)
                if closed:
                    continue  # one more read: what was published before it closed
            delay = min(delay * 2, idle_interval)
        await asyncio.sleep(delay)


class Segments:
    """The segments of a run that continued as new (``tether.segments`` query): which one
    holds a position of the run's event log (``first_offset``) or timeline
    (``first_entry``), and a handle on that segment's run (closed ones answer queries: a
    worker hosting the agent replays them)."""

    def __init__(
        self, client: Client, run_id: str, known: Sequence[dict[str, Any]] | None = None
    ) -> None:
        self._client = client
        self._run_id = run_id
        self._known: list[dict[str, Any]] = list(known or [])

    async def holding(self, position: int, key: str) -> dict[str, Any]:
        """The segment holding ``position`` (the last whose ``key`` is at or before it). The
        list is asked of the run again when ``position`` may be past the segments known."""
        if not self._known or position >= first_of(self._known[-1], key):
            handle = self._client.get_workflow_handle(self._run_id)
            self._known = list(await query(handle, SEGMENTS_QUERY))
        holder = self._known[0]
        for segment in self._known:
            if first_of(segment, key) <= position:
                holder = segment
        return holder

    def is_latest(self, segment: dict[str, Any]) -> bool:
        return segment is self._known[-1]

    @property
    def known(self) -> list[dict[str, Any]]:
        """The segments known so far, oldest first."""
        return list(self._known)

    def handle(self, segment: dict[str, Any]) -> WorkflowHandle[Any, Any]:
        return self._client.get_workflow_handle(self._run_id, run_id=segment["run_id"])

    async def read(self, offset: int, latest: PollResult) -> PollResult:
        """The events from ``offset`` as the segment holding it has them (``latest``, what
        the run's current segment answered, when it holds ``offset`` itself)."""
        holder = await self.holding(offset, "first_offset")
        if self.is_latest(holder):
            return latest
        result: PollResult = await query(
            self.handle(holder),
            STREAM_POLL,
            PollInput(topics=[EVENTS_TOPIC], from_offset=offset),
            result_type=PollResult,
            rpc_timeout=SEGMENT_QUERY_TIMEOUT,
        )
        return result


SEGMENT_QUERY_TIMEOUT = timedelta(seconds=30)
"""How long a query to an earlier segment's (closed) run waits: a worker replays it first."""


def first_of(segment: dict[str, Any], key: str) -> int:
    """Where ``segment`` starts: its first event offset or timeline entry. Segments of before
    ``first_entry`` was kept start their timeline at their first step (no step is in flight
    at a boundary, and each started step makes one entry)."""
    if key == "first_entry" and key not in segment:
        return int(segment["first_step"]) - 1
    return int(segment[key])


async def _unreadable(client: Client, handle: Any) -> bool:
    """Whether the run has ended and no worker polls its queue: its events are read by a
    query that a worker answers by replaying it, and without one the query would only wait
    out its timeout. (The caller reads how the run ended from the engine.)"""
    try:
        desc = await handle.describe()
    except RPCError:
        return False  # the query's own error handling says what is wrong
    if desc.status is None or desc.status == WorkflowExecutionStatus.RUNNING:
        return False
    try:
        return await pollers(client, desc.task_queue) == 0
    except RPCError:
        return False


async def pollers(client: Client, queue: str) -> int:
    """How many workers the engine lists as polling ``queue`` for run tasks (a killed worker
    stays listed for minutes: see ``RunHandle.unserved_work`` for liveness)."""
    resp = await client.workflow_service.describe_task_queue(
        DescribeTaskQueueRequest(
            namespace=client.namespace,
            task_queue=TaskQueue(name=queue),
            task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
        ),
        retry=True,  # a read: a transient error (UNAVAILABLE, CANCELLED) is asked again
    )
    return len(resp.pollers)


async def run_closed(handle: Any) -> bool:
    """Whether the run of ``handle`` has ended (or is gone from the engine)."""
    try:
        desc = await handle.describe()
    except RPCError as exc:
        return not_found(exc)
    return bool(desc.status is not None and desc.status != WorkflowExecutionStatus.RUNNING)
