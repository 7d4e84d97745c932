"""The run: one generic Temporal workflow hosting any adapter's loop.

The adapter's loop runs inside :class:`AgentRun` unchanged, with model and tool calls
swapped for steps (activities). Everything here must be deterministic: the run is rebuilt
by replaying its history after a crash.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timedelta
from random import Random
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.contrib.workflow_streams import (
    PublisherState,
    WorkflowStream,
    WorkflowStreamState,
)
from temporalio.exceptions import (
    ActivityError,
    ApplicationError,
    FailureError,
    RetryState,
    is_cancelled_exception,
)

with workflow.unsafe.imports_passed_through():
    from tether.core import attributes, registry, tracing
    from tether.core import events as ev
    from tether.core.contract import (
        JSON,
        LOST_ATTEMPTS,
        LOST_STEP_RETRY,
        STEP_ITEMS,
        Capability,
        Carried,
        ContinueAsNew,
        RunRequest,
        StepError,
        StepKind,
        StepOutcome,
        StepPolicy,
        StepRequest,
        WaitAnswer,
        WaitPolicy,
        WaitRequest,
    )
    from tether.core.conversation import Transcript
    from tether.core.ledger import Ledger, normalize_usage
    from tether.core.sealed import seal_keys, unseal_tree
    from tether.core.steps import ATTEMPTS_DETAIL, BLOB_MISSING, TRANSCRIPT_ACTIVITY
    from tether.core.store import PAYLOAD_MISSING, canonical_json, digest

WORKFLOW_NAME = "tether.AgentRun"
STATUS_QUERY = "tether.status"
PENDING_QUERY = "tether.pending"
SEGMENTS_QUERY = "tether.segments"
TIMELINE_QUERY = "tether.timeline"
STATUS_RECENT = 50
"""Entries of each list (timeline, waits, failures, ledger steps) the status query returns:
the latest ones, with the totals. A run of 10,000 steps answers it as fast as one of 10."""
TIMELINE_PAGE_MAX = 1000
"""Most timeline entries one ``tether.timeline`` query returns (pages beyond it)."""
ANSWER_UPDATE = "tether.answer"
UNKNOWN_REQUEST = "TetherUnknownWaitRequest"
ALREADY_ANSWERED = "TetherAlreadyAnswered"
REPLAY_ITEMS_PATCH = "tether.continue-as-new.replay-items"
"""Marks the runs whose segments also end by ``ContinueAsNew.replay_items`` (version marker)."""
WRONG_ANSWER = "TetherWrongAnswerKind"


@dataclass
class RunResult:
    """What a finished run returns (the output is the adapter's JSON)."""

    output: JSON
    usage: dict[str, int] = field(default_factory=dict)
    steps: int = 0
    failures: list[dict[str, Any]] = field(default_factory=list)
    ledger: dict[str, Any] = field(default_factory=dict)
    timeline: list[dict[str, Any]] = field(default_factory=list)
    waits: list[dict[str, Any]] = field(default_factory=list)
    agent: str | None = None
    segments: int = 1
    """How many segments the run had (it continued as new ``segments - 1`` times)."""
    timeline_first: int = 0
    """Where ``timeline`` starts in the run's whole timeline. A run that continued as new
    returns its last segment's entries after the latest :data:`STATUS_RECENT` of the
    earlier segments; the others stay in those segments' runs (``segment_runs``) and
    ``RunHandle.timeline`` pages through all."""
    segment_runs: list[dict[str, Any]] = field(default_factory=list)
    """The run's segments, oldest first (as the ``tether.segments`` query answers)."""


class BudgetExceeded(Exception):
    """The run's budget was exceeded; the run stops (type ``BudgetExceeded``)."""


class HistoryLimitReached(Exception):
    """The run's history nears Temporal's limit and its adapter cannot continue as new."""


class ContinuingAsNew(BaseException):
    """Raised by ``session.checkpoint`` to unwind the adapter's loop: the run continues as new
    with ``loop`` as the loop state. A BaseException, so frameworks' ``except Exception`` let
    it through; nothing should catch it."""

    def __init__(self, loop: JSON) -> None:
        super().__init__("the run continues as new")
        self.loop = loop


HISTORY_EVENTS_LIMIT = 45_000
"""A run whose adapter cannot continue as new fails past this many history events, with a
clear error, before Temporal's own limit (51,200) terminates it."""
HISTORY_BYTES_LIMIT = 45_000_000
"""Likewise in bytes (Temporal's limit: 50 MB)."""


class WaitTimedOut(Exception):
    """A wait with the ``fail`` timeout policy timed out; the run fails."""


def _verdict(answer: WaitAnswer) -> str:
    if answer.approved is True:
        return "approved"
    if answer.approved is False:
        return f"denied: {answer.reason}" if answer.reason else "denied"
    return f"answered {answer.value!r}"


class StepFailedError(Exception):
    """What ``session.step`` raises when a step failed after its retries.

    ``step`` (its name), ``kind``, ``reason`` (the error text) and ``error_type`` say what
    failed. Left uncaught it fails the run with that error; an adapter whose framework can go
    on (e.g. hand a tool's error to the model) catches it. See docs/adapter-authors.md."""

    def __init__(self, step: str, kind: str, message: str, error_type: str | None) -> None:
        super().__init__(f"{kind} step {step!r} failed: {message}")
        self.step = step
        self.kind = kind
        self.error_type = error_type
        self.reason = message


def _payload_missing(exc: BaseException) -> ApplicationError | None:
    """The ``TetherPayloadMissing`` error somewhere in ``exc``'s chain of causes."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ApplicationError) and seen.type == PAYLOAD_MISSING:
            return seen
        seen = seen.__cause__
    return None


def _attempts_made(exc: ActivityError, policy: StepPolicy) -> int:
    """How many attempts a failed step made: what its last attempt reported (core/steps.py
    puts it on the error that ends the step), else what the engine's limit allowed."""
    cause = exc.cause
    if isinstance(cause, ApplicationError):
        for detail in cause.details:
            if isinstance(detail, dict) and isinstance(detail.get(ATTEMPTS_DETAIL), int):
                return int(detail[ATTEMPTS_DETAIL])
    if exc.retry_state == RetryState.MAXIMUM_ATTEMPTS_REACHED:
        return policy.max_attempts + LOST_ATTEMPTS
    return 1


def _ids(outcome: StepOutcome) -> str | None:
    """The provider's request id (else response id) a model step returned, if any: kept in
    the run's timeline, so a bill can be matched to the one call the run made."""
    value = outcome.value
    if not isinstance(value, dict):
        return None
    response = value.get("response")
    found = value.get("request_id") or value.get("response_id")
    if found is None and isinstance(response, dict):  # Pydantic AI's ModelResponse
        found = response.get("provider_response_id")
    return found if isinstance(found, str) else None


# sandboxed=False: the run hosts a framework's loop, not user code (see Runtime.worker), and a
# worker that also runs the user's own sandboxed workflows (tether.contrib.temporal) must
# still run this one unsandboxed, whatever its workflow_runner is.
@workflow.defn(name=WORKFLOW_NAME, sandboxed=False)
class AgentRun:
    """Hosts one agent run; its name and input shape are persisted data."""

    @workflow.init
    def __init__(self, request: RunRequest) -> None:
        self._own_run_id = workflow.info().run_id
        self._request: RunRequest | None = None
        self._transcript = Transcript()
        self._steps = 0
        self._usage: dict[str, int] = {}
        self._failures: list[dict[str, Any]] = []
        self._phase = "starting"
        self._current: str | None = None
        self._context_ref: str | None = None
        self._shared: dict[str, Any] = {}
        self._unsent: dict[str, Any] = {}
        self._ledger = Ledger()
        self._started_steps = 0
        self._timeline: list[dict[str, Any]] = []
        """This segment's timeline; earlier segments' entries are in their own runs."""
        self._timeline_before = 0
        """Timeline entries of the earlier segments (the run-wide index of this one's first)."""
        self._timeline_earlier: list[dict[str, Any]] = []
        """The latest of those (at most STATUS_RECENT), carried across the boundary."""
        self._pending: dict[str, tuple[WaitRequest, str]] = {}
        self._answers: dict[str, WaitAnswer] = {}
        self._waits: list[dict[str, Any]] = []
        self._over_budget: str | None = None
        self._timed_out: str | None = None
        self._cancelled = False
        self._phase_attribute = False
        self._in_flight: dict[int, dict[str, Any]] = {}
        self._randoms: dict[str, Random] = {}
        # The run's event log: rebuilt by replay, so replays never publish twice.
        carried = request.carried
        self._stream = WorkflowStream(_stream_state(carried))
        self._events = self._stream.topic(ev.EVENTS_TOPIC)
        # Continue-as-new (see docs/architecture.md): what this segment resumes from.
        self._carried = carried
        self._can_continue = False
        self._segment_steps = 0
        self._segment_items = 0
        """Conversation items handed to this segment's steps, summed (see replay_items)."""
        self._history_full: str | None = None
        self._conversation: dict[str, Any] | None = None
        self._resumed_transcript: list[JSON] | None = None
        if carried is not None:
            self._restore(carried)

    @workflow.run
    async def run(self, request: RunRequest) -> RunResult:
        self._request = request
        if request.context is not None:
            self._context_ref = self.share(request.context)
        # A worker that does not host the agent never fails the run: the lookup error fails
        # this workflow task only, and the engine hands the task to another worker (or
        # keeps it until one that hosts the agent polls). Nothing was recorded yet.
        entry = registry.lookup(request.agent, request.source)
        # Started with Tether's search attributes (they are registered): keep TetherPhase
        # current. Decided from the start event, so replays decide the same.
        self._phase_attribute = (
            workflow.info().typed_search_attributes.get(attributes.PHASE) is not None
        )
        self._phase = "waiting" if self._pending else "running"  # as the run was started
        self._can_continue = Capability.CONTINUE_AS_NEW in entry.adapter.capabilities
        if request.carried is None:
            self.publish(ev.RUN_STARTED, {"agent": request.agent, "adapter": request.adapter})
        else:
            self.publish(
                ev.RUN_CONTINUED, {"segment": request.carried.segment, "steps": self._steps}
            )
        try:
            output = await self._loop(entry.adapter, entry.agent, request)
            if self._over_budget is not None:
                raise BudgetExceeded(self._over_budget)
        except asyncio.CancelledError:
            await self._end_cancelled()
            raise
        except FailureError as exc:
            if self._cancelled or is_cancelled_exception(exc):
                await self._end_cancelled()
                raise asyncio.CancelledError() from None
            await self._fail(str(exc), type(exc).__name__)
            raise
        except StepFailedError as exc:
            if self._cancelled:
                await self._end_cancelled()
                raise asyncio.CancelledError() from None
            await self._fail(str(exc), exc.error_type or "StepFailed")
            raise ApplicationError(
                str(exc), type=exc.error_type or "StepFailed", non_retryable=True
            ) from None
        except Exception as exc:
            # Deterministic errors of the loop (max turns, bad output, a user error) fail the
            # run with their cause; retrying the workflow task forever would only hide them.
            # A budget stop may surface wrapped by the framework: the run's own flag decides.
            if self._cancelled:
                await self._end_cancelled()
                raise asyncio.CancelledError() from None
            if self._over_budget is not None:
                message = (
                    f"the run's budget was exceeded ({self._over_budget}); it stopped before "
                    "the next model call. Fix: raise the budget (durable.start(..., budget=...))"
                )
                await self._fail(message, "BudgetExceeded")
                raise ApplicationError(message, type="BudgetExceeded", non_retryable=True) from None
            if self._history_full is not None:
                await self._fail(self._history_full, "HistoryLimitReached")
                raise ApplicationError(
                    self._history_full, type="HistoryLimitReached", non_retryable=True
                ) from None
            if self._timed_out is not None:
                await self._fail(self._timed_out, "WaitTimedOut")
                raise ApplicationError(
                    self._timed_out, type="WaitTimedOut", non_retryable=True
                ) from None
            workflow.logger.debug("run failed", exc_info=True)
            message = f"{type(exc).__name__}: {exc}"
            await self._fail(message, type(exc).__name__)
            raise ApplicationError(message, type=type(exc).__name__, non_retryable=True) from exc
        self._set_phase("completed")
        self.publish(ev.RUN_FINISHED, {"usage": dict(self._usage), "cost": self._ledger.cost})
        await self._close_stream()
        timeline_first, timeline = self._timeline_window()
        return RunResult(
            output=output,
            usage=dict(self._usage),
            steps=self._steps,
            failures=self._failures,
            ledger=self._ledger.report(),
            timeline=timeline,
            waits=self._waits,
            agent=request.agent,
            segments=len(self._segments()),
            timeline_first=timeline_first,
            segment_runs=self._segments(),
        )

    async def _fail(self, message: str, error_type: str) -> None:
        self._set_phase("failed")
        self.publish(ev.RUN_FAILED, {"error": message, "type": error_type})
        await self._close_stream()

    async def _end_cancelled(self) -> None:
        # Cancelled (`tether runs cancel`, handle.cancel()): a step in flight was asked to
        # stop and its result, if any, is discarded; the run ends CANCELED, not failed.
        self._set_phase("cancelled")
        self.publish(ev.RUN_CANCELLED, {"steps": self._steps})
        await self._close_stream()

    def _set_phase(self, phase: str) -> None:
        if phase == self._phase:
            return
        self._phase = phase
        if self._phase_attribute and self._in_own_task():
            workflow.upsert_search_attributes([attributes.PHASE.value_set(phase)])

    def _in_own_task(self) -> bool:
        """Whether this code runs in a task of this run (not another run's).

        A run evicted from a worker's cache can leave suspended code behind that the garbage
        collector closes later, in whatever thread it runs: ``finally`` blocks (a wait's
        phase change) then run inside another run's workflow task, and a command issued
        there would land in that run's history (seen as "Nondeterminism error:
        UpsertWorkflowSearchAttributesMachine" when that run was replayed)."""
        try:
            return workflow.info().run_id == self._own_run_id
        except Exception:  # in no run task at all (the collector ran in another thread)
            return False

    async def _close_stream(self) -> None:
        # Waiting readers get their last batch (with the final event) before the run closes;
        # readers arriving later read the closed run's log through the stream's query.
        self._stream.detach_pollers()
        await workflow.wait_condition(workflow.all_handlers_finished)

    @workflow.query(name=STATUS_QUERY)
    def status(self) -> dict[str, Any]:
        """The run now: a bounded summary. Lists hold their latest :data:`STATUS_RECENT`
        entries, ``*_total`` their lengths; the whole timeline is paged by
        :meth:`timeline`."""
        ledger = self._ledger.report()
        ledger_steps = ledger["steps"]
        ledger["steps"] = ledger_steps[-STATUS_RECENT:]
        return {
            "phase": self._phase,
            "agent": self._request.agent if self._request else None,
            "steps": self._steps,
            "current_step": self._current,
            "in_flight": [dict(v) for _, v in sorted(self._in_flight.items())],
            "usage": dict(self._usage),
            "failures": self._failures[-STATUS_RECENT:],
            "failures_total": len(self._failures),
            "ledger": ledger,
            "ledger_steps_total": len(ledger_steps),
            "timeline": (self._timeline_earlier + self._timeline[-STATUS_RECENT:])[-STATUS_RECENT:],
            "timeline_total": self._timeline_before + len(self._timeline),
            "waits": self._waits[-STATUS_RECENT:],
            "waits_total": len(self._waits),
            "pending": self.pending(),
        }

    @workflow.query(name=TIMELINE_QUERY)
    def timeline(self, offset: int = 0, limit: int = 100) -> dict[str, Any]:
        """The run's timeline entries ``offset`` to ``offset + limit`` (at most
        :data:`TIMELINE_PAGE_MAX`; offsets count from the run's first step) that this
        segment holds, the ledger's entries of the same steps, and the run's total so far.

        A segment holds its own entries and the latest of the earlier segments' (from
        ``first`` on): a page that starts before ``first`` starts there (``offset``), and
        the earlier entries are asked of the earlier segments' runs (``tether.segments``)."""
        offset = max(0, int(offset))
        limit = max(0, min(int(limit), TIMELINE_PAGE_MAX))
        first, window = self._timeline_window()
        entries = window[max(0, offset - first) : max(0, offset + limit - first)]
        steps = {e["step"] for e in entries}
        usage = [asdict(u) for u in self._ledger.entries if u.step in steps]
        return {
            "offset": max(offset, first),
            "first": first,
            "total": first + len(window),
            "entries": entries,
            "usage": usage,
        }

    def _timeline_window(self) -> tuple[int, list[dict[str, Any]]]:
        """The timeline entries this segment holds (the latest of the earlier segments, then
        its own) and the run-wide index of the first of them."""
        window = self._timeline_earlier + self._timeline
        return self._timeline_before - len(self._timeline_earlier), window

    # -- waits -------------------------------------------------------------------------------

    @workflow.query(name=PENDING_QUERY)
    def pending(self) -> list[dict[str, Any]]:
        return [dict(asdict(req), asked_at=at) for req, at in self._pending.values()]

    @workflow.update(name=ANSWER_UPDATE)
    def answer(self, answer: WaitAnswer) -> dict[str, Any]:
        self._check_answer(answer)
        self._answers[answer.id] = answer
        return {"id": answer.id, "accepted": True}

    @answer.validator
    def _validate_answer(self, answer: WaitAnswer) -> None:
        # A rejected update never enters the run's history.
        self._check_answer(answer)

    def _check_answer(self, answer: WaitAnswer) -> None:
        if answer.id in self._answers:
            given = self._answers[answer.id]
            raise ApplicationError(
                f"request {answer.id!r} of run {self.run_id!r} was already answered "
                f"({_verdict(given)}); an answer cannot be changed",
                type=ALREADY_ANSWERED,
                non_retryable=True,
            )
        found = self._pending.get(answer.id)
        if found is None:
            waiting = ", ".join(sorted(self._pending)) or "nothing"
            raise ApplicationError(
                f"run {self.run_id!r} is not waiting for a request {answer.id!r} (it waits "
                f"for: {waiting}). Fix: take the id from `tether runs pending {self.run_id}` "
                "or handle.pending()",
                type=UNKNOWN_REQUEST,
                non_retryable=True,
            )
        request = found[0]
        if request.kind == "approval" and answer.approved is None:
            raise ApplicationError(
                f"request {answer.id!r} is an approval: approve or deny it "
                "(handle.approve / handle.deny, `tether approve`), not answer it",
                type=WRONG_ANSWER,
                non_retryable=True,
            )
        if request.kind == "question" and answer.approved is not None:
            raise ApplicationError(
                f"request {answer.id!r} is a question ({request.question!r}): answer it with "
                "handle.answer(id, value) or `tether approve RUN ID --answer TEXT`",
                type=WRONG_ANSWER,
                non_retryable=True,
            )

    # -- RunSession ------------------------------------------------------------------------

    @property
    def run_id(self) -> str:
        return workflow.info().workflow_id

    @property
    def agent_name(self) -> str:
        assert self._request is not None
        return self._request.agent

    def transcript(self) -> Transcript:
        return self._transcript

    def publish(self, type: str, data: Mapping[str, JSON]) -> None:
        self._events.publish({"type": type, "time": self._now(), "data": dict(data)})

    def _now(self) -> str:
        return workflow.now().isoformat(timespec="milliseconds")

    def now(self) -> datetime:
        return workflow.now()

    def uuid(self) -> str:
        return str(workflow.uuid4())

    def replaying(self) -> bool:
        return workflow.unsafe.is_replaying_history_events()

    def random(self, name: str) -> Random:
        found = self._randoms.get(name)
        if found is None:
            found = self._randoms[name] = workflow.new_random(name)
        return found

    def _wait_policy(self, request: WaitRequest) -> tuple[float | None, str, JSON]:
        policy = (self._request.waits if self._request else None) or WaitPolicy()
        timeout = request.timeout if request.timeout is not None else policy.timeout
        on_timeout = request.on_timeout or policy.on_timeout
        default = request.default if request.default is not None else policy.default
        return timeout, on_timeout, default

    def _ask(self, request: WaitRequest) -> None:
        """Make ``request`` pending and announce it (once per run, whatever its segment)."""
        timeout = self._wait_policy(request)[0]
        self._pending[request.id] = (request, self._now())
        if request.kind == "approval":
            self.publish(
                ev.APPROVAL_REQUESTED,
                {"id": request.id, "tool": request.tool, "args": request.args, "timeout": timeout},
            )
        else:
            self.publish(
                ev.QUESTION_ASKED,
                {"id": request.id, "question": request.question, "timeout": timeout},
            )
        self._set_phase("waiting")

    async def wait(self, request: WaitRequest) -> WaitAnswer:
        with tracing.wait_span(request) as answers:  # a no-op unless tracing is on
            answer = await self._wait(request)
            answers.append(answer)
            return answer

    async def _wait(self, request: WaitRequest) -> WaitAnswer:
        done = self._answers.get(request.id)
        if done is not None and request.id not in self._pending:
            return done  # the loop asked again for something already answered
        timeout, on_timeout, default = self._wait_policy(request)
        if request.id not in self._pending:
            self._ask(request)
        asked_at = self._pending[request.id][1]
        approval = request.kind == "approval"
        left = timeout
        if timeout is not None:
            # Asked in an earlier segment: the time already waited counts.
            waited = (workflow.now() - datetime.fromisoformat(asked_at)).total_seconds()
            left = max(timeout - waited, 0.001)
        try:
            await workflow.wait_condition(lambda: request.id in self._answers, timeout=left)
            answer = self._answers[request.id]
        except TimeoutError:
            if on_timeout == "fail":
                answer = WaitAnswer(id=request.id, timed_out=True, reason="timed out")
            elif on_timeout == "deny" or not approval:
                # A question's tool gets the default, or text saying nobody answered.
                silent = f"(nobody answered within {timeout:g}s)"
                answer = WaitAnswer(
                    id=request.id,
                    approved=False if approval else None,
                    value=None if approval else (default if default is not None else silent),
                    reason=f"no answer within {timeout:g}s",
                    timed_out=True,
                )
            else:
                answer = WaitAnswer(
                    id=request.id,
                    approved=bool(default),
                    reason=f"no answer within {timeout:g}s: default applied",
                    timed_out=True,
                )
            self._answers[request.id] = answer
        finally:
            self._pending.pop(request.id, None)
            if not self._pending and self._phase == "waiting":
                self._set_phase("running")
        record = {
            "id": request.id,
            "kind": request.kind,
            "tool": request.tool,
            "question": request.question,
            "asked_at": asked_at,
            "answered_at": self._now(),
            **{k: v for k, v in asdict(answer).items() if k != "id"},
        }
        self._waits.append(record)
        if approval:
            self.publish(
                ev.APPROVAL_ANSWERED,
                {
                    "id": request.id,
                    "approved": answer.approved,
                    "reason": answer.reason,
                    "timed_out": answer.timed_out,
                },
            )
        else:
            self.publish(
                ev.QUESTION_ANSWERED,
                {"id": request.id, "value": answer.value, "timed_out": answer.timed_out},
            )
        if answer.timed_out and on_timeout == "fail":
            # Kept on the run too: a framework may wrap the exception on its way out.
            self._timed_out = (
                f"nobody answered {request.kind} {request.id!r} within {timeout:g}s and its "
                "timeout policy is 'fail'. Fix: answer sooner, or use on_timeout='deny' / "
                "'default' (durable.start(..., waits=WaitPolicy(...)))"
            )
            raise WaitTimedOut(self._timed_out)
        return answer

    async def step(
        self,
        name: str,
        payload: JSON,
        *,
        kind: StepKind,
        summary: str,
        policy: StepPolicy,
        transcript: Sequence[JSON] | None = None,
        info: Mapping[str, JSON] | None = None,
        prefixed: bool = False,
        transcript_from: int = 0,
        frozen: bool = False,
    ) -> StepOutcome:
        if kind == "model" and self._over_budget is not None:
            raise BudgetExceeded(self._over_budget)
        if kind == "model":
            self._check_history()
        payload = seal_keys(payload)  # extra_headers & co. never reach history in clear
        self._started_steps += 1
        number = self._started_steps
        detail: dict[str, JSON] = {"step": number, "summary": summary, **(info or {})}
        started = self._now()
        self.publish(f"{kind}.started", detail)
        tref = None
        if transcript is not None:
            tref = self._transcript.reference(transcript, prefixed=prefixed, frozen=frozen)
            if transcript_from:
                tref = replace(tref, start=transcript_from)
            self._segment_items += len(transcript) + STEP_ITEMS
        attachments, self._unsent = self._unsent, {}
        shared_refs = self._refs_in(payload)
        request = StepRequest(
            run_id=self.run_id,
            agent=self.agent_name,
            payload=payload,
            transcript=tref,
            context_ref=self._context_ref,
            attachments=attachments,
            step=number,
            shared_refs=shared_refs,
        )
        self._current = summary
        self._in_flight[number] = {"step": number, "name": name, "summary": summary}
        try:
            try:
                outcome = await self._execute(name, request, summary, policy)
            except ActivityError as exc:
                cause = exc.cause
                if not (isinstance(cause, ApplicationError) and cause.type == BLOB_MISSING):
                    raise
                # This worker's store lacks what earlier steps stored: send it all inline.
                inline = self._transcript.segments_for(tref.base if tref else None)
                inline.update(self._shared)
                request = StepRequest(
                    run_id=request.run_id,
                    agent=request.agent,
                    payload=payload,
                    transcript=tref,
                    context_ref=self._context_ref,
                    attachments=inline,
                    step=number,
                    shared_refs=shared_refs,
                )
                outcome = await self._execute(name, request, summary, policy)
        except (ActivityError, asyncio.CancelledError) as exc:
            if is_cancelled_exception(exc):
                if workflow.cancellation_reason() is not None:
                    # The run was cancelled while this step ran: no step failure to record.
                    self._cancelled = True
                else:
                    # The agent's own loop cancelled the step (a framework's tool timeout,
                    # asyncio.wait_for): the step is abandoned and the loop goes on, as it
                    # would outside Temporal (it tells the model the tool timed out).
                    message = "cancelled by the agent's loop (e.g. the framework's timeout)"
                    self._record_step(number, kind, name, summary, started, 1, message, True)
                    self.publish(f"{kind}.failed", dict(detail, error=message))
                raise asyncio.CancelledError() from None
            assert isinstance(exc, ActivityError)
            cause = exc.cause
            message = cause.message if isinstance(cause, FailureError) else str(exc)
            error_type = cause.type if isinstance(cause, ApplicationError) else None
            missing = _payload_missing(exc)
            if missing is not None:
                # The step's input could not be read on its worker: say why, not "Failed
                # decoding arguments".
                message, error_type = missing.message, PAYLOAD_MISSING
            self._failures.append(
                {"step": name, "summary": summary, "type": error_type, "message": message}
            )
            attempts = _attempts_made(exc, policy)
            self._record_step(number, kind, name, summary, started, attempts, message, True)
            if kind == "model":
                self._ledger.step_done(number, summary, attempts, started, self._now(), True)
            self.publish(f"{kind}.failed", dict(detail, error=message))
            raise StepFailedError(name, kind, message, error_type) from None
        finally:
            self._current = None
            self._in_flight.pop(number, None)
        self._steps += 1
        self._segment_steps += 1
        error = outcome.error.message if outcome.error is not None else None
        if outcome.error is not None:
            self.record_failure(summary, outcome.error)
        self._record_step(
            number, kind, name, summary, started, outcome.attempt, error, request_id=_ids(outcome)
        )
        if kind == "model":
            self._ledger.step_done(number, summary, outcome.attempt, started, self._now(), False)
        finished = dict(detail, attempt=outcome.attempt)
        if kind != "model":
            finished["error"] = error
        self.publish(f"{kind}.finished", finished)
        return outcome

    def _record_step(
        self,
        number: int,
        kind: str,
        name: str,
        summary: str,
        started: str,
        attempt: int,
        error: str | None,
        failed: bool = False,
        *,
        request_id: str | None = None,
    ) -> None:
        entry: dict[str, Any] = {
            "step": number,
            "kind": kind,
            "name": name,
            "summary": summary,
            "started": started,
            "finished": self._now(),
            "attempts": attempt,
            "error": error,
            "failed": failed,
        }
        if request_id is not None:
            entry["request_id"] = request_id
        self._timeline.append(entry)

    async def _execute(
        self, name: str, request: StepRequest, summary: str, policy: StepPolicy
    ) -> StepOutcome:
        # The engine's retry policy paces the retry of a lost step (timed out: its worker
        # died); the step paces errors itself from ``retry_interval`` (core/steps.py).
        lost = min(policy.initial_interval, LOST_STEP_RETRY)
        # The engine counts every attempt; the step counts those that end in an error and
        # stops at the policy's max_attempts itself (core/steps.py), so attempts lost with a
        # worker come out of LOST_ATTEMPTS, not out of the step's attempts for errors.
        request = replace(
            request,
            retry_interval=policy.initial_interval.total_seconds(),
            error_attempts=policy.max_attempts,
        )
        outcome: StepOutcome = await workflow.execute_activity(
            name,
            request,
            result_type=StepOutcome,
            start_to_close_timeout=policy.start_to_close,
            heartbeat_timeout=policy.heartbeat,
            retry_policy=RetryPolicy(
                initial_interval=lost,
                backoff_coefficient=policy.backoff,
                maximum_interval=policy.max_interval,
                maximum_attempts=policy.max_attempts + LOST_ATTEMPTS,
                non_retryable_error_types=list(policy.non_retryable_errors) or None,
            ),
            summary=summary[:200],
        )
        return outcome

    def _refs_in(self, payload: JSON) -> list[str]:
        """Shared refs the payload names (strings that are keys of ``_shared``), in order."""
        found: dict[str, None] = {}
        todo: list[Any] = [payload]
        while todo:
            value = todo.pop()
            if isinstance(value, str):
                if value in self._shared:
                    found[value] = None
            elif isinstance(value, dict):
                todo.extend(reversed(list(value.values())))
            elif isinstance(value, list | tuple):
                todo.extend(reversed(value))
        return list(found)

    def share(self, value: JSON) -> str:
        ref = digest(canonical_json(value))
        if ref not in self._shared:
            self._shared[ref] = value
            self._unsent[ref] = value
        return ref

    def record_failure(self, step: str, error: StepError) -> None:
        self._failures.append(
            {
                "step": step,
                "type": error.type,
                "message": error.message,
                "attempts": error.attempts,
            }
        )

    def add_usage(
        self, usage: Mapping[str, int], *, model: str | None = None, provider: str | None = None
    ) -> None:
        usage = normalize_usage(usage)
        for key, value in usage.items():
            self._usage[key] = self._usage.get(key, 0) + value
        entry = self._ledger.add(dict(usage), model, provider, workflow.now())
        self.publish(
            ev.USAGE,
            {
                "step": entry.step if entry else None,
                "model": model,
                "input_tokens": int(usage.get("input_tokens", 0)),
                "output_tokens": int(usage.get("output_tokens", 0)),
                "cost": entry.cost if entry else None,
                "total_tokens_run": self._usage.get("total_tokens", 0),
            },
        )
        budget = self._request.budget if self._request else None
        if self._over_budget is None:
            self._over_budget = self._ledger.over(budget)
            if self._over_budget is not None:
                raise BudgetExceeded(self._over_budget)

    def usage(self) -> dict[str, int]:
        return dict(self._usage)

    # -- continue-as-new (docs/architecture.md, "Long runs") -------------------------------

    async def _loop(self, adapter: Any, agent: object, request: RunRequest) -> JSON:
        """The adapter's loop; when it unwinds at a checkpoint, the run continues as new."""
        try:
            await self._load_conversation()
            return await adapter.run(self, agent, _unsealed(request))
        except BaseException as exc:
            found = _continuing(exc)
            if found is None:
                raise
        await self._continue_as_new(found.loop)
        raise AssertionError("unreachable: continue_as_new returned")

    async def checkpoint(
        self,
        snapshot: Callable[[], JSON],
        *,
        transcript: Sequence[JSON] | None = None,
        asking: Sequence[WaitRequest] = (),
        prefixed: bool = False,
        tail_only: bool = False,
    ) -> None:
        if not self._can_continue or self._in_flight or not self._due():
            return
        loop = snapshot()
        if transcript is not None:
            conversation = self._transcript.split(transcript, prefixed=prefixed)
            if tail_only and conversation["base"] is not None:
                conversation["tail"] = True
            self._conversation = conversation
        for request in asking:
            if request.id not in self._pending and request.id not in self._answers:
                self._ask(request)
        raise ContinuingAsNew(loop)

    def resumed(self) -> JSON:
        return self._carried.loop if self._carried is not None else None

    def resumed_transcript(self) -> list[JSON] | None:
        return self._resumed_transcript

    def resumed_prefix(self) -> int:
        return self._transcript.prefix_length

    async def _load_conversation(self) -> None:
        """A continued segment: the conversation its loop state holds, from the store (one
        step-like read per segment; what crosses in the input is its reference)."""
        carried = self._carried
        if carried is None or carried.conversation is None:
            return
        base, delta = carried.conversation.get("base"), list(carried.conversation["delta"])
        prefix: list[JSON] = []
        if base is not None and carried.conversation.get("tail"):
            # The loop resumes from the tail: the items before it stay in the store (steps
            # read them there), none is loaded into the run.
            self._transcript.adopt_prefix(base, int(carried.conversation["length"]))
        elif base is not None:
            prefix = await self._read_chain(base)
            self._transcript.adopt(base, prefix)
        self._resumed_transcript = prefix + delta

    async def stored_prefix(self) -> list[JSON]:
        head = self._transcript.prefix_head
        return [] if head is None else await self._read_chain(head)

    async def _read_chain(self, head: str) -> list[JSON]:
        """A conversation from the store, by its chain head (one step-like read)."""
        items: list[JSON] = await workflow.execute_activity(
            TRANSCRIPT_ACTIVITY,
            head,
            result_type=list,
            start_to_close_timeout=timedelta(minutes=2),
            heartbeat_timeout=None,
            retry_policy=RetryPolicy(maximum_attempts=10, maximum_interval=timedelta(seconds=10)),
            summary="load the conversation",
        )
        return items

    def _due(self) -> bool:
        """Whether this segment should end at the next safe point (deterministic: what
        ``workflow.info()`` says is replayed from history)."""
        assert self._request is not None
        policy = self._request.continue_as_new or ContinueAsNew()
        info = workflow.info()
        if policy.every_steps is not None and self._segment_steps >= policy.every_steps:
            return True
        if (
            policy.replay_items is not None
            and self._segment_items >= policy.replay_items
            # Runs started before this trigger existed replay as they ran (no marker).
            and workflow.patched(REPLAY_ITEMS_PATCH)
        ):
            return True
        events, size = policy.history_events, policy.history_bytes
        if events is not None and info.get_current_history_length() >= events:
            return True
        if size is not None and info.get_current_history_size() >= size:
            return True
        return policy.suggested and info.is_continue_as_new_suggested()

    def _check_history(self) -> None:
        """Fail a run that cannot continue as new before Temporal's history limit does."""
        if self._can_continue or self._history_full is not None:
            return
        info = workflow.info()
        events, size = info.get_current_history_length(), info.get_current_history_size()
        if events < HISTORY_EVENTS_LIMIT and size < HISTORY_BYTES_LIMIT:
            return
        adapter = self._request.adapter if self._request else "?"
        self._history_full = (
            f"the run's history has {events} events ({size} bytes), near Temporal's limit "
            f"(51,200 events or 50 MB), and adapter {adapter!r} cannot continue as new (it "
            "does not declare Capability.CONTINUE_AS_NEW), so the run stops before its next "
            "model call rather than be terminated. Fix: split the work into shorter runs, or "
            "implement session.checkpoint/resumed in the adapter (docs/adapter-authors.md)"
        )
        raise HistoryLimitReached(self._history_full)

    async def _continue_as_new(self, loop: JSON) -> None:
        # Readers polling this segment get their last batch and move on to the next one;
        # answers arriving meanwhile are handled here and carried.
        self._stream.detach_pollers()
        await workflow.wait_condition(workflow.all_handlers_finished)
        assert self._request is not None
        info = workflow.info()
        carried = self._carry(loop)
        workflow.continue_as_new(
            args=[replace(self._request, carried=carried)],
            task_timeout=info.task_timeout,
        )

    def _carry(self, loop: JSON) -> Carried:
        state = self._stream.get_state()
        previous = self._carried
        segment = previous.segment + 1 if previous is not None else 1
        return Carried(
            segment=segment,
            loop=loop,
            steps=self._steps,
            started_steps=self._started_steps,
            usage=dict(self._usage),
            failures=list(self._failures),
            waits=list(self._waits),
            ledger=self._ledger.state(),
            pending=[
                {"request": asdict(req), "asked_at": at} for req, at in self._pending.values()
            ],
            answers=[a for key, a in self._answers.items() if key in self._pending],
            transcript=self._transcript.carry() if self._conversation is None else None,
            conversation=self._conversation,
            stream_offset=state.base_offset + len(state.log),
            publishers={
                pid: {"sequence": p.sequence, "last_seen": p.last_seen.isoformat()}
                for pid, p in state.publishers.items()
            },
            segments=self._segments(),
            started=previous.started if previous is not None else self._started_at(),
            timeline_before=self._timeline_before + len(self._timeline),
            timeline_recent=(self._timeline_earlier + self._timeline[-STATUS_RECENT:])[
                -STATUS_RECENT:
            ],
        )

    def _started_at(self) -> str:
        return workflow.info().start_time.isoformat(timespec="milliseconds")

    def _restore(self, carried: Carried) -> None:
        self._steps = carried.steps
        self._started_steps = carried.started_steps
        self._usage = dict(carried.usage)
        self._failures = list(carried.failures)
        self._waits = list(carried.waits)
        self._timeline_before = (
            carried.started_steps if carried.timeline_before is None else carried.timeline_before
        )
        self._timeline_earlier = list(carried.timeline_recent)
        self._ledger = Ledger.from_state(carried.ledger)
        for entry in carried.pending:
            request = WaitRequest(**entry["request"])
            self._pending[request.id] = (request, str(entry["asked_at"]))
        for answer in carried.answers:
            self._answers[answer.id] = answer
        if carried.transcript is not None:
            self._transcript.seed(**carried.transcript)

    def _segments(self) -> list[dict[str, Any]]:
        """The run's segments so far, oldest first, this one last."""
        earlier = list(self._carried.segments) if self._carried is not None else []
        first_offset = self._carried.stream_offset if self._carried is not None else 0
        first_step = self._carried.started_steps + 1 if self._carried is not None else 1
        here = {
            "run_id": workflow.info().run_id,
            "first_offset": first_offset,
            "first_step": first_step,
            "first_entry": self._timeline_before,
        }
        return [*earlier, here]

    @workflow.query(name=SEGMENTS_QUERY)
    def segments(self) -> list[dict[str, Any]]:
        return self._segments()


def _continuing(exc: BaseException) -> ContinuingAsNew | None:
    """The checkpoint's signal in ``exc``, also when a framework's task group wrapped it."""
    if isinstance(exc, ContinuingAsNew):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = _continuing(inner)
            if found is not None:
                return found
    seen = exc.__cause__ or exc.__context__
    return seen if isinstance(seen, ContinuingAsNew) else None


def _stream_state(carried: Carried | None) -> WorkflowStreamState | None:
    """The event log of a continued segment: empty, starting at the offset where the previous
    one ended (earlier events stay readable in the earlier segments' runs)."""
    if carried is None:
        return None
    return WorkflowStreamState(
        log=[],
        base_offset=carried.stream_offset,
        publishers={
            pid: PublisherState(
                sequence=int(p["sequence"]), last_seen=datetime.fromisoformat(p["last_seen"])
            )
            for pid, p in carried.publishers.items()
        },
    )


def _unsealed(request: RunRequest) -> RunRequest:
    """``request`` as the adapter's loop sees it: sealed run options in clear (in memory
    only; what the loop sends to steps is sealed again in :meth:`AgentRun.step`)."""
    options = unseal_tree(request.options)
    return request if options is request.options else replace(request, options=options)
