"""The user-facing run API: :class:`DurableAgent` and :class:`RunHandle`."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from temporalio.api.common.v1 import WorkflowExecution
from temporalio.api.enums.v1 import PendingActivityState, PendingWorkflowTaskState
from temporalio.api.workflowservice.v1 import (
    DescribeWorkflowExecutionResponse,
    GetWorkflowExecutionHistoryReverseRequest,
)
from temporalio.client import (
    WorkflowExecutionStatus,
    WorkflowFailureError,
    WorkflowHandle,
    WorkflowQueryFailedError,
    WorkflowUpdateFailedError,
    WorkflowUpdateRPCTimeoutOrCancelledError,
)
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import (
    ApplicationError,
    CancelledError,
    FailureError,
    TerminatedError,
    TimeoutError,
    WorkflowAlreadyStartedError,
)
from temporalio.service import RPCError, RPCStatusCode

from tether.core import attributes, ops, registry
from tether.core.codec import failure_message
from tether.core.contract import (
    JSON,
    Adapter,
    Budget,
    ContinueAsNew,
    RunRequest,
    WaitAnswer,
    WaitPolicy,
)
from tether.core.events import RunEvent
from tether.core.ledger import StepUsage, UsageReport, report_from_json
from tether.core.run import (
    ALREADY_ANSWERED,
    ANSWER_UPDATE,
    PENDING_QUERY,
    STATUS_QUERY,
    STATUS_RECENT,
    TIMELINE_PAGE_MAX,
    TIMELINE_QUERY,
    UNKNOWN_REQUEST,
    WORKFLOW_NAME,
    WRONG_ANSWER,
    RunResult,
)
from tether.core.runtime import Runtime, default_runtime
from tether.core.sealed import seal_keys
from tether.core.values import object_source, pack
from tether.errors import (
    AlreadyAnsweredError,
    BudgetExceededError,
    ConfigurationError,
    NoWorkerError,
    RunFailedError,
    RunIdConflictError,
    RunNotFoundError,
    RunNotWaitingError,
    RunStateError,
    UnknownWaitRequestError,
    WaitRequestError,
    WaitTimedOutError,
    WrongAnswerKindError,
)

RUN_TASK_TIMEOUT = timedelta(seconds=10)
"""How long a worker has to finish one run task (Temporal's default). A task replaying a
segment after a crash re-runs the framework's loop for each of its steps (about a second
for a default segment, more on a loaded machine); a task that took longer would time out,
be given again, and replay again."""
UNSERVED_AFTER = timedelta(seconds=5)
"""A run's task scheduled this long ago and not taken means no live worker serves it."""
CLOSED_QUERY_TIMEOUT = timedelta(seconds=3)
WORKER_GRACE = timedelta(seconds=10)
"""How long an answer or a pending query waits for a worker to poll the run's queue (one may
be starting) before it raises NoWorkerError."""
ANSWER_RPC_TIMEOUT = timedelta(seconds=20)
"""How long an approval or answer waits for the run's worker to take it."""
"""How long describing a failed or cancelled run waits for a worker to replay it."""


@dataclass(frozen=True)
class RunDescription:
    """A run's state as the engine and the run itself report it."""

    run_id: str
    agent: str | None
    status: str
    steps: int
    current_step: str | None
    usage: dict[str, int]
    failures: list[dict[str, Any]]
    pending: list[PendingRequest] = field(default_factory=list)
    timeline: list[dict[str, Any]] = field(default_factory=list)
    ledger: UsageReport | None = None
    waits: list[dict[str, Any]] = field(default_factory=list)
    started: str | None = None
    closed: str | None = None
    problem: str | None = None
    """Why a running run makes no progress, when the engine shows it (no worker hosts its
    agent, its task fails on every worker), with the fix."""
    attempts: list[ops.StepAttempt] = field(default_factory=list)
    """Steps running or retrying now: attempt, last error, next attempt time."""
    task_attempt: int = 0
    """Attempt of the run's pending task; above 1 its own code keeps failing on a worker."""
    timeline_total: int = 0
    """Steps in the run's whole timeline: ``timeline`` holds the latest of them (at most
    :data:`~tether.core.run.STATUS_RECENT`); :meth:`RunHandle.timeline` pages through all."""
    waits_total: int = 0
    failures_total: int = 0
    error: str | None = None
    """How a run that ended without completing ended (its error type and message), read
    from the engine: known even when no worker hosting its agent is up to answer."""


@dataclass(frozen=True)
class TimelinePage:
    """Entries ``offset`` to ``offset + len(entries)`` of a run's timeline (of ``total``),
    with the ledger's usage of those steps."""

    offset: int
    total: int
    entries: list[dict[str, Any]]
    usage: list[StepUsage] = field(default_factory=list)


@dataclass(frozen=True)
class PendingRequest:
    """Something a run waits for: an approval of a tool call, or a question for a person.

    ``id`` is the tool call's id: pass it to ``approve``/``deny`` (approvals) or ``answer``
    (questions).
    """

    id: str
    kind: str
    tool: str | None
    args: JSON
    question: str | None
    asked_at: str | None
    timeout: float | None = None
    on_timeout: str | None = None


_ERRORS: dict[str, type[WaitRequestError]] = {
    UNKNOWN_REQUEST: UnknownWaitRequestError,
    ALREADY_ANSWERED: AlreadyAnsweredError,
    WRONG_ANSWER: WrongAnswerKindError,
}
_RUN_ERRORS: dict[str, type[RunFailedError]] = {
    "BudgetExceeded": BudgetExceededError,
    "WaitTimedOut": WaitTimedOutError,
}


class RunHandle:
    """A started run: await its result, describe it, cancel it. Survives restarts by id.

    ``created`` says whether the call that made this handle started a new run (False: the
    id was taken, and the handle is on the existing run, running or closed).
    """

    def __init__(
        self,
        runtime: Runtime,
        run_id: str,
        agent: DurableAgent | None,
        *,
        created: bool = False,
        note: str | None = None,
        queue: str | None = None,
    ) -> None:
        self.runtime = runtime
        self.id = run_id
        self._agent = agent
        self._queue = queue
        """The run's task queue when known without asking (this handle started the run)."""
        self.created = created
        self.note = note
        """What a retry did (the step it resumed from), for the person who asked."""
        self._handle: WorkflowHandle[Any, RunResult] = runtime.client.get_workflow_handle(
            run_id, result_type=RunResult
        )

    async def raw_result(self) -> RunResult:
        """The run's result with usage and step counts (waits for the run to end)."""
        try:
            return await self._handle.result()
        except WorkflowFailureError as exc:
            cause = exc.cause
            while (
                isinstance(cause, FailureError)
                and cause.cause is not None
                and not (isinstance(cause, ApplicationError))
            ):
                cause = cause.cause
            message = cause.message if isinstance(cause, FailureError) else str(cause)
            error_type = cause.type if isinstance(cause, ApplicationError) else None
            ended = {CancelledError: "Cancelled", TerminatedError: "Terminated"}
            if isinstance(cause, CancelledError | TerminatedError | TimeoutError):
                error_type = ended.get(type(cause), "TimedOut")
                message = message or str(error_type)
                if "Fix:" not in message:  # a reason that names its own fix keeps it
                    message = f"{message}. Fix: `tether runs retry {self.id}`"
            kind = _RUN_ERRORS.get(error_type or "", RunFailedError)
            raise kind(self.id, message, error_type=error_type) from exc

    async def result(self) -> Any:
        """The final output, as the framework's own run would return it."""
        raw = await self.raw_result()
        if self._agent is None:
            return raw.output
        return self._agent.adapter.decode_output(self._agent.agent, raw.output)

    async def describe(self) -> RunDescription:
        try:
            desc = await self._handle.describe()
        except RPCError as exc:
            if exc.status == RPCStatusCode.NOT_FOUND:
                raise RunNotFoundError(self.id, self.runtime.client.namespace) from None
            raise
        status = ops.status_name(desc.status)
        for pending in desc.raw_description.pending_activities:  # encrypted: decode to show
            if pending.HasField("last_failure"):
                converter = self.runtime.client.data_converter
                pending.last_failure.message = await failure_message(
                    converter, pending.last_failure
                )
        state: dict[str, Any] = {}
        problem = None
        if desc.status == WorkflowExecutionStatus.RUNNING:
            # A run that no worker serves cannot answer a query: say why instead of waiting
            # for the query's own timeout.
            problem = await self._problem(desc.raw_description)
        if desc.status == WorkflowExecutionStatus.RUNNING:
            if problem is None and not await self._nobody_polls(desc.raw_description):
                try:
                    state = await self._query(STATUS_QUERY)
                except RPCError:
                    state = {}
        elif desc.status == WorkflowExecutionStatus.COMPLETED:
            raw = await self._handle.result()
            state = _bounded(
                {
                    "agent": raw.agent,
                    "steps": raw.steps,
                    "usage": raw.usage,
                    "failures": raw.failures,
                    "ledger": raw.ledger,
                    "timeline": raw.timeline,
                    "waits": raw.waits,
                }
            )
            # A run that continued as new returns the latest part of its timeline.
            state["timeline_total"] += raw.timeline_first
        elif desc.status is not None:
            # A failed or cancelled run still answers queries when a worker hosting its agent
            # is up (it replays the run); without one, do not wait for the RPC's own timeout.
            try:
                state = await ops.query(
                    self._handle, STATUS_QUERY, rpc_timeout=CLOSED_QUERY_TIMEOUT
                )
            except Exception:
                state = {}
        if desc.status == WorkflowExecutionStatus.RUNNING and state.get("phase") == "waiting":
            status = "waiting"
        if not state.get("agent") and (problem is not None or self._agent is None):
            # No worker answered (none hosts the agent): the run's input names it.
            request = await self.request()
            state["agent"] = request.agent if request else None
        error = None
        if desc.status not in (
            WorkflowExecutionStatus.RUNNING,
            WorkflowExecutionStatus.COMPLETED,
            WorkflowExecutionStatus.CONTINUED_AS_NEW,
        ):
            # Ended, not completed (a waiting run is running: its result would never come).
            error = await self._ended_with()
        return RunDescription(
            run_id=self.id,
            agent=state.get("agent") or (self._agent.name if self._agent else None),
            status=status,
            steps=int(state.get("steps", 0)),
            current_step=state.get("current_step"),
            usage=dict(state.get("usage", {})),
            failures=list(state.get("failures", [])),
            pending=[_pending(p) for p in state.get("pending", [])],
            timeline=list(state.get("timeline", [])),
            ledger=report_from_json(state["ledger"]) if state.get("ledger") else None,
            waits=list(state.get("waits", [])),
            started=desc.start_time.isoformat(timespec="seconds") if desc.start_time else None,
            closed=desc.close_time.isoformat(timespec="seconds") if desc.close_time else None,
            problem=problem,
            attempts=ops.attempts_in_progress(desc, state.get("in_flight", [])),
            task_attempt=ops.task_attempt(desc),
            # a worker of before the bounded status sends whole lists and no totals
            timeline_total=int(state.get("timeline_total", len(state.get("timeline", [])))),
            waits_total=int(state.get("waits_total", len(state.get("waits", [])))),
            failures_total=int(state.get("failures_total", len(state.get("failures", [])))),
            error=error,
        )

    async def timeline(self, offset: int = 0, limit: int = 100) -> TimelinePage:
        """Entries ``offset`` to ``offset + limit`` of the run's timeline (at most
        :data:`~tether.core.run.TIMELINE_PAGE_MAX` a page), with their usage. Offsets count
        from the run's first step, across the segments of a run that continued as new.

        :meth:`describe` holds only the latest entries; this pages through all of them. A
        running run answers from its worker, a completed one from its result; entries of
        earlier segments are read from their runs (a worker hosting the agent replays them).
        """
        if offset < 0 or limit < 0:
            raise ValueError(
                f"offset and limit must be >= 0 (got {offset}, {limit}). Fix: pass offsets "
                "counted from the first step (0)"
            )
        limit = min(limit, TIMELINE_PAGE_MAX)
        status = await self.describe_status()
        if status is None:
            raise RunNotFoundError(self.id, self.runtime.client.namespace)
        known: list[dict[str, Any]] | None = None
        if status == "completed":
            raw = await self._handle.result()
            first, total = raw.timeline_first, raw.timeline_first + len(raw.timeline)
            entries = raw.timeline[max(0, offset - first) : max(0, offset + limit - first)]
            usage = _usage_of(raw.ledger, entries)
            known = raw.segment_runs
        else:
            patience = {} if status == "running" else {"rpc_timeout": CLOSED_QUERY_TIMEOUT}
            try:
                page = await ops.query(
                    self._handle, TIMELINE_QUERY, args=[offset, limit], **patience
                )
            except WorkflowQueryFailedError as exc:
                if "unknown queryType" not in str(exc) and "not registered" not in str(exc):
                    raise
                # A worker of before the paged timeline: its status query has the whole list.
                state = await ops.query(self._handle, STATUS_QUERY, **patience)
                timeline = list(state.get("timeline", []))
                entries = timeline[offset : offset + limit]
                return TimelinePage(
                    offset, len(timeline), entries, _usage_of(state.get("ledger") or {}, entries)
                )
            # "first": where the segment's entries start (absent: a worker of before it).
            first, total = int(page.get("first", 0)), int(page["total"])
            entries = list(page["entries"])
            usage = [StepUsage(**u) for u in page.get("usage", [])]
        if offset >= min(first, total):
            return TimelinePage(offset, total, entries, usage)
        segments = ops.Segments(self.runtime.client, self.id, known)
        earlier, earlier_usage = await _earlier_timeline(
            segments, offset, min(offset + limit, first)
        )
        if offset + len(earlier) < first:
            entries, usage = [], []  # an earlier segment answered short: no gap in the page
        return TimelinePage(offset, total, earlier + entries, earlier_usage + usage)

    async def describe_status(self) -> str | None:
        """The run's engine status (``running``, ``completed``, ``failed``...); None when no
        run has this id."""
        try:
            desc = await self._handle.describe()
        except RPCError as exc:
            if exc.status == RPCStatusCode.NOT_FOUND:
                return None
            raise
        return ops.status_name(desc.status)

    async def request(self) -> RunRequest | None:
        """The run's input as it was started (from the first event of its history)."""
        async for event in self._handle.fetch_history_events():
            attrs = event.workflow_execution_started_event_attributes
            if not attrs.input.payloads:
                return None
            decoded = await self.runtime.client.data_converter.decode(
                attrs.input.payloads, [RunRequest]
            )
            request = decoded[0]
            if not isinstance(request, RunRequest):
                return None
            # A run that continued as new: its latest segment's input, less what it carried.
            return dataclasses.replace(request, carried=None) if request.carried else request
        return None

    async def unserved_work(self) -> set[str]:
        """The run's work that is scheduled and waits for a worker to take it right now (its
        workflow task; steps that are not in a retry backoff), as stable keys: a key seen
        for several seconds means no live worker serves the run's queue."""
        raw = (await self._handle.describe()).raw_description
        keys: set[str] = set()
        if raw.HasField("pending_workflow_task"):
            task = raw.pending_workflow_task
            if task.state == PendingWorkflowTaskState.PENDING_WORKFLOW_TASK_STATE_SCHEDULED:
                keys.add(f"task:{task.attempt}:{task.scheduled_time.ToNanoseconds()}")
        for step in raw.pending_activities:
            if step.state == PendingActivityState.PENDING_ACTIVITY_STATE_SCHEDULED and not (
                step.HasField("next_attempt_schedule_time")
            ):
                keys.add(f"step:{step.activity_id}:{step.attempt}")
        return keys

    async def _problem(self, raw: DescribeWorkflowExecutionResponse) -> str | None:
        if not raw.HasField("pending_workflow_task"):
            return None
        task = raw.pending_workflow_task
        queue = raw.execution_config.task_queue.name
        if task.attempt > 1:
            why = await self._last_task_failure()
            return (
                f"the run's task has failed {task.attempt - 1} times on the workers of queue "
                f"{queue!r}: {why}"
            )
        if task.state != PendingWorkflowTaskState.PENDING_WORKFLOW_TASK_STATE_SCHEDULED:
            return None
        waited = datetime.now(UTC) - task.scheduled_time.ToDatetime(UTC)
        if waited < UNSERVED_AFTER:
            return None
        request = await self.request()
        agent = request.agent if request else "?"
        spec = (request.source if request else None) or "MODULE:OBJECT"
        if not await self.runtime.pollers(queue):
            return (
                f"no worker hosts agent {agent!r} on queue {queue!r}; the run starts as soon "
                f"as one does. Fix: `tether worker {spec}`"
            )
        return (
            f"no live worker has taken the run's task for {waited.total_seconds():.0f}s (queue "
            f"{queue!r} lists pollers, but they may be dead). Fix: start `tether worker {spec}`"
        )

    async def _ended_with(self) -> str | None:
        """``type: message`` of how an ended run failed (None when it completed)."""
        try:
            await self.raw_result()
        except RunFailedError as exc:
            kind = exc.error_type
            if not kind or exc.reason.startswith(f"{kind}:"):
                return exc.reason
            return f"{kind}: {exc.reason}"
        except Exception:
            return None
        return None

    async def _nobody_polls(self, raw: DescribeWorkflowExecutionResponse) -> bool:
        """The run's task waits on a queue no worker polls (so a query would only time out)."""
        if not raw.HasField("pending_workflow_task"):
            return False
        task = raw.pending_workflow_task
        if task.state != PendingWorkflowTaskState.PENDING_WORKFLOW_TASK_STATE_SCHEDULED:
            return False
        return not await self.runtime.pollers(raw.execution_config.task_queue.name)

    async def _last_task_failure(self) -> str:
        service = self.runtime.client.workflow_service
        resp = await service.get_workflow_execution_history_reverse(
            GetWorkflowExecutionHistoryReverseRequest(
                namespace=self.runtime.client.namespace,
                execution=WorkflowExecution(workflow_id=self.id),
                maximum_page_size=50,
            )
        )
        for event in resp.history.events:
            if event.HasField("workflow_task_failed_event_attributes"):
                failure = event.workflow_task_failed_event_attributes.failure
                return await failure_message(self.runtime.client.data_converter, failure)
        return "(no failure recorded yet)"

    async def _running(self, verb: str) -> None:
        """Raise RunNotFoundError / RunStateError unless the run is running."""
        try:
            desc = await self._handle.describe()
        except RPCError as exc:
            if exc.status == RPCStatusCode.NOT_FOUND:
                raise RunNotFoundError(self.id, self.runtime.client.namespace) from None
            raise
        if desc.status != WorkflowExecutionStatus.RUNNING:
            status = ops.status_name(desc.status)
            raise RunStateError(
                self.id,
                status,
                f"run {self.id!r} already ended ({status}), so there is nothing to {verb}. "
                f"Fix: `tether runs show {self.id}` for its outcome"
                + ("" if status == "completed" else f"; `tether runs retry {self.id}` to rerun"),
            )

    async def cancel(self) -> None:
        """Ask the run to stop (Temporal cancellation). A step in flight is told to stop at
        its next heartbeat (about a second) and its result, if any, is discarded; the run
        publishes ``run.cancelled`` and ends *cancelled*. Raises RunStateError if it ended."""
        await self._running("cancel")
        await self._handle.cancel()

    async def terminate(self, reason: str | None = None) -> None:
        """End the run at once: no run code runs again and a step in flight is abandoned
        (its result is discarded). Prefer :meth:`cancel`; terminate a run that does not
        react to it. Raises RunStateError if it already ended."""
        await self._running("terminate")
        await self._handle.terminate(reason=reason or "tether runs terminate")

    async def retry(self, *, from_start: bool = False) -> RunHandle:
        """Run a failed, cancelled, terminated or timed-out run again, under the same id.

        By default it resumes from the failed (or interrupted) step: the run is reset to the
        run task that scheduled that step, so completed model and tool calls are never made
        again (RetryUnsafeError when a parallel step completed after that point).
        ``from_start=True`` starts the run anew with the same input. The returned handle's
        ``note`` says what was done. Raises RunStateError for a running or completed run.
        """
        client = self.runtime.client
        if from_start:
            await ops.start_again(client, self.id)
            note = f"run {self.id!r} started again from the start, with the same input"
        else:
            _, plan = await ops.reset_to_last_step(client, self.id)
            note = plan.note
        return RunHandle(self.runtime, self.id, self._agent, created=True, note=note)

    async def _query(self, name: str, patience: float = 5.0) -> Any:
        """A query, retried while the engine says no worker polls: after a worker crash the
        run's cached (sticky) queue is dead for a few seconds before another worker takes it."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + patience
        while True:
            try:
                return await ops.query(self._handle, name)
            except RPCError as exc:
                if "no poller" not in exc.message or loop.time() > deadline:
                    raise
                await asyncio.sleep(0.25)

    # -- human in the loop -----------------------------------------------------------------

    async def _require_worker(self, verb: str, request_id: str = "") -> None:
        """Raise NoWorkerError at once when no worker polls the run's queue: a query or an
        answer needs the run's code, and would otherwise wait for its RPC timeout."""
        if self._queue is not None and await self.runtime.polled(self._queue):
            # The run was started on this queue by this handle, and a worker polls it (seen
            # within seconds): no round trip to describe the run first. An ended run's
            # answer is refused by the engine, as it would be after describing it.
            return
        try:
            desc = await self._handle.describe()
        except RPCError as exc:
            if exc.status == RPCStatusCode.NOT_FOUND:
                return  # the query or answer itself says the run does not exist
            raise
        if desc.status != WorkflowExecutionStatus.RUNNING:
            return  # an ended run answers from its history (or says it ended)
        queue = desc.raw_description.execution_config.task_queue.name
        loop = asyncio.get_running_loop()
        deadline = loop.time() + WORKER_GRACE.total_seconds()
        while not await self.runtime.polled(queue):
            if loop.time() >= deadline:
                break
            await asyncio.sleep(0.5)  # a worker that is starting gets a moment to poll
        else:
            return
        request = await self.request()
        agent = request.agent if request else "?"
        spec = (request.source if request else None) or "MODULE:OBJECT"
        raise NoWorkerError(
            self.id,
            request_id,
            f"no worker hosts agent {agent!r} (queue {queue!r}), so run {self.id!r} cannot "
            f"{verb} now; nothing was recorded. Fix: start one (`tether worker {spec}`), "
            "then try again",
        )

    async def pending(self) -> list[PendingRequest]:
        """What the run waits for now (empty when it waits for nothing). Raises
        NoWorkerError at once when no worker hosts the run's agent."""
        await self._require_worker("say what it waits for")
        try:
            raw: list[dict[str, Any]] = await self._query(PENDING_QUERY)
        except RPCError as exc:
            if exc.status == RPCStatusCode.NOT_FOUND:
                raise RunNotFoundError(self.id, self.runtime.client.namespace) from None
            raise RunNotWaitingError(
                self.id, "", f"cannot ask run {self.id!r} what it waits for: {exc.message}"
            ) from exc
        return [_pending(p) for p in raw]

    async def approve(self, request_id: str, *, reason: str | None = None) -> None:
        """Approve the tool call ``request_id``; the run carries on and the tool runs."""
        await self._answer(WaitAnswer(id=request_id, approved=True, reason=reason))

    async def deny(self, request_id: str, reason: str | None = None) -> None:
        """Deny the tool call ``request_id``: the tool never runs, the model is told why."""
        await self._answer(WaitAnswer(id=request_id, approved=False, reason=reason))

    async def answer(self, request_id: str, value: JSON) -> None:
        """Answer the question ``request_id`` (asked through ``tether.ask_human``)."""
        await self._answer(WaitAnswer(id=request_id, value=value))

    async def _answer(self, answer: WaitAnswer) -> None:
        # Answers are validated by the run's own code (unknown id, already answered), so
        # they need a worker: without one, say so at once rather than hang (docs/guide.md).
        await self._require_worker("take an answer", answer.id)
        try:
            await self._handle.execute_update(ANSWER_UPDATE, answer, rpc_timeout=ANSWER_RPC_TIMEOUT)
        except WorkflowUpdateRPCTimeoutOrCancelledError:
            raise NoWorkerError(
                self.id,
                answer.id,
                f"run {self.id!r} did not take the answer within "
                f"{ANSWER_RPC_TIMEOUT.total_seconds():.0f}s: the workers its queue lists did "
                "not answer (they may be dead or overloaded); it may still be applied when "
                f"one does. Fix: check `tether runs show {self.id}`, start a worker, and "
                "answer again if it still waits (an answer is never applied twice)",
            ) from None
        except WorkflowUpdateFailedError as exc:
            cause = exc.cause
            kind = _ERRORS.get(cause.type or "") if isinstance(cause, ApplicationError) else None
            message = cause.message if isinstance(cause, FailureError) else str(exc)
            raise (kind or WaitRequestError)(self.id, answer.id, message) from None
        except RPCError as exc:
            if exc.status == RPCStatusCode.NOT_FOUND:
                await self._raise_if_answered(answer.id)
                raise RunNotWaitingError(
                    self.id,
                    answer.id,
                    f"run {self.id!r} has ended or does not exist, so it waits for nothing "
                    f"({exc.message}). Fix: check the id with `tether runs list`",
                ) from None
            raise

    async def _raise_if_answered(self, request_id: str) -> None:
        """An ended run that answered ``request_id``: say so, as a running run would."""
        try:
            waits = (await self.describe()).waits
        except Exception:
            return
        for wait in waits:
            if wait.get("id") == request_id:
                verdict = (
                    "approved"
                    if wait.get("approved") is True
                    else "denied"
                    if wait.get("approved") is False
                    else f"answered {wait.get('value')!r}"
                )
                raise AlreadyAnsweredError(
                    self.id,
                    request_id,
                    f"request {request_id!r} of run {self.id!r} was already answered "
                    f"({verdict}) and the run has ended; an answer cannot be changed",
                )

    # -- events and usage ------------------------------------------------------------------

    async def events(
        self, after: int | None = None, *, poll_interval: float = 0.1, idle_interval: float = 1.0
    ) -> AsyncIterator[RunEvent]:
        """The run's events, live, until its last one. Pass the offset of the last event
        you saw as ``after`` to resume without gaps or repeats.

        Read through the stream's query, polled every ``poll_interval`` seconds while events
        come, slowing down to every ``idle_interval`` seconds while the run is quiet: reading
        adds nothing to the run's history."""
        async for event in ops.read_events(
            self.runtime.client,
            self.id,
            after,
            poll_interval=poll_interval,
            idle_interval=idle_interval,
        ):
            yield event

    def stream_events(self, from_offset: int = 0) -> EventStream:
        """The run's stream in its framework's own event types (the Agents SDK's
        ``StreamEvent``s, Pydantic AI's ``AgentStreamEvent``s), live until the run ends, or
        replayed from its log once it has. ``from_offset`` resumes a reader that stopped:
        pass the ``next_offset`` it had (every event is then seen exactly once). Needs the
        agent registered in this process (``tether.durable(agent)``)."""
        return EventStream(self, from_offset)

    async def _durable_agent(self) -> DurableAgent:
        if self._agent is not None:
            return self._agent
        request = await self.request()
        name = request.agent if request is not None else None
        entry = registry.registered().get(name or "")
        if entry is None:
            raise ConfigurationError(
                f"run {self.id!r} is a run of agent {name!r}, which is not registered in this "
                "process, so its framework events cannot be rebuilt. Fix: wrap the agent "
                "with tether.durable(agent) first, or read handle.events()"
            )
        self._agent = DurableAgent(entry.agent, entry.adapter, name=entry.name)
        return self._agent

    async def usage(self) -> UsageReport:
        """Tokens, cost and failed attempts so far (the whole run's once it ended)."""
        desc = await self.describe()
        return desc.ledger or UsageReport()


class EventStream:
    """A run's framework-shaped events (an async iterator). ``next_offset`` is where a reader
    that stops now resumes: ``handle.stream_events(from_offset=stream.next_offset)``."""

    def __init__(self, handle: RunHandle, from_offset: int = 0) -> None:
        self.handle = handle
        self.next_offset = from_offset
        self._source: AsyncIterator[Any] | None = None

    def __aiter__(self) -> EventStream:
        return self

    async def __anext__(self) -> Any:
        if self._source is None:
            durable = await self.handle._durable_agent()
            self._source = durable.adapter.read_stream(durable, self.handle, self.next_offset)
        resume, event = await self._source.__anext__()
        self.next_offset = resume
        return event


class DurableAgent:
    """An agent of any supported framework, run durably. Made by :func:`tether.durable`."""

    def __init__(
        self,
        agent: object,
        adapter: Adapter,
        *,
        name: str | None = None,
        runtime: Runtime | None = None,
        task_queue: str | None = None,
        local_worker: bool = True,
        source: str | None = None,
    ) -> None:
        adapter.prepare(agent)
        self.agent = agent
        self.adapter = adapter
        self.name = name or adapter.agent_name(agent)
        self._runtime = runtime
        self.task_queue = task_queue
        self.local_worker = local_worker
        self._source = source
        registry.register(self.name, agent, adapter)

    @property
    def source(self) -> str | None:
        """Where the agent is defined, as ``MODULE:OBJECT`` (found on first use)."""
        if self._source is None:
            self._source = object_source(self, self.agent)
        return self._source

    def queue(self, runtime: Runtime) -> str:
        """The task queue this agent's runs go to: its own under ``runtime``'s prefix, or the
        exact ``task_queue`` it was wrapped with."""
        return self.task_queue or runtime.queue_for(self.name)

    async def runtime(self) -> Runtime:
        if self._runtime is None:
            self._runtime = await default_runtime()
        return self._runtime

    async def start(
        self,
        input: Any,
        *,
        id: str | None = None,
        context: Any = None,
        deps: Any = None,
        budget: Budget | None = None,
        waits: WaitPolicy | None = None,
        stream_text: bool = False,
        if_exists: IfExists = "attach",
        **options: Any,
    ) -> RunHandle:
        """Start a run and return at once.

        ``id`` is the run's idempotency key. When a run with that id exists, ``if_exists``
        says what happens: ``"attach"`` (default) returns a handle on it when it was started
        with the same input and options, running or ended, and raises
        :class:`~tether.RunIdConflictError` when the input differs; ``"retry"`` does the
        same, except that a failed, cancelled, terminated or timed-out run is started again
        under the id, with this input (Temporal's ALLOW_DUPLICATE_FAILED_ONLY reuse
        policy); ``"error"`` raises RunIdConflictError whatever the run's state.

        ``context`` (OpenAI Agents SDK) and ``deps`` (Pydantic AI) are the same thing: the
        value handed to tools, sent to workers once per run. ``budget`` stops the run when
        its usage exceeds it; ``waits`` sets the timeout and timeout policy of its approvals
        and questions; ``stream_text`` streams model text as ``model.delta`` events;
        ``continue_as_new=ContinueAsNew(...)`` (an option) sets when a long run continues
        as new (see docs/guide.md, "Long runs").
        """
        if if_exists not in ("attach", "retry", "error"):
            raise ValueError(
                f"if_exists={if_exists!r} is not one of 'attach', 'retry', 'error'. Fix: "
                "'attach' (same input: same run), 'retry' (start a failed run again), "
                "'error' (the id must be new)"
            )
        _ = self.source  # find where the agent is defined, for workers' error messages
        request = self.request(
            input,
            context=context,
            deps=deps,
            budget=budget,
            waits=waits,
            stream_text=stream_text,
            **options,
        )
        runtime = await self.runtime()
        queue = self.queue(runtime)
        if self.local_worker:
            await runtime.ensure_local_worker(queue)
        run_id = id or f"{self.name}-{uuid.uuid4().hex[:12]}"
        shown = attributes.start_options(
            runtime.client,
            agent=self.name,
            adapter=self.adapter.name,
            with_attributes=await attributes.registered(runtime.client),
        )
        reuse = (
            WorkflowIDReusePolicy.ALLOW_DUPLICATE_FAILED_ONLY
            if if_exists == "retry"
            else WorkflowIDReusePolicy.REJECT_DUPLICATE
        )
        try:
            started = await runtime.client.start_workflow(
                WORKFLOW_NAME,
                request,
                id=run_id,
                task_queue=queue,
                id_reuse_policy=reuse,
                id_conflict_policy=(
                    WorkflowIDConflictPolicy.FAIL
                    if if_exists == "error"
                    else WorkflowIDConflictPolicy.USE_EXISTING
                ),
                # A task lost with a killed worker is retried after this long; a replaying
                # task must finish within it (see RUN_TASK_TIMEOUT).
                task_timeout=RUN_TASK_TIMEOUT,
                **shown,
            )
            created = _created(started)
        except WorkflowAlreadyStartedError:
            # A run with this id exists (ended, or running with if_exists="error").
            created = False
        handle = RunHandle(runtime, run_id, self, created=created, queue=queue if created else None)
        if not created:
            await self._check_same_run(handle, request, if_exists)
        return handle

    async def _check_same_run(
        self, handle: RunHandle, request: RunRequest, if_exists: IfExists
    ) -> None:
        """Raise RunIdConflictError unless the existing run ``handle`` was started with
        ``request``'s input (then the id is an idempotency key and the handle is its run)."""
        status = (await handle.describe_status()) or "unknown"
        if if_exists == "error":
            raise RunIdConflictError(
                handle.id,
                status,
                f"a run with id {handle.id!r} already exists ({status}). Fix: use a new id, "
                "or if_exists='attach' to get a handle on it (`tether runs show "
                f"{handle.id}`)",
            )
        existing = await handle.request()
        if existing is not None and _same_input(existing, request):
            return
        again = (
            f"; it {status}, so if_exists='retry' (`tether run --retry`) starts it again "
            "with the new input"
            if status in _RETRYABLE and if_exists != "retry"
            else ""
        )
        raise RunIdConflictError(
            handle.id,
            status,
            f"a run with id {handle.id!r} already exists ({status}) with a different input "
            f"or options; starting it again would return that run's result, not one for this "
            f"input. Fix: use a new id{again}",
        )

    def request(
        self,
        input: Any,
        *,
        context: Any = None,
        deps: Any = None,
        budget: Budget | None = None,
        waits: WaitPolicy | None = None,
        stream_text: bool = False,
        **options: Any,
    ) -> RunRequest:
        """The ``RunRequest`` that starts a run of this agent (no I/O, deterministic: also
        built inside workflows by ``tether.contrib.temporal``)."""
        if deps is not None:
            if context is not None:
                raise TypeError("pass context= or deps=, not both")
            context = deps
        continue_as_new = options.pop("continue_as_new", None)
        if continue_as_new is not None and not isinstance(continue_as_new, ContinueAsNew):
            raise TypeError(
                f"continue_as_new= takes a tether.ContinueAsNew, not "
                f"{type(continue_as_new).__name__}. Fix: continue_as_new=ContinueAsNew("
                "every_steps=...)"
            )
        if context is not None:
            context = self.adapter.prepare_context(self.agent, context)
        return RunRequest(
            agent=self.name,
            adapter=self.adapter.name,
            input=self.adapter.encode_input(input),
            # extra_headers & co. are sealed, never written in clear (core/sealed.py)
            options=seal_keys(self.adapter.encode_options(self.agent, options)),
            context=(
                pack(context, what="run context", declared=self.adapter.context_type(self.agent))
                if context is not None
                else None
            ),
            budget=budget,
            waits=waits,
            stream_text=stream_text,
            continue_as_new=continue_as_new,
            # Known once `start` or a plugin looked it up (never looked up here: this also
            # runs inside workflows, where scanning modules is not allowed).
            source=self._source,
        )

    async def run(
        self,
        input: Any,
        *,
        id: str | None = None,
        context: Any = None,
        deps: Any = None,
        budget: Budget | None = None,
        waits: WaitPolicy | None = None,
        stream_text: bool = False,
        **options: Any,
    ) -> Any:
        """Run to the end and return the framework's result. ``event_stream_handler``
        (Pydantic AI) runs here, in the caller, fed from the run's event log."""
        handler = options.get("event_stream_handler") or getattr(
            self.agent, "event_stream_handler", None
        )
        if handler is not None:
            options["event_stream_handler"] = handler
            return await self.adapter.stream(
                self,
                "run",
                input,
                dict(
                    options,
                    id=id,
                    context=context,
                    deps=deps,
                    budget=budget,
                    waits=waits,
                    stream_text=stream_text,
                ),
            )
        options.pop("event_stream_handler", None)
        handle = await self.start(
            input,
            id=id,
            context=context,
            deps=deps,
            budget=budget,
            waits=waits,
            stream_text=stream_text,
            **options,
        )
        return await handle.result()

    # -- the frameworks' own streaming APIs, fed by the durable run's event log ------------

    def run_streamed(self, input: Any, **options: Any) -> Any:
        """OpenAI Agents SDK: like ``Runner.run_streamed``, an object whose
        ``stream_events()`` yields the SDK's own stream events (see docs/guide.md)."""
        return self.adapter.stream(self, "run_streamed", input, options)

    def run_stream(self, input: Any, **options: Any) -> Any:
        """Pydantic AI: like ``agent.run_stream`` (``async with``; ``stream_text()``,
        ``stream_output()``, ``get_output()``)."""
        return self.adapter.stream(self, "run_stream", input, options)

    def iter(self, input: Any, **options: Any) -> Any:
        """Pydantic AI: like ``agent.iter`` (``async with``; ``async for node in run``)."""
        return self.adapter.stream(self, "iter", input, options)

    def run_stream_events(self, input: Any, **options: Any) -> Any:
        """Pydantic AI: like ``agent.run_stream_events`` (an async iterator of events)."""
        return self.adapter.stream(self, "run_stream_events", input, options)

    def handle(self, run_id: str, runtime: Runtime) -> RunHandle:
        """A handle on an existing run of this agent."""
        return RunHandle(runtime, run_id, self)


IfExists = Literal["attach", "retry", "error"]
"""What ``DurableAgent.start`` does when a run with the id exists (see there)."""
_RETRYABLE = frozenset({"failed", "cancelled", "terminated", "timed out", "timed_out"})


def _same_input(a: RunRequest, b: RunRequest) -> bool:
    """Whether two run requests ask for the same run (where the agent is defined aside)."""
    return dataclasses.replace(a, source=None) == dataclasses.replace(b, source=None)


def _created(started: WorkflowHandle[Any, Any]) -> bool:
    """Whether start_workflow started a run (False: USE_EXISTING attached to a running one).

    The SDK keeps the server's StartWorkflowExecutionResponse on the handle; its
    ``started`` field is the server's answer.
    """
    response = getattr(started, "_start_workflow_response", None)
    return bool(getattr(response, "started", True))


async def get_run(run_id: str, runtime: Runtime | None = None) -> RunHandle:
    """A handle on an existing run by id (results come back as the run's JSON)."""
    return RunHandle(runtime or await default_runtime(), run_id, None)


def _bounded(state: dict[str, Any]) -> dict[str, Any]:
    """``state`` (a completed run's) with each list cut to its latest
    :data:`~tether.core.run.STATUS_RECENT` entries and its total beside it, as a running
    run's status query answers."""
    out = dict(state)
    for key in ("timeline", "waits", "failures"):
        items = list(state.get(key) or [])
        out[key] = items[-STATUS_RECENT:]
        out[f"{key}_total"] = len(items)
    if state.get("ledger"):
        ledger = dict(state["ledger"])
        ledger["steps"] = list(ledger.get("steps", []))[-STATUS_RECENT:]
        out["ledger"] = ledger
    return out


async def _earlier_timeline(
    segments: ops.Segments, start: int, end: int
) -> tuple[list[dict[str, Any]], list[StepUsage]]:
    """Timeline entries ``start`` to ``end`` (and their usage) of a run that continued as new,
    asked of the segments that hold them (closed runs, replayed by a worker for the query).

    A segment holds its own entries and the latest :data:`STATUS_RECENT` of the earlier ones
    (carried): the latest segment holding ``start`` among those is asked, so that each replay
    answers for as many entries as it can (several short segments' worth, late in a run)."""
    entries: list[dict[str, Any]] = []
    usage: list[StepUsage] = []
    while start < end:
        holder = await segments.holding(start, "first_entry")
        widest = _widest(segments, holder, start)
        page = await _segment_page(segments, widest, start, end)
        if page is None and widest is not holder:
            page = await _segment_page(segments, holder, start, end)
        if page is None:
            break  # no segment holds it (never expected): stop rather than loop
        got = list(page["entries"])
        entries.extend(got)
        usage.extend(StepUsage(**u) for u in page.get("usage", []))
        start += len(got)
    return entries, usage


def _widest(segments: ops.Segments, holder: dict[str, Any], start: int) -> dict[str, Any]:
    """The latest segment whose carried entries reach back to ``start`` (else ``holder``)."""
    found = holder
    for segment in segments.known:
        first = ops.first_of(segment, "first_entry")
        if (
            first > ops.first_of(found, "first_entry")
            and first - min(STATUS_RECENT, first) <= start
        ):
            found = segment
    return found


async def _segment_page(
    segments: ops.Segments, segment: dict[str, Any], start: int, end: int
) -> dict[str, Any] | None:
    """The page of ``segment``'s run from ``start`` (None unless it starts there)."""
    handle = segments.handle(segment)
    timeout = ops.SEGMENT_QUERY_TIMEOUT
    page: dict[str, Any] = await ops.query(
        handle, TIMELINE_QUERY, args=[start, end - start], rpc_timeout=timeout
    )
    if "first" not in page:
        # A worker of before run-wide offsets: they count from the segment's first entry.
        local = start - ops.first_of(segment, "first_entry")
        if local < 0:
            return None
        page = await ops.query(
            handle, TIMELINE_QUERY, args=[local, end - start], rpc_timeout=timeout
        )
        page["offset"] = start
    if int(page["offset"]) != start or not page["entries"]:
        return None
    return page


def _usage_of(ledger: dict[str, Any], entries: list[dict[str, Any]]) -> list[StepUsage]:
    steps = {e.get("step") for e in entries}
    return [StepUsage(**u) for u in ledger.get("steps", []) if u.get("step") in steps]


def _pending(raw: dict[str, Any]) -> PendingRequest:
    return PendingRequest(
        id=raw["id"],
        kind=raw["kind"],
        tool=raw.get("tool"),
        args=raw.get("args"),
        question=raw.get("question"),
        asked_at=raw.get("asked_at"),
        timeout=raw.get("timeout"),
        on_timeout=raw.get("on_timeout"),
    )


def durable(
    agent: object,
    *,
    name: str | None = None,
    runtime: Runtime | None = None,
    task_queue: str | None = None,
    local_worker: bool = True,
    source: str | None = None,
) -> DurableAgent:
    """Wrap an agent of any installed framework so its runs are durable.

    The adapter is found through the ``tether`` plugins; the agent is registered in this
    process, so a worker started here (or ``tether worker``) hosts it.
    """
    from tether.plugins import adapter_for

    return DurableAgent(
        agent,
        adapter_for(agent),
        name=name,
        runtime=runtime,
        task_queue=task_queue,
        local_worker=local_worker,
        source=source,
    )
